"""Command definitions (typer). Each command module adds itself to ``app``."""

from __future__ import annotations

from bot.cli import chat, db, serve  # noqa: F401 - they register their commands
from bot.cli.root import app

__all__ = ["app"]
