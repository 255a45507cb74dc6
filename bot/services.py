"""Wiring: settings → database → engine, outbox workers and scheduler, for every command."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.channels.base import Registry
from bot.clock import Clock
from bot.config import Settings
from bot.engine import Engine
from bot.media_store import install_media_jobs
from bot.metrics import Metrics
from bot.outbox import OutboxWorker, worker_name
from bot.scheduler import Scheduler, install_engine_jobs
from bot.storage.db import describe, make_engine, sessionmaker
from bot.storage.migrate import upgrade

log = logging.getLogger("relais")


@dataclass
class Services:
    settings: Settings
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    engine: Engine
    clock: Clock
    registry: Registry = field(default_factory=Registry)
    metrics: Metrics = field(default_factory=Metrics)
    workers: list[OutboxWorker] = field(default_factory=list)

    def outbox_worker(self, **kwargs: object) -> OutboxWorker:
        worker = OutboxWorker(
            self.sessions, self.registry, self.clock, metrics=self.metrics,
            worker_id=worker_name(), settings=self.settings,
            **kwargs,  # type: ignore[arg-type]
        )
        self.workers.append(worker)
        return worker

    def scheduler(self) -> Scheduler:
        return Scheduler(self.sessions, self.clock, worker_id=worker_name(),
                         settings=self.settings, registry=self.registry)

    def wake_workers(self) -> None:
        for worker in self.workers:
            worker.wake()

    async def close(self) -> None:
        await self.db.dispose()


async def open_services(
    settings: Settings, clock: Clock | None = None, migrate: bool = True
) -> Services:
    """Open the database (migrating it on first use) and build the engine."""
    clock = clock or Clock()
    db = make_engine(settings.database_url)
    log.info("database: %s", describe(settings.database_url))
    if migrate:
        await upgrade(db)
    sessions = sessionmaker(db)
    metrics = Metrics()
    services = Services(settings=settings, db=db, sessions=sessions,
                        engine=Engine(sessions, settings, clock, metrics=metrics),
                        clock=clock, metrics=metrics)
    services.engine.on_commit = services.wake_workers
    install_engine_jobs(services.engine)
    install_media_jobs()
    return services
