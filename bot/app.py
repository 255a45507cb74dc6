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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import flows
from bot.core.channel import (
    PHONE_SHARED,
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
from bot.core.types import Inbound
from bot.delivery.outbox import OutboxWorker, worker_name
from bot.delivery.scheduler import JobRegistry, Scheduler
from bot.delivery.status import apply_update
from bot.domain import broadcasts, contacts, fallback, media_jobs, replay, rights
from bot.domain.tickets import notify, satisfaction
from bot.engine import Engine
from bot.storage.db import describe, make_engine, sessionmaker
from bot.storage.migrate import upgrade
from bot.storage.models import Outbox

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
    opened: dict[str, Opened] = field(default_factory=dict)  # by adapter name

    async def follow_up(self, session: AsyncSession, row: Outbox, failure: Failure,
                        now: datetime) -> bool:
        """After a WhatsApp failure: the template or SMS (``bot.domain.fallback``)."""
        return await fallback.after_failure(session, row, failure, now, self.settings) \
            is not None

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
                        clock=clock, metrics=metrics, jobs=job_registry(engine))
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
async def background(services: Services) -> AsyncIterator[None]:
    """The outbox worker and the scheduler of this process, with the daily jobs planned;
    on the way out, in-flight sends and jobs finish (at most ``STOP_TIMEOUT`` seconds)."""
    from bot.domain.rights import plan_daily

    await plan_daily(services.sessions, services.settings, services.clock.now())
    worker = services.outbox_worker()
    scheduler = services.scheduler()
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(scheduler.run())]
    log.info("outbox worker and scheduler started (channels: %s)",
             ", ".join(services.registry.names()) or "none")
    try:
        yield
    finally:
        worker.stop()
        scheduler.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                   STOP_TIMEOUT)


# -- the door of the adapters -----------------------------------------------------------------


class Sink:
    """``InboundSink`` of the application: messages to the engine, statuses to the one
    status applier, events to the domain, signatures to the seen-signature table."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def message(self, inbound: Inbound) -> str:
        result = await self.services.engine.handle(inbound)
        return result.outcome.value

    async def status(self, update: StatusUpdate) -> None:
        services = self.services
        now = services.clock.now()
        async with services.sessions() as session, session.begin():
            applied = await apply_update(session, update, now, services.follow_up)
        if applied.followed_up:
            services.wake_workers()
        if applied.row_id is None:
            log.info("%s status %s for %s: no such outbox row", update.channel,
                     update.status, update.provider_id)
        else:
            log.info("%s status %s for outbox row %s: now %s%s", update.channel,
                     update.status, applied.row_id, applied.status,
                     f" ({update.failure.value if update.failure else 'failed'}, "
                     f"{update.error_code})" if applied.newly_failed else "")

    async def event(self, event: ChannelEvent) -> None:
        services = self.services
        if event.kind == PHONE_SHARED and event.value:
            async with services.sessions() as session, session.begin():
                await contacts.attach_shared_phone(session, event.address, event.value,
                                                   services.clock.now(),
                                                   services.settings.timezone)
            return
        log.info("%s event %s ignored", event.channel, event.kind)

    async def seen(self, provider: str, signature: str, fields: str) -> Verdict:
        return await replay.check(self.services.sessions, self.services.clock, provider,
                                  signature, fields)

    def count(self, channel: str, outcome: str) -> None:
        self.services.metrics.inbound.labels(channel, outcome).inc()
