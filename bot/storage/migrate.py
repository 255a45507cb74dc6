"""Alembic migrations, run from inside the package (an installed wheel migrates too)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on the engine's database."""
    config = alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    async with engine.connect() as conn:

        def _run(sync_conn: Connection) -> None:
            if sqlite:  # a table rebuild drops and renames tables: no cascades meanwhile
                _pragma(sync_conn, "PRAGMA foreign_keys=OFF")
            try:
                config.attributes["connection"] = sync_conn
                command.upgrade(config, revision)
                if sqlite:
                    sync_conn.commit()
                    broken = sync_conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    sync_conn.rollback()
                    if broken:
                        raise RuntimeError(f"foreign keys broken by a migration: {broken[:5]}")
            finally:
                if sqlite:
                    _pragma(sync_conn, "PRAGMA foreign_keys=ON")

        await conn.run_sync(_run)
        await conn.commit()


def _pragma(sync_conn: Connection, statement: str) -> None:
    """A PRAGMA outside any transaction, straight on the driver's connection (SQLite
    ignores ``foreign_keys`` inside one)."""
    cursor = sync_conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
