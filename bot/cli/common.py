"""What every command shares: settings, logging, one-line errors and exit codes."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from rich.console import Console

from bot.config import ConfigError, Settings, load_settings
from bot.storage.db import DatabaseError

T = TypeVar("T")

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2

err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    sys.stderr.write(f"relais: {message}\n")
    sys.exit(code)


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc))


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiosqlite", "asyncio", "httpx", "telegram", "twilio.http_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; database and configuration problems become one line, exit 2/1."""
    try:
        return asyncio.run(coro_factory())  # type: ignore[arg-type]
    except (ConfigError, DatabaseError) as exc:
        fail(str(exc))
    except OSError as exc:  # e.g. PostgreSQL not answering
        fail(f"database unavailable: {exc}", code=1)
    except Exception as exc:
        name = type(exc).__module__ + "." + type(exc).__name__
        if name.startswith(("sqlalchemy.", "asyncpg.", "sqlite3.")):
            fail(f"database error: {_first_line(exc)}", code=1)
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
