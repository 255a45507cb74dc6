"""The aiohttp application of ``relais serve``: webhooks, health, metrics, and (unless
``--no-workers``) the outbox workers and scheduler in the same process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.clock import Clock
from bot.config import Settings
from bot.outbox import depth
from bot.services import Services, open_services
from bot.storage.db import ping

log = logging.getLogger("relais.web")

SERVICES = web.AppKey("services", Services)
MAX_BODY = 1024 * 1024  # webhooks larger than 1 MiB get 413

# Channel adapters register a function that adds their routes (and gets the services).
RouteInstaller = Callable[[web.Application], None]
ROUTE_INSTALLERS: list[RouteInstaller] = []


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if await ping(services.db):
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "database unavailable"}, status=503)


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        async with services.sessions() as session:
            counts = await depth(session)
        for status in ("queued", "sending", "in_doubt"):
            services.metrics.outbox_depth.labels(status).set(counts.get(status, 0))
    except Exception:  # metrics must answer even when the database does not
        log.warning("outbox depth unavailable for /metrics")
    body = generate_latest(services.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    settings: Settings,
    *,
    workers: bool = True,
    clock: Clock | None = None,
    services: Services | None = None,
) -> web.Application:
    """Build the application; resources open in ``cleanup_ctx`` (closed iff opened)."""
    app = web.Application(client_max_size=MAX_BODY)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        own = services is None
        svc = services or await open_services(settings, clock)
        app[SERVICES] = svc
        from bot.channels.setup import configure_channels

        await configure_channels(svc)
        tasks: list[asyncio.Task[None]] = []
        stoppers = []
        if workers:
            from bot.rights import plan_daily

            await plan_daily(svc.sessions, svc.settings, svc.clock.now())
            worker = svc.outbox_worker()
            scheduler = svc.scheduler()
            tasks = [asyncio.create_task(worker.run()), asyncio.create_task(scheduler.run())]
            stoppers = [worker.stop, scheduler.stop]
            log.info("outbox worker and scheduler started (channels: %s)",
                     ", ".join(svc.registry.names()) or "none")
        yield
        for stop in stoppers:
            stop()
        if tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        from bot.channels.setup import close_channels

        await close_channels(svc)
        if own:
            await svc.close()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    from bot.channels import providers  # noqa: F401 - registers the provider adapters
    from bot.web import media

    media.install(app)
    for install in ROUTE_INSTALLERS:
        install(app)
    return app
