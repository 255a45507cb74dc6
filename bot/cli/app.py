"""Command definitions (typer). Each command module adds itself to ``app``."""

from __future__ import annotations

from bot.cli import (  # noqa: F401 - importing a module registers its commands
    broadcast,
    channels,
    chat,
    checkins,
    contacts,
    db,
    inspect,
    queue,
    report,
    resources,
    rights,
    serve,
    slots,
    staff,
)
from bot.cli.root import app

__all__ = ["app"]
