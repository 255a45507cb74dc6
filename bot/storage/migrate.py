"""Alembic migrations, run from inside the package (an installed wheel migrates too)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on the engine's database."""
    config = alembic_config()
    async with engine.connect() as conn:

        def _run(sync_conn: object) -> None:
            config.attributes["connection"] = sync_conn
            command.upgrade(config, revision)

        await conn.run_sync(_run)
        await conn.commit()
