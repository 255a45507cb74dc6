"""Group commit: many concurrent writers share one transaction, so the database's fsync is
paid once per batch rather than once per webhook.

``GroupCommit.run(op)`` queues ``op`` (an ``async (session) -> result`` that only writes in
the session it is given) and waits. One task per process takes every queued op after a
short window (``window`` seconds, a few milliseconds), runs them in order in one
transaction and commits; each caller then gets its own result. While a batch commits, the
next one gathers, so under load batches grow by themselves.

One failing op never takes the others down: when the batch transaction fails, each op of
it runs again alone in its own transaction, and only the failing one gets the exception.
An op must therefore be safe to run again after a rollback (an insert that dedupes is).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger("relais.inbox")

T = TypeVar("T")
Op = Callable[[AsyncSession], Awaitable[Any]]

WINDOW = 0.002  # seconds a batch waits for company before it commits
MAX_BATCH = 500


class GroupCommit:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *,
                 window: float = WINDOW, max_batch: int = MAX_BATCH) -> None:
        self.sessions = sessions
        self.window = window
        self.max_batch = max_batch
        self._queue: list[tuple[Op, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # committed batches and ops, for the bench and the logs
        self.ops = 0

    async def run(self, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``op`` in the next shared transaction; its result once that is committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        # shield: a caller that goes away (client disconnect) must not cancel the batch
        return await asyncio.shield(future)  # type: ignore[no-any-return]

    async def _drain(self) -> None:
        while self._queue:
            if self.window > 0:
                await asyncio.sleep(self.window)
            batch = self._queue[: self.max_batch]
            del self._queue[: len(batch)]
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        try:
            async with self.sessions() as session, session.begin():
                results = [await op(session) for op, _future in batch]
        except Exception as exc:
            if len(batch) > 1:
                log.warning("a group commit of %d writes failed: each is written alone",
                            len(batch))
                for item in batch:
                    await self._commit([item])
                return
            _op, future = batch[0]
            if not future.done():
                future.set_exception(exc)
            return
        self.batches += 1
        self.ops += len(batch)
        for (_op, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Let the last batch commit."""
        if self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)
