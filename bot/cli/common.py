"""What every command shares: settings, logging, one-line errors and exit codes, and the
one way a command runs (``run_app``: open the app, run, map errors to the exit codes).

Exit codes: 0 done, 1 not found or some rows rejected, 2 usage or configuration error.
Nothing goes to stderr unless something went wrong (or the command documents a status line
there, like ``broadcast send``, whose stdout is the id alone)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape

from bot.core.config import ConfigError, Settings, load_settings
from bot.storage.db import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.app import Services

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


def console(*, stderr: bool = False, width: int | None = None,
            piped_width: int | None = None) -> Console:
    """The console of tables and listings: no highlighting, no ``:emoji:`` codes (a name
    is shown as typed). On a terminal its width is the terminal's (``COLUMNS`` when set);
    ``piped_width`` is the width used when the output goes to a pipe or a file instead."""
    out = Console(stderr=stderr, highlight=False, emoji=False, width=width)
    if width is None and piped_width is not None and not out.is_terminal \
            and not os.environ.get("COLUMNS"):
        out.width = piped_width
    return out


class NotFound(Exception):
    """Raised inside a command: exit 1 with this one line."""


class Usage(Exception):
    """Raised inside a command: exit 2 with this one line."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    sys.stderr.write(f"relais: {plain(message)}\n")
    sys.exit(code)


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc))


NOISY = ("aiosqlite", "asyncio", "httpx", "telegram", "twilio.http_client")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- times --------------------------------------------------------------------------------------


def when(moment: datetime | str | None, tz: str) -> str:
    """A time as every human (non ``--json``) output shows it: in ``RELAIS_TIMEZONE`` with
    its offset, to the second (``2030-03-05T14:00:00+01:00``); "" for None. A naive time is
    taken as UTC (what the database stores)."""
    if moment is None or moment == "":
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo("UTC"))
    return moment.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")


WHEN_WIDTH = len("2030-03-05T14:00:00+01:00")  # a table column of times: never folded


# -- addresses ------------------------------------------------------------------------------------

ADDRESS_EXAMPLES = "sms:+33612345678, whatsapp:+33612345678, telegram:123456789"


def address_problem(raw: str, what: str) -> str | None:
    """The one line for an address that cannot be understood, or None when it can."""
    from bot.core.addresses import AddressError, parse_address

    try:
        parse_address(raw)
    except AddressError:
        return f"{what}: {raw.strip()!r} is not an address ({ADDRESS_EXAMPLES}, or a French " \
               "phone number)"
    return None


def check_address(raw: str, what: str = "ADDRESS") -> str:
    """``CHANNEL:ID`` of an address given on the command line; exit 2 with one line when it
    cannot be understood (``what`` names the argument or option: ``--as``, ``ADDRESS``)."""
    from bot.core.addresses import parse_address

    problem = address_problem(raw, what)
    if problem is not None:
        fail(problem, EXIT_USAGE)
    return str(parse_address(raw))


def not_staff(address: str, what: str = "--as") -> str:
    return f"{what}: {address} is not a registered staff member (relais staff list)"


async def acting_staff(session: AsyncSession, address: str, what: str = "--as") -> Any:
    """The staff member ``--as`` names (an address already checked), or ``Usage``."""
    from bot.domain.staff import find_staff

    member = await find_staff(session, address)
    if member is None:
        raise Usage(not_staff(address, what))
    return member


# -- running a command ----------------------------------------------------------------------------


def run_app(
    work: Callable[[Services], Awaitable[T]], *, config: Settings | None = None,
    migrate: bool = True, log_level: str | None = "WARNING",
) -> T:
    """The one way a command runs: logging (``log_level``; None: the caller set it up),
    the settings, the application opened (``bot.app.open_app``, closed whatever happens),
    ``work(services)``, and every error as one line on stderr with its exit code."""
    if log_level is not None:
        setup_logging(log_level)
    config = config or settings()

    async def go() -> T:
        from bot.app import open_app

        async with open_app(config, migrate=migrate) as services:
            return await work(services)

    return guarded(go)


def in_transaction(work: Callable[[AsyncSession, Services], Awaitable[T]], *,
                   config: Settings | None = None) -> T:
    """``run_app`` with ``work(session, services)`` in one transaction (an erasure leaves
    nothing in SQLite's write-ahead log)."""

    async def go(services: Services) -> T:
        from bot.domain.rights import CHECKPOINT
        from bot.storage.db import checkpoint

        async with services.sessions() as session, session.begin():
            result = await work(session, services)
        if session.info.get(CHECKPOINT):
            await checkpoint(services.db)
        return result

    return run_app(go, config=config)


def guarded(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; what went wrong becomes one line on stderr and its exit code.
    (``run_app`` uses it; ``serve``, whose web application opens the app, too.)"""
    from bot.core.addresses import AddressError

    try:
        return asyncio.run(coro_factory())  # type: ignore[arg-type]
    except NotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except Usage as exc:
        fail(str(exc), EXIT_USAGE)
    except AddressError as exc:
        fail(f"bad address {exc}", EXIT_USAGE)
    except (ConfigError, DatabaseError) as exc:
        fail(str(exc))
    except OSError as exc:  # e.g. PostgreSQL not answering
        fail(f"database unavailable: {exc}", code=EXIT_NOT_FOUND)
    except Exception as exc:
        name = type(exc).__module__ + "." + type(exc).__name__
        if name.startswith(("sqlalchemy.", "asyncpg.", "sqlite3.")):
            fail(f"database error: {_first_line(exc)}", code=EXIT_NOT_FOUND)
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
