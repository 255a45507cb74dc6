"""Database engine and sessions.

SQLite: WAL, a busy timeout, and every transaction opened with ``BEGIN IMMEDIATE`` so that
writers are serialised up front (SQLAlchemy drops ``FOR UPDATE`` there). PostgreSQL:
asyncpg, row locks and ``SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

log = logging.getLogger("relais.db")

SQLITE_BUSY_TIMEOUT_S = 30


class DatabaseError(Exception):
    """A database that cannot be used; ``str()`` is one line for the operator."""


def describe(url: str) -> str:
    """Where the database is, for the logs: an absolute path, or the URL without password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ":memory:"
        return "sqlite " + (db if db == ":memory:" else str(Path(db).resolve()))
    return "postgresql " + parsed.render_as_string(hide_password=True)


def check_sqlite_path(url: str) -> None:
    """Fail early, with one clear line, when a SQLite file cannot be created or written."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    if parsed.database == ":memory:":
        return
    path = Path(parsed.database).resolve()
    folder = path.parent
    if not folder.is_dir():
        raise DatabaseError(f"RELAIS_DATABASE_URL: folder {folder} does not exist")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise DatabaseError(f"RELAIS_DATABASE_URL: {path} is not writable")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseError(f"RELAIS_DATABASE_URL: cannot create {path} (folder not writable)")


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        check_sqlite_path(url)
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, **kwargs
        )
        _sqlite_events(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", False)
    return create_async_engine(url, **kwargs)


def _sqlite_events(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros: an erased person's words do not stay
        # readable in the file's free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    writers = _WriterTurns()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A connection marked READ_ONLY (``read_only`` below) reads a WAL snapshot without
        # taking the write lock; every other transaction is a writer, and waits for its
        # turn in this process first (``_WriterTurns``).
        read = conn.get_execution_options().get(READ_ONLY)
        if read:
            conn.exec_driver_sql("BEGIN DEFERRED")
            return
        key = id(conn.connection.dbapi_connection)
        writers.take(key)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            writers.give_back(key)
            raise

    @event.listens_for(engine.sync_engine, "commit")
    @event.listens_for(engine.sync_engine, "rollback")
    def _on_end(conn: Any) -> None:
        dbapi = conn.connection.dbapi_connection if not conn.closed else None
        if dbapi is not None:
            writers.give_back(id(dbapi))

    # A connection that goes back to the pool, is reset or invalidated without a commit or
    # a rollback (a cancelled task) gives its turn back too: a lost turn would stop every
    # writer of the process.
    for name in ("checkin", "reset", "invalidate", "close"):
        event.listen(engine.sync_engine.pool, name,
                     lambda dbapi, *_args: writers.give_back(id(dbapi)))


class _WriterTurns:
    """SQLite has one writer at a time. Writers of this process wait for their turn on an
    asyncio lock, first come first served, instead of racing for ``BEGIN IMMEDIATE``:
    SQLite's busy handler sleeps in growing steps (up to 100 ms) and would make a webhook
    that arrives while the inbox worker commits wait far longer than the commit takes.
    Other processes are still kept apart by SQLite's own lock and busy timeout."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = \
            weakref.WeakKeyDictionary()
        self._holder: tuple[int, asyncio.Lock] | None = None

    def take(self, key: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not under asyncio (a plain sync use): SQLite's lock alone
            return
        lock = self._locks.setdefault(loop, asyncio.Lock())
        try:
            await_only(asyncio.wait_for(lock.acquire(), SQLITE_BUSY_TIMEOUT_S))
        except TimeoutError:
            raise sqlite3.OperationalError("database is locked (waited for a writer of "
                                           "this process)") from None
        self._holder = (key, lock)

    def give_back(self, key: int) -> None:
        holder = self._holder
        if holder is None or holder[0] != key:
            return
        self._holder = None
        holder[1].release()


READ_ONLY = "relais_read_only"


@asynccontextmanager
async def read_only(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads only: on SQLite its transactions never take the write lock
    (``BEGIN DEFERRED`` on a WAL snapshot), so a slow reader never holds writers back."""
    async with engine.connect() as conn:
        await conn.execution_options(**{READ_ONLY: True})
        yield conn


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with read_only(engine) as conn:  # health checks never take the write lock
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not answering" for health checks
        return False


async def checkpoint(engine: AsyncEngine) -> None:
    """SQLite: copy the write-ahead log into the database and truncate it, so that what an
    erasure deleted is not left in the ``-wal`` file. Nothing to do on PostgreSQL."""
    if not is_sqlite(engine):
        return
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        cursor = await raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await cursor.close()
