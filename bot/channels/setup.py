"""Which channels this process can use, from the settings. Provider adapters add themselves
here; a channel without credentials is disabled with one clear log line."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.services import Services

log = logging.getLogger("relais.channels")

Configurer = Callable[[Services], Awaitable[None]]
Closer = Callable[[Services], Awaitable[None]]
CONFIGURERS: list[tuple[Configurer, Closer | None]] = []


def register(configure: Configurer, close: Closer | None = None) -> None:
    """Called by each provider module at import."""
    CONFIGURERS.append((configure, close))


async def configure_channels(services: Services) -> None:
    from bot.channels import providers  # noqa: F401 - registers the provider adapters

    for configure, _close in CONFIGURERS:
        await configure(services)
    if not services.registry.names():
        log.info("no provider channel is configured: only `relais chat` can talk to the bot")


async def close_channels(services: Services) -> None:
    for _configure, close in CONFIGURERS:
        if close is not None:
            await close(services)
