"""The ``relais`` command."""

from __future__ import annotations

import sys

from bot.cli.app import app


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
