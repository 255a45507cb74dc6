"""``relais db upgrade``."""

from __future__ import annotations

import typer

from bot.cli.common import run, settings, setup_logging
from bot.cli.root import app
from bot.storage.db import describe, make_engine
from bot.storage.migrate import upgrade

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations."""
    setup_logging("WARNING")
    config = settings()

    async def _go() -> None:
        engine = make_engine(config.database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    run(_go)
    typer.echo(f"database up to date: {describe(config.database_url)}")
