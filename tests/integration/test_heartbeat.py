"""Worker heartbeats: a row cut inside a provider call by a crash comes back as soon as the
process that held it is known dead (its beat stopped, or its pid on this machine is gone),
not when its lease expires; a lease whose owner never beat keeps the rule of its expiry.

Runs on SQLite and PostgreSQL (``db_url``). Time is the workers' injected clock, moved by
hand; nothing waits for real seconds.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import Services
from bot.core.channel import Registry, SendResult
from bot.core.clock import Clock
from bot.core.config import load_settings
from bot.core.types import Outbound, Reply
from bot.delivery.heartbeat import DEAD_AFTER, Heartbeat, dead_workers, purge_dead
from bot.delivery.outbox import LEASE, RECLAIM_EVERY, OutboxWorker
from bot.delivery.writer import enqueue
from bot.storage.models import Address, Contact, Event, Outbox, WorkerBeat
from tests.helpers.waiting import eventually

T0 = datetime(2030, 3, 4, 10, 0, 0, tzinfo=UTC)  # a Monday, 11:00 in Paris: no quiet hours
Sessions = async_sessionmaker[AsyncSession]
HOST = socket.gethostname()
GONE_PID = 2**22 + 12345  # above Linux's pid_max: no process has it
ELSEWHERE = "another-machine:4242:a1b2c3"  # a worker of another machine: only its beat counts


class Hand(Clock):
    """The injected clock, moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at

    def move(self, delta: timedelta) -> None:
        self.at += delta


@dataclass
class Received:
    """The provider: every call it receives."""

    name: str = "sms"
    rate: float | None = None
    rate_by_segments: bool = False
    call_timeout: float = 5.0
    calls: list[int] = field(default_factory=list)

    async def send(self, message: Outbound) -> SendResult:
        self.calls.append(message.id)
        return SendResult(provider_id=f"p-{message.id}-{len(self.calls)}")


@dataclass
class Hanging:
    """A provider call that never returns: the worker's process dies inside it."""

    name: str = "sms"
    rate: float | None = None
    rate_by_segments: bool = False
    call_timeout: float = 30.0
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, message: Outbound) -> SendResult:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
async def sessions(services: Services) -> AsyncIterator[Sessions]:
    yield services.sessions


def worker(sessions: Sessions, channel: object, clock: Clock, worker_id: str) -> OutboxWorker:
    registry = Registry()
    registry.add(channel)  # type: ignore[arg-type]
    return OutboxWorker(sessions, registry, clock, worker_id=worker_id,
                        settings=load_settings(env_file=None))


async def one_message(sessions: Sessions, now: datetime) -> int:
    async with sessions() as session, session.begin():
        contact = Contact(name="Awa", language="fr", created_at=now)
        session.add(contact)
        await session.flush()
        address = Address(contact_id=contact.id, channel="sms", external_id="+33612345678",
                          created_at=now, landline=False)
        session.add(address)
        await session.flush()
        row = enqueue(session, contact, address, Reply("Votre rappel est confirmé."), now=now)
    return row.id


async def crash_inside_the_call(sessions: Sessions, clock: Clock, worker_id: str, *,
                                beats: bool) -> None:
    """``worker_id`` (with a heartbeat row when ``beats``) claims the row, starts the provider
    call, and its process dies there."""
    if beats:
        await Heartbeat(sessions, clock, worker_id, "outbox").beat()
    hanging = Hanging()
    doomed = worker(sessions, hanging, clock, worker_id)
    task = asyncio.create_task(doomed.drain_once())
    await asyncio.wait_for(hanging.entered.wait(), 10)  # guards a hang, asserts nothing
    task.cancel()  # kill -9: nothing more of this worker runs
    with pytest.raises(asyncio.CancelledError):
        await task


async def row(sessions: Sessions, row_id: int) -> Outbox:
    async with sessions() as session:
        found = await session.get(Outbox, row_id)
        assert found is not None
        return found


async def in_doubt_events(sessions: Sessions) -> int:
    async with sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "outbox.in_doubt")
        ) or 0


async def beat_ids(sessions: Sessions) -> set[str]:
    async with sessions() as session:
        return set((await session.scalars(select(WorkerBeat.id))).all())


async def test_a_call_cut_by_a_worker_whose_beat_stopped_is_resent_once_at_once(
    sessions: Sessions,
) -> None:
    clock = Hand(T0)
    row_id = await one_message(sessions, T0)
    await crash_inside_the_call(sessions, clock, ELSEWHERE, beats=True)
    cut = await row(sessions, row_id)
    assert cut.status == "sending" and cut.call_started_at is not None
    assert cut.lease_until is not None and cut.lease_until > T0 + LEASE  # far away

    clock.move(timedelta(seconds=7))  # three beats missed; the lease has a minute to go
    provider = Received()
    survivor = worker(sessions, provider, clock, "survivor")
    assert await survivor.drain_once() == 1
    assert await survivor.drain_once() == 0
    clock.move(timedelta(hours=2))
    assert await survivor.drain_once() == 0
    assert provider.calls == [row_id]  # exactly once
    sent = await row(sessions, row_id)
    assert (sent.status, sent.was_in_doubt, sent.lease_owner) == ("sent", True, None)
    assert await in_doubt_events(sessions) == 1


async def test_a_worker_that_still_beats_keeps_its_row_until_its_beat_stops(
    sessions: Sessions,
) -> None:
    clock = Hand(T0)
    row_id = await one_message(sessions, T0)
    await crash_inside_the_call(sessions, clock, ELSEWHERE, beats=True)

    clock.move(timedelta(seconds=1))  # its last beat is 1 s old: alive, mid-call
    provider = Received()
    other = worker(sessions, provider, clock, "other")
    assert await other.drain_once() == 0
    held = await row(sessions, row_id)
    assert (held.status, held.lease_owner, held.was_in_doubt) == ("sending", ELSEWHERE, False)
    assert provider.calls == []

    # The same worker sweeps again once its own clock has moved on (not wall time).
    clock.move(DEAD_AFTER)
    assert await other.drain_once() == 1
    assert provider.calls == [row_id]
    assert (await row(sessions, row_id)).was_in_doubt
    assert await in_doubt_events(sessions) == 1


async def test_a_lease_whose_owner_never_beat_waits_for_its_expiry(sessions: Sessions) -> None:
    clock = Hand(T0)
    row_id = await one_message(sessions, T0)
    await crash_inside_the_call(sessions, clock, ELSEWHERE, beats=False)
    lease_until = (await row(sessions, row_id)).lease_until
    assert lease_until is not None

    provider = Received()
    other = worker(sessions, provider, clock, "other")
    clock.move(timedelta(seconds=7))
    assert await other.drain_once() == 0
    clock.at = lease_until - timedelta(seconds=1)
    assert await other.drain_once() == 0
    assert provider.calls == []
    assert (await row(sessions, row_id)).status == "sending"

    clock.at = lease_until + RECLAIM_EVERY  # expired, and time for this worker's next sweep
    assert await other.drain_once() == 1
    assert provider.calls == [row_id]
    assert (await row(sessions, row_id)).was_in_doubt


async def test_a_restart_on_the_same_machine_takes_back_the_gone_pids_row_at_once(
    sessions: Sessions,
) -> None:
    clock = Hand(T0)
    row_id = await one_message(sessions, T0)
    predecessor = f"{HOST}:{GONE_PID}:dead00"  # killed; its last beat is this very instant
    await crash_inside_the_call(sessions, clock, predecessor, beats=True)

    provider = Received()
    restarted = worker(sessions, provider, clock, f"{HOST}:{os.getpid()}:new000")
    assert await restarted.drain_once() == 1  # no time has passed at all
    assert provider.calls == [row_id]
    sent = await row(sessions, row_id)
    assert (sent.status, sent.was_in_doubt) == ("sent", True)
    assert await in_doubt_events(sessions) == 1


async def test_dead_workers_are_the_silent_and_the_gone_never_this_process(
    sessions: Sessions,
) -> None:
    now = T0
    fresh = now - timedelta(seconds=1)
    stale = now - timedelta(seconds=7)
    beats = {
        f"{HOST}:{GONE_PID}:aaaaaa": fresh,  # this machine, no such process: dead at once
        f"{HOST}:{os.getpid()}:bbbbbb": fresh,  # this process: alive
        f"{HOST}:1:cccccc": fresh,  # pid 1 always exists
        f"elsewhere:{GONE_PID}:dddddd": fresh,  # another machine: its pid means nothing here
        "elsewhere:77:eeeeee": stale,  # another machine, silent for 7 s: dead
        "no-pid-in-this-name": fresh,
    }
    async with sessions() as session, session.begin():
        session.add_all(WorkerBeat(id=i, kind="outbox", started_at=at, beat_at=at)
                        for i, at in beats.items())
        session.add(WorkerBeat(id="elsewhere:78:ffffff", kind="inbox", started_at=stale,
                               beat_at=stale))
    async with sessions() as session:
        assert await dead_workers(session, now) == {
            f"{HOST}:{GONE_PID}:aaaaaa", "elsewhere:77:eeeeee", "elsewhere:78:ffffff",
        }
        assert await dead_workers(session, now, kind="inbox") == {"elsewhere:78:ffffff"}
        # Its own stale beat still counts: a worker of this process whose task died.
        assert f"{HOST}:{os.getpid()}:bbbbbb" in await dead_workers(session, now + DEAD_AFTER)


async def test_workers_dead_for_an_hour_are_purged(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        for worker_id, age in (("old", timedelta(hours=2)), ("recent", timedelta(minutes=10))):
            session.add(WorkerBeat(id=worker_id, kind="outbox", started_at=T0 - age,
                                   beat_at=T0 - age))
    async with sessions() as session, session.begin():
        assert await purge_dead(session, T0) == 1
    assert await beat_ids(sessions) == {"recent"}


async def test_a_running_worker_beats_and_a_clean_stop_forgets_it(sessions: Sessions) -> None:
    clock = Hand(T0)
    provider = Received()
    running = worker(sessions, provider, clock, "running")
    task = asyncio.create_task(running.run())
    await eventually(lambda: _has(sessions, "running"))
    async with sessions() as session:
        assert await dead_workers(session, clock.now()) == set()
    running.stop()
    await asyncio.wait_for(task, 10)
    assert await beat_ids(sessions) == set()


async def test_a_crashed_worker_leaves_its_beat_to_age(sessions: Sessions) -> None:
    clock = Hand(T0)
    crashing = worker(sessions, Received(), clock, "crashing")
    task = asyncio.create_task(crashing.run())
    await eventually(lambda: _has(sessions, "crashing"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await beat_ids(sessions) == {"crashing"}
    async with sessions() as session:
        assert await dead_workers(session, T0 + timedelta(seconds=7)) == {"crashing"}


async def test_a_heartbeat_beats_on_the_clock_and_survives_a_failed_beat(
    sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Hand(T0)
    beat = Heartbeat(sessions, clock, "beating", "inbox", every=0.01)
    async with beat:
        clock.move(timedelta(seconds=30))
        later = T0 + timedelta(seconds=30)
        await eventually(lambda: _beat_at(sessions, "beating", later))
        broken = beat.sessions
        beat.sessions = None  # type: ignore[assignment]  # every beat now fails

        async def failed_beat_logged() -> bool:
            return any("heartbeat of beating failed" in r.getMessage() for r in caplog.records)

        await eventually(failed_beat_logged)  # logged, not raised: the beats go on
        beat.sessions = broken
        clock.move(timedelta(seconds=1))
        await eventually(lambda: _beat_at(sessions, "beating", later + timedelta(seconds=1)))
    assert await beat_ids(sessions) == set()


async def _has(sessions: Sessions, worker_id: str) -> bool:
    return worker_id in await beat_ids(sessions)


async def _beat_at(sessions: Sessions, worker_id: str, at: datetime) -> bool:
    async with sessions() as session:
        beat = await session.get(WorkerBeat, worker_id)
        return beat is not None and beat.beat_at == at and beat.started_at == T0
