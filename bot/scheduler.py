"""Due jobs from the database: check-ins, reminders, timeouts, broadcasts, purges, retries.

A job is unique on (kind, key, due time truncated to the minute), so several processes may
plan the same job and it runs once. Jobs are claimed like the outbox: ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, one ``UPDATE … RETURNING`` under ``BEGIN IMMEDIATE`` on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.clock import Clock, minute_floor
from bot.retry import backoff
from bot.storage.db import checkpoint
from bot.storage.models import Job

log = logging.getLogger("relais.scheduler")

LEASE = timedelta(minutes=5)
CHECKPOINT = "relais.checkpoint"  # session.info, set by an erasure (``bot.rights``)
MAX_JOB_ATTEMPTS = 6

_SETTINGS: ContextVar[Any] = ContextVar("relais_job_settings", default=None)


def current_settings() -> Any:
    """The Settings of the scheduler running the current job (None outside a job)."""
    return _SETTINGS.get()


JobHandler = Callable[[AsyncSession, Job, datetime], Awaitable[None]]
HANDLERS: dict[str, JobHandler] = {}
# A step run before the job's transaction, outside any: a download or a provider call that
# must not hold a database lock. It may raise (the job is retried); what it returns is
# ``prepared()`` in the handler.
JobPrepare = Callable[[Job, datetime], Awaitable[Any]]
PREPARE: dict[str, JobPrepare] = {}
_PREPARED: ContextVar[Any] = ContextVar("relais_job_prepared", default=None)


_SCHEDULER: ContextVar[Any] = ContextVar("relais_scheduler", default=None)


def prepared() -> Any:
    """What the running job's ``prepare`` step returned (None without one)."""
    return _PREPARED.get()


def current_scheduler() -> Scheduler | None:
    """The scheduler running the current job: its ``sessions``, ``settings`` and the
    ``registry`` of channels of its process (None outside a job)."""
    return _SCHEDULER.get()


def job(kind: str, *, prepare: JobPrepare | None = None) -> Callable[[JobHandler], JobHandler]:
    """Register the handler of a job kind (and its ``prepare`` step, if any)."""

    def decorate(handler: JobHandler) -> JobHandler:
        HANDLERS[kind] = handler
        if prepare is None:
            PREPARE.pop(kind, None)
        else:
            PREPARE[kind] = prepare
        return handler

    return decorate


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
        clock: Clock | None = None,
        worker_id: str = "scheduler",
        interval: float = 1.0,
        settings: Any = None,
        registry: Any = None,
    ) -> None:
        self.settings = settings
        self.registry = registry  # this process's channels, for jobs that fetch or delete
        self.sessions = sessions
        self.clock = clock or Clock()
        self.worker_id = worker_id
        self.interval = interval
        self._stop = asyncio.Event()

    async def run_due(self) -> int:
        if self.settings is not None:
            _SETTINGS.set(self.settings)
        _SCHEDULER.set(self)
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            await reclaim_expired(session, now)
            jobs = await claim(session, self.worker_id, now)
        for item in jobs:
            await self._run(item)
        return len(jobs)

    async def _run(self, item: Job) -> None:
        handler = HANDLERS.get(item.kind)
        now = self.clock.now()
        mine = (Job.id == item.id, Job.lease_owner == self.worker_id, Job.status == "running")
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {item.kind!r}")
            prepare = PREPARE.get(item.kind)
            _PREPARED.set(await prepare(item, now) if prepare is not None else None)
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
                await handler(session, item, now)
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


def install_engine_jobs(engine: Any) -> None:
    """Register the job that retries a failed flow step (needs the engine)."""

    @job("engine.step")
    async def _retry_step(session: AsyncSession, item: Job, now: datetime) -> None:
        await engine.retry_step(session, int(item.payload["message_id"]))

