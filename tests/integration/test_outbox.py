"""The outbox: workers racing for rows, crashes around the provider call, the retry policy
and failure classes, the shared rate, priorities, and provider status callbacks.

Everything here runs on SQLite and on PostgreSQL (``db_url`` is parametrized over both).
Time is moved with time-machine (the Clock reads ``datetime.now``); the event loop's own
clock is monotonic and is left alone, so nothing here waits for real seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Services
from bot.core.channel import Failure, Registry, SendError, SendResult
from bot.core.config import load_settings
from bot.core.types import PRIORITY_BULK, PRIORITY_REPLY, Outbound, Reply
from bot.delivery.outbox import ACTIVE, HORIZON, LEASE, OutboxWorker
from bot.delivery.status import apply_status
from bot.delivery.writer import enqueue
from bot.storage.db import make_engine, sessionmaker
from bot.storage.models import Address, Contact, Event, Outbox, RateLimit

T0 = datetime(2030, 3, 4, 10, 0, 0, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]


# -- factories -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    contact: Contact
    address: Address

    @property
    def to(self) -> str:
        return self.address.external_id


async def make_people(sessions: Sessions, count: int, now: datetime,
                      channel: str = "sms") -> list[Person]:
    async with sessions() as session, session.begin():
        contacts = [Contact(name=f"p{i}", language="fr", created_at=now) for i in range(count)]
        session.add_all(contacts)
        await session.flush()
        addresses = [
            Address(contact_id=c.id, channel=channel, external_id=f"+3361{i:07d}",
                    created_at=now, landline=False)
            for i, c in enumerate(contacts)
        ]
        session.add_all(addresses)
    return [Person(c, a) for c, a in zip(contacts, addresses, strict=True)]


async def queue(sessions: Sessions, plan: Iterable[tuple[Person, int]], now: datetime,
                **options: object) -> list[int]:
    """One outbox row per (person, priority), in this order, in one transaction."""
    async with sessions() as session, session.begin():
        rows = [
            enqueue(session, p.contact, p.address, Reply(f"message {i}"), now=now,
                    priority=priority, **options)  # type: ignore[arg-type]
            for i, (p, priority) in enumerate(plan)
        ]
    return [row.id for row in rows]


async def rows_by_id(sessions: Sessions, ids: Iterable[int] | None = None) -> dict[int, Outbox]:
    async with sessions() as session:
        query = select(Outbox)
        if ids is not None:
            query = query.where(Outbox.id.in_(list(ids)))
        return {row.id: row for row in (await session.scalars(query)).all()}


async def one_row(sessions: Sessions, row_id: int) -> Outbox:
    return (await rows_by_id(sessions, [row_id]))[row_id]


async def event_count(sessions: Sessions, kind: str) -> int:
    async with sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == kind)
        ) or 0


def make_worker(sessions: Sessions, *channels: object, worker_id: str = "w",
                batch_size: int = 100) -> OutboxWorker:
    registry = Registry()
    for channel in channels:
        registry.add(channel)  # type: ignore[arg-type]
    return OutboxWorker(sessions, registry, worker_id=worker_id, batch_size=batch_size,
                        settings=load_settings(env_file=None))


async def drain(worker: OutboxWorker, guard: int = 100) -> int:
    """drain_once until it finds nothing to do; returns the rows handled."""
    total = 0
    for _ in range(guard):
        handled = await worker.drain_once()
        if not handled:
            return total
        total += handled
    raise AssertionError("the worker never ran out of rows")


# -- channels --------------------------------------------------------------------------------

_seq = itertools.count()


@dataclass
class Call:
    seq: int
    worker: str
    row_id: int
    to: str
    priority: int
    at: datetime


@dataclass
class Recorder:
    """Sends into a log shared by every worker, numbering each call as it starts."""

    log: list[Call]
    worker: str = "w"
    name: str = "sms"
    rate: float | None = None
    rate_by_segments: bool = False
    call_timeout: float = 5.0
    jitter: random.Random | None = None

    async def send(self, message: Outbound) -> SendResult:
        self.log.append(Call(next(_seq), self.worker, message.id, message.to,
                             message.priority, datetime.now(UTC)))
        if self.jitter is not None:  # let other workers' sends interleave with this one
            for _ in range(self.jitter.randrange(3)):
                await asyncio.sleep(0)
        return SendResult(provider_id=f"{self.worker}-{message.id}")


@dataclass
class Scripted:
    """Each call to a recipient takes the next scripted outcome (a SendError raises);
    once the script is used up, sends succeed."""

    script: dict[str, list[SendError]] = field(default_factory=dict)
    name: str = "sms"
    rate: float | None = None
    rate_by_segments: bool = False
    call_timeout: float = 5.0
    calls: list[Call] = field(default_factory=list)

    async def send(self, message: Outbound) -> SendResult:
        self.calls.append(Call(next(_seq), "scripted", message.id, message.to,
                               message.priority, datetime.now(UTC)))
        outcomes = self.script.get(message.to)
        if outcomes:
            raise outcomes.pop(0)
        return SendResult(provider_id=f"p-{message.id}-{len(self.calls)}")

    def calls_to(self, to: str) -> list[Call]:
        return [c for c in self.calls if c.to == to]


@dataclass
class Hanging:
    """A provider call that never returns: the worker is 'killed' while inside it."""

    expected: int
    name: str = "sms"
    rate: float | None = None
    rate_by_segments: bool = False
    call_timeout: float = 30.0
    entered: list[int] = field(default_factory=list)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, message: Outbound) -> SendResult:
        self.entered.append(message.id)
        if len(self.entered) >= self.expected:
            self.all_in.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
async def sessions(services: Services) -> AsyncIterator[Sessions]:
    yield services.sessions


@pytest.fixture
def frozen() -> Iterable[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def past_lease(channel_timeout: float) -> timedelta:
    return LEASE + timedelta(seconds=channel_timeout + HORIZON + 1)


# -- 1. racing workers -----------------------------------------------------------------------


async def _drain_until_empty(worker: OutboxWorker, sessions: Sessions) -> None:
    before, idle = None, 0
    while idle < 2000:
        if await worker.drain_once():
            idle = 0
            continue
        async with sessions() as session:
            left = await session.scalar(
                select(func.count()).select_from(Outbox).where(Outbox.status.in_(ACTIVE))
            )
        if not left:
            return
        idle = 0 if left != before else idle + 1
        before = left
        await asyncio.sleep(0.001)  # others hold the heads of the remaining queues
    raise AssertionError("no worker made progress")


async def test_racing_workers_send_each_row_once_in_order_per_person(db_url: str) -> None:
    """Several workers, each with its own engine (as separate processes would have), race
    for 2,000 rows of 200 people: each row is sent once, in id order within a priority."""
    workers_count = 4 if db_url.startswith("postgresql") else 2
    engines = [make_engine(db_url) for _ in range(workers_count)]
    try:
        makers = [sessionmaker(engine) for engine in engines]
        now = datetime.now(UTC)
        people = await make_people(makers[0], 200, now)
        rng = random.Random(20300304)
        plan = [(p, rng.choice((PRIORITY_REPLY, PRIORITY_BULK)))
                for _ in range(10) for p in people]  # one person's rows spread over the ids
        ids = await queue(makers[0], plan, now)
        assert len(ids) == 2000

        log: list[Call] = []
        workers = [
            make_worker(makers[i], Recorder(log, worker=f"w{i}", jitter=random.Random(i)),
                        worker_id=f"w{i}", batch_size=40)
            for i in range(workers_count)
        ]
        await asyncio.gather(*(_drain_until_empty(w, m)
                               for w, m in zip(workers, makers, strict=True)))

        sends = Counter(call.row_id for call in log)
        assert set(sends) == set(ids)
        assert [row_id for row_id, n in sends.items() if n != 1] == []
        assert {call.worker for call in log} == {f"w{i}" for i in range(workers_count)}

        rows = await rows_by_id(makers[0])
        assert Counter(row.status for row in rows.values()) == {"sent": 2000}
        by_row = {call.row_id: call for call in log}
        assert all(rows[i].provider_id == f"{by_row[i].worker}-{i}" for i in ids)
        assert all(rows[i].attempts == 1 and not rows[i].was_in_doubt for i in ids)

        order: dict[tuple[str, int], list[int]] = defaultdict(list)
        for call in sorted(log, key=lambda c: c.seq):
            order[(call.to, call.priority)].append(call.row_id)
        out_of_order = {key: got for key, got in order.items() if got != sorted(got)}
        assert out_of_order == {}
        assert await event_count(makers[0], "outbox.sent") == 2000
    finally:
        for engine in engines:
            await engine.dispose()


# -- 2 and 3. crashes ------------------------------------------------------------------------


async def test_worker_killed_before_the_call_leaves_nothing_in_doubt(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    people = await make_people(sessions, 3, T0)
    ids = await queue(sessions, [(p, PRIORITY_REPLY) for p in people * 2], T0)
    dead_log: list[Call] = []
    dead = make_worker(sessions, Recorder(dead_log, worker="dead"), worker_id="dead")
    claimed = await dead.claim()  # ... and the process dies before any provider call
    assert sorted(c.row.id for c in claimed) == ids[:3]  # each person's first row

    log: list[Call] = []
    frozen.shift(LEASE / 2)
    early = make_worker(sessions, Recorder(log, worker="early"), worker_id="early")
    assert await early.drain_once() == 0  # leased rows, and the rows queued behind them
    assert log == []

    frozen.shift(past_lease(5.0))
    alive = make_worker(sessions, Recorder(log, worker="alive"), worker_id="alive")
    assert await drain(alive) == 6
    assert dead_log == []
    assert Counter(call.row_id for call in log) == dict.fromkeys(ids, 1)
    rows = await rows_by_id(sessions, ids)
    assert {(r.status, r.was_in_doubt, r.attempts) for r in rows.values()} == {
        ("sent", False, 1)
    }
    assert await event_count(sessions, "outbox.in_doubt") == 0


async def _crash_inside_the_call(sessions: Sessions, expected: int, worker_id: str) -> Hanging:
    hanging = Hanging(expected)
    worker = make_worker(sessions, hanging, worker_id=worker_id)
    task = asyncio.create_task(worker.drain_once())
    await asyncio.wait_for(hanging.all_in.wait(), 10)  # guards a hang, asserts nothing
    task.cancel()  # the crash
    with pytest.raises(asyncio.CancelledError):
        await task
    return hanging


async def test_worker_killed_during_the_call_resends_once_and_counts_it(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    people = await make_people(sessions, 3, T0)
    ids = await queue(sessions, [(p, PRIORITY_REPLY) for p in people], T0)
    behind = await queue(sessions, [(people[0], PRIORITY_REPLY)], T0)

    hanging = await _crash_inside_the_call(sessions, 3, "crashed")
    assert sorted(hanging.entered) == ids
    rows = await rows_by_id(sessions, ids)
    assert all(r.status == "sending" and r.call_started_at is not None for r in rows.values())

    frozen.shift(past_lease(hanging.call_timeout))
    log: list[Call] = []
    second = make_worker(sessions, Recorder(log, worker="second"), worker_id="second")
    assert await drain(second) == 4
    assert Counter(call.row_id for call in log) == dict.fromkeys(ids + behind, 1)
    rows = await rows_by_id(sessions, ids + behind)
    assert {i: (r.status, r.was_in_doubt) for i, r in rows.items()} == {
        **dict.fromkeys(ids, ("sent", True)), behind[0]: ("sent", False)
    }
    assert await event_count(sessions, "outbox.in_doubt") == 3
    # The row queued behind the one in doubt still went out after it.
    assert [c.row_id for c in log if c.to == people[0].to] == [ids[0], behind[0]]


async def test_a_row_in_doubt_twice_fails_and_is_not_sent_a_third_time(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    (person,) = await make_people(sessions, 1, T0)
    (row_id,) = await queue(sessions, [(person, PRIORITY_REPLY)], T0)

    first = await _crash_inside_the_call(sessions, 1, "first")
    frozen.shift(past_lease(first.call_timeout))
    second = await _crash_inside_the_call(sessions, 1, "second")  # the one resend, cut again
    assert first.entered == second.entered == [row_id]

    frozen.shift(past_lease(second.call_timeout))
    log: list[Call] = []
    third = make_worker(sessions, Recorder(log, worker="third"), worker_id="third")
    assert await drain(third) == 0
    frozen.shift(timedelta(hours=1))
    assert await drain(make_worker(sessions, Recorder(log), worker_id="later")) == 0
    assert log == []
    row = await one_row(sessions, row_id)
    assert (row.status, row.was_in_doubt, row.lease_owner) == ("failed", True, None)
    assert "in doubt" in (row.error_reason or "")
    assert await event_count(sessions, "outbox.in_doubt") == 1


# -- 4. retry policy and failure classes ----------------------------------------------------


def err(failure: Failure, reason: str = "nope", **kwargs: object) -> SendError:
    return SendError(failure, reason, **kwargs)  # type: ignore[arg-type]


async def test_retryable_then_success_waits_for_the_backoff(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    (person,) = await make_people(sessions, 1, T0)
    (row_id,) = await queue(sessions, [(person, PRIORITY_REPLY)], T0)
    channel = Scripted({person.to: [err(Failure.RETRYABLE, "HTTP 503", code=503)]})
    worker = make_worker(sessions, channel)

    assert await worker.drain_once() == 1
    row = await one_row(sessions, row_id)
    assert (row.status, row.attempts, row.error_code, row.error_reason) == (
        "queued", 1, "503", "HTTP 503"
    )
    assert T0 < row.next_attempt_at <= T0 + timedelta(seconds=2)  # attempt 1: within 2 s
    assert await worker.drain_once() == 0  # not before the backoff
    assert len(channel.calls) == 1

    frozen.move_to(row.next_attempt_at)
    assert await worker.drain_once() == 1
    assert await worker.drain_once() == 0
    row = await one_row(sessions, row_id)
    assert (row.status, row.attempts, row.error_reason) == ("sent", 2, None)
    assert [c.row_id for c in channel.calls] == [row_id, row_id]


async def test_retryable_every_time_fails_after_max_attempts_with_the_reason(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    (person,) = await make_people(sessions, 1, T0)
    (row_id,) = await queue(sessions, [(person, PRIORITY_REPLY)], T0, max_attempts=4)
    channel = Scripted({person.to: [err(Failure.RETRYABLE, "HTTP 502", code=502)] * 10})
    worker = make_worker(sessions, channel)
    for _ in range(8):
        await worker.drain_once()
        frozen.shift(timedelta(minutes=20))  # past any backoff (capped at 15 min)
    row = await one_row(sessions, row_id)
    assert (row.status, row.attempts, row.error_code, row.error_reason) == (
        "failed", 4, "502", "HTTP 502"
    )
    assert len(channel.calls) == 4
    assert row.lease_owner is None


async def test_max_attempts_one_fails_at_once(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    (person,) = await make_people(sessions, 1, T0)
    (row_id,) = await queue(sessions, [(person, PRIORITY_REPLY)], T0, max_attempts=1)
    channel = Scripted({person.to: [err(Failure.RETRYABLE, "timeout")]})
    worker = make_worker(sessions, channel)
    await worker.drain_once()
    frozen.shift(timedelta(hours=1))
    assert await worker.drain_once() == 0
    row = await one_row(sessions, row_id)
    assert (row.status, row.attempts, row.error_reason) == ("failed", 1, "timeout")
    assert len(channel.calls) == 1


@pytest.mark.parametrize("rate", [None, 20.0])
async def test_channel_throttled_sends_nothing_on_it_until_retry_after(
    sessions: Sessions, frozen: time_machine.Traveller, rate: float | None
) -> None:
    alice, bob = await make_people(sessions, 2, T0)
    (first,) = await queue(sessions, [(alice, PRIORITY_REPLY)], T0)
    channel = Scripted(
        {alice.to: [err(Failure.THROTTLED, "429", code=429, retry_after=30, scope="channel")]},
        rate=rate,
    )
    worker = make_worker(sessions, channel)
    assert await worker.drain_once() == 1
    async with sessions() as session:
        limit = await session.get(RateLimit, "sms")
    assert limit is not None and limit.paused_until == T0 + timedelta(seconds=30)
    row = await one_row(sessions, first)
    assert (row.status, row.attempts, row.next_attempt_at) == (
        "queued", 0, T0 + timedelta(seconds=30)
    )

    (later,) = await queue(sessions, [(bob, PRIORITY_REPLY)], T0)
    frozen.shift(timedelta(seconds=10))
    other = make_worker(sessions, Scripted(rate=rate), worker_id="other")
    assert await worker.drain_once() == 0  # claims nothing: no churn while paused
    assert await other.drain_once() == 0  # the pause is shared by every process
    assert len(channel.calls) == 1
    assert (await one_row(sessions, later)).attempts == 0

    frozen.shift(timedelta(seconds=21))  # T0 + 31 s
    with time_machine.travel(T0 + timedelta(seconds=31), tick=True):
        await drain(worker)  # with a rate, the second row waits for its slot: let time run
    assert [c.row_id for c in channel.calls] == [first, first, later]
    assert all(c.at >= T0 + timedelta(seconds=30) for c in channel.calls[1:])
    rows = await rows_by_id(sessions, [first, later])
    assert {r.status for r in rows.values()} == {"sent"}


async def test_rows_another_worker_already_claimed_wait_for_the_pause_too(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    people = await make_people(sessions, 5, T0)
    ids = await queue(sessions, [(p, PRIORITY_REPLY) for p in people], T0)
    throttled = Scripted(
        {people[0].to: [err(Failure.THROTTLED, "429", retry_after=30, scope="channel")]},
        rate=10.0,
    )
    first = make_worker(sessions, throttled, worker_id="first", batch_size=1)
    log: list[Call] = []
    second = make_worker(sessions, Recorder(log, rate=10.0), worker_id="second")
    mine = await first.claim()
    theirs = await second.claim()  # slots at +0.1 s .. +0.4 s
    assert [c.row.id for c in mine + theirs] == ids
    await first._send_channel("sms", mine)  # the rest of first.drain_once(): throttled
    frozen.shift(timedelta(seconds=1))
    await second._send_channel("sms", theirs)  # ... the rest of second.drain_once()
    assert log == []
    rows = await rows_by_id(sessions, ids)
    assert {(r.status, r.attempts, r.call_started_at) for r in rows.values()} == {
        ("queued", 0, None)
    }
    assert {r.next_attempt_at for r in rows.values()} == {T0 + timedelta(seconds=30)}


async def test_person_throttled_pauses_only_that_address(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    alice, bob = await make_people(sessions, 2, T0)
    a1, b1, a2 = await queue(
        sessions, [(alice, PRIORITY_REPLY), (bob, PRIORITY_REPLY), (alice, PRIORITY_REPLY)], T0
    )
    channel = Scripted(
        {alice.to: [err(Failure.THROTTLED, "pair rate", code=131056, retry_after=30,
                        scope="person")]}
    )
    worker = make_worker(sessions, channel)
    await drain(worker)
    async with sessions() as session:
        address = await session.get(Address, alice.address.id)
        assert address is not None and address.paused_until == T0 + timedelta(seconds=30)
        bob_address = await session.get(Address, bob.address.id)
        assert bob_address is not None and bob_address.paused_until is None
        limit = await session.get(RateLimit, "sms")
        assert limit is None or limit.paused_until is None
    assert (await one_row(sessions, b1)).status == "sent"

    # Alice's bulk is not queued behind her reply, but her address is paused all the same.
    b2, a_bulk = await queue(sessions, [(bob, PRIORITY_REPLY), (alice, PRIORITY_BULK)], T0)
    frozen.shift(timedelta(seconds=10))
    await drain(worker)
    assert [c.row_id for c in channel.calls] == [a1, b1, b2]

    frozen.shift(timedelta(seconds=21))
    await drain(worker)
    assert [c.row_id for c in channel.calls] == [a1, b1, b2, a1, a_bulk, a2]
    rows = await rows_by_id(sessions, [a1, a2, b1, b2, a_bulk])
    assert {r.status for r in rows.values()} == {"sent"}


async def test_stopped_blocks_the_address_and_cancels_what_was_queued(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    alice, bob = await make_people(sessions, 2, T0)
    a1, a2, b1, a3 = await queue(
        sessions,
        [(alice, PRIORITY_REPLY), (alice, PRIORITY_REPLY), (bob, PRIORITY_REPLY),
         (alice, PRIORITY_REPLY)],
        T0,
    )
    channel = Scripted({alice.to: [err(Failure.STOPPED, "unsubscribed", code=21610)]})
    worker = make_worker(sessions, channel)
    await drain(worker)
    frozen.shift(timedelta(hours=1))
    await drain(worker)
    assert [c.row_id for c in channel.calls] == [a1, b1]
    rows = await rows_by_id(sessions, [a1, a2, a3, b1])
    assert {i: r.status for i, r in rows.items()} == {
        a1: "failed", a2: "cancelled", a3: "cancelled", b1: "sent"
    }
    assert rows[a1].error_code == "21610"
    async with sessions() as session:
        address = await session.get(Address, alice.address.id)
    assert address is not None
    assert (address.blocked_at, address.blocked_reason, address.landline) == (
        T0, "unsubscribed", False
    )


@pytest.mark.parametrize(("code", "landline"), [("21614", True), ("21211", False)])
async def test_undeliverable_flags_landlines(
    sessions: Sessions, frozen: time_machine.Traveller, code: str, landline: bool
) -> None:
    """The adapter says the number is a landline (``SendError.landline``, from its
    provider's codes: Twilio 21614 here); the outbox flags the address."""
    (person,) = await make_people(sessions, 1, T0)
    (row_id,) = await queue(sessions, [(person, PRIORITY_REPLY)], T0)
    channel = Scripted({person.to: [err(Failure.UNDELIVERABLE, "cannot receive", code=code,
                                        landline=landline)]})
    await drain(make_worker(sessions, channel))
    row = await one_row(sessions, row_id)
    assert (row.status, row.error_code) == ("failed", code)
    async with sessions() as session:
        address = await session.get(Address, person.address.id)
    assert address is not None and address.landline is landline
    assert address.blocked_at == T0


async def test_auth_disables_the_channel_in_this_worker_and_requeues_the_row(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    alice, bob = await make_people(sessions, 2, T0)
    a1, b1 = await queue(sessions, [(alice, PRIORITY_REPLY), (bob, PRIORITY_REPLY)], T0)
    channel = Scripted({alice.to: [err(Failure.AUTH, "HTTP 401", code=20003)]})
    worker = make_worker(sessions, channel)
    assert await worker.drain_once() == 2  # both calls were already on their way
    assert "sms" not in worker.registry
    row = await one_row(sessions, a1)
    assert (row.status, row.attempts, row.lease_owner, row.error_code) == (
        "queued", 0, None, "20003"
    )
    assert (await one_row(sessions, b1)).status == "sent"
    assert await worker.drain_once() == 0  # no channel left here: nothing claimed

    log: list[Call] = []
    fixed = make_worker(sessions, Recorder(log), worker_id="fixed")  # another process
    assert await drain(fixed) == 1
    assert [c.row_id for c in log] == [a1]
    assert (await one_row(sessions, a1)).status == "sent"


# -- 5. the shared rate ---------------------------------------------------------------------


def _at_most_per_second(slots: list[datetime], rate: int) -> bool:
    """True when no window [t, t + 1 s) holds more than ``rate`` slots."""
    ordered = sorted(slots)
    return all(ordered[i + rate] - ordered[i] >= timedelta(seconds=1)
               for i in range(len(ordered) - rate))


async def test_rate_is_shared_by_workers_of_different_processes(
    db_url: str, frozen: time_machine.Traveller
) -> None:
    engines = [make_engine(db_url) for _ in range(2)]
    try:
        makers = [sessionmaker(engine) for engine in engines]
        people = await make_people(makers[0], 400, T0)
        await queue(makers[0], [(p, PRIORITY_BULK) for p in people], T0)
        w1, w2 = (
            make_worker(m, Recorder([], worker=f"w{i}", rate=50.0), worker_id=f"w{i}")
            for i, m in enumerate(makers, 1)
        )

        async def tat() -> datetime:
            async with makers[1]() as session:
                limit = await session.get(RateLimit, "sms")
            assert limit is not None
            return limit.tat

        # One after the other: the second process sees the first one's reservation.
        first = await w1.claim()
        assert [c.send_at for c in first] == [
            T0 + timedelta(milliseconds=20 * i) for i in range(50)
        ]
        assert await tat() == T0 + timedelta(seconds=1)
        assert await w2.claim() == []
        frozen.shift(timedelta(milliseconds=500))
        second = await w2.claim()
        assert [c.send_at for c in second] == [
            T0 + timedelta(seconds=1, milliseconds=20 * i) for i in range(25)
        ]
        assert await tat() == T0 + timedelta(milliseconds=1500)

        # Both at once, again and again: never more than 50 slots in any second.
        slots = [c.send_at for c in first + second]
        owners = Counter({"w1": len(first), "w2": len(second)})
        for step in range(12):
            frozen.shift(timedelta(milliseconds=250))
            pair = (w1, w2) if step % 2 else (w2, w1)
            results = await asyncio.gather(*(w.claim() for w in pair))
            for w, claimed in zip(pair, results, strict=True):
                owners[w.worker_id] += len(claimed)
                slots += [c.send_at for c in claimed]
        assert len(slots) == len(set(slots))
        assert _at_most_per_second(slots, 50)
        now = T0 + timedelta(milliseconds=500 + 12 * 250)
        assert len(slots) <= 50 * (now + timedelta(seconds=HORIZON) - T0).total_seconds()
        assert max(slots) < now + timedelta(seconds=HORIZON)
        assert await tat() == max(slots) + timedelta(milliseconds=20)
        assert sum(owners.values()) == len(slots)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_rate_by_segments_reserves_one_slot_per_segment(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    people = await make_people(sessions, 20, T0)
    ids = await queue(sessions, [(p, PRIORITY_BULK) for p in people], T0)
    async with sessions() as session, session.begin():
        await session.execute(update(Outbox).where(Outbox.id.in_(ids[::2])).values(segments=3))
    worker = make_worker(sessions, Recorder([], rate=10.0, rate_by_segments=True))
    claimed = await worker.claim()
    gaps = [b.send_at - a.send_at for a, b in itertools.pairwise(claimed)]
    assert gaps == [timedelta(seconds=0.3 if c.row.segments == 3 else 0.1)
                    for c in claimed[:-1]]
    units: list[datetime] = []
    for c in claimed:
        units += [c.send_at + timedelta(seconds=k / 10) for k in range(c.row.segments)]
    assert _at_most_per_second(units, 10)


# -- 6. priorities ---------------------------------------------------------------------------


async def test_a_reply_is_claimed_before_bulk_queued_earlier(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    alice, bob = await make_people(sessions, 2, T0)
    bulk, reply = await queue(sessions, [(alice, PRIORITY_BULK), (bob, PRIORITY_REPLY)], T0)
    worker = make_worker(sessions, Recorder([]), batch_size=1)
    assert [c.row.id for c in await worker.claim()] == [reply]
    assert [c.row.id for c in await worker.claim()] == [bulk]


async def test_a_reply_overtakes_the_same_persons_bulk_but_bulk_keeps_its_order(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    (carol,) = await make_people(sessions, 1, T0)
    bulk1, bulk2, reply = await queue(
        sessions, [(carol, PRIORITY_BULK), (carol, PRIORITY_BULK), (carol, PRIORITY_REPLY)], T0
    )
    log: list[Call] = []
    worker = make_worker(sessions, Recorder(log))
    assert [c.row.id for c in await worker.claim()] == [reply, bulk1]  # not bulk2 yet
    frozen.shift(past_lease(5.0))
    await drain(make_worker(sessions, Recorder(log), worker_id="next"))
    assert [c.row_id for c in sorted(log, key=lambda c: c.seq)] == [reply, bulk1, bulk2]


# -- 7. provider status callbacks -----------------------------------------------------------


async def test_apply_status_only_moves_forward(
    sessions: Sessions, frozen: time_machine.Traveller
) -> None:
    alice, bob = await make_people(sessions, 2, T0)
    a1, b1 = await queue(sessions, [(alice, PRIORITY_REPLY), (bob, PRIORITY_REPLY)], T0)
    await drain(make_worker(sessions, Recorder([], worker="rec")))

    async def status(provider_id: str, value: str, channel: str = "sms") -> bool:
        async with sessions() as session, session.begin():
            return await apply_status(session, channel, provider_id, value,
                                      T0 + timedelta(minutes=1))

    assert await status(f"rec-{a1}", "delivered") is True
    assert await status(f"rec-{a1}", "sent") is True  # late and out of order: ignored
    assert await status(f"rec-{b1}", "read") is True  # read without delivered first
    assert await status(f"rec-{b1}", "delivered") is True  # stays read
    assert await status("no-such-id", "delivered") is False
    assert await status(f"rec-{a1}", "read", channel="whatsapp") is False
    rows = await rows_by_id(sessions, [a1, b1])
    assert (rows[a1].status, rows[b1].status) == ("delivered", "read")
    assert await event_count(sessions, "outbox.delivered") == 1
    assert await event_count(sessions, "outbox.read") == 1


from sqlalchemy import insert as _insert  # noqa: E402

from bot.delivery.outbox import claim_channel as _claim_channel  # noqa: E402
from tests.helpers.dialog import RecordingChannel as _Recording  # noqa: E402

# -- bulk takes at most half of a channel's budget while replies wait --------------------

BULK_NOW = datetime(2030, 3, 5, 10, 0, tzinfo=UTC)


async def _queue_rows(services: Services, priority: int, count: int, first: int) -> None:
    async with services.sessions() as session, session.begin():
        for index in range(first, first + count):
            contact = Contact(created_at=BULK_NOW, language="fr")
            session.add(contact)
            await session.flush()
            address = Address(contact_id=contact.id, channel="sms", landline=False,
                              external_id=f"+336000{index:05d}", created_at=BULK_NOW)
            session.add(address)
            await session.flush()
            await session.execute(_insert(Outbox), [{
                "contact_id": contact.id, "address_id": address.id, "channel": "sms",
                "to": address.external_id, "priority": priority, "kind": "reply",
                "body": "x", "language": "fr", "segments": 1, "status": "queued",
                "attempts": 0, "max_attempts": 8, "next_attempt_at": BULK_NOW, "held": False,
                "was_in_doubt": False, "created_at": BULK_NOW, "updated_at": BULK_NOW}])


async def test_bulk_takes_at_most_half_the_rate_while_replies_wait(services: Services
                                                                  ) -> None:
    channel = _Recording(name="sms", rate=10.0)
    await _queue_rows(services, 1, 30, 0)  # a broadcast, queued first
    await _queue_rows(services, 0, 4, 100)  # then four people write in
    async with services.sessions() as session, session.begin():
        claimed = await _claim_channel(session, channel, "w", BULK_NOW, 100,
                                       settings=services.settings)
    priorities = [c.row.priority for c in claimed]
    assert priorities == [0, 0, 0, 0, 1, 1, 1, 1, 1]  # 10 a second: 4 replies, 5 bulk
    async with services.sessions() as session, session.begin():
        later = await _claim_channel(session, channel, "w",
                                    datetime(2030, 3, 5, 10, 0, 5, tzinfo=UTC), 100,
                                    settings=services.settings)
    assert [c.row.priority for c in later] == [1] * 10  # no reply waits: the whole rate
