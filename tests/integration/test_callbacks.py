"""Phone callbacks as dialogs, in French and English, on SQLite and PostgreSQL: booking with
the person's own number or another one, reminders at the right local times, ANNULER and
DÉPLACER, nothing free, staff cancelling, no answer, and two people racing for one slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from bot.app import Services, open_services
from bot.conversation import keywords as kw
from bot.core.config import parse_time_range
from bot.core.types import Outbound
from bot.domain import slots
from bot.flows import callbacks, global_keywords
from bot.storage.db import make_engine, sessionmaker
from bot.storage.models import Contact, Event, Job, Slot, Ticket
from tests.helpers.cli import relais
from tests.helpers.db import make_settings
from tests.helpers.dialog import Dialog, choose

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)  # Monday 4 March 2030, 10:00 in Paris
TUESDAY_2PM = datetime(2030, 3, 5, 13, 0, tzinfo=UTC)  # 14:00 in Paris, 17:00 in Réunion
MOBILE = "+33612345678"

OFFER_FR = (
    "Quand pouvons-nous vous appeler ? Choisissez un horaire.\n"
    "1. mardi 5 mars à 14h00\n2. mardi 5 mars à 14h30\n3. mardi 5 mars à 15h00\n"
    "4. mardi 5 mars à 15h30\n5. Aucun de ces horaires"
)
HOW_TO_CHANGE_FR = "Pour annuler, écrivez ANNULER. Pour changer l'heure, écrivez DÉPLACER."


@pytest.fixture(autouse=True)
def keywords_wired(monkeypatch: pytest.MonkeyPatch) -> None:
    """ANNULER and DÉPLACER as ``global_keywords`` will map them."""
    monkeypatch.setitem(global_keywords.ACTIONS, kw.CANCEL_BOOKING, callbacks.cancel_keyword)
    monkeypatch.setitem(global_keywords.ACTIONS, kw.MOVE_BOOKING, callbacks.move_keyword)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


async def open_slots(
    services: Services, start: datetime = TUESDAY_2PM, count: int = 5, minutes: int = 30
) -> list[int]:
    async with services.sessions() as session, session.begin():
        opened = await slots.open_slots(session, start, count=count, minutes=minutes, now=T0)
        return [slot.id for slot in opened]


async def slot(services: Services, slot_id: int) -> Slot:
    async with services.sessions() as session:
        found = await session.get(Slot, slot_id)
        assert found is not None
        return found


async def offer(dialog: Dialog, language: str = "fr") -> list[Outbound]:
    await dialog.send("bonjour", language_hint=language)  # onboarding starts
    menu = await dialog.send("menu")
    return await choose(dialog, menu, "callback")


async def book_first(dialog: Dialog, slot_id: int, language: str = "fr") -> list[Outbound]:
    """From the menu to a booking on the person's own SMS/WhatsApp number."""
    asked = await choose(dialog, await offer(dialog, language), f"slot{slot_id}")
    return await choose(dialog, asked, "yes")


async def run_jobs(services: Services, dialog: Dialog) -> list[str]:
    before = len(dialog.recorder.sent)
    await services.scheduler().run_due()
    await dialog.drain()
    return Dialog.texts(dialog.recorder.sent[before:])


async def events(services: Services, prefix: str) -> list[str]:
    async with services.sessions() as session:
        kinds = await session.scalars(
            select(Event.kind).where(Event.kind.like(f"{prefix}%")).order_by(Event.id)
        )
        return list(kinds)


# -- booking ---------------------------------------------------------------------------------


async def test_french_booking_from_the_menu_with_their_own_number(services, clock):
    ids = await open_slots(services)
    await open_slots(services, start=T0 + timedelta(minutes=30), count=1)  # too soon
    dialog = Dialog(services, who=MOBILE, channel="sms")
    offered = await offer(dialog)
    assert Dialog.texts(offered) == [OFFER_FR]
    asked = await choose(dialog, offered, f"slot{ids[0]}")
    assert Dialog.texts(asked) == [
        "Nous vous appellerons au +33 6 12 34 56 78. Est-ce le bon numéro ?\n"
        "1. Oui\n2. Un autre numéro"
    ]
    done = await choose(dialog, asked, "yes")
    assert Dialog.texts(done) == [
        "C'est noté ! Un médiateur de Relais vous appellera le mardi 5 mars à 14h00, "
        "au +33 6 12 34 56 78.\n\n" + HOW_TO_CHANGE_FR
    ]
    booked = await slot(services, ids[0])
    assert (booked.status, booked.phone, booked.booked_at) == ("booked", MOBILE, T0)
    async with services.sessions() as session:
        jobs = (await session.scalars(select(Job).order_by(Job.due_at))).all()
    assert [(j.kind, j.key, j.due_at) for j in jobs] == [
        ("callback.remind_evening", str(ids[0]), datetime(2030, 3, 4, 17, 0, tzinfo=UTC)),
        ("callback.remind_hour", str(ids[0]), datetime(2030, 3, 5, 12, 0, tzinfo=UTC)),
    ]
    assert await events(services, "callback.") == ["callback.booked"]


async def test_english_booking_with_another_number_invalid_then_valid(services, clock):
    ids = await open_slots(services)
    dialog = Dialog(services, who=MOBILE, channel="whatsapp")
    offered = await offer(dialog, "en")
    assert Dialog.texts(offered)[0].startswith(
        "When can we call you? Choose a time.\n1. Tuesday 5 March at 14:00\n"
    )
    asked = await choose(dialog, offered, f"slot{ids[1]}")
    assert Dialog.texts(asked) == [
        "We will call you at +33 6 12 34 56 78. Is this the right number?\n"
        "1. Yes\n2. Another number"
    ]
    question = await choose(dialog, asked, "other")
    assert Dialog.texts(question) == ["What number should we call? For example: 06 12 34 56 78"]
    bad = await dialog.send("06 12")
    assert Dialog.texts(bad) == [
        "This number does not look right. Write it like this: 06 12 34 56 78"
    ]
    done = await dialog.send("01 23 45 67 89")  # a landline is fine for a call
    assert Dialog.texts(done) == [
        "It is booked! A mediator of Relais will call you on Tuesday 5 March at 14:30, "
        "at +33 1 23 45 67 89.\n\n"
        "To cancel, send CANCEL CALL. To change the time, send MOVE."
    ]
    assert (await slot(services, ids[1])).phone == "+33123456789"


async def test_a_number_written_at_the_confirmation_is_the_one_called(services, clock):
    ids = await open_slots(services)
    dialog = Dialog(services, who=MOBILE, channel="sms")
    await choose(dialog, await offer(dialog), f"slot{ids[0]}")
    done = await dialog.send("06 11 22 33 44")
    assert "au +33 6 11 22 33 44." in Dialog.texts(done)[0]


async def test_telegram_asks_for_the_number(services, clock):
    ids = await open_slots(services)
    dialog = Dialog(services, who="424242", channel="telegram")
    question = await choose(dialog, await offer(dialog), f"slot{ids[0]}")
    assert Dialog.texts(question) == [
        "À quel numéro vous appeler ? Par exemple : 06 12 34 56 78"
    ]
    done = await dialog.send("0692 12 34 56")
    assert "au +262 692 12 34 56." in Dialog.texts(done)[0]
    assert (await slot(services, ids[0])).phone == "+262692123456"


async def test_a_reunion_person_sees_reunion_times_and_is_reminded_at_18h_there(
    services, clock
):
    ids = await open_slots(services, count=1)
    dialog = Dialog(services, who="+262692123456", channel="sms")
    offered = await offer(dialog)
    assert Dialog.texts(offered)[0].split("\n")[1] == "1. mardi 5 mars à 17h00"
    await choose(dialog, await choose(dialog, offered, f"slot{ids[0]}"), "yes")
    clock.move_to(datetime(2030, 3, 4, 13, 59, tzinfo=UTC))
    assert await run_jobs(services, dialog) == []
    clock.move_to(datetime(2030, 3, 4, 14, 0, tzinfo=UTC))  # 18:00 in Réunion
    assert await run_jobs(services, dialog) == [
        "Rappel : demain à 17h00, un médiateur de Relais vous appellera au +262 692 12 34 56."
        "\n\n" + HOW_TO_CHANGE_FR
    ]


# -- reminders -------------------------------------------------------------------------------


async def test_evening_and_hour_reminders_fire_at_the_right_times(services, clock):
    ids = await open_slots(services)
    dialog = Dialog(services, who=MOBILE, channel="sms")
    await book_first(dialog, ids[0])
    clock.move_to(datetime(2030, 3, 4, 16, 59, tzinfo=UTC))
    assert await run_jobs(services, dialog) == []
    clock.move_to(datetime(2030, 3, 4, 17, 0, tzinfo=UTC))  # 18:00 in Paris
    assert await run_jobs(services, dialog) == [
        "Rappel : demain à 14h00, un médiateur de Relais vous appellera au +33 6 12 34 56 78."
        "\n\n" + HOW_TO_CHANGE_FR
    ]
    clock.move_to(datetime(2030, 3, 5, 11, 59, tzinfo=UTC))
    assert await run_jobs(services, dialog) == []
    clock.move_to(datetime(2030, 3, 5, 12, 0, tzinfo=UTC))
    assert await run_jobs(services, dialog) == [
        "Dans une heure, à 14h00, un médiateur de Relais vous appellera au +33 6 12 34 56 78."
    ]
    assert await run_jobs(services, dialog) == []


@pytest.fixture
async def early_quiet(db_url: str) -> AsyncIterator[Services]:
    """Quiet hours from 17:00: 18:00 the evening before is too late."""
    svc = await open_services(make_settings(db_url, quiet_hours="17:00-09:00"), migrate=False)
    try:
        yield svc
    finally:
        await svc.close()


async def test_evening_reminder_before_quiet_hours_and_hour_reminder_inside_them(
    early_quiet, clock
):
    services = early_quiet
    ids = await open_slots(services, start=datetime(2030, 3, 5, 8, 30, tzinfo=UTC), count=1)
    dialog = Dialog(services, who="+33698765432", channel="sms")
    await book_first(dialog, ids[0], "en")
    clock.move_to(datetime(2030, 3, 4, 15, 58, tzinfo=UTC))
    assert await run_jobs(services, dialog) == []
    clock.move_to(datetime(2030, 3, 4, 15, 59, tzinfo=UTC))  # 16:59 in Paris
    got = await run_jobs(services, dialog)
    assert got and got[0].startswith("Reminder: tomorrow at 9:30, a mediator of Relais")
    clock.move_to(datetime(2030, 3, 5, 7, 30, tzinfo=UTC))  # 08:30 in Paris: quiet, still sent
    assert await run_jobs(services, dialog) == [
        "In one hour, at 9:30, a mediator of Relais will call you at +33 6 98 76 54 32."
    ]


def test_evening_reminder_time_rules():
    quiet = parse_time_range("20:00-09:00")
    start = datetime(2030, 7, 10, 8, 0, tzinfo=UTC)  # 10:00 in Paris (summer time)
    assert slots.evening_reminder_at(start, "Europe/Paris", quiet) == datetime(
        2030, 7, 9, 16, 0, tzinfo=UTC
    )
    late = parse_time_range("16:30-09:00")
    assert slots.evening_reminder_at(start, "Europe/Paris", late) == datetime(
        2030, 7, 9, 14, 29, tzinfo=UTC
    )
    assert slots.evening_reminder_at(start, "Europe/Paris", parse_time_range("00:00-23:59")) \
        is None
    # booked the same evening, after 18:00: no evening reminder, the hour one only
    due = slots.reminders_due(start, "Europe/Paris", quiet, datetime(2030, 7, 9, 17, tzinfo=UTC))
    assert list(due) == ["hour"]


# -- cancel, move, see -----------------------------------------------------------------------


async def test_annuler_cancels_after_a_yes_and_frees_the_slot(services, clock):
    ids = await open_slots(services)
    dialog = Dialog(services, who=MOBILE, channel="sms")
    await book_first(dialog, ids[0])
    asked = await dialog.send("Annuler")
    assert Dialog.texts(asked) == [
        "Annuler votre appel du mardi 5 mars à 14h00 ?\n1. Oui, l'annuler\n2. Non, le garder"
    ]
    kept = await choose(dialog, asked, "no")
    assert Dialog.texts(kept) == ["Votre appel est maintenu."]
    assert (await slot(services, ids[0])).status == "booked"
    done = await choose(dialog, await dialog.send("ANNULER"), "yes")
    assert Dialog.texts(done) == [
        "Votre appel est annulé. Pour choisir un autre horaire, écrivez MENU."
    ]
    freed = await slot(services, ids[0])
    assert (freed.status, freed.contact_id, freed.phone) == ("open", None, None)
    assert await events(services, "callback.") == ["callback.booked", "callback.cancelled"]
    nothing = Dialog.texts(await dialog.send("déplacer"))
    assert nothing[0].startswith(
        "Vous n'avez pas de rendez-vous téléphonique.\n\nDe quoi avez-vous besoin ?"
    )
    clock.move_to(datetime(2030, 3, 5, 12, 0, tzinfo=UTC))
    assert await run_jobs(services, dialog) == []  # no reminder for a cancelled call


async def test_move_keeps_the_booking_until_the_new_time_is_booked(services, clock):
    ids = await open_slots(services)
    dialog = Dialog(services, who=MOBILE, channel="sms")
    await book_first(dialog, ids[0], "en")
    offered = await dialog.send("move")
    texts = Dialog.texts(offered)
    assert texts[0].startswith("Choose a new time for your call.\n1. Tuesday 5 March at 14:30")
    assert f"slot{ids[0]}" not in Dialog.last_choices(offered)
    assert (await slot(services, ids[0])).status == "booked"
    done = await choose(dialog, await choose(dialog, offered, f"slot{ids[2]}"), "yes")
    assert Dialog.texts(done)[0].startswith(
        "It is booked! A mediator of Relais will call you on Tuesday 5 March at 15:00"
    )
    assert (await slot(services, ids[0])).status == "open"
    assert (await slot(services, ids[2])).status == "booked"
    assert await events(services, "callback.") == ["callback.booked", "callback.moved"]
    # the old slot's hour reminder, and the new one's evening reminder now too late
    clock.move_to(datetime(2030, 3, 5, 12, 0, tzinfo=UTC))
    assert await run_jobs(services, dialog) == []
    clock.move_to(datetime(2030, 3, 5, 13, 0, tzinfo=UTC))
    assert await run_jobs(services, dialog) == [
        "In one hour, at 15:00, a mediator of Relais will call you at +33 6 12 34 56 78."
    ]


async def test_menu_with_a_booking_offers_see_move_cancel(services, clock):
    ids = await open_slots(services)
    dialog = Dialog(services, who=MOBILE, channel="sms")
    await book_first(dialog, ids[0])
    menu = await dialog.send("menu")
    manage = await choose(dialog, menu, "callback")
    assert Dialog.texts(manage) == [
        "Vous avez déjà un rendez-vous téléphonique. Que voulez-vous faire ?\n"
        "1. Le voir\n2. Changer l'horaire\n3. L'annuler"
    ]
    seen = await choose(dialog, manage, "see")
    assert Dialog.texts(seen) == [
        "Un médiateur de Relais vous appellera le mardi 5 mars à 14h00, au +33 6 12 34 56 78."
        "\n\n" + HOW_TO_CHANGE_FR
    ]
    manage = await choose(dialog, await dialog.send("menu"), "callback")
    cancel = await choose(dialog, manage, "cancel")
    assert Dialog.texts(cancel)[0].startswith("Annuler votre appel du mardi 5 mars à 14h00 ?")
    async with services.sessions() as session:
        booked = await session.scalar(
            select(func.count()).select_from(Slot).where(Slot.status == "booked")
        )
    assert booked == 1  # one booking per person


async def test_no_free_slot_offers_a_message_for_a_mediator(services, clock):
    await open_slots(services, start=T0 + timedelta(minutes=20), count=1)  # too soon
    dialog = Dialog(services, who=MOBILE, channel="sms")
    asked = await offer(dialog)
    assert Dialog.texts(asked) == [
        "Aucun horaire n'est libre pour un appel en ce moment. Voulez-vous laisser un message "
        "à un médiateur ?\n1. Oui\n2. Non"
    ]
    done = await choose(dialog, asked, "yes")
    assert Dialog.texts(done) == ["Merci. Une personne de Relais va vous répondre ici."]
    async with services.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket is not None and (ticket.source, ticket.topic) == ("callback", "callback")


# -- staff side: cancellation and no answer --------------------------------------------------


async def test_slot_cancelled_by_staff_tells_the_person_and_offers_others(
    services, clock, no_dotenv
):
    ids = await open_slots(services)
    dialog = Dialog(services, who=MOBILE, channel="sms")
    await book_first(dialog, ids[0])
    code, out, err = await asyncio.to_thread(
        relais, services.settings.database_url, "slots", "cancel", str(ids[0])
    )
    assert (code, err) == (0, "")
    assert "told now" in out
    await dialog.drain()
    told = Dialog.texts(dialog.recorder.sent[-1:])
    assert told == [
        "Nous sommes désolés : nous devons annuler votre appel du mardi 5 mars à 14h00.\n\n"
        "Quand pouvons-nous vous appeler ? Choisissez un horaire.\n"
        "1. mardi 5 mars à 14h30\n2. mardi 5 mars à 15h00\n3. mardi 5 mars à 15h30\n"
        "4. mardi 5 mars à 16h00\n5. Aucun de ces horaires"
    ]
    again = await dialog.send("1")
    assert Dialog.texts(again)[0].startswith("Nous vous appellerons au +33 6 12 34 56 78.")
    assert (await slot(services, ids[0])).status == "cancelled"
    assert await events(services, "callback.") == ["callback.booked", "callback.cancelled"]


async def test_no_answer_in_quiet_hours_tells_the_person_next_morning(
    services, clock, no_dotenv
):
    ids = await open_slots(services)
    dialog = Dialog(services, who=MOBILE, channel="sms")
    await book_first(dialog, ids[0], "en")
    clock.move_to(datetime(2030, 3, 5, 20, 30, tzinfo=UTC))  # 21:30 in Paris
    code, out, _err = await asyncio.to_thread(
        relais, services.settings.database_url, "slots", "done", str(ids[0]),
        "--outcome", "no-answer"
    )
    assert code == 0 and "quiet hours" in out
    assert await run_jobs(services, dialog) == []
    clock.move_to(datetime(2030, 3, 6, 8, 0, tzinfo=UTC))  # 09:00 in Paris
    assert await run_jobs(services, dialog) == [
        "We tried to call you, but we could not reach you. Let's find another time.\n\n"
        "No time is free for a call right now. Do you want to leave a message for a "
        "mediator?\n1. Yes\n2. No"
    ]
    done = await slot(services, ids[0])
    assert (done.status, done.outcome) == ("done", "no-answer")
    assert await events(services, "callback.") == ["callback.booked", "callback.no_answer"]


async def test_no_answer_offers_another_time_right_away(services, clock, no_dotenv):
    ids = await open_slots(services)
    later = await open_slots(services, start=datetime(2030, 3, 7, 9, 0, tzinfo=UTC), count=1)
    dialog = Dialog(services, who=MOBILE, channel="sms")
    await book_first(dialog, ids[0])
    clock.move_to(datetime(2030, 3, 5, 14, 10, tzinfo=UTC))  # 16:00 is less than 1 h away
    code, _out, _err = await asyncio.to_thread(
        relais, services.settings.database_url, "slots", "done", str(ids[0]),
        "--outcome", "no-answer"
    )
    assert code == 0
    await dialog.drain()
    told = Dialog.texts(dialog.recorder.sent[-1:])[0]
    assert told.startswith("Nous avons essayé de vous appeler, sans réussir à vous joindre.")
    assert told.endswith("1. jeudi 7 mars à 10h00\n2. Aucun de ces horaires")
    assert Dialog.last_choices(dialog.recorder.sent[-1:]) == [f"slot{later[0]}", "other"]


# -- the race for the last slot ---------------------------------------------------------------


@pytest.mark.parametrize("free", [1, 2])
async def test_two_people_race_for_one_slot_exactly_one_gets_it(services, clock, free):
    ids = await open_slots(services, count=free)
    other = await open_services(services.settings, migrate=False)  # a second process
    try:
        first = Dialog(services, who="+33611111111", channel="sms")
        second = Dialog(other, who="+33622222222", channel="whatsapp")
        for dialog in (first, second):
            await choose(dialog, await offer(dialog), f"slot{ids[0]}")
        got = await asyncio.gather(first.send("1"), second.send("1"))
    finally:
        await other.close()
    texts = [Dialog.texts(messages)[0] for messages in got]
    winners = [t for t in texts if t.startswith("C'est noté !")]
    losers = [t for t in texts if t.startswith("Désolé, cet horaire vient d'être pris")]
    assert (len(winners), len(losers)) == (1, 1), texts
    if free == 1:
        assert "Aucun horaire n'est libre pour un appel en ce moment." in losers[0]
    else:
        assert "1. mardi 5 mars à 14h30\n2. Aucun de ces horaires" in losers[0]
    async with services.sessions() as session:
        booked = (await session.scalars(select(Slot).where(Slot.status == "booked"))).all()
        contacts = await session.scalar(select(func.count()).select_from(Contact))
    assert [s.id for s in booked] == [ids[0]] and contacts == 2


async def test_conditional_update_has_one_winner_on_two_engines(settings, clock):
    setup = make_engine(settings.database_url)
    async with sessionmaker(setup)() as session, session.begin():
        people = [Contact(created_at=T0), Contact(created_at=T0)]
        session.add_all(people)
        (last,) = await slots.open_slots(session, TUESDAY_2PM, count=1, minutes=30, now=T0)
    await setup.dispose()
    engines = [make_engine(settings.database_url) for _ in people]
    both_looked = asyncio.Barrier(2)
    concurrent = engines[0].dialect.name == "postgresql"  # SQLite serialises at BEGIN

    async def attempt(index: int) -> bool:
        async with sessionmaker(engines[index])() as session, session.begin():
            if concurrent:
                free = await slots.free_slots(session, T0)
                assert [s.id for s in free] == [last.id]
                await asyncio.wait_for(both_looked.wait(), 10)  # both saw it free
            return await slots.book(session, last.id, people[index].id, MOBILE, T0)

    try:
        results = await asyncio.gather(attempt(0), attempt(1))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted(results) == [False, True]
