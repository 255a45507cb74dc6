"""Due jobs from the database, planned and run by several processes, on SQLite and PostgreSQL.

A "process" here is its own engine and sessionmaker on the same database. Time is moved with
time-machine; the handlers below are registered under kinds only these tests use.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.config import load_settings
from bot.core.retry import BASE_SECONDS, CAP_SECONDS
from bot.delivery.scheduler import (
    LEASE,
    MAX_JOB_ATTEMPTS,
    JobContext,
    JobKind,
    JobRegistry,
    Scheduler,
    claim,
    reclaim_expired,
    schedule,
)
from bot.storage import events
from bot.storage.db import make_engine, sessionmaker
from bot.storage.models import Event, Job

T0 = datetime(2030, 3, 4, 10, 0, 0, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]

ONCE = "test.scheduler.once"
FAILS = "test.scheduler.fails"
SLOW = "test.scheduler.slow"


@dataclass
class Runs:
    keys: list[str] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)


RUNS = Runs()


async def _once(jc: JobContext, item: Job) -> None:
    await asyncio.sleep(0)  # let another scheduler interleave
    RUNS.keys.append(item.key)
    events.record(jc.session, "test.job.ran", jc.now, value={"key": item.key})


async def _fails(jc: JobContext, item: Job) -> None:
    RUNS.keys.append(item.key)
    events.record(jc.session, "test.job.ran", jc.now)  # rolled back with the failure
    raise RuntimeError("provider down")


async def _slow(jc: JobContext, item: Job) -> None:
    RUNS.keys.append(item.key)
    if len(RUNS.keys) == 1:  # the first run outlives its lease
        RUNS.entered.set()
        await RUNS.gate.wait()
    events.record(jc.session, "test.job.ran", jc.now)


JOBS = JobRegistry([JobKind(ONCE, _once), JobKind(FAILS, _fails), JobKind(SLOW, _slow)])


def make_scheduler(sessions: Sessions, worker_id: str) -> Scheduler:
    return Scheduler(sessions, JOBS, worker_id=worker_id,
                     settings=load_settings(env_file=None))


@pytest.fixture(autouse=True)
def fresh_runs() -> Iterator[None]:
    global RUNS
    RUNS = Runs()
    yield


@pytest.fixture
def frozen() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
async def processes(db_url: str) -> AsyncIterator[list[Sessions]]:
    engines = [make_engine(db_url) for _ in range(2)]
    try:
        yield [sessionmaker(engine) for engine in engines]
    finally:
        for engine in engines:
            await engine.dispose()


async def plan(sessions: Sessions, kind: str, key: str, due: datetime) -> None:
    async with sessions() as session, session.begin():
        await schedule(session, kind, key, due, {"key": key})


async def jobs(sessions: Sessions) -> list[Job]:
    async with sessions() as session:
        return list((await session.scalars(select(Job).order_by(Job.id))).all())


async def ran_events(sessions: Sessions) -> int:
    async with sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "test.job.ran")
        ) or 0


async def while_the_first_runs(other: asyncio.Task[int], db_url: str) -> None:
    """Let the other scheduler's pass happen while the first one's handler still runs.

    PostgreSQL: the other pass never waits for the first one (row locks are skipped), so it
    is awaited to the end. SQLite: writers take turns, so the other pass waits for the
    first one's transaction; give it a moment to reach the database (either turn is valid).
    """
    if db_url.startswith("postgresql"):
        await asyncio.wait_for(asyncio.shield(other), 10)
    else:
        await asyncio.sleep(0.05)


async def test_two_processes_plan_a_job_once_and_run_it_once(
    processes: list[Sessions], frozen: time_machine.Traveller
) -> None:
    one, two = processes
    keys = [f"checkin:{i}" for i in range(20)]
    await asyncio.gather(
        *(plan(one, ONCE, k, T0 + timedelta(minutes=5, seconds=7)) for k in keys),
        *(plan(two, ONCE, k, T0 + timedelta(minutes=5, seconds=41)) for k in keys),
    )
    await plan(one, ONCE, keys[0], T0 + timedelta(minutes=5, seconds=59))  # again, later
    planned = await jobs(one)
    assert sorted(j.key for j in planned) == sorted(keys)
    assert {j.due_at for j in planned} == {T0 + timedelta(minutes=5)}
    assert {(j.status, j.attempts) for j in planned} == {("queued", 0)}

    first, second = make_scheduler(one, "s1"), make_scheduler(two, "s2")
    assert await first.run_due() == 0  # not due yet

    frozen.move_to(T0 + timedelta(minutes=6))
    ran = await asyncio.gather(first.run_due(), second.run_due(), first.run_due())
    assert sum(ran) == 20
    assert sorted(RUNS.keys) == sorted(keys)
    assert await ran_events(two) == 20
    assert {(j.status, j.attempts, j.lease_owner) for j in await jobs(two)} == {
        ("done", 1, None)
    }
    assert await second.run_due() == 0


async def test_a_failing_job_is_retried_with_backoff_then_fails(
    processes: list[Sessions], frozen: time_machine.Traveller
) -> None:
    sessions = processes[0]
    await plan(sessions, FAILS, "broadcast:7", T0)
    scheduler = make_scheduler(sessions, "s1")
    for attempt in range(1, MAX_JOB_ATTEMPTS + 1):
        now = datetime.now(UTC)
        assert await scheduler.run_due() == 1
        (item,) = await jobs(sessions)
        assert item.attempts == attempt
        assert item.last_error == "RuntimeError: provider down"
        assert item.lease_owner is None
        if attempt == MAX_JOB_ATTEMPTS:
            assert item.status == "failed"
            break
        ceiling = min(CAP_SECONDS, BASE_SECONDS * 2 ** (attempt - 1))
        assert item.status == "queued"
        assert now < item.run_at <= now + timedelta(seconds=max(ceiling, 1))
        assert await scheduler.run_due() == 0  # not again at once
        frozen.move_to(item.run_at)
    frozen.shift(timedelta(days=1))
    assert await scheduler.run_due() == 0
    assert len(RUNS.keys) == MAX_JOB_ATTEMPTS
    assert await ran_events(sessions) == 0  # each failed run left nothing behind


async def test_an_expired_running_lease_is_reclaimed(
    processes: list[Sessions], frozen: time_machine.Traveller
) -> None:
    dead_process, live_process = processes
    await plan(dead_process, ONCE, "reminder:3", T0)
    async with dead_process() as session, session.begin():
        assert len(await claim(session, "dead", T0)) == 1  # ... and the process dies
    live = make_scheduler(live_process, "live")

    frozen.shift(LEASE / 2)
    assert await live.run_due() == 0  # still leased
    frozen.shift(LEASE)
    assert await live.run_due() == 1
    assert RUNS.keys == ["reminder:3"]
    (item,) = await jobs(live_process)
    assert (item.status, item.attempts, item.lease_owner) == ("done", 2, None)


async def test_a_job_still_running_past_its_lease_is_not_run_twice(
    processes: list[Sessions], frozen: time_machine.Traveller, db_url: str
) -> None:
    one, two = processes
    await plan(one, SLOW, "broadcast:9", T0)
    slow, other = make_scheduler(one, "slow"), make_scheduler(two, "other")
    running = asyncio.create_task(slow.run_due())
    await asyncio.wait_for(RUNS.entered.wait(), 10)  # guards a hang, asserts nothing

    frozen.shift(LEASE + timedelta(minutes=1))
    meanwhile = asyncio.create_task(other.run_due())
    await while_the_first_runs(meanwhile, db_url)
    RUNS.gate.set()
    assert await asyncio.gather(running, meanwhile) == [1, 0]
    assert RUNS.keys == ["broadcast:9"]
    assert await ran_events(two) == 1
    (item,) = await jobs(two)
    assert (item.status, item.attempts) == ("done", 1)


async def test_a_job_whose_lease_another_scheduler_took_is_not_run_by_the_first(
    processes: list[Sessions], frozen: time_machine.Traveller, db_url: str
) -> None:
    one, two = processes
    await plan(one, SLOW, "a", T0)
    await plan(one, ONCE, "b", T0)
    slow, other = make_scheduler(one, "slow"), make_scheduler(two, "other")
    running = asyncio.create_task(slow.run_due())  # claims a and b, runs a first
    await asyncio.wait_for(RUNS.entered.wait(), 10)  # guards a hang, asserts nothing

    frozen.shift(LEASE + timedelta(minutes=1))  # b's lease runs out before slow reaches it
    meanwhile = asyncio.create_task(other.run_due())
    await while_the_first_runs(meanwhile, db_url)
    RUNS.gate.set()
    await asyncio.gather(running, meanwhile)
    assert Counter(RUNS.keys) == {"a": 1, "b": 1}
    assert await ran_events(two) == 2
    assert {(j.key, j.status) for j in await jobs(two)} == {("a", "done"), ("b", "done")}


async def test_a_job_whose_worker_dies_every_time_ends_failed(
    processes: list[Sessions], frozen: time_machine.Traveller
) -> None:
    dead_process, live_process = processes
    await plan(dead_process, ONCE, "purge", T0)
    for attempt in range(1, MAX_JOB_ATTEMPTS + 1):
        async with dead_process() as session, session.begin():
            now = datetime.now(UTC)
            await reclaim_expired(session, now)
            assert len(await claim(session, f"dead-{attempt}", now)) == 1  # then it dies
        frozen.shift(LEASE + timedelta(seconds=1))
    live = make_scheduler(live_process, "live")
    assert await live.run_due() == 0
    assert RUNS.keys == []
    (item,) = await jobs(live_process)
    assert (item.status, item.attempts, item.lease_owner) == ("failed", MAX_JOB_ATTEMPTS, None)
    assert "lease" in (item.last_error or "")
