"""Autogenerate an Alembic revision from the models: python scripts/new_migration.py "message" 0002

Runs against a scratch SQLite file migrated to head first; review the result by hand
(replace UTCDateTime with sa.DateTime(timezone=True)) before committing.
"""
import asyncio
import sys

from alembic import command

from bot.storage.db import make_engine
from bot.storage.migrate import alembic_config


async def main():
    engine = make_engine("sqlite+aiosqlite:////tmp/autogen.db")
    config = alembic_config()
    async with engine.connect() as conn:
        def run(c):
            config.attributes["connection"] = c
            command.revision(config, message=sys.argv[1], autogenerate=True, rev_id=sys.argv[2])
        await conn.run_sync(run)
asyncio.run(main())
