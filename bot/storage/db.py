"""Database engine and sessions.

SQLite: WAL, a busy timeout, and every transaction opened with ``BEGIN IMMEDIATE`` so that
writers are serialised up front (SQLAlchemy drops ``FOR UPDATE`` there). PostgreSQL:
asyncpg, row locks and ``SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import os
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

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A connection marked READ_ONLY (``read_only`` below) reads a WAL snapshot without
        # taking the write lock; every other transaction is a writer.
        read = conn.get_execution_options().get(READ_ONLY)
        conn.exec_driver_sql("BEGIN DEFERRED" if read else "BEGIN IMMEDIATE")


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
