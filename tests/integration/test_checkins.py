"""Check-ins as dialogs, in French and English, on SQLite and PostgreSQL: the opt-in from the
menu, the question at 10:00 local time (quiet hours, Réunion), the four answers, the reminder
and the "no news" ticket, STOP, and the cadence rules set with `relais checkins`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from bot.app import Services
from bot.conversation import context as base
from bot.conversation.context import Flow, State
from bot.core.types import Outbound, Reply
from bot.domain import checkins as rules
from bot.flows import MACHINE
from bot.storage.models import (
    Checkin,
    Consent,
    Contact,
    Conversation,
    Event,
    Job,
    Outbox,
    Tag,
    Ticket,
)
from tests.helpers.cli import relais
from tests.helpers.dialog import Dialog, choose

T0 = datetime(2030, 3, 4, 14, 0, tzinfo=UTC)  # Monday 4 March 2030, 15:00 in Paris
NEXT_MONDAY_10H = datetime(2030, 3, 11, 9, 0, tzinfo=UTC)  # 10:00 in Paris
QUESTION_FR = (
    "Bonjour, c'est Relais. Comment allez-vous ?\n1. Tout va bien\n2. J'ai besoin d'aide\n"
    "3. Rappelez-moi\n4. Arrêter ces messages"
)
QUESTION_EN = (
    "Hello, this is Relais. How are you?\n1. All is well\n2. I need help\n3. Call me back\n"
    "4. Stop these messages"
)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller

# -- helpers ---------------------------------------------------------------------------------


async def to_menu(dialog: Dialog, language: str = "fr", postcode: str | None = None
                  ) -> list[Outbound]:
    """Onboarding with the ease and news questions skipped."""
    level = await choose(dialog, await dialog.send("bonjour"), language)
    asked = await choose(dialog, level, "skip")
    news = await dialog.send(postcode) if postcode else await choose(dialog, asked, "skip")
    return await choose(dialog, news, "skip")


async def opted_in(dialog: Dialog, language: str = "fr", postcode: str | None = None
                   ) -> list[Outbound]:
    offer = await choose(dialog, await to_menu(dialog, language, postcode), "checkins")
    return await choose(dialog, offer, "yes")


async def tick(services: Services, dialog: Dialog, clock: time_machine.Coordinates,
               when: datetime) -> list[str]:
    """Move to ``when``, run the due jobs, send the outbox; what the person received."""
    clock.move_to(when)
    before = len(dialog.recorder.sent)
    await services.scheduler().run_due()
    await dialog.drain()
    return Dialog.texts(dialog.recorder.sent[before:])


async def contact(services: Services) -> Contact:
    async with services.sessions() as session:
        found = await session.scalar(select(Contact))
        assert found is not None
        return found


async def planned(services: Services) -> list[datetime]:
    async with services.sessions() as session:
        return list((await session.scalars(
            select(Job.run_at).where(Job.kind == rules.SEND_JOB, Job.status == "queued")
        )).all())


async def checkins(services: Services) -> list[Checkin]:
    async with services.sessions() as session:
        return list((await session.scalars(select(Checkin).order_by(Checkin.id))).all())


async def checkin_rows(services: Services) -> int:
    async with services.sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(Outbox).where(Outbox.kind == "checkin")
        ) or 0


async def sent_first(services: Services, dialog: Dialog, clock: time_machine.Coordinates,
                     language: str = "fr") -> None:
    await opted_in(dialog, language)
    got = await tick(services, dialog, clock, NEXT_MONDAY_10H)
    assert got == [QUESTION_FR if language == "fr" else QUESTION_EN]


# -- opting in -------------------------------------------------------------------------------


async def test_opt_in_from_the_menu_records_consent_and_plans_10h_local(services, clock):
    dialog = Dialog(services)
    menu = await to_menu(dialog)
    offer = await choose(dialog, menu, "checkins")
    assert Dialog.texts(offer) == [
        "Nous pouvons vous écrire de temps en temps pour prendre de vos nouvelles. "
        "Le voulez-vous ?\n1. Oui\n2. Non"
    ]
    done = Dialog.texts(await choose(dialog, offer, "yes"))
    assert done[0].startswith("Merci. Nous vous écrirons le lundi 11 mars à 10h00.")
    assert "De quoi avez-vous besoin" in done[-1]
    async with services.sessions() as session:
        consents = (await session.scalars(select(Consent))).all()
    assert [(c.purpose, c.granted, c.at, c.source) for c in consents] == [
        ("checkins", True, T0, "chat:terminal")
    ]
    assert await planned(services) == [NEXT_MONDAY_10H]
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H - timedelta(minutes=1)) == []
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H) == [QUESTION_FR]
    async with services.sessions() as session:
        row = await session.scalar(select(Outbox).where(Outbox.kind == "checkin"))
    assert row is not None and row.priority == 0


async def test_english_opt_in_and_refusal(services, clock):
    dialog = Dialog(services)
    offer = await choose(dialog, await to_menu(dialog, "en"), "checkins")
    assert Dialog.texts(offer)[0].startswith("We can write to you now and then")
    menu = await choose(dialog, offer, "no")
    assert Dialog.texts(menu)[0].startswith("What do you need?")
    assert await planned(services) == []
    done = await choose(dialog, await choose(dialog, menu, "checkins"), "yes")
    assert Dialog.texts(done)[0].startswith(
        "Thank you. We will write to you on Monday 11 March at 10:00."
    )
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H) == [QUESTION_EN]


async def test_a_person_opted_in_is_offered_to_stop(services, clock):
    dialog = Dialog(services)
    menu = await opted_in(dialog)
    asked = await choose(dialog, menu, "checkins")
    assert Dialog.texts(asked) == [
        "Nous vous écrivons de temps en temps pour prendre de vos nouvelles. Voulez-vous "
        "arrêter ?\n1. Oui, arrêter\n2. Non, continuer"
    ]
    kept = await choose(dialog, asked, "keep")
    assert await planned(services) == [NEXT_MONDAY_10H]
    stopped = Dialog.texts(await choose(dialog, await choose(dialog, kept, "checkins"), "stop"))
    assert stopped[0].startswith("C'est noté. Nous arrêtons ces messages.")
    assert await planned(services) == []
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H) == []
    async with services.sessions() as session:
        assert not await rules.has_consent(session, (await contact(services)).id)


# -- when it is sent -------------------------------------------------------------------------


async def test_a_checkin_due_at_21h_waits_for_the_end_of_quiet_hours(services, clock):
    dialog = Dialog(services)
    await opted_in(dialog)
    person = await contact(services)
    nine_pm = datetime(2030, 3, 5, 20, 0, tzinfo=UTC)  # 21:00 in Paris
    async with services.sessions() as session, session.begin():
        await rules.plan(session, person.id, nine_pm)
    assert await planned(services) == [nine_pm]
    assert await tick(services, dialog, clock, nine_pm) == []
    morning = datetime(2030, 3, 6, 8, 0, tzinfo=UTC)  # 09:00 in Paris, quiet hours end
    assert await planned(services) == [morning]
    assert await tick(services, dialog, clock, morning - timedelta(minutes=1)) == []
    assert await tick(services, dialog, clock, morning) == [QUESTION_FR]


async def test_reunion_gets_it_at_10h_reunion_time(services, clock):
    dialog = Dialog(services)
    await opted_in(dialog, postcode="97400")
    assert (await contact(services)).timezone == "Indian/Reunion"
    reunion_10h = datetime(2030, 3, 11, 6, 0, tzinfo=UTC)  # 07:00 in Paris: still quiet there
    assert await planned(services) == [reunion_10h]
    assert await tick(services, dialog, clock, reunion_10h) == [QUESTION_FR]


async def test_a_stopped_person_gets_nothing(services, clock):
    dialog = Dialog(services)
    await opted_in(dialog)
    await dialog.send("STOP")
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H) == []
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(days=7)) == []
    assert await checkin_rows(services) == 0
    assert await checkins(services) == []


async def test_a_person_with_a_mediator_is_not_checked_on_that_time(services, clock):
    dialog = Dialog(services)
    await opted_in(dialog)
    await dialog.send("AIDE")
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H) == []
    assert await planned(services) == [NEXT_MONDAY_10H + timedelta(days=7)]


# -- the answers -----------------------------------------------------------------------------


async def test_answer_all_is_well_is_stored_and_plans_the_next(services, clock):
    dialog = Dialog(services)
    await sent_first(services, dialog, clock)
    clock.move_to(NEXT_MONDAY_10H + timedelta(hours=2))
    got = Dialog.texts(await dialog.send("1"))
    assert got == ["Merci ! Tant mieux. Écrivez-nous quand vous voulez."]
    [checkin] = await checkins(services)
    assert (checkin.answer, checkin.answered_at) == ("ok", NEXT_MONDAY_10H + timedelta(hours=2))
    assert await planned(services) == [NEXT_MONDAY_10H + timedelta(days=7)]
    async with services.sessions() as session:
        answers = (await session.scalars(
            select(Event.value).where(Event.kind == "checkin.answer"))).all()
    assert answers == [{"answer": "ok"}]
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(days=4)) == []
    menu = Dialog.texts(await dialog.send("merci"))  # after an answer: the menu, no "sorry"
    assert menu[0].startswith("De quoi avez-vous besoin")


async def test_answer_i_need_help_opens_a_ticket(services, clock):
    dialog = Dialog(services)
    await sent_first(services, dialog, clock, "en")
    got = Dialog.texts(await dialog.send("2"))
    assert got == ["Thank you. A person from Relais will answer you here."]
    async with services.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket is not None and (ticket.source, ticket.state) == ("checkin", "open")
    assert (await checkins(services))[0].answer == "help"


async def test_answer_call_me_back_offers_the_booking(services, clock, monkeypatch):
    async def offer(ctx: base.Context) -> base.Next:
        ctx.ask(Reply("When can we call you?"))
        return None

    monkeypatch.setitem(MACHINE.flows, "callbacks", Flow("callbacks", {"offer": State(offer)}))
    dialog = Dialog(services)
    await sent_first(services, dialog, clock)
    assert Dialog.texts(await dialog.send("3")) == ["When can we call you?"]
    async with services.sessions() as session:
        conversation = await session.scalar(select(Conversation))
    assert conversation is not None
    assert (conversation.flow, conversation.state) == ("callbacks", "offer")
    assert (await checkins(services))[0].answer == "callback"


async def test_answer_call_me_back_without_booking_asks_a_human(services, clock, monkeypatch):
    monkeypatch.delitem(MACHINE.flows, "callbacks", raising=False)
    dialog = Dialog(services)
    await sent_first(services, dialog, clock)
    assert Dialog.texts(await dialog.send("rappel")) == [
        "Merci. Une personne de Relais va vous répondre ici."
    ]
    async with services.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket is not None and (ticket.source, ticket.topic) == ("checkin", "callback")


async def test_answer_stop_ends_checkins(services, clock):
    dialog = Dialog(services)
    await sent_first(services, dialog, clock)
    assert Dialog.texts(await dialog.send("4")) == ["C'est noté. Nous arrêtons ces messages."]
    assert (await checkins(services))[0].answer == "stop"
    assert await planned(services) == []
    for days in (2, 4, 7, 14):
        assert await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(days=days)) == []
    async with services.sessions() as session:
        latest = await session.scalar(select(Consent).order_by(Consent.id.desc()))
    assert latest is not None and (latest.purpose, latest.granted) == ("checkins", False)
    assert latest.at == NEXT_MONDAY_10H


async def test_misunderstood_answer_asks_again_and_the_question_does_not_expire(
    services, clock
):
    dialog = Dialog(services)
    await sent_first(services, dialog, clock)
    clock.move_to(NEXT_MONDAY_10H + timedelta(hours=30))  # past the 24 h of other questions
    again = Dialog.texts(await dialog.send("euh"))
    assert again[0].startswith("Pardon, je n'ai pas compris")
    assert again[-1].endswith("Comment allez-vous ? Envoyez le numéro.\n1. Tout va bien\n"
                              "2. J'ai besoin d'aide\n3. Rappelez-moi\n4. Arrêter ces messages")
    assert Dialog.texts(await dialog.send("tout va bien"))[0].startswith("Merci ! Tant mieux.")


# -- silence ---------------------------------------------------------------------------------


async def test_silence_brings_one_reminder_then_a_low_priority_ticket(services, clock):
    dialog = Dialog(services)
    await sent_first(services, dialog, clock)
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(hours=47)) == []
    reminder = await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(hours=48))
    assert reminder == [
        "Bonjour, c'est encore Relais. Nous pensons à vous. Comment allez-vous ?\n"
        "1. Tout va bien\n2. J'ai besoin d'aide\n3. Rappelez-moi\n4. Arrêter ces messages"
    ]
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(hours=95)) == []
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 0
    silent = NEXT_MONDAY_10H + timedelta(hours=96)
    assert await tick(services, dialog, clock, silent) == []  # nothing said to the person
    async with services.sessions() as session:
        ticket = await session.scalar(select(Ticket))
    assert ticket is not None
    assert (ticket.source, ticket.priority, ticket.topic) == ("checkin_silence", "low",
                                                              "no news")
    [checkin] = await checkins(services)
    assert checkin.reminded_at == NEXT_MONDAY_10H + timedelta(hours=48)
    assert (checkin.no_news_at, checkin.answer) == (silent, None)
    assert await planned(services) == [NEXT_MONDAY_10H + timedelta(days=11)]
    # Now "1" is the menu's first item again (a person), no longer "all is well".
    got = Dialog.texts(await dialog.send("1"))
    assert got == ["Nous avons votre demande. Une personne va vous répondre ici."]
    [checkin] = await checkins(services)
    assert checkin.answer is None
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "checkin.answer")) == 0


async def test_a_person_who_wrote_meanwhile_is_not_silent(services, clock):
    dialog = Dialog(services)
    await sent_first(services, dialog, clock)
    clock.move_to(NEXT_MONDAY_10H + timedelta(hours=1))
    await dialog.send("menu")
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(hours=48))
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(hours=96)) == []
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 0
    assert await planned(services) == [NEXT_MONDAY_10H + timedelta(days=11)]


async def test_an_answer_after_the_reminder_still_counts(services, clock):
    dialog = Dialog(services)
    await sent_first(services, dialog, clock, "en")
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(hours=48))
    assert Dialog.texts(await dialog.send("1"))[0].startswith("Thank you! Good to hear.")
    assert await tick(services, dialog, clock, NEXT_MONDAY_10H + timedelta(hours=96)) == []
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 0


# -- cadence rules and the command line ------------------------------------------------------


async def tag(services: Services, contact_id: int, *names: str) -> None:
    async with services.sessions() as session, session.begin():
        session.add_all(Tag(contact_id=contact_id, tag=name) for name in names)


async def test_tag_and_person_rules_set_the_cadence(services, clock, no_dotenv):
    url = services.settings.database_url
    dialog = Dialog(services)
    await to_menu(dialog)
    person = await contact(services)
    async with services.sessions() as session:
        assert await rules.cadence_days(session, person.id) == 7  # no rule: weekly
    await tag(services, person.id, "fragiles", "seniors")
    code, out, err = await asyncio.to_thread(
        relais, url, "checkins", "set", "--tag", "fragiles", "--every", "3d")
    assert (code, out, err) == (0, "tag fragiles: check-ins every 3 days\n", "")
    assert await asyncio.to_thread(relais, url, "checkins", "set", "--tag", "seniors",
                                   "--every", "2w") == (0, "tag seniors: check-ins every "
                                                           "14 days\n", "")
    async with services.sessions() as session:
        assert await rules.cadence_days(session, person.id) == 3  # the shortest tag
    offer = await choose(dialog, await dialog.send("menu"), "checkins")
    await choose(dialog, offer, "yes")
    assert await planned(services) == [datetime(2030, 3, 7, 9, 0, tzinfo=UTC)]
    code, out, _err = await asyncio.to_thread(
        relais, url, "checkins", "set", "--address", "terminal:alice", "--every", "1w")
    assert (code, out) == (0, "terminal:alice: check-ins every 7 days\n")
    async with services.sessions() as session:
        assert await rules.cadence_days(session, person.id) == 7  # their own rule wins
    assert await tick(services, dialog, clock, datetime(2030, 3, 7, 9, 0, tzinfo=UTC))
    await dialog.send("1")
    assert await planned(services) == [datetime(2030, 3, 14, 9, 0, tzinfo=UTC)]
    code, out, err = await asyncio.to_thread(relais, url, "checkins", "list", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == [
        {"tag": "fragiles", "address": None, "every_days": 3, "people": 1,
         "created_at": "2030-03-04T14:00:00+00:00"},
        {"tag": "seniors", "address": None, "every_days": 14, "people": 1,
         "created_at": "2030-03-04T14:00:00+00:00"},
        {"tag": None, "address": "terminal:alice", "every_days": 7, "people": 1,
         "created_at": "2030-03-04T14:00:00+00:00"},
    ]
    code, out, _err = await asyncio.to_thread(
        relais, url, "checkins", "set", "--tag", "fragiles", "--every", "5d")
    code, out, err = await asyncio.to_thread(relais, url, "checkins", "list")
    assert code == 0 and "fragiles" in out and "5 d" in out and "every 7 days" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tag", "fragiles", "--every", "3 jours"), "--every: expected"),
        (("--tag", "fragiles", "--every", "0d"), "--every: between 1d"),
        (("--tag", "fragiles", "--every", "3"), "--every: expected"),
        (("--every", "3d"), "either --tag TAG or --address ADDRESS"),
        (("--tag", "x", "--address", "terminal:a", "--every", "3d"), "either --tag"),
        (("--address", "sms:12", "--every", "3d"), "--address:"),
    ],
)
def test_bad_set_arguments_exit_2_with_one_line(tmp_path, no_dotenv, args, message):
    code, out, err = relais(f"sqlite:///{tmp_path}/never-opened.db", "checkins", "set", *args)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "never-opened.db").exists()


def test_unknown_address_exits_1(sqlite_url, no_dotenv):
    code, out, err = relais(sqlite_url, "checkins", "set", "--address", "06 12 34 56 78",
                            "--every", "2w")
    assert (code, out, err) == (1, "", "relais: no contact at sms:+33612345678\n")


def test_parse_every() -> None:
    assert [rules.parse_every(x) for x in ("14d", "2w", " 3D ", "1w")] == [14, 14, 3, 7]
    for bad in ("", "d", "2m", "-1d", "1000d", "53w"):
        with pytest.raises(ValueError):
            rules.parse_every(bad)
