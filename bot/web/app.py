"""The aiohttp application of ``relais serve``: webhooks, health, metrics, and (unless
``--no-workers``) the outbox workers and scheduler in the same process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.app import Services, background, channels, inbox_processing, open_app
from bot.core.channel import MAX_BODY, AdapterSpec, BadInput, Route
from bot.core.clock import Clock
from bot.core.config import Settings
from bot.delivery.outbox import depth
from bot.domain.media_links import ensure_signing_key
from bot.storage import inbox
from bot.storage.db import READ_ONLY, ping
from bot.web import media
from bot.web.access_log import SafeAccessLogger
from bot.web.keys import SERVICES

log = logging.getLogger("relais.web")


# Slow clients: a connection that has not sent a whole request head within HEADER_TIMEOUT
# seconds (or stays idle that long between requests) is closed; a request body must arrive
# within BODY_TIMEOUT seconds (408). Long-lived streams (server-sent events) are GETs
# without a body and are not bounded here.
HEADER_TIMEOUT = 15.0
BODY_TIMEOUT = 30.0
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Errors that can only come from what the client sent, whatever the handler: 400.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    UnicodeDecodeError, json.JSONDecodeError, RecursionError,
)



Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def bad_input(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bounded body reads, and known bad-input errors as 400 (a genuine bug stays a 500)."""
    # multipart bodies are read as a stream by ``request.post()``: not read ahead here
    if request.method in BODY_METHODS and request.can_read_body \
            and request.content_type != "multipart/form-data":
        try:
            await asyncio.wait_for(request.read(), BODY_TIMEOUT)  # cached for the handler
        except TimeoutError:
            log.info("%s %s refused (408): body not received in %gs", request.method,
                     request.path, BODY_TIMEOUT)
            raise web.HTTPRequestTimeout(text="request body too slow") from None
    try:
        return await handler(request)
    except BadInput as exc:
        log.info("%s %s refused (400): %s", request.method, request.path, exc)
        raise web.HTTPBadRequest(text=str(exc) or "bad request") from None
    except BAD_INPUT_ERRORS as exc:
        log.info("%s %s refused (400): %s", request.method, request.path,
                 type(exc).__name__)
        raise web.HTTPBadRequest(text="malformed request") from None


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, where a request it could not even parse (bad bytes in the
    request line or headers: the client's fault, answered 400) is one INFO line, not an
    ERROR with a traceback; every other error stays an ERROR."""

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError) and (exc_info.code or 400) < 500:
            self.info("%s: %s (%s)", msg % args if args else msg, type(exc_info).__name__,
                      exc_info.code)
            return
        self.error(msg, *args, exc_info=exc_info, **kwargs)


def make_runner(app: web.Application, *, header_timeout: float = HEADER_TIMEOUT,
                **kwargs: Any) -> web.AppRunner:
    """The runner ``relais serve`` listens with: a connection that has not sent a whole
    request head within ``header_timeout`` seconds is closed (slow clients)."""
    kwargs.setdefault("logger", _ServerLog(logging.getLogger("aiohttp.server"), {}))
    kwargs.setdefault("access_log_class", SafeAccessLogger)  # no query values in the log
    return web.AppRunner(app, keepalive_timeout=header_timeout, **kwargs)


async def healthz(request: web.Request) -> web.Response:
    """200 ``ok`` when the database answers, 200 ``degraded`` when the inbox lags past
    ``RELAIS_INBOX_LAG_DEGRADED`` (webhooks are still stored: nothing is lost), 503 when the
    database does not answer."""
    services = request.app[SERVICES]
    if not await ping(services.db):
        return web.json_response({"status": "database unavailable"}, status=503)
    try:
        async with services.sessions() as session:
            await session.connection(execution_options={READ_ONLY: True})
            pending, _parked, lag = await inbox.depth(session, services.clock.now())
    except Exception:
        return web.json_response({"status": "database unavailable"}, status=503)
    limit = services.settings.inbox_lag_limit
    if lag > limit:
        return web.json_response({"status": "degraded", "inbox_pending": pending,
                                  "inbox_lag_seconds": round(lag, 1)})
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        async with services.sessions() as session:
            await session.connection(execution_options={READ_ONLY: True})  # no write lock
            counts = await depth(session)
            pending, parked, lag = await inbox.depth(session, services.clock.now())
        for status in ("queued", "sending", "in_doubt"):
            services.metrics.outbox_depth.labels(status).set(counts.get(status, 0))
        services.metrics.inbox_depth.labels("pending").set(pending)
        services.metrics.inbox_depth.labels("parked").set(parked)
        services.metrics.inbox_lag.set(lag)
    except Exception:  # metrics must answer even when the database does not
        log.warning("outbox and inbox depth unavailable for /metrics")
    body = generate_latest(services.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _mount(app: web.Application, spec: AdapterSpec, route: Route) -> None:
    """An adapter's webhook, given the hub of the running application."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await route.handler(request, request.app[SERVICES].hub(spec))

    app.router.add_route(route.method, route.path, handler)


def create_app(
    settings: Settings,
    *,
    workers: bool = True,
    clock: Clock | None = None,
    services: Services | None = None,
    inbox_workers: bool | None = None,
) -> web.Application:
    """Build the application. Each resource opens in its own lifecycle context (database,
    channels, background work: ``bot.app``), closed if and only if it was opened.
    ``workers``: the outbox worker and scheduler (and, unless ``inbox_workers`` says
    otherwise, the inbox workers) run in this process."""
    inbox_on = workers if inbox_workers is None else inbox_workers
    app = web.Application(client_max_size=MAX_BODY, middlewares=[bad_input])

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            svc = services or await stack.enter_async_context(open_app(settings, clock))
            app[SERVICES] = svc
            await stack.enter_async_context(channels(svc))
            try:  # so that /media itself never writes (it still can, once, if this fails)
                await ensure_signing_key(svc.sessions)
            except Exception:  # the server starts anyway; /healthz tells the database is down
                log.warning("media link key not checked: the database does not answer")
            if workers:
                await stack.enter_async_context(background(svc, inbox=inbox_on))
            elif inbox_on:
                await stack.enter_async_context(inbox_processing(svc))
            yield

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    media.install(app)
    from bot.channels import ADAPTERS

    for spec in ADAPTERS:
        for route in spec.routes:
            _mount(app, spec, route)
    return app
