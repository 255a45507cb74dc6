"""Test fixtures: real SQLite files and a real PostgreSQL server, the same tests over both.

Each test gets its own database: a copy of a migrated SQLite template file, or a PostgreSQL
database cloned from a migrated template (``CREATE DATABASE … TEMPLATE``). Every database
made here is dropped at the end. No ``.env`` is read and every ``RELAIS_*`` variable is
cleared, so the developer's environment cannot change a result.

This file serves every tier (``unit``, ``integration``, ``channels``, ``e2e``); what tests
share beyond fixtures is in ``tests/helpers``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import time_machine

from bot.app import Services, open_services
from bot.core.config import Settings
from bot.storage.db import make_engine
from bot.storage.migrate import upgrade
from tests.helpers.db import make_settings

for _name in [n for n in os.environ if n.startswith("RELAIS_")]:
    del os.environ[_name]

PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_counter = itertools.count()
_PREFIX = f"relais_test_{os.getpid()}"


def _pg_dsn(database: str) -> str:
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{database}"


def _async_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


# Tests start on a Tuesday morning in Paris (inside the default opening hours, outside quiet
# hours) so that nothing depends on when the suite runs; time still flows (tick=True) and
# tests that need another moment travel again.
START = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fixed_start() -> Iterator[None]:
    with time_machine.travel(START, tick=True):
        yield


@pytest.fixture
def no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from an empty directory, so that the CLI reads no ``.env`` of the developer's.
    A module that needs it for every test says ``pytestmark = usefixtures("no_dotenv")``."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = f"{_PREFIX}_template"

    async def create() -> None:
        await _admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
        await _migrate(_async_url(_pg_dsn(name)))

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.exit(f"PostgreSQL is required at {PG_URL} ({exc}); run ./run-tests.sh", 3)
    yield name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database URL, once per backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "relais.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template_name: str = request.getfixturevalue("pg_template")
    name = f"{_PREFIX}_{next(_counter)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    try:
        yield _async_url(_pg_dsn(name))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "relais.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    svc = await open_services(settings, migrate=False)
    try:
        yield svc
    finally:
        await svc.close()
