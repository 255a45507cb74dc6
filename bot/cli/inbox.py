"""``relais inbox``: the webhooks received and not processed yet, the ones parked after their
retries, and retrying those once the cause is fixed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli.common import WHEN_WIDTH, console, in_transaction, safe, when
from bot.core.clock import Clock

if TYPE_CHECKING:
    from bot.app import Services

inbox_app = typer.Typer(help="Received webhooks: waiting, parked, retried.",
                        no_args_is_help=True)


@inbox_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """How many events wait, how late the oldest is, and every parked one with its reason."""
    from bot.storage import inbox

    async def work(session: AsyncSession, services: Services) -> tuple[Any, ...]:
        pending, parked, lag = await inbox.depth(session, Clock().now())
        return pending, lag, await inbox.parked(session, limit=200), \
            services.settings.timezone

    pending, lag, parked, tz = in_transaction(work)
    if as_json:
        typer.echo(json.dumps({
            "waiting": pending, "lag_seconds": round(lag, 1),
            "parked": [{"id": i.id, "kind": i.kind, "channel": i.channel,
                        "received_at": i.received_at.isoformat(), "attempts": i.attempts,
                        "error": i.error} for i in parked],
        }, ensure_ascii=False))
        return
    typer.echo(f"waiting: {pending} (oldest {lag:.0f} s); parked: {len(parked)}")
    if not parked:
        return
    table = Table()
    table.add_column("id", no_wrap=True, justify="right")
    table.add_column("received", no_wrap=True, min_width=WHEN_WIDTH)
    table.add_column("kind", no_wrap=True)
    table.add_column("channel", no_wrap=True)
    table.add_column("tries", no_wrap=True, justify="right")
    table.add_column("reason", overflow="fold", ratio=1)
    for item in parked:
        table.add_row(str(item.id), when(item.received_at, tz), item.kind, item.channel,
                      str(item.attempts), safe(item.error or ""))
    console().print(table)
    typer.echo("once the cause is fixed: relais inbox retry [ID ...]")


@inbox_app.command("retry")
def retry(ids: list[int] = typer.Argument(None, metavar="[ID]...",
                                          help="Parked rows to retry (all by default).")
          ) -> None:
    """Put parked events back in the inbox: the workers process them again."""
    from bot.storage import inbox

    async def work(session: AsyncSession, _services: Services) -> int:
        return await inbox.retry_parked(session, Clock().now(), ids or None)

    count = in_transaction(work)
    typer.echo(f"{count} parked event{'s' if count != 1 else ''} back in the inbox")
