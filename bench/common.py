"""Shared helpers of the benchmark scripts: throwaway databases, timing, tables, the machine.

Every database made here is removed when its ``async with`` block ends, on error too; the
names of PostgreSQL databases still alive are remembered, and ``run`` drops any left over
(an interrupt during cleanup) before the script exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.core.config import Settings, load_settings
from bot.storage.db import make_engine, sessionmaker
from bot.storage.migrate import upgrade

DEFAULT_PG_URL = os.environ.get(
    "RELAIS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgres")
_LEFTOVER_PG: dict[str, str] = {}  # database name -> admin DSN, while it exists


# -- command line --------------------------------------------------------------------------


def add_db_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", choices=("sqlite", "postgres", "both"), default="both",
        help="which database(s) to run on (default: both)",
    )
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL,
        help="PostgreSQL server to create the throwaway database on "
        "(default: $RELAIS_BENCH_PG_URL or %(default)s)",
    )


def backends(choice: str) -> list[str]:
    return list(BACKENDS) if choice == "both" else [choice]


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """``asyncio.run(main())`` with quiet logs; SIGINT and SIGTERM cancel it (so every
    ``temp_database`` block cleans up), then any database left behind is dropped."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_cancellable(main))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if _LEFTOVER_PG:
            asyncio.run(_drop_leftovers())


async def _cancellable(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, task.cancel)
        except (NotImplementedError, RuntimeError):  # not on this platform
            pass
    started = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    try:
        status = await main()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(signum)
            except (NotImplementedError, RuntimeError):
                pass
    _warn_if_busy(started)
    return status


def _warn_if_busy(started: float) -> None:
    """Other work on the machine skews every figure: say so."""
    if not hasattr(os, "getloadavg"):
        return
    now = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if max(started, now) > cores * 0.75:
        print(f"\nnote: load average {started:.1f} at the start, {now:.1f} at the end, on "
              f"{cores} core(s): other work was running; these figures are low and noisy",
              file=sys.stderr)


async def _drop_leftovers() -> None:
    for name, admin in list(_LEFTOVER_PG.items()):
        try:
            await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            _LEFTOVER_PG.pop(name, None)
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"could not drop database {name}: {exc}", file=sys.stderr)


# -- throwaway databases ---------------------------------------------------------------------


class DatabaseUnavailable(Exception):
    """The throwaway database could not be made (server down, refused, no rights)."""


@dataclass
class BenchDB:
    """A fresh, migrated database and the one SQLAlchemy engine every measure goes through."""

    backend: str  # "sqlite" or "postgres"
    url: str  # async SQLAlchemy URL
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    server_version: str
    where: str  # a file path or a database name, for the header


def admin_dsn(pg_url: str) -> str:
    """The server URL as asyncpg wants it (``postgresql://…``), whatever the spelling."""
    url = make_url(pg_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def temp_database(
    backend: str, pg_url: str = DEFAULT_PG_URL, suffix: str = ""
) -> AsyncIterator[BenchDB]:
    """A fresh database migrated with ``bot.storage.migrate.upgrade``; removed afterwards.

    SQLite: a file in a new temporary folder. PostgreSQL: ``relais_bench_<pid>[suffix]``
    created on ``pg_url``'s server and dropped ``WITH (FORCE)`` at the end.
    """
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="relais-bench-")
        path = os.path.join(folder, "relais.db")
        url = f"sqlite+aiosqlite:///{path}"
        engine: AsyncEngine | None = None
        try:
            engine = make_engine(url)
            await upgrade(engine)
            yield BenchDB(backend, url, engine, sessionmaker(engine),
                          load_settings(env_file=None, database_url=url),
                          sqlite3.sqlite_version, path)
        finally:
            if engine is not None:
                await engine.dispose()
            shutil.rmtree(folder, ignore_errors=True)
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}")
    name = f"relais_bench_{os.getpid()}{suffix}"
    dsn = admin_dsn(pg_url)
    url = make_url(pg_url).set(drivername="postgresql+asyncpg", database=name)
    url_text = url.render_as_string(hide_password=False)
    hidden = make_url(dsn).render_as_string(hide_password=True)
    try:
        await _admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"PostgreSQL at {hidden}: {exc}") from exc
    _LEFTOVER_PG[name] = dsn
    engine = None
    try:
        try:
            await _admin(dsn, f'CREATE DATABASE "{name}"')
        except asyncpg.PostgresError as exc:
            raise DatabaseUnavailable(f"PostgreSQL at {hidden}: {exc}") from exc
        engine = make_engine(url_text)
        await upgrade(engine)
        async with engine.connect() as conn:
            version = str(await conn.scalar(sqlalchemy.text("SHOW server_version")))
        yield BenchDB(backend, url_text, engine, sessionmaker(engine),
                      load_settings(env_file=None, database_url=url_text),
                      version.split()[0], name)
    finally:
        if engine is not None:
            await engine.dispose()
        await _admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _LEFTOVER_PG.pop(name, None)


async def vacuum_analyze(db: BenchDB, *tables: str) -> None:
    """What autovacuum would have done by then (PostgreSQL); ``ANALYZE`` is left to the
    operator on SQLite, so nothing is done there."""
    if db.backend != "postgres":
        return
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in tables:
            await conn.execute(sqlalchemy.text(f"VACUUM ANALYZE {table}"))


# -- SQL statement counter -------------------------------------------------------------------


class StatementCounter:
    """Counts statements sent to the driver (an ``executemany`` counts once)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        self._engine = engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *_args: Any) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._on_execute)


# -- timing ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Stopwatch:
    """``with Stopwatch() as sw: …`` then ``sw.seconds``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


# -- printing --------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1000.0
    if ms < 1:
        return f"{ms:.2f}"
    return f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def goal_text(value: float, goal: float, unit: str) -> str:
    verdict = "met" if value >= goal else "MISSED"
    return f"≥ {goal:,.0f} {unit}: {verdict}"


def machine_description() -> str:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    cpu = platform.processor() or platform.machine()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{usable} usable core(s) of {cores} ({cpu}{load}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, "
        f"SQLAlchemy {sqlalchemy.__version__}, SQLite {sqlite3.sqlite_version}"
    )


def print_header(title: str, details: Sequence[str]) -> None:
    print(title)
    print("=" * len(title))
    for line in details:
        print(f"  {line}")
    print(flush=True)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
                width: int = 120) -> None:
    """A table with rich when it is installed (it is a dependency), else plain text;
    ``width``: the narrowest console it is laid out for."""
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency of relais
        _plain_table(title, columns, rows)
        return
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    Console(width=max(width, shutil.get_terminal_size().columns)).print(table)


def _plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print(title)
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    print()


def print_summary(lines: Sequence[str]) -> None:
    """The block to paste into the README."""
    print()
    print("summary (for the README)")
    print("------------------------")
    for line in lines:
        print(line)
    sys.stdout.flush()


# -- the machine's load ----------------------------------------------------------------------


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def busy_warning(load: float | None) -> str | None:
    """A warning line when other work competes for the cores, else None."""
    cores = os.cpu_count() or 1
    if load is None or load <= cores * 0.75:
        return None
    return (f"warning: load average {load:.1f} on {cores} core(s): the machine is busy, "
            f"these figures are low and noisy")


# -- helper processes ------------------------------------------------------------------------

CHILD_START_TIMEOUT = 60.0  # seconds for a helper process to import, start and say "ready"
_POLL = 0.2  # seconds a blocking pipe poll may hold an executor thread


class ChildFailed(Exception):
    """A helper process died, or did not answer in time."""


def _child_entry(target: Callable[..., None], conn: Any, *args: Any) -> None:
    # The parent decides when a helper stops (Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    target(conn, *args)


class Child:
    """A helper process (``spawn``) this one talks to over a pipe.

    ``target(conn, *args)`` runs in the child: it sends one message when it is ready (kept in
    ``ready``), then answers each request with one message (``serve_parent`` does that), and
    on ``None`` stops, sending one last report. ``async with`` always ends the process: asked
    politely, then ``terminate``, then ``kill``; it is also a daemon, ended with this one.
    """

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        self.name = name
        context = multiprocessing.get_context("spawn")
        self._conn, self._child_conn = context.Pipe()
        self._process = context.Process(
            target=_child_entry, args=(target, self._child_conn, *args), name=name, daemon=True
        )
        self._lock = asyncio.Lock()
        self.ready: Any = None
        self.final: Any = None

    async def __aenter__(self) -> Child:
        self._process.start()
        self._child_conn.close()
        try:
            self.ready = await self._receive(CHILD_START_TIMEOUT)
        except BaseException:
            self.kill()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is None:
            self.final = await self.close()
        else:
            self.kill()

    async def ask(self, request: Any, timeout: float = 30.0) -> Any:
        async with self._lock:
            self._conn.send(request)
            return await self._receive(timeout)

    async def close(self, timeout: float = 60.0) -> Any:
        """Ask the child to stop; its last report, or None when it had to be killed."""
        final = None
        try:
            if self._process.is_alive():
                async with self._lock:
                    self._conn.send(None)
                    final = await self._receive(timeout)
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self._process.join, 10.0)
        except (ChildFailed, OSError) as exc:
            print(f"{self.name}: {exc}", file=sys.stderr)
        finally:
            self.kill()
        return final

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(3.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(1.0)
        self._conn.close()

    async def _receive(self, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await loop.run_in_executor(None, self._conn.poll, _POLL):
                try:
                    return self._conn.recv()
                except EOFError:
                    raise ChildFailed(f"the {self.name} process ended (exit code "
                                      f"{self._process.exitcode})") from None
            if not self._process.is_alive():
                raise ChildFailed(f"the {self.name} process ended (exit code "
                                  f"{self._process.exitcode})")
            if loop.time() > deadline:
                raise ChildFailed(f"the {self.name} process did not answer in {timeout:.0f} s")


async def serve_parent(conn: Any, handle: Callable[[Any], Coroutine[Any, Any, Any]]) -> None:
    """In a child: answer each request with ``await handle(request)`` until the parent sends
    None or goes away."""
    loop = asyncio.get_running_loop()
    parent = multiprocessing.parent_process()
    while True:
        if not await loop.run_in_executor(None, conn.poll, _POLL):
            if parent is not None and not parent.is_alive():
                return
            continue
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        conn.send(await handle(request))


# -- the fake providers, in a helper process ---------------------------------------------------

FAKE_KINDS = ("twilio", "whatsapp", "telegram")


def fake_providers_process(conn: Any, ceilings: dict[str, float | None]) -> None:
    """A ``Child`` target: the fakes of ``tests/fakes`` named in ``ceilings`` (kind → their
    ``rate_limit``), on 127.0.0.1. Ready message: kind → base URL. Requests:
    ``("reset", {kind: ceiling})`` forgets everything and sets a new ceiling;
    ``("count", kind)`` → (messages accepted, throttled); ``("sent", kind, since)`` →
    (provider id, recipient) of the messages accepted from index ``since`` on;
    ``("sent_times", kind, since)`` → the same with the time each was accepted
    (``time.monotonic()``, one clock for every process of the machine);
    ``("stats", kind)`` → ``fake_stats``; ``("cpu",)`` → its CPU seconds. Last report:
    kind → ``fake_stats``."""
    asyncio.run(_fake_providers(conn, ceilings))


def _probe_class(base: type) -> type:
    class Probe(base):  # type: ignore[misc, valid-type]
        """The fake, also noting how early each message refused over the ceiling came:
        how much later it would have had to arrive for the oldest message of the sliding
        1 s window to have left it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.early_by: list[float] = []

        def throttle_response(self, retry_after: int) -> Any:
            if self._window:
                self.early_by.append(self._window[0] + 1.0 - self.clock())
            return super().throttle_response(retry_after)

        def clear(self) -> None:
            super().clear()
            self.early_by.clear()

    return Probe


def fake_stats(fake: Any) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for record in fake.requests:
        key = f"{record.route} {record.status}"
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "sent": len(fake.sent),
        "times": [m["time"] for m in fake.sent],  # time.monotonic() of the fake's process
        "recipients": len({m["to"] for m in fake.sent}),
        "throttled": fake.throttled,
        "early_by": list(fake.early_by),
        "unexpected": len(fake.unexpected),
        "unexpected_sample": [f"{r.method} {r.path} → {r.status}: {str(r.body)[:200]}"
                              for r in fake.unexpected[:3]],
        "requests": statuses,
    }


async def _fake_providers(conn: Any, ceilings: dict[str, float | None]) -> None:
    from contextlib import AsyncExitStack

    from tests.fakes.telegram import FakeTelegram
    from tests.fakes.twilio import FakeTwilio
    from tests.fakes.whatsapp import FakeWhatsApp

    classes = {"twilio": FakeTwilio, "whatsapp": FakeWhatsApp, "telegram": FakeTelegram}
    fakes = {kind: _probe_class(classes[kind])(rate_limit=ceiling)
             for kind, ceiling in ceilings.items()}

    async def handle(request: Any) -> Any:
        operation = request[0]
        if operation == "cpu":
            return time.process_time()
        if operation == "reset":
            for kind, ceiling in request[1].items():
                fakes[kind].clear()
                fakes[kind].rate_limit = ceiling
            return True
        fake = fakes[request[1]]
        if operation == "count":
            return len(fake.sent), fake.throttled
        if operation == "sent":
            return [(m["id"], m["to"]) for m in fake.sent[request[2]:]]
        if operation == "sent_times":  # (provider id, recipient, time.monotonic() accepted)
            return [(str(m["id"]), m["to"], m["time"]) for m in fake.sent[request[2]:]]
        if operation == "stats":
            return fake_stats(fake)
        raise ValueError(f"unknown request {request!r}")

    async with AsyncExitStack() as stack:
        for fake in fakes.values():
            await stack.enter_async_context(fake)
        conn.send({kind: fake.url for kind, fake in fakes.items()})
        await serve_parent(conn, handle)
        conn.send({kind: fake_stats(fake) for kind, fake in fakes.items()})


def achieved_rate(times: Sequence[float]) -> float:
    """Messages per second from the first to the last one (n - 1 intervals)."""
    if len(times) < 2:
        return 0.0
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else float("inf")


# -- figures other scripts read ----------------------------------------------------------------


def write_json(path: str | None, figures: dict[str, Any]) -> None:
    """``--json FILE``: the script's figures, for ``bench/run_all.py`` (NaN becomes null)."""
    if not path:
        return
    import json
    import math

    def clean(value: Any) -> Any:
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    with open(path, "w", encoding="utf-8") as handle:
        json.dump(clean(figures), handle, indent=2, ensure_ascii=False)
        handle.write("\n")


async def one_row_tx_rate(db: BenchDB, rows: int = 1000, concurrency: int = 1) -> float:
    """The database's ceiling for the work a webhook or an event needs at least: one-row
    INSERT transactions per second through the same SQLAlchemy engine (a scratch table,
    dropped afterwards)."""
    from datetime import UTC, datetime

    from sqlalchemy import Column, DateTime, Integer, MetaData, Table, Text, insert

    scratch = Table(
        "bench_tx_ceiling", MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("body", Text, nullable=False),
        Column("at", DateTime(timezone=True), nullable=False),
    )
    async with db.engine.begin() as conn:
        await conn.run_sync(scratch.create)
    try:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate, db.engine.begin() as conn:
                await conn.execute(insert(scratch).values(body="Bonjour, j'ai besoin d'aide",
                                                          at=datetime.now(UTC)))

        for _ in range(20):  # pool connections, compiled statement
            await one()
        with Stopwatch() as watch:
            await asyncio.gather(*(one() for _ in range(rows)))
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(scratch.drop)
    return rate(rows, watch.seconds)


def process_rss_mb(pid: int) -> float:
    """Resident memory of a running process (``VmRSS``), in MB; NaN when unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/PID/stat``); NaN when
    unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def relais_env(settings: dict[str, Any]) -> dict[str, str]:
    """The environment for a ``relais`` child process from ``load_settings`` keyword values
    (``twilio_rate`` → ``RELAIS_TWILIO_RATE``); this process's other ``RELAIS_*`` are left
    out, so only what the bench chose applies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    for key, value in settings.items():
        env[f"RELAIS_{key.upper()}"] = str(value)
    return env
