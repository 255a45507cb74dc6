"""``relais db upgrade``."""

from __future__ import annotations

from typing import Any

import typer

from bot.cli.common import run_app, settings
from bot.storage.db import describe

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations."""

    async def work(services: Any) -> None:
        return None  # opening the application applies the migrations

    config = settings()
    run_app(work, config=config)
    typer.echo(f"database up to date: {describe(config.database_url)}")
