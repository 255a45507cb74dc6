"""The people's data rights, on SQLite and PostgreSQL: `relais export` / `relais forget`,
OUBLIER by message with its confirmation (French and English), the suppression list, and
the retention job (time moved with time_machine)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
import time_machine
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import Services
from bot.conversation import keywords as kw
from bot.core.config import Settings
from bot.core.types import Inbound, Media
from bot.domain import rights
from bot.domain.staff import add_staff, find_contact
from bot.flows import forget
from bot.flows.global_keywords import ACTIONS
from bot.storage import suppression
from bot.storage.models import (
    PERSONAL_DATA,
    Address,
    Base,
    Checkin,
    CheckinRule,
    Contact,
    Event,
    Job,
    Message,
    Outbox,
    Slot,
    Suppression,
    Tag,
    Ticket,
    TicketNote,
)
from tests.helpers.cli import relais
from tests.helpers.dialog import Dialog, choose

pytestmark = pytest.mark.usefixtures("no_dotenv")  # the CLI reads no .env

T = TypeVar("T")
PHONE = "+33612345678"
ADDRESS = f"sms:{PHONE}"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 11:00 in Paris


@pytest.fixture(autouse=True)
def oublier_wired(monkeypatch: pytest.MonkeyPatch) -> None:
    """OUBLIER runs the confirmation flow (global_keywords wires it the same way)."""
    monkeypatch.setitem(ACTIONS, kw.FORGET, forget.on_forget)


async def everything_about(session: AsyncSession, contact_id: int) -> dict[str, int]:
    """Rows of every personal-data table that still point at this person."""
    found = {}
    for model, column in PERSONAL_DATA:
        found[model.__tablename__] = await session.scalar(
            select(func.count()).select_from(model).where(getattr(model, column) == contact_id)
        )
    return {table: n for table, n in found.items() if n}


async def all_text(session: AsyncSession) -> str:
    """Every value of every table, as text: what a leak would show."""
    chunks = []
    for table in Base.metadata.sorted_tables:
        for row in await session.execute(select(table)):
            chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


async def onboard(dialog: Dialog, greeting: str, language: str) -> list[Any]:
    offered = await dialog.send(greeting)
    level = await choose(dialog, offered, language)
    await choose(dialog, level, "little")
    news = await dialog.send("59000")
    return await choose(dialog, news, "yes")


async def a_person_with_everything(services: Services) -> int:
    """Awa writes in by SMS, answers onboarding, asks for a human, sends a photo; staff add a
    note, a callback booking, a check-in and a tag."""
    with time_machine.travel(T0, tick=False):
        dialog = Dialog(services, who=PHONE, channel="sms")
        await onboard(dialog, "Bonjour, je suis Awa Diallo", "fr")
        await dialog.send("AIDE")
        await dialog.send("mon dossier CAF est bloqué",
                          media=(Media("image/jpeg", "provider-ref-1"),))
    now = T0 + timedelta(minutes=5)
    async with services.sessions() as session, session.begin():
        contact = await find_contact(session, ADDRESS)
        assert contact is not None
        contact.name = "Awa Diallo"
        mediator = await add_staff(session, "sms:+33780000001", name="Léa", role="mediator",
                                   now=now, default_timezone="Europe/Paris")
        staff, _ = mediator
        ticket = await session.scalar(select(Ticket).where(Ticket.contact_id == contact.id))
        session.add(TicketNote(ticket_id=ticket.id, staff_id=staff.id,
                               body="Awa attend sa carte CAF", created_at=now))
        # the mediator's copy of what Awa wrote (another person's outbox row)
        session.add(Outbox(
            contact_id=staff.contact_id, channel="sms", to="+33780000001", kind="relay",
            body="#1 Awa Diallo: mon dossier CAF est bloqué", language="fr", segments=1,
            status="sent", attempts=1, max_attempts=8, next_attempt_at=now,
            ticket_id=ticket.id, created_at=now, updated_at=now, was_in_doubt=False,
            priority=0, held=False,
        ))
        soon = services.clock.now() + timedelta(days=2)  # still to come when forgotten
        session.add(Slot(start_at=soon, minutes=20, status="booked",
                         contact_id=contact.id, phone=PHONE, booked_at=now, created_at=now))
        session.add(Checkin(contact_id=contact.id, sent_at=now))
        session.add(CheckinRule(contact_id=contact.id, every_days=14, created_at=now))
        session.add(Tag(contact_id=contact.id, tag="atelier"))
        return contact.id


async def test_export_shows_everything_then_forget_leaves_only_anonymous_events(
    services: Services, db_url: str
):
    contact_id = await a_person_with_everything(services)
    code, out, err = await asyncio.to_thread(relais, db_url, "export", "06 12 34 56 78")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["address"] == ADDRESS
    assert data["contact"]["name"] == "Awa Diallo"
    assert data["contact"]["postcode"] == "59000"
    assert data["contact"]["addresses"] == [ADDRESS]
    assert data["contact"]["created_at"] == T0.isoformat()
    assert [a["address"] for a in data["addresses"]] == [ADDRESS]
    assert data["tags"] == ["atelier"]
    assert [(c["purpose"], c["granted"], c["source"]) for c in data["consents"]] == [
        ("news", True, "chat:sms")
    ]
    bodies = [m["body"] for m in data["messages"] if m["direction"] == "in"]
    assert bodies[0] == "Bonjour, je suis Awa Diallo"
    assert "mon dossier CAF est bloqué" in bodies
    assert all(m["address"] == ADDRESS for m in data["messages"])
    assert [m["content_type"] for m in data["media"]] == ["image/jpeg"]
    assert any("Relais" in (o["body"] or "") for o in data["outbox"])
    (ticket,) = data["tickets"]
    assert [n["body"] for n in ticket["notes"]] == ["Awa attend sa carte CAF"]
    (booking,) = data["bookings"]
    assert (booking["status"], booking["phone"]) == ("booked", PHONE)
    assert len(data["checkins"]) == len(data["checkin_rules"]) == 1
    assert data["conversation"][0]["flow"] == "ticket"
    assert data["staff"] == []
    for when in (data["exported_at"], data["messages"][0]["created_at"]):
        assert datetime.fromisoformat(when).tzinfo is not None

    async with services.sessions() as session:
        events_before = await session.scalar(select(func.count()).select_from(Event))
    code, out, err = await asyncio.to_thread(relais, db_url, "forget", ADDRESS, "--yes")
    assert (code, err) == (0, "")
    assert out.startswith(f"forgot Awa Diallo ({ADDRESS}): erased ")
    assert "1 tickets" in out and "1 bookings" in out

    assert await asyncio.to_thread(relais, db_url, "export", ADDRESS) == (
        1, "", f"relais: no contact at {ADDRESS}\n"
    )
    async with services.sessions() as session:
        assert await everything_about(session, contact_id) == {}
        assert await session.scalar(select(func.count()).select_from(Event)) == (
            events_before + 1
        )
        kinds = set(await session.scalars(select(Event.kind)))
        assert {"inbound", "contact.new", "ticket.opened", "forget"} <= kinds
        leftovers = await all_text(session)
        slot = await session.scalar(select(Slot))
        relay = await session.scalar(select(Outbox).where(Outbox.kind == "relay"))
        suppressed = await session.scalar(select(func.count()).select_from(Suppression))
    for private in ("Awa", "Diallo", "612345678", "dossier CAF", "provider-ref-1"):
        assert private not in leftovers
    assert (slot.status, slot.contact_id, slot.phone) == ("open", None, None)  # freed
    assert relay is None  # the mediator's copy of her words is deleted with her
    assert suppressed == 0  # she never said STOP


async def test_forgotten_after_stop_stays_unreachable(services: Services, db_url: str, tmp_path):
    dialog = Dialog(services, who=PHONE, channel="sms")
    await dialog.send("bonjour")
    assert "START" in Dialog.texts(await dialog.send("STOP"))[0]
    code, out, _err = await asyncio.to_thread(relais, db_url, "forget", "0612345678")
    assert code == 0
    assert out.splitlines()[1] == (
        "1 address(es) kept on the suppression list (they had said STOP): imports and "
        "broadcasts will skip them"
    )
    async with services.sessions() as session:
        assert await suppression.is_suppressed(session, ADDRESS)
        assert await suppression.is_suppressed(session, f"whatsapp:{PHONE}")  # same number
        assert not await suppression.is_suppressed(session, "sms:+33612345679")
        hashes = list(await session.scalars(select(Suppression.address_hash)))
    assert len(hashes) == 1 and PHONE not in hashes[0] and len(hashes[0]) == 64

    contacts_file = tmp_path / "contacts.csv"
    contacts_file.write_text("téléphone;nom\n06 12 34 56 78;Awa\n06 12 34 56 79;Binta\n",
                             encoding="utf-8")
    code, out, err = await asyncio.to_thread(
        relais, db_url, "contacts", "import", str(contacts_file)
    )
    assert code == 0
    assert "1 created" in out and "1 skipped (forgotten after STOP)" in out
    assert err == ("relais: contacts.csv line 2: skipped: this person asked to be forgotten "
                   "after saying STOP\n")
    async with services.sessions() as session:
        assert await find_contact(session, ADDRESS) is None
        assert await find_contact(session, "0612345679") is not None


def test_forget_asks_nothing_when_not_a_terminal_and_unknown_is_exit_1(db_url: str):
    assert relais(db_url, "forget", "0699999999") == (
        1, "", "relais: no contact at sms:+33699999999\n"
    )
    assert relais(db_url, "export", "pas un numéro")[0] == 2


# -- OUBLIER by message ----------------------------------------------------------------------


def sms_code(received: Any) -> str:
    """The code an OUBLIER question by SMS asks to send back for a yes."""
    found = re.search(r"(?:répondez|reply) (\d{4})\.", "\n".join(Dialog.texts(received)))
    assert found is not None, Dialog.texts(received)
    return found.group(1)


async def test_oublier_in_french_erases_after_yes_and_says_so(services: Services):
    with time_machine.travel(T0, tick=False) as traveller:
        dialog = Dialog(services, who=PHONE, channel="sms")
        await onboard(dialog, "bonjour", "fr")
        await dialog.send("mon numéro est le 06 12 34 56 78")
        asked = await dialog.send("Oublier")
        code = sms_code(asked)
        assert Dialog.texts(asked) == [
            "Voulez-vous que nous effacions toutes vos données ? Vos messages, demandes et "
            f"rendez-vous seront supprimés.\nPour tout effacer, répondez {code}.\n"
            "Pour garder vos données, répondez NON."
        ]
        done = await dialog.send(code)
        assert Dialog.texts(done) == [
            "C'est fait : vos données sont effacées. Nous ne pouvons pas effacer les copies "
            "gardées par votre opérateur, votre application de messages ou sur les téléphones "
            "de l'équipe.\n\nVous pouvez nous écrire à nouveau quand vous voulez."
        ]
        async with services.sessions() as session:
            contact = await find_contact(session, ADDRESS)
            assert contact is not None  # a shell until the last message has left
            left = await everything_about(session, contact.id)
            assert (contact.name, contact.postcode, contact.level) == (None, None, None)
            messages = list(await session.scalars(select(Message.body)))
        assert left == {"contacts": 1, "addresses": 1, "messages": 1, "conversations": 1,
                        "outbox": 1}
        assert messages == [None]
        traveller.shift(timedelta(minutes=3))
        assert await services.scheduler().run_due() == 1
    async with services.sessions() as session:
        assert await find_contact(session, ADDRESS) is None
        assert await session.scalar(select(func.count()).select_from(Contact)) == 0
        forgets = list(await session.scalars(select(Event.value).where(Event.kind == "forget")))
    assert forgets == [{"source": "chat"}]


async def test_forget_in_english_no_keeps_everything(services: Services):
    dialog = Dialog(services, who=PHONE, channel="sms")
    await onboard(dialog, "hello", "en")
    asked = await dialog.send("FORGET")
    assert Dialog.texts(asked) == [
        "Do you want us to erase all your data? Your messages, requests and appointments "
        f"will be deleted.\nTo erase everything, reply {sms_code(asked)}.\n"
        "To keep your data, reply NO."
    ]
    again = await dialog.send("yes")  # by SMS only the code erases: a forged "yes" does not
    assert Dialog.texts(again)[0].startswith("Sorry, I did not understand.")
    kept = Dialog.texts(await dialog.send("no"))
    assert kept[0].startswith("All right, we keep your data.\n\nWhat do you need?")
    async with services.sessions() as session:
        contact = await find_contact(session, ADDRESS)
        assert contact is not None and contact.language == "en"
        assert await session.scalar(
            select(func.count()).select_from(Message).where(Message.body.is_not(None))
        ) >= 6


async def test_forget_in_english_yes(services: Services):
    dialog = Dialog(services, who=PHONE, channel="sms")
    await onboard(dialog, "hello", "en")
    done = await dialog.send(sms_code(await dialog.send("erase")))
    assert Dialog.texts(done) == [
        "It is done: your data is erased. We cannot erase the copies kept by your phone "
        "company, your messaging app or on our team's phones.\n\nYou can write to us again "
        "at any time."
    ]


async def test_the_shell_waits_for_its_last_message_then_at_most_a_day(services: Services):
    with time_machine.travel(T0, tick=False) as traveller:
        dialog = Dialog(services, who=PHONE, channel="sms")
        await onboard(dialog, "bonjour", "fr")
        asked = await dialog.send("OUBLIER")
        await services.engine.handle(  # the code, but the outbox is not drained: queued
            Inbound("sms", ADDRESS, sms_code(asked), provider_id="yes-1")
        )
        traveller.shift(timedelta(minutes=3))
        await services.scheduler().run_due()
        async with services.sessions() as session:
            assert await find_contact(session, ADDRESS) is not None
            assert await session.scalar(
                select(func.count()).select_from(Job).where(
                    Job.kind == rights.FINISH_JOB, Job.status == "queued")
            ) == 1
        traveller.shift(timedelta(days=1))
        while await services.scheduler().run_due():
            pass
    async with services.sessions() as session:
        assert await find_contact(session, ADDRESS) is None


async def test_a_person_who_writes_again_before_the_shell_goes_is_kept(services: Services):
    with time_machine.travel(T0, tick=False) as traveller:
        dialog = Dialog(services, who=PHONE, channel="sms")
        await onboard(dialog, "bonjour", "fr")
        await dialog.send(sms_code(await dialog.send("OUBLIER")))
        traveller.shift(timedelta(minutes=1))
        await dialog.send("merci")
        traveller.shift(timedelta(minutes=5))
        await services.scheduler().run_due()
    async with services.sessions() as session:
        contact = await find_contact(session, ADDRESS)
        assert contact is not None
        bodies = list(await session.scalars(
            select(Message.body).where(Message.body.is_not(None))
        ))
    assert bodies == ["merci"]


# -- retention -------------------------------------------------------------------------------


def settings_with(services: Services, **values: Any) -> Settings:
    return services.settings.model_copy(update=values)


async def test_retention_purges_old_bodies_and_keeps_the_counts(services: Services):
    with time_machine.travel(T0, tick=False) as traveller:
        old = Dialog(services, who=PHONE, channel="sms")
        await onboard(old, "bonjour", "fr")
        await old.send(f"ma carte {'4970101234567893'}")
        thirty_days = replace(services, settings=settings_with(services, retention_days=30))
        async with services.sessions() as session, session.begin():
            await rights.plan_retention(session, thirty_days.settings, services.clock.now())
        traveller.shift(timedelta(days=31))
        recent = Dialog(services, who="+33612345679", channel="sms")
        await recent.send("bonjour")
        async with services.sessions() as session:
            messages_before = await session.scalar(select(func.count()).select_from(Message))
            outbox_before = await session.scalar(select(func.count()).select_from(Outbox))
            events_before = await session.scalar(select(func.count()).select_from(Event))
        # the pass planned for 03-03, run by a scheduler whose settings keep 30 days
        assert await thirty_days.scheduler().run_due() == 1
    async with services.sessions() as session:
        rows = (await session.execute(
            select(Address.external_id, Message.body)
            .join(Address, Address.id == Message.address_id).order_by(Message.id)
        )).all()
        outbox = (await session.execute(select(Outbox.to, Outbox.body))).all()
        assert await session.scalar(select(func.count()).select_from(Message)) == (
            messages_before
        )
        assert await session.scalar(select(func.count()).select_from(Outbox)) == outbox_before
        events = await session.scalar(select(func.count()).select_from(Event))
        (retention,) = await session.scalars(select(Event.value).where(Event.kind == "retention"))
        next_pass = await session.scalar(
            select(Job.run_at).where(Job.kind == rights.RETENTION_JOB, Job.status == "queued")
        )
    assert {body for number, body in rows if number == PHONE} == {None}
    assert [body for number, body in rows if number != PHONE] == ["bonjour"]
    assert {body for to, body in outbox if to == PHONE} == {None}
    assert all(body for to, body in outbox if to != PHONE)
    assert events == events_before + 1
    assert retention["messages"] == sum(1 for number, _ in rows if number == PHONE)
    assert next_pass == datetime(2026, 4, 3, 2, 0, tzinfo=UTC)  # tomorrow 04:00 in Paris


async def test_people_inactive_for_two_years_are_erased(services: Services):
    with time_machine.travel(T0, tick=False) as traveller:
        await Dialog(services, who=PHONE, channel="sms").send("bonjour")
        await Dialog(services, who="+33612345679", channel="sms").send("bonjour")
        async with services.sessions() as session, session.begin():
            await add_staff(session, "sms:+33780000001", name="Léa", role="mediator",
                            now=services.clock.now(), default_timezone="Europe/Paris")
        traveller.shift(timedelta(days=400))
        await Dialog(services, who="+33612345679", channel="sms").send("toujours là")
        traveller.shift(timedelta(days=400))
        async with services.sessions() as session, session.begin():
            result = await rights.apply_retention(session, services.clock.now(), 365)
    assert result.people == 1
    async with services.sessions() as session:
        assert await find_contact(session, ADDRESS) is None
        assert await find_contact(session, "+33612345679") is not None
        assert await find_contact(session, "sms:+33780000001") is not None  # staff stay
        sources = list(await session.scalars(select(Event.value).where(Event.kind == "forget")))
    assert sources == [{"source": "retention"}]


def test_the_next_retention_pass_is_at_4_in_the_organisations_time_zone() -> None:
    at = rights.next_retention_at(datetime(2026, 1, 10, 12, 0, tzinfo=UTC), "Indian/Reunion")
    assert at == datetime(2026, 1, 11, 0, 0, tzinfo=UTC)
    at = rights.next_retention_at(datetime(2026, 1, 10, 2, 0, tzinfo=UTC), "Europe/Paris")
    assert at == datetime(2026, 1, 10, 3, 0, tzinfo=UTC)


async def test_oublier_after_stop_still_erases_and_keeps_the_address_suppressed(
    services: Services,
):
    """Erasure is a right: a person who said STOP can still send OUBLIER, get its question
    and have their data erased; they stay unreachable afterwards."""
    with time_machine.travel(T0, tick=False) as traveller:
        dialog = Dialog(services, who="bea")
        await onboard(dialog, "bonjour", "fr")
        await dialog.send("mon adresse est 12 rue des Lilas")
        assert Dialog.texts(await dialog.send("STOP"))  # the STOP confirmation
        assert await dialog.send("Bonjour ?") == []  # after STOP, nothing is answered
        asked = await dialog.send("OUBLIER")
        assert Dialog.texts(asked)[0].startswith("Voulez-vous que nous effacions")
        done = await choose(dialog, asked, "yes")
        assert Dialog.texts(done)[0].startswith("C'est fait : vos données sont effacées.")
        traveller.shift(timedelta(minutes=3))
        while await services.scheduler().run_due():
            pass
    async with services.sessions() as session:
        assert await find_contact(session, "terminal:bea") is None
        bodies = list(await session.scalars(select(Message.body)))
        assert not [b for b in bodies if b and "Lilas" in b]
        assert await session.scalar(select(func.count()).select_from(Suppression)) == 1
