"""Worker heartbeats: which processes are alive, so that a dead one's leases come back at once.

Every long-running worker (outbox, inbox) keeps one row in ``workers`` (``WorkerBeat``) and
writes ``beat_at = clock.now()`` every ``BEAT_EVERY`` seconds, each beat in its own short
transaction. A worker is *dead* when

- its last beat is older than ``DEAD_AFTER`` (three beats missed), on whatever machine it ran;
- or it ran on this machine and its pid no longer exists (``os.kill(pid, 0)``): a process
  restarted on the same machine takes back its predecessor's rows on its first claim,
  without waiting for the beat to age.

This process's own pid is never reported dead by the pid check (its beats still age like
anyone's: a worker of this process whose task died stops beating); a worker never takes back
its own rows this way (``reclaim_expired(..., alive=...)``). A lease whose owner has no
``workers`` row at all (a worker without a heartbeat, such as a test calling ``drain_once``)
is not this module's business: it keeps the rule of its expiry.

A clean stop deletes the worker's row (``forget``); a crash leaves it, and its beat ages.
Rows of workers dead for more than ``PURGE_AFTER`` are deleted (``purge_dead``): by then
whatever they held has been taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.clock import Clock
from bot.storage.models import WorkerBeat

log = logging.getLogger("relais.heartbeat")

BEAT_EVERY = 2.0  # seconds between two beats of a worker
DEAD_AFTER = timedelta(seconds=6)  # three beats missed: the process is dead
PURGE_AFTER = timedelta(hours=1)  # rows of workers dead this long are deleted


class Heartbeat:
    """The heartbeat of one worker (``worker_id`` = ``worker_name()``, "host:pid:rand").

    ``run`` beats every ``every`` seconds until ``stop``; a failed beat is logged, never
    raised. ``async with Heartbeat(...)`` beats once, keeps beating in a task, and on a clean
    exit stops and forgets the row (on an exception the row is left to age, so that other
    processes take back what this worker held).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        worker_id: str,
        kind: str,
        every: float = BEAT_EVERY,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.worker_id = worker_id
        self.kind = kind
        self.every = every
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        """Write ``beat_at = clock.now()`` (the row is created on the first beat)."""
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            postgres = session.bind.dialect.name == "postgresql"
            builder = postgresql.insert if postgres else sqlite.insert
            statement = builder(WorkerBeat).values(
                id=self.worker_id, kind=self.kind, started_at=now, beat_at=now
            )
            await session.execute(statement.on_conflict_do_update(
                index_elements=["id"], set_={"beat_at": now, "kind": self.kind}
            ))

    async def _beat_logged(self) -> None:
        try:
            await self.beat()
        except Exception:
            log.exception("heartbeat of %s failed", self.worker_id)

    async def run(self) -> None:
        """Beat every ``every`` seconds until ``stop``."""
        while not self._stopping.is_set():
            await self._beat_logged()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.every)

    def stop(self) -> None:
        self._stopping.set()

    async def forget(self) -> None:
        """Delete this worker's row (a clean stop: it holds nothing any more)."""
        async with self.sessions() as session, session.begin():
            await session.execute(delete(WorkerBeat).where(WorkerBeat.id == self.worker_id))

    async def __aenter__(self) -> Heartbeat:
        await self._beat_logged()  # alive before the first claim
        self._stopping.clear()
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        task, self._task = self._task, None
        if task is not None:
            if exc_type is not None:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if exc_type is None:
            try:
                await self.forget()
            except Exception:
                log.exception("could not forget the heartbeat of %s", self.worker_id)


def _pid_on_this_host(worker_id: str) -> int | None:
    """The pid in "host:pid:rand" when host is this machine, else None."""
    host, sep, rest = worker_id.partition(":")
    if not sep or host != socket.gethostname():
        return None
    pid, _, _ = rest.partition(":")
    return int(pid) if pid.isdigit() else None


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is alive, by definition
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    except OSError:
        return False
    return False


async def dead_workers(
    session: AsyncSession, now: datetime, *, kind: str | None = None
) -> set[str]:
    """Ids of the workers known dead at ``now``: beat older than ``DEAD_AFTER``, or a pid on
    this machine that no longer exists (never this process's own pid)."""
    query = select(WorkerBeat.id, WorkerBeat.beat_at)
    if kind is not None:
        query = query.where(WorkerBeat.kind == kind)
    cutoff = now - DEAD_AFTER
    dead: set[str] = set()
    for worker_id, beat_at in (await session.execute(query)).all():
        pid = _pid_on_this_host(worker_id)
        if beat_at < cutoff or (pid is not None and _process_gone(pid)):
            dead.add(worker_id)
    return dead


async def purge_dead(session: AsyncSession, now: datetime) -> int:
    """Delete the rows of workers whose last beat is older than ``PURGE_AFTER``."""
    result = await session.execute(
        delete(WorkerBeat).where(WorkerBeat.beat_at < now - PURGE_AFTER)
        .returning(WorkerBeat.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())


__all__ = ["BEAT_EVERY", "DEAD_AFTER", "Heartbeat", "dead_workers", "purge_dead"]
