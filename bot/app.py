"""The composition root: what every command opens, each resource in its own lifecycle
context (closed if and only if it was opened), and the registries that join layers, built
once here and handed down.

- ``open_app``: settings -> database (migrated on first use) -> engine, job registry;
- ``channels``: the provider adapters of ``bot.channels.ADAPTERS``, opened from the settings
  (a channel without credentials is off, with one log line);
- ``background``: the outbox worker and the scheduler, stopped (in-flight sends finished)
  on the way out.

``relais serve`` (``bot.web.app``), ``relais worker`` and every other command go through
these; ``Sink`` is the door the adapters' webhooks hand what they receive to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import flows
from bot.core import masking
from bot.core.channel import (
    AdapterSpec,
    ChannelEvent,
    Failure,
    Hub,
    Opened,
    Registry,
    StatusUpdate,
    Verdict,
)
from bot.core.clock import Clock
from bot.core.config import Settings
from bot.core.metrics import Metrics
from bot.core.text import clean_text
from bot.core.types import Inbound
from bot.delivery.inbox import InboxWorker, Processed
from bot.delivery.outbox import OutboxWorker, worker_name
from bot.delivery.scheduler import JobRegistry, Scheduler
from bot.domain import broadcasts, fallback, media_jobs, replay, rights, staff_sms
from bot.domain.tickets import notify, satisfaction
from bot.engine import Engine, StepFailed
from bot.storage import inbox
from bot.storage.db import describe, make_engine, sessionmaker
from bot.storage.group_commit import GroupCommit
from bot.storage.migrate import upgrade
from bot.storage.models import InboxItem, Outbox

log = logging.getLogger("relais")

STOP_TIMEOUT = 30.0  # seconds given to in-flight sends and jobs on the way out


@dataclass
class Services:
    settings: Settings
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    engine: Engine
    clock: Clock
    jobs: JobRegistry = field(default_factory=JobRegistry)
    registry: Registry = field(default_factory=Registry)
    metrics: Metrics = field(default_factory=Metrics)
    workers: list[OutboxWorker] = field(default_factory=list)
    inbox_workers: list[InboxWorker] = field(default_factory=list)
    opened: dict[str, Opened] = field(default_factory=dict)  # by adapter name
    accept: GroupCommit | None = None  # the webhooks' shared commits (``open_services``)

    async def follow_up(self, session: AsyncSession, row: Outbox, failure: Failure,
                        now: datetime) -> bool:
        """After a WhatsApp failure: the template or SMS (``bot.domain.fallback``)."""
        return await fallback.after_failure(session, row, failure, now, self.settings) \
            is not None

    def inbox_worker(self, **kwargs: Any) -> InboxWorker:
        worker = InboxWorker(self.sessions, self.clock, self.handle_item,
                             worker_id=worker_name(), metrics=self.metrics,
                             on_sent=self.wake_workers, **kwargs)
        self.inbox_workers.append(worker)
        return worker

    async def handle_item(self, session: AsyncSession, item: InboxItem) -> Processed:
        """An inbox row through the engine (``bot.delivery.inbox`` calls this)."""
        try:
            result = await self.engine.process_item(session, item, self.follow_up)
        except StepFailed as exc:
            return Processed(message_id=item.message_id, failed=str(exc),
                             alerted=bool((item.payload or {}).get("alerted")))
        return Processed(
            contact_id=result.contact_id, message_id=result.message_id,
            sent=bool(result.outbox_ids) or result.alerted,
            failed=(result.error or "flow step failed") if result.step_failed else None,
            alerted=result.alerted,
        )

    def wake_inbox(self) -> None:
        for worker in self.inbox_workers:
            worker.wake()

    async def drain_inbox(self) -> int:
        """Process every inbox row ready now, in this task (tests, tools)."""
        worker = InboxWorker(self.sessions, self.clock, self.handle_item,
                             metrics=self.metrics, on_sent=self.wake_workers)
        return await worker.drain()

    def outbox_worker(self, **kwargs: object) -> OutboxWorker:
        worker = OutboxWorker(
            self.sessions, self.registry, self.clock, metrics=self.metrics,
            worker_id=worker_name(), settings=self.settings, follow_up=self.follow_up,
            **kwargs,  # type: ignore[arg-type]
        )
        self.workers.append(worker)
        return worker

    def scheduler(self) -> Scheduler:
        return Scheduler(self.sessions, self.jobs, self.clock, worker_id=worker_name(),
                         settings=self.settings, registry=self.registry,
                         machine=self.engine.machine)

    def wake_workers(self) -> None:
        for worker in self.workers:
            worker.wake()

    def hub(self, spec: AdapterSpec) -> Hub:
        """What the adapter's webhooks are given."""
        return Hub(settings=self.settings, clock=self.clock, sink=Sink(self),
                   opened=self.opened.get(spec.name))

    async def close(self) -> None:
        if self.accept is not None:
            await self.accept.close()
        await self.db.dispose()


def job_registry(engine: Engine) -> JobRegistry:
    """Every job kind, from the lists the modules declare (flow-owned jobs beside the flows)."""
    return JobRegistry([
        *engine.jobs(), *flows.JOBS, *notify.JOBS, *satisfaction.JOBS, *rights.JOBS,
        *broadcasts.JOBS, *media_jobs.JOBS,
    ])


async def open_services(
    settings: Settings, clock: Clock | None = None, migrate: bool = True
) -> Services:
    """Open the database (migrating it on first use) and build the engine. The caller
    closes it (``open_app`` does)."""
    clock = clock or Clock()
    db = make_engine(settings.database_url)
    log.info("database: %s", describe(settings.database_url))
    try:
        if migrate:
            await upgrade(db)
        sessions = sessionmaker(db)
        metrics = Metrics()
        engine = Engine(sessions, settings, clock, metrics=metrics)
    except BaseException:
        await db.dispose()
        raise
    services = Services(settings=settings, db=db, sessions=sessions, engine=engine,
                        clock=clock, metrics=metrics, jobs=job_registry(engine),
                        accept=GroupCommit(sessions))
    engine.on_commit = services.wake_workers
    return services


@asynccontextmanager
async def open_app(
    settings: Settings, clock: Clock | None = None, migrate: bool = True
) -> AsyncIterator[Services]:
    """The application for one command: its database (migrated on first use), engine and
    job registry; closed on the way out, whatever happens."""
    services = await open_services(settings, clock, migrate)
    try:
        yield services
    finally:
        await services.close()


# -- channels ---------------------------------------------------------------------------------


async def open_channels(services: Services) -> None:
    """Open every adapter the settings configure; their channels join the registry (in
    ``ADAPTERS`` order: WhatsApp by the Cloud API replaces WhatsApp by Twilio)."""
    from bot.channels import ADAPTERS  # the adapters, listed once

    try:
        for spec in ADAPTERS:
            opened = await spec.open(services.settings)
            if opened is None:
                continue
            services.opened[spec.name] = opened
            for channel in opened.channels:
                before = next((name for name, other in services.opened.items()
                               if name != spec.name and channel.name in
                               {c.name for c in other.channels}), None)
                if before is not None:
                    log.info("%s goes through %s, not %s", channel.name, spec.name, before)
                services.registry.add(channel)
    except BaseException:
        await close_channels(services)
        raise
    if not services.registry.names():
        log.info("no provider channel is configured: only `relais chat` can talk to the bot")


async def close_channels(services: Services) -> None:
    for name in list(services.opened):
        opened = services.opened.pop(name)
        for channel in opened.channels:
            if services.registry.get(channel.name) is channel:
                services.registry.remove(channel.name)
        if opened.close is not None:
            try:
                await opened.close()
            except Exception:  # closing one must not leak the others
                log.exception("closing the %s adapter failed", name)
    await asyncio.sleep(0)  # let aiohttp close its connections


@asynccontextmanager
async def channels(services: Services) -> AsyncIterator[None]:
    await open_channels(services)
    try:
        yield
    finally:
        await close_channels(services)


# -- background work --------------------------------------------------------------------------


@asynccontextmanager
async def inbox_processing(services: Services) -> AsyncIterator[None]:
    """The inbox workers of this process; on the way out, the rows in hand finish. The
    danger-word lexicons (seconds of regular-expression compiling) are read in a thread
    at once, so that the first message is not the one that waits for them."""
    from bot.domain import danger

    warm = asyncio.create_task(asyncio.to_thread(danger.lexicons))
    worker = services.inbox_worker()
    task = asyncio.create_task(worker.run())
    log.info("inbox worker started (%d task%s)", worker.concurrency,
             "s" if worker.concurrency > 1 else "")
    try:
        yield
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True),
                                   STOP_TIMEOUT)
        services.inbox_workers.remove(worker)
        await asyncio.gather(warm, return_exceptions=True)


@asynccontextmanager
async def background(services: Services, *, inbox: bool = True) -> AsyncIterator[None]:
    """The inbox workers, the outbox worker and the scheduler of this process, with the
    daily jobs planned; on the way out, in-flight events, sends and jobs finish (at most
    ``STOP_TIMEOUT`` seconds)."""
    from bot.domain.rights import plan_daily

    await plan_daily(services.sessions, services.settings, services.clock.now())
    worker = services.outbox_worker()
    scheduler = services.scheduler()
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(scheduler.run())]
    log.info("outbox worker and scheduler started (channels: %s)",
             ", ".join(services.registry.names()) or "none")
    try:
        async with contextlib.AsyncExitStack() as stack:
            if inbox:
                await stack.enter_async_context(inbox_processing(services))
            yield
    finally:
        worker.stop()
        scheduler.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                   STOP_TIMEOUT)


# -- the door of the adapters -----------------------------------------------------------------


class Sink:
    """``InboundSink`` of the application: every message, status and event becomes one inbox
    row, committed (with the other webhooks of the same few milliseconds: the group commit)
    before the adapter answers the provider; the inbox workers process it."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def _store(self, op: Callable[[AsyncSession], Awaitable[int | None]]) -> int | None:
        services = self.services
        assert services.accept is not None
        item_id = await services.accept.run(op)
        if item_id is not None:
            services.wake_inbox()
        return item_id

    async def message(self, inbound: Inbound) -> str:
        now = self.services.clock.now()
        clear = clean_text(inbound.text)
        external = inbound.address.partition(":")[2]
        maybe_code = inbound.channel == "sms" and staff_sms.may_be_code(clear)
        masked = None if maybe_code else masking.mask(clear)  # outside the shared commit

        async def op(session: AsyncSession) -> int | None:
            text, kinds, code = (masked.text, masked.kinds, None) if masked is not None \
                else await _seal(session, external, clear)
            return await inbox.insert(session, inbox.message_values(
                inbound, text, tuple(kinds), now, staff_code=code))

        if await self._store(op) is None:
            self.count(inbound.channel, "duplicate")
            log.info("inbound %s on %s: duplicate", inbound.provider_id, inbound.channel)
            return "duplicate"
        return "stored"

    async def status(self, update: StatusUpdate) -> None:
        values = inbox.status_values(update, self.services.clock.now())
        await self._store(lambda session: inbox.insert(session, values))

    async def event(self, event: ChannelEvent) -> None:
        values = inbox.event_values(event, self.services.clock.now())
        await self._store(lambda session: inbox.insert(session, values))

    async def seen(self, provider: str, signature: str, fields: str) -> Verdict:
        services = self.services
        assert services.accept is not None
        now = services.clock.now()
        return await services.accept.run(
            lambda session: replay.record(session, now, provider, signature, fields))

    def count(self, channel: str, outcome: str) -> None:
        self.services.metrics.inbound.labels(channel, outcome).inc()


async def _seal(session: AsyncSession, external_id: str, clear: str
                ) -> tuple[str, tuple[str, ...], str | None]:
    """A 6-digit SMS: a staff one-time code is sealed before masking (never kept clear)."""
    code = await staff_sms.intercept(session, external_id, clear)
    masked = masking.mask(staff_sms.STORED_CODE if code else clear)
    return masked.text, tuple(masked.kinds), code
