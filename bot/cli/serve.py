"""``relais serve`` and ``relais worker``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import typer
from aiohttp import web

from bot.cli.common import guarded, run_app, settings, setup_logging
from bot.core.config import Settings

log = logging.getLogger("relais.serve")


def plain_http_warning(config: Settings) -> str | None:
    """The start-up warning when providers are told to call Relais over plain http."""
    if config.base_url.lower().startswith("https://"):
        return None
    return (f"RELAIS_PUBLIC_URL is {config.base_url}: signatures are checked against "
            f"{config.base_url}; use https in production (over http a captured webhook "
            f"can be read and replayed)")


def warn_plain_http(config: Settings) -> None:
    """Once at start: in the log, and on stderr (printed when the log does not go there)."""
    message = plain_http_warning(config)
    if message is None:
        return
    log.warning("%s", message)
    to_stderr = any(isinstance(handler, logging.StreamHandler)
                    and getattr(handler, "stream", None) is sys.stderr
                    for handler in logging.getLogger().handlers)
    if not (to_stderr and log.isEnabledFor(logging.WARNING)):
        print(f"warning: {message}", file=sys.stderr, flush=True)


LOG_LEVEL_HELP = "How much to log on stderr: DEBUG, INFO, WARNING or ERROR."


def serve(
    no_workers: bool = typer.Option(
        False, "--no-workers",
        help="Serve the web only: webhooks are stored, `relais worker` processes them."),
    log_level: str = typer.Option("INFO", "--log-level", help=LOG_LEVEL_HELP),
) -> None:
    """Webhooks, inbox and outbox workers and scheduler in one process."""
    setup_logging(log_level)
    config = settings()
    warn_plain_http(config)
    from bot.web.app import create_app, make_runner

    async def _go() -> None:
        application = create_app(config, workers=not no_workers)
        runner = make_runner(application, handle_signals=False)
        await runner.setup()  # opens the database: errors surface here, before listening
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        print(f"relais serving on http://{config.host}:{config.port} "
              f"(public URL {config.base_url})", flush=True)
        await _wait_for_signal()
        log.info("stopping: finishing in-flight requests and sends")
        await runner.cleanup()  # finishes in-flight sends, releases leases
        log.info("stopped")

    guarded(_go)  # the web application opens the app itself (bot.web.app)


def worker(log_level: str = typer.Option("INFO", "--log-level", help=LOG_LEVEL_HELP)) -> None:
    """Inbox and outbox workers and scheduler without HTTP (extra processes on PostgreSQL)."""
    setup_logging(log_level)
    config = settings()

    async def work(services: Any) -> None:
        from bot.app import background, channels

        async with channels(services), background(services):
            print("relais worker running", flush=True)
            await _wait_for_signal()
            log.info("stopping: finishing in-flight sends and jobs")
        log.info("stopped")

    run_app(work, config=config, log_level=None)


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
