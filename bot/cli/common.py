"""What every command shares: settings, logging, one-line errors and exit codes."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from rich.console import Console
from rich.markup import escape

from bot.config import ConfigError, Settings, load_settings
from bot.storage.db import DatabaseError

T = TypeVar("T")

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2

err = Console(stderr=True, highlight=False)

# What a terminal would obey rather than show: C0 and C1 control characters (ESC starts the
# colour, cursor, title and hyperlink sequences), DEL, and the bidirectional overrides and
# isolates that reorder what follows them. Line and paragraph breaks become spaces.
_BREAKS = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def plain(text: object) -> str:
    """Text someone else wrote (a name, a message, a note, an address, a tag...), fit for
    one line of a terminal: breaks become spaces, control characters are dropped, every
    printable character (accents, Arabic, emoji) is kept. ``None`` is "". For output that
    Rich does not read as markup (``typer.echo``, ``sys.stderr.write``)."""
    if text is None:
        return ""
    return _CONTROLS.sub("", _BREAKS.sub(" ", str(text)))


def safe(text: object) -> str:
    """``plain(text)`` escaped for Rich markup: for table cells and ``console.print``, so
    ``[/]`` or ``[link=...]`` in a citizen's name is shown as typed, never obeyed.

    Rendered alone (a cell), it shows exactly ``plain(text)``. Rich doubles a trailing
    backslash so that it cannot escape markup written right after it; that doubling would
    show, so it is undone here: never write a markup tag right after a ``safe()`` value."""
    shown = plain(text)
    escaped = escape(shown)
    if shown.endswith("\\") and not shown.endswith("\\\\"):
        return escaped[:-1]  # the one backslash Rich added
    return escaped


def console(*, stderr: bool = False, width: int | None = None) -> Console:
    """The console of tables and listings: no highlighting, no ``:emoji:`` codes (a name
    is shown as typed)."""
    return Console(stderr=stderr, highlight=False, emoji=False, width=width)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    sys.stderr.write(f"relais: {plain(message)}\n")
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
