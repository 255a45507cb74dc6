"""Quiet hours for everything a person did not just ask for, on SQLite and PostgreSQL: a
mediator's late reply waits for the morning (and leaves at once if the person writes), keeps
its place in the person's order, ``/urgent`` and ``relais queue reply --now`` send now on an
urgent ticket only, and the outbox applies the rule again when it claims a row (a retry, a
fallback). The rule itself, ``bot.delivery.quiet.release_at``, is checked over times and zones,
daylight-saving nights included."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from bot.app import Services, open_services
from bot.core.channel import Failure, Registry, SendError, SendResult
from bot.core.config import Settings
from bot.core.render import numbered
from bot.core.types import Inbound, Outbound, Reply
from bot.delivery.outbox import OutboxWorker
from bot.delivery.quiet import (
    NEVER_HELD,
    QUIET_REASON,
    RECENT_WRITER,
    is_quiet,
    next_allowed,
    release_at,
)
from bot.delivery.writer import enqueue
from bot.storage.models import Address, Contact, Outbox, Ticket
from tests.helpers.cli import relais
from tests.helpers.db import make_settings
from tests.helpers.factories import MONDAY_10, Room, add, rows

# Monday 4 March 2030 in Paris (UTC+1): 23:30 at night, then 9:00 the next morning.
NIGHT = datetime(2030, 3, 4, 22, 30, tzinfo=UTC)
MORNING = datetime(2030, 3, 5, 8, 0, tzinfo=UTC)
EVENING = datetime(2030, 3, 4, 18, 59, 50, tzinfo=UTC)  # 19:59:50, quiet hours at 20:00


async def person(services: Services, who: str) -> tuple[Contact, Address]:
    async with services.sessions() as session:
        address = await session.scalar(
            select(Address).where(Address.external_id == who))
        assert address is not None
        contact = await session.get(Contact, address.contact_id)
        assert contact is not None
        return contact, address


async def write_row(services: Services, who: str, text: str, kind: str = "reply") -> int:
    """A row for ``who`` as a flow or a job would write it, due now."""
    contact, address = await person(services, who)
    async with services.sessions() as session, session.begin():
        row = enqueue(session, contact, address, Reply(text), now=services.clock.now(),
                      kind=kind)
        await session.flush()
        return row.id


async def make_urgent(services: Services, ticket_id: int) -> None:
    async with services.sessions() as session, session.begin():
        await session.execute(update(Ticket).where(Ticket.id == ticket_id)
                              .values(priority="urgent"))


def sent_to(room: Room, who: str) -> list[str]:
    """What ``who`` received, in the order it was sent."""
    return [m.text for r in room.recorders for m in r.sent if m.to == who]


class QuietRoom(Room):
    """A ``Room`` that tells what each one received since the last look, in the order it
    was sent (held rows leave after later ones)."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.shown: set[int] = set()

    async def received(self) -> dict[str, list[str]]:
        while await self.worker.drain_once():
            pass
        got: dict[str, list[str]] = defaultdict(list)
        for message in (m for r in self.recorders for m in r.sent):
            if message.id not in self.shown:
                self.shown.add(message.id)
                got[message.to].append(numbered(message.text, message.choices))
        return got


async def marie_waits_on_ticket_1(services: Services) -> Room:
    """Marie asked for a person at 10:00 and Alice took her ticket then."""
    room = QuietRoom(services)
    await add(services, "terminal:alice", "Alice Martin")
    await room.send("marie", "AIDE", name="Marie Dupont")
    await room.send("alice", "/prendre 1")
    return room


# -- a mediator's late reply ----------------------------------------------------------------


async def test_a_reply_at_23_30_waits_until_9_and_the_mediator_is_told(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = await marie_waits_on_ticket_1(services)
        clock.move_to(NIGHT)
        got = await room.send("alice", "/repondre 1 Bonjour Marie, je regarde demain")
        assert got == {"alice": ["Message pour #1 envoyé demain à 09:00 (heures calmes)."]}
        clock.move_to(MORNING - timedelta(minutes=1))
        assert await room.received() == {}
        clock.move_to(MORNING)
        assert await room.received() == {"marie": ["Alice : Bonjour Marie, je regarde demain"]}
    (row,) = await rows(services, Outbox, Outbox.kind == "mediator")
    assert (row.status, row.sent_at, row.error_reason) == ("sent", MORNING, None)


async def test_the_held_reply_leaves_at_once_when_the_person_writes_at_23_40(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = await marie_waits_on_ticket_1(services)
        clock.move_to(NIGHT)
        await room.send("alice", "/repondre 1 Bonjour Marie")
        clock.move_to(NIGHT + timedelta(minutes=10))
        got = await room.send("marie", "Vous êtes là ?")
        assert got == {"marie": ["Alice : Bonjour Marie"],
                       "alice": ["#1 Marie: Vous êtes là ?"]}
        # She just wrote: the next answer goes at once too.
        got = await room.send("alice", "/repondre 1 Oui, je suis là")
        assert got == {"marie": ["Alice : Oui, je suis là"], "alice": ["Envoyé à #1."]}
        # An hour and more after her last message, it is quiet hours for her again.
        clock.move_to(NIGHT + timedelta(minutes=71))
        got = await room.send("alice", "Bonne nuit")  # 00:41: this morning at 9
        assert got == {"alice": ["Message pour #1 envoyé aujourd'hui à 09:00 (heures calmes)."]}


async def test_the_held_reply_keeps_its_place_before_a_later_bot_message(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = await marie_waits_on_ticket_1(services)
        before = len(sent_to(room, "marie"))
        clock.move_to(NIGHT)
        await room.send("alice", "/repondre 1 Bonjour Marie")
        clock.move_to(NIGHT + timedelta(minutes=5))  # a job writes to her later that night
        later = await write_row(services, "marie", "Votre demande est bien suivie.")
        assert await room.received() == {}  # it waits behind Alice's
        (row,) = await rows(services, Outbox, Outbox.id == later)
        assert (row.status, row.sent_at) == ("queued", None)
        # The reminder an hour before a callback she booked is never held, nor kept behind.
        clock.move_to(MORNING - timedelta(hours=1))
        await write_row(services, "marie", "Dans une heure, on vous appelle.",
                        kind="reminder.hour")
        assert await room.received() == {"marie": ["Dans une heure, on vous appelle."]}
        clock.move_to(MORNING)
        await room.received()
    assert sent_to(room, "marie")[before:] == [
        "Dans une heure, on vous appelle.", "Alice : Bonjour Marie",
        "Votre demande est bien suivie."]


# -- /urgent and --now ----------------------------------------------------------------------


async def test_urgent_sends_now_with_what_waited_before_it(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = QuietRoom(services)
        await add(services, "terminal:alice", "Alice Martin")
        await room.send("marie", "AIDE", name="Marie Dupont")
        await make_urgent(services, 1)
        clock.move_to(NIGHT)
        got = await room.send("alice", "/prendre 1")
        assert "marie" not in got  # "Alice answers you" waits too
        got = await room.send("alice", "/repondre 1 Bonjour Marie")
        assert got == {"alice": ["Message pour #1 envoyé demain à 09:00 (heures calmes). "
                                 "Pour un cas urgent : /urgent 1 TEXTE"]}
        got = await room.send("alice", "/urgent 1 Êtes-vous en sécurité ?")
        assert got == {"alice": ["Envoyé à #1."], "marie": [
            "Alice, de Relais, vous répond. Écrivez votre message ici.",
            "Alice : Bonjour Marie", "Alice : Êtes-vous en sécurité ?"]}
    marie, _address = await person(services, "marie")
    sent = await rows(services, Outbox, Outbox.contact_id == marie.id)
    assert [(r.kind, r.sent_at) for r in sorted(sent, key=lambda r: r.id)][-3:] == [
        ("mediator.intro.urgent", NIGHT), ("mediator.urgent", NIGHT),
        ("mediator.urgent", NIGHT)]
    async with services.sessions() as session:
        from bot.domain.tickets import queue

        ticket = await queue.get_ticket(session, 1)
        history = await queue.history(session, ticket)
    assert [e.text for e in history if e.kind == "out"] == [
        "Alice : Bonjour Marie", "Alice : Êtes-vous en sécurité ?"]


async def test_urgent_on_a_ticket_that_is_not_urgent_is_refused(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = QuietRoom(services)
        await add(services, "terminal:alice", "Alice Martin")
        await room.send("marie", "AIDE", name="Marie Dupont")
        clock.move_to(NIGHT)
        got = await room.send("alice", "/urgent 1 Bonjour Marie")
        assert got == {"alice": [
            "#1 n'est pas urgente : /urgent est réservé aux demandes urgentes. Rien n'a été "
            "envoyé. /repondre 1 TEXTE l'envoie à la fin de ses heures calmes."]}
        got = await room.send("alice", "/aide")
        assert "/urgent 12 texte : envoyer tout de suite" in got["alice"][-1]
    assert [r.kind for r in await rows(services, Outbox)
            if r.kind.startswith("mediator")] == []
    (ticket,) = await rows(services, Ticket)
    assert (ticket.state, ticket.mediator_id) == ("open", None)  # not taken either


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    yield


def test_cli_reply_waits_and_now_is_for_urgent_tickets_only(db_url, in_tmp):
    async def setup() -> None:
        services = await open_services(make_settings(db_url), migrate=False)
        try:
            await add(services, "sms:+33611111111", "Alice Martin")
            for i, who in enumerate(("marie", "paul")):
                await services.engine.handle(Inbound(
                    "terminal", f"terminal:{who}", "AIDE", provider_id=f"c{i}",
                    profile_name=who.title()))
            await make_urgent(services, 2)
        finally:
            await services.close()

    async def kinds(contact_name: str) -> list[tuple[str, datetime]]:
        services = await open_services(make_settings(db_url), migrate=False)
        try:
            async with services.sessions() as session:
                found = await session.scalars(
                    select(Outbox).join(Contact, Contact.id == Outbox.contact_id)
                    .where(Contact.name == contact_name).order_by(Outbox.id))
                return [(r.kind, r.next_attempt_at) for r in found
                        if r.kind.startswith("mediator")]
        finally:
            await services.close()

    with time_machine.travel(MONDAY_10, tick=False) as clock:
        asyncio.run(setup())
        clock.move_to(NIGHT)
        alice = ("--as", "sms:+33611111111")
        code, out, err = relais(db_url, "queue", "reply", "1", "Bonjour", "--now", *alice)
        assert (code, out) == (1, "")
        assert err == ("relais: ticket 1 is not urgent: --now is only for urgent tickets "
                       "(without it, the reply waits for the end of the person's quiet "
                       "hours)\n")
        assert asyncio.run(kinds("Marie")) == []
        assert relais(db_url, "queue", "reply", "1", "Bonjour", *alice) == (
            0, "took #1; reply to #1 held until 2030-03-05T09:00:00+01:00 (the person's "
               "quiet hours)\n", "")
        assert asyncio.run(kinds("Marie")) == [("mediator.intro", MORNING),
                                               ("mediator", MORNING)]
        assert relais(db_url, "queue", "reply", "2", "Vous êtes en sécurité ?", "--now",
                      *alice) == (0, "took #2; reply to #2 queued to go now (urgent)\n", "")
        assert asyncio.run(kinds("Paul")) == [("mediator.intro.urgent", NIGHT),
                                              ("mediator.urgent", NIGHT)]


# -- the claim applies the rule again ---------------------------------------------------------


@dataclass
class Failing:
    """A channel whose first call to each recipient fails with ``error``, ``then`` run
    first (to move the clock while the provider call lasts)."""

    name: str
    error: SendError
    then: object = None
    rate: float | None = None
    rate_by_segments: bool = False
    call_timeout: float = 5.0
    failed: set[str] = field(default_factory=set)
    sent: list[Outbound] = field(default_factory=list)

    async def send(self, message: Outbound) -> SendResult:
        if message.to not in self.failed:
            self.failed.add(message.to)
            if callable(self.then):
                self.then()
            raise self.error
        self.sent.append(message)
        return SendResult(provider_id=f"p-{message.id}")


def worker(services: Services, *channels: object, config: Settings | None = None
           ) -> OutboxWorker:
    registry = Registry()
    for channel in channels:
        registry.add(channel)  # type: ignore[arg-type]
    running = replace(services, settings=config) if config is not None else services
    return OutboxWorker(services.sessions, registry, services.clock, worker_id="w",
                        settings=running.settings, follow_up=running.follow_up)


async def drain(outbox: OutboxWorker) -> None:
    while await outbox.drain_once():
        pass


async def seed(services: Services, name: str, to: str, channel: str = "sms",
               last_inbound: datetime | None = None, staff: bool = False
               ) -> tuple[Contact, Address]:
    if staff:
        await add(services, f"{channel}:{to}", name)
        contact, address = await person(services, to)
        return contact, address
    now = services.clock.now()
    async with services.sessions() as session, session.begin():
        contact = Contact(name=name, language="fr", created_at=now,
                          last_inbound_at=last_inbound)
        session.add(contact)
        await session.flush()
        address = Address(contact_id=contact.id, channel=channel, external_id=to,
                          created_at=now, landline=False)
        session.add(address)
    return contact, address


async def test_a_retry_that_falls_in_quiet_hours_waits_for_their_end(services):
    with time_machine.travel(EVENING, tick=False) as clock:
        marie = await seed(services, "Marie", "+33612000001")
        paul = await seed(services, "Paul", "+33612000002",
                          last_inbound=EVENING - timedelta(minutes=1))
        alice = await seed(services, "Alice", "+33612000003", staff=True)
        async with services.sessions() as session, session.begin():
            ids = [enqueue(session, c, a, Reply(text), now=EVENING, kind=kind)
                   for (c, a), text, kind in ((marie, "Alice : à demain", "mediator"),
                                              (paul, "Merci, bonne soirée", "reply"),
                                              (alice, "#1 Paul: merci", "staff"))]
            await session.flush()
            marie_row, paul_row, alice_row = (row.id for row in ids)
        sms = Failing("sms", SendError(Failure.RETRYABLE, "HTTP 503", code="503"))
        outbox = worker(services, sms)
        await outbox.drain_once()  # every call fails: retried within 2 seconds
        assert sms.sent == []
        clock.move_to(EVENING + timedelta(seconds=12))  # 20:00:02: quiet hours
        await drain(outbox)
        # Paul wrote a minute ago and Alice is staff: theirs go. Marie's waits.
        assert sorted(m.id for m in sms.sent) == [paul_row, alice_row]
        (row,) = await rows(services, Outbox, Outbox.id == marie_row)
        assert (row.status, row.attempts, row.next_attempt_at, row.error_reason) == (
            "queued", 1, MORNING, QUIET_REASON)
        clock.move_to(MORNING)
        await drain(outbox)
    (row,) = await rows(services, Outbox, Outbox.id == marie_row)
    assert (row.status, row.sent_at, row.error_reason) == ("sent", MORNING, None)


async def test_a_fallback_sms_written_in_quiet_hours_waits_for_their_end(services):
    with time_machine.travel(EVENING, tick=False) as clock:
        contact, address = await seed(services, "Marie", "+33612000001", channel="whatsapp",
                                      last_inbound=EVENING - timedelta(hours=3))
        async with services.sessions() as session, session.begin():
            first = enqueue(session, contact, address, Reply("Alice : à demain"),
                            now=EVENING, kind="mediator")
            await session.flush()
            first_id = first.id
        whatsapp = Failing("whatsapp", SendError(Failure.UNDELIVERABLE, "not on WhatsApp",
                                                 code="131026"),
                           then=lambda: clock.move_to(EVENING + timedelta(seconds=20)))
        sms = Failing("sms", SendError(Failure.RETRYABLE, "unused"))
        sms.failed.add("+33612000001")  # no failure on SMS
        config = services.settings.model_copy(update={
            "twilio_account_sid": "AC00", "twilio_auth_token": "secret",
            "twilio_sms_from": "+33700000000"})
        outbox = worker(services, whatsapp, sms, config=config)
        await drain(outbox)  # WhatsApp fails at 20:00:10; the SMS copy is not sent
        assert sms.sent == []
        (copy,) = await rows(services, Outbox, Outbox.fallback_of == first_id)
        assert (copy.channel, copy.kind, copy.status, copy.next_attempt_at,
                copy.error_reason) == ("sms", "mediator", "queued", MORNING, QUIET_REASON)
        clock.move_to(MORNING)
        await drain(outbox)
    assert [m.text for m in sms.sent] == ["Alice : à demain"]


# -- the rule itself ----------------------------------------------------------------------------


ZONES = ("Europe/Paris", "Indian/Reunion", "America/Martinique", "Pacific/Noumea",
         "America/Cayenne")
HELD_KINDS = ("mediator", "mediator.intro", "reply", "checkin", "broadcast", "template",
              "reminder")
DEFAULT = Settings.model_construct()


def test_release_at_on_daylight_saving_nights_and_in_reunion():
    def at(kind: str, tz: str, moment: datetime, last: datetime | None = None) -> datetime:
        return release_at(kind, tz, last, moment, DEFAULT)

    spring = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)  # 23:30 in Paris, clocks go forward
    assert at("mediator", "Europe/Paris", spring) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    autumn = datetime(2026, 10, 24, 21, 30, tzinfo=UTC)  # 23:30 in Paris, clocks go back
    assert at("mediator", "Europe/Paris", autumn) == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)
    assert at("mediator", "Indian/Reunion", spring) == datetime(2026, 3, 29, 5, 0,
                                                               tzinfo=UTC)
    assert at("mediator", "Indian/Reunion", datetime(2026, 3, 29, 5, 0, tzinfo=UTC)) == (
        datetime(2026, 3, 29, 5, 0, tzinfo=UTC))
    # A person who wrote in the last hour gets an answer; a broadcast waits even then.
    assert at("mediator", "Europe/Paris", spring, spring - RECENT_WRITER) == spring
    assert at("broadcast", "Europe/Paris", spring, spring) > spring
    # Never held: staff, what a mediator sends as urgent, the kinds of NEVER_HELD.
    for kind in ("staff", "staff.notice", "mediator.urgent", "mediator.intro.urgent",
                 *NEVER_HELD):
        assert at(kind, "Europe/Paris", spring) == spring
    assert release_at("reply", "Europe/Paris", None, spring, DEFAULT, to_staff=True) == spring
    # Quiet hours ending inside the spring gap end when the clocks jump (01:00 UTC).
    gap = Settings.model_construct(quiet_hours="01:00-02:30")
    assert next_allowed(gap.quiet, "Europe/Paris",
                        datetime(2026, 3, 29, 0, 45, tzinfo=UTC)) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC)


quiet_ranges = st.one_of(
    st.just("20:00-09:00"),
    st.builds("{:02d}:{:02d}-{:02d}:{:02d}".format, st.integers(0, 23), st.sampled_from(
        (0, 15, 30, 45)), st.integers(0, 23), st.sampled_from((0, 15, 30, 45))),
)
moments = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2032, 12, 31),
                       timezones=st.just(UTC))


@settings(max_examples=400, deadline=None)
@given(moment=moments, tz=st.sampled_from(ZONES), quiet=quiet_ranges,
       kind=st.sampled_from(HELD_KINDS),
       since=st.one_of(st.none(), st.timedeltas(RECENT_WRITER + timedelta(seconds=1),
                                                timedelta(days=30))))
@example(moment=datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC), tz="Europe/Paris",
         quiet="20:00-09:00", kind="mediator", since=None)
@example(moment=datetime(2026, 10, 25, 0, 30, tzinfo=UTC), tz="Europe/Paris",
         quiet="20:00-02:30", kind="mediator", since=None)
@example(moment=datetime(2026, 10, 25, 1, 10, tzinfo=UTC), tz="Europe/Paris",
         quiet="20:00-02:30", kind="mediator", since=None)
@example(moment=datetime(2026, 3, 29, 0, 45, tzinfo=UTC), tz="Europe/Paris",
         quiet="01:00-02:30", kind="reply", since=None)
@example(moment=datetime(2026, 3, 28, 20, 0, tzinfo=UTC), tz="Indian/Reunion",
         quiet="20:00-09:00", kind="checkin", since=timedelta(hours=2))
def test_a_held_row_leaves_at_the_first_moment_outside_quiet_hours(
    moment: datetime, tz: str, quiet: str, kind: str, since: timedelta | None
) -> None:
    config = Settings.model_construct(quiet_hours=quiet)
    last = None if since is None else moment - since
    when = release_at(kind, tz, last, moment, config)
    assert when.tzinfo is not None and when >= moment
    assert not is_quiet(config.quiet, tz, when)
    if not is_quiet(config.quiet, tz, moment):
        assert when == moment
    else:  # the first moment out: quiet all the way until then
        assert when - moment <= timedelta(hours=25)
        for step in range(8):
            probe = moment + (when - moment) * step / 8
            assert is_quiet(config.quiet, tz, probe), probe
        assert is_quiet(config.quiet, tz, when - timedelta(seconds=1))
    # A person who wrote in the last hour is answered now (news still waits).
    recent = release_at(kind, tz, moment - RECENT_WRITER, moment, config)
    assert recent == (when if kind == "broadcast" else moment)
    # Staff and urgent sends are never held.
    assert release_at(kind, tz, last, moment, config, to_staff=True) == moment
    assert release_at(kind + ".urgent", tz, last, moment, config) == moment
