"""Settings for a test database, and one unit of work on it outside any running app."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.config import Settings, load_settings
from bot.storage.db import make_engine, sessionmaker

T = TypeVar("T")


def make_settings(db_url: str, **overrides: object) -> Settings:
    """Settings on ``db_url``, no ``.env`` read, ``overrides`` as keyword settings."""
    return load_settings(env_file=None, database_url=db_url, **overrides)


def in_db(db_url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work(session)`` in one transaction on a fresh engine (beside a CLI call)."""

    async def go() -> T:
        engine = make_engine(db_url)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(go())
