"""Due jobs from the database: check-ins, reminders, timeouts, broadcasts, purges, retries.

A job is unique on (kind, key, due time truncated to the minute), so several processes may
plan the same job and it runs once. Jobs are claimed like the outbox: ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, one ``UPDATE … RETURNING`` under ``BEGIN IMMEDIATE`` on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.clock import Clock, minute_floor
from bot.core.config import Settings
from bot.core.retry import backoff
from bot.storage.db import checkpoint
from bot.storage.models import Job

log = logging.getLogger("relais.scheduler")

LEASE = timedelta(minutes=5)
CHECKPOINT = "relais.checkpoint"  # session.info, set by an erasure (``bot.domain.rights``)
MAX_JOB_ATTEMPTS = 6

@dataclass(frozen=True)
class JobEnv:
    """What a job's ``prepare`` step gets: the running settings and clock, the database,
    this process's channels (``registry``), and the time the job runs at."""

    settings: Settings
    clock: Clock
    sessions: async_sessionmaker[AsyncSession]
    registry: Any  # bot.core.channel.Registry
    machine: Any  # bot.conversation.context.Machine: the flows a job's context may enter
    now: datetime


@dataclass(frozen=True)
class JobContext(JobEnv):
    """What a job's handler gets: ``JobEnv`` and its transaction (``session``), with what
    its ``prepare`` step returned (``prepared``)."""

    session: AsyncSession
    prepared: Any = None


JobHandler = Callable[[JobContext, Job], Awaitable[None]]
# A step run before the job's transaction, outside any: a download or a provider call that
# must not hold a database lock. It may raise (the job is retried); what it returns is
# ``JobContext.prepared`` in the handler.
JobPrepare = Callable[[JobEnv, Job], Awaitable[Any]]


@dataclass(frozen=True)
class JobKind:
    kind: str
    handler: JobHandler
    prepare: JobPrepare | None = None


class JobRegistry:
    """The job kinds a scheduler runs, by name: built once by the composition root
    (``bot.app``) from the lists each module declares, never by importing a module."""

    def __init__(self, kinds: Iterable[JobKind] = ()) -> None:
        self._kinds: dict[str, JobKind] = {}
        for item in kinds:
            if item.kind in self._kinds:
                raise ValueError(f"job kind {item.kind!r} declared twice")
            self._kinds[item.kind] = item

    def get(self, kind: str) -> JobKind | None:
        return self._kinds.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds


async def schedule(
    session: AsyncSession,
    kind: str,
    key: str,
    due_at: datetime,
    payload: dict[str, Any] | None = None,
    *,
    about: int | None = None,
) -> None:
    """Plan a job; planning the same (kind, key, minute) again does nothing.

    ``about``: the person the job concerns (their check-in, ticket or slot): erasing them
    deletes it."""
    due = minute_floor(due_at)
    values = {
        "kind": kind, "key": key, "due_at": due, "run_at": due_at, "payload": payload or {},
        "status": "queued", "attempts": 0, "created_at": due_at, "contact_id": about,
    }
    dialect = session.bind.dialect.name
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = builder(Job).values(**values).on_conflict_do_nothing(
        index_elements=["kind", "key", "due_at"]
    )
    await session.execute(statement)


async def claim(
    session: AsyncSession, worker: str, now: datetime, limit: int = 20
) -> list[Job]:
    """Claim due jobs (the caller's transaction commits the claim)."""
    picked = (
        select(Job.id)
        .where(Job.status == "queued", Job.run_at <= now)
        .order_by(Job.run_at, Job.id)
        .limit(limit)
    )
    if session.bind.dialect.name == "postgresql":
        picked = picked.with_for_update(skip_locked=True)
    result = await session.execute(
        update(Job)
        .where(Job.id.in_(picked.scalar_subquery()))
        .values(status="running", lease_owner=worker, lease_until=now + LEASE,
                attempts=Job.attempts + 1)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return sorted(result.scalars().all(), key=lambda j: (j.run_at, j.id))


async def reclaim_expired(session: AsyncSession, now: datetime) -> None:
    """Expired leases: back to the queue, or ``failed`` once the job has used all its attempts
    (a job that kills or hangs its worker every time must not loop forever).

    On PostgreSQL a job whose handler transaction is still open holds its row lock (see
    ``Scheduler._run``) and is skipped: it is still running, however late.
    """
    pg = session.bind.dialect.name == "postgresql"

    def expired(*more: Any) -> Any:
        picked = select(Job.id).where(Job.status == "running", Job.lease_until < now, *more)
        if pg:
            picked = picked.with_for_update(skip_locked=True)
        return Job.id.in_(picked.scalar_subquery())

    await session.execute(
        update(Job)
        .where(expired(Job.attempts >= MAX_JOB_ATTEMPTS))
        .values(status="failed", lease_owner=None, lease_until=None,
                last_error=f"lease expired: the worker stopped while running it "
                           f"({MAX_JOB_ATTEMPTS} attempts)")
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Job)
        .where(expired())
        .values(status="queued", lease_owner=None, lease_until=None, run_at=now)
        .execution_options(synchronize_session=False)
    )


class Scheduler:
    """Runs due jobs. ``run_due`` is one pass (tests call it); ``run`` loops."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        jobs: JobRegistry,
        clock: Clock | None = None,
        worker_id: str = "scheduler",
        interval: float = 1.0,
        *,
        settings: Settings,
        registry: Any = None,
        machine: Any = None,
    ) -> None:
        self.machine = machine
        self.jobs = jobs
        self.settings = settings
        self.registry = registry  # this process's channels, for jobs that fetch or delete
        self.sessions = sessions
        self.clock = clock or Clock()
        self.worker_id = worker_id
        self.interval = interval
        self._stop = asyncio.Event()

    async def run_due(self) -> int:
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            await reclaim_expired(session, now)
            jobs = await claim(session, self.worker_id, now)
        for item in jobs:
            await self._run(item)
        return len(jobs)

    async def _run(self, item: Job) -> None:
        declared = self.jobs.get(item.kind)
        now = self.clock.now()
        mine = (Job.id == item.id, Job.lease_owner == self.worker_id, Job.status == "running")
        try:
            if declared is None:
                raise LookupError(f"no handler for job kind {item.kind!r}")
            env = JobEnv(settings=self.settings, clock=self.clock, sessions=self.sessions,
                         registry=self.registry, machine=self.machine, now=now)
            prepared = await declared.prepare(env, item) if declared.prepare else None
            async with self.sessions() as session, session.begin():
                # Marked done first, in the handler's own transaction: the work and the mark
                # commit together, the row stays locked while the handler runs (another
                # scheduler's reclaim skips it), and a job whose lease was taken back by
                # another scheduler is not run here a second time.
                owned = await session.execute(
                    update(Job).where(*mine)
                    .values(status="done", done_at=now, lease_owner=None, lease_until=None)
                    .execution_options(synchronize_session=False)
                )
                if not owned.rowcount:
                    log.warning("job %s %s: lease lost, left to the scheduler that took it",
                                item.kind, item.key)
                    return
                await declared.handler(
                    JobContext(settings=self.settings, clock=self.clock,
                               sessions=self.sessions, registry=self.registry,
                               machine=self.machine, now=now, session=session,
                               prepared=prepared),
                    item,
                )
            if session.info.get(CHECKPOINT):  # an erasure: leave nothing in SQLite's WAL
                await checkpoint(session.bind)
        except Exception as exc:  # a failing job is retried, never lost
            log.warning("job %s %s failed: %s", item.kind, item.key, exc)
            delay = backoff(item.attempts, MAX_JOB_ATTEMPTS)
            values: dict[str, Any] = {
                "last_error": f"{type(exc).__name__}: {exc}"[:500],
                "lease_owner": None, "lease_until": None,
            }
            if delay is None:
                values["status"] = "failed"
            else:
                values.update(status="queued", run_at=now + timedelta(seconds=max(delay, 1)))
            async with self.sessions() as session, session.begin():
                await session.execute(
                    update(Job).where(*mine).values(**values)
                    .execution_options(synchronize_session=False)
                )

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                ran = await self.run_due()
            except Exception:
                log.exception("scheduler pass failed")
                ran = 0
            if ran == 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), self.interval)
                except TimeoutError:
                    pass

    def stop(self) -> None:
        self._stop.set()
