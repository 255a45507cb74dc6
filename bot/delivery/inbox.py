"""The inbox workers: they run the engine on the rows the webhooks stored
(``bot.storage.inbox``).

- One person's events one at a time, oldest first; different people in parallel
  (``inbox.claim`` gives at most one row per person, none behind a pending one).
- PostgreSQL: ``concurrency`` tasks per process, and every process (``relais serve``,
  ``relais worker``) shares the inbox: rows are claimed ``FOR UPDATE SKIP LOCKED`` and stay
  locked while they are processed, so a crash gives them back at once (the transaction
  dies with the connection) and nothing waits for a lease.
- SQLite: one task in one process, the database's single writer: it takes a batch, runs each
  event in its own savepoint inside one transaction, and commits several events at once
  (at most ``budget`` seconds of work per transaction, so the webhooks' group commit is never
  kept waiting long).
- A row whose handler raises, or whose step failed (the message itself stays stored), is
  retried with backoff, then parked with its reason (``relais report``, ``/metrics``); see
  ``bot.storage.inbox`` for how long a person's later events wait behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.clock import Clock
from bot.core.metrics import Metrics
from bot.storage import inbox
from bot.storage.models import InboxItem

log = logging.getLogger("relais.inbox")

BATCH = 8  # rows claimed at once: only what fits in ``BUDGET`` is worth loading and locking
BUDGET = 0.025  # seconds of processing per transaction (SQLite: the writer lock is held)
POLL = 0.5  # seconds between looks at the inbox when nothing woke the worker
PG_CONCURRENCY = 4


@dataclass(frozen=True)
class Processed:
    """What the handler made of one row."""

    contact_id: int | None = None
    message_id: int | None = None
    sent: bool = False  # outbox rows were written: wake the outbox workers
    failed: str | None = None  # the step failed (the message is stored): retry, then park
    alerted: bool = False  # danger words alerted the staff: a retry must not alert again


Handler = Callable[[AsyncSession, InboxItem], Awaitable[Processed]]


class InboxWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        handler: Handler,
        *,
        worker_id: str = "inbox",
        metrics: Metrics | None = None,
        on_sent: Callable[[], None] | None = None,
        concurrency: int | None = None,
        batch: int | None = None,
        budget: float = BUDGET,
        poll: float = POLL,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.handler = handler
        self.worker_id = worker_id
        self.metrics = metrics
        self.on_sent = on_sent
        self.postgres = sessions.kw["bind"].dialect.name == "postgresql"
        self.concurrency = concurrency or (PG_CONCURRENCY if self.postgres else 1)
        self.batch = batch or BATCH
        self.budget = budget
        self.poll = poll
        self._wake = asyncio.Event()
        self._stopping = False
        self.processed = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Process rows until ``stop``; the row in hand is finished first."""
        await asyncio.gather(*(self._loop() for _ in range(self.concurrency)))

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                done = await self.drain_once()
            except Exception:  # the database went away: log, wait, go on
                log.exception("inbox worker %s: a batch failed", self.worker_id)
                done = 0
                await asyncio.sleep(self.poll)
            if done or self._stopping:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    async def drain(self, max_rounds: int = 1000) -> int:
        """Process every row ready now (tests, ``relais inbox drain``); how many."""
        total = 0
        for _ in range(max_rounds):
            done = await self.drain_once()
            if not done:
                break
            total += done
        return total

    async def drain_once(self) -> int:
        """Claim ready rows once and process them in one transaction; how many were."""
        now = self.clock.now()
        sent = False
        handled = 0
        async with self.sessions() as session, session.begin():
            items = await inbox.claim(session, now, self.batch, lock=self.postgres)
            if not items:
                return 0
            started = time.monotonic()
            outcomes: list[dict[str, Any]] = []
            for item in items:
                if handled and time.monotonic() - started > self.budget:
                    break  # the rest stay pending (and unlocked at commit) for the next round
                outcome, was_sent = await self._one(session, item, now)
                outcomes.append(outcome)
                sent = sent or was_sent
                handled += 1
            await session.execute(update(InboxItem), outcomes)  # by primary key, one batch
        self.processed += handled
        if sent and self.on_sent is not None:
            self.on_sent()
        return handled

    async def _one(self, session: AsyncSession, item: InboxItem, now: datetime
                   ) -> tuple[dict[str, Any], bool]:
        """One row in its own savepoint; the row's new values (applied by the caller)."""
        # read before the handler runs: a rolled-back savepoint expires what it touched
        item_id, kind, channel = item.id, item.kind, item.channel
        message_id = item.message_id
        row = _Failing(item)
        try:
            async with session.begin_nested():
                processed = await self.handler(session, item)
        except Exception as exc:  # nothing of it was kept: it runs again whole
            log.exception("inbox row %s (%s on %s) failed", item_id, kind, channel)
            processed = Processed(failed=f"{type(exc).__name__}: {exc}")
        if processed.failed is None:
            return {"id": item_id, "state": "done", "done_at": now, "payload": None,
                    "address": None, "sender": None, "error": None, "held_until": None,
                    "contact_id": processed.contact_id,
                    "message_id": processed.message_id or message_id}, processed.sent
        parked = inbox.fail(row, now, processed.failed,  # type: ignore[arg-type]
                            alerted=processed.alerted)
        if self.metrics is not None:
            self.metrics.inbox_failures.labels(kind, "parked" if parked else "retry").inc()
        if parked:
            log.error("inbox row %s parked after %d attempts: %s", item_id, row.attempts,
                      processed.failed)
        else:
            log.warning("inbox row %s failed (attempt %d), retried at %s: %s", item_id,
                        row.attempts, row.next_at.isoformat(), processed.failed)
        return {"id": item_id, "state": row.state, "attempts": row.attempts,
                "error": row.error, "next_at": row.next_at, "held_until": row.held_until,
                "payload": row.payload,
                "message_id": processed.message_id or message_id}, processed.sent


class _Failing:
    """The fields ``inbox.fail`` reads and sets, copied off the ORM row."""

    def __init__(self, item: InboxItem) -> None:
        self.attempts = item.attempts or 0
        self.error: str | None = item.error
        self.held_until = item.held_until
        self.next_at = item.next_at
        self.state = item.state
        self.payload = dict(item.payload) if item.payload is not None else None
