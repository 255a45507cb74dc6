"""``relais channels``: each channel's state and webhook URL; ``channels setup`` registers
the Telegram webhook."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from bot.cli.common import EXIT_NOT_FOUND, EXIT_USAGE, fail, settings, setup_logging
from bot.core.config import Settings

channels_app = typer.Typer(help="Each channel's state; register the Telegram webhook.")

TELEGRAM_PORTS = (443, 80, 88, 8443)  # the only ports Telegram calls webhooks on
COLUMNS = ("channel", "provider", "enabled", "webhook_url", "reason")


def collect(config: Settings) -> list[dict[str, Any]]:
    """One row per channel, from each adapter's ``status(settings)`` (``bot.channels``)."""
    from bot.channels import ADAPTERS

    rows: list[dict[str, Any]] = []
    for spec in ADAPTERS:
        try:
            if spec.status is not None:
                rows.extend(dict(row) for row in spec.status(config))
                continue
            reason = f"the {spec.name} adapter does not report its state"
        except Exception as exc:  # one broken adapter must not hide the others
            reason = f"the {spec.name} adapter failed: {type(exc).__name__}: {exc}"
        rows.extend(
            {"channel": spec.name, "provider": spec.name, "enabled": False, "reason": reason,
             "webhook_url": f"{config.base_url}{route.path}"}
            for route in spec.routes[:1]
        )
    return rows


PROVIDER_CHANNELS = ("sms", "whatsapp", "telegram")  # the others (terminal) need no provider


def channel_problem(config: Settings, channel: str) -> str | None:
    """Why Relais cannot send on ``channel`` with these settings (the variables to set), or
    None when it can (or when the channel needs no provider)."""
    if channel not in PROVIDER_CHANNELS:
        return None
    rows = [row for row in collect(config) if row.get("channel") == channel]
    if not rows or any(row.get("enabled") for row in rows):
        return None
    reasons = "; ".join(f"{row.get('provider')}: {row.get('reason')}" for row in rows
                        if row.get("reason"))
    return f"{channel} is not configured ({reasons or 'no provider'}; see relais channels)"


@channels_app.callback(invoke_without_command=True)
def channels(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array on stdout."),
) -> None:
    """Each channel's state (enabled, or why not) and the webhook URL to give providers."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging("WARNING")
    config = settings()
    rows = collect(config)
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        _warn_public_url(config)
        return
    console = Console(highlight=False)
    if console.is_terminal:
        table = Table(title="Relais channels")
        for column in ("channel", "provider", "state", "webhook URL"):
            table.add_column(column, overflow="fold")
        for row in rows:
            state = "[green]enabled[/]" if row.get("enabled") else "[red]disabled[/]"
            if row.get("reason"):
                state += f"\n{row['reason']}"
            table.add_row(str(row.get("channel")), str(row.get("provider")), state,
                          str(row.get("webhook_url") or ""))
        console.print(table)
    else:  # piped: one line per channel, URLs unbroken
        for row in rows:
            state = "enabled" if row.get("enabled") else "disabled"
            line = [str(row.get("channel")), str(row.get("provider")), state,
                    str(row.get("webhook_url") or ""), str(row.get("reason") or "")]
            print("\t".join(line).rstrip())
    if console.is_terminal:  # advice for a person; piped, only the lines above
        console.print("Give Twilio and Meta the webhook URLs above in their consoles; "
                      "for Telegram run `relais channels setup`.", markup=False)
    _warn_public_url(config)


def _warn_public_url(config: Settings) -> None:
    """Something to fix, so on stderr."""
    if config.public_url is None:
        print(f"RELAIS_PUBLIC_URL is not set: these URLs use {config.base_url}, "
              "which providers cannot reach.", file=sys.stderr)


def telegram_url_problem(public_url: str | None) -> str | None:
    """Why Telegram would refuse ``{public_url}/webhooks/telegram``, or None."""
    if not public_url:
        return ("RELAIS_PUBLIC_URL is not set: Telegram needs this server's public "
                "https:// address")
    parts = urlsplit(public_url)
    if parts.scheme != "https":
        return f"RELAIS_PUBLIC_URL must start with https:// for Telegram (got {public_url})"
    try:
        port = parts.port or 443
    except ValueError:
        return f"RELAIS_PUBLIC_URL has an invalid port ({public_url})"
    if port not in TELEGRAM_PORTS:
        allowed = ", ".join(str(p) for p in TELEGRAM_PORTS)
        return (f"RELAIS_PUBLIC_URL uses port {port}; Telegram only calls webhooks on "
                f"ports {allowed}")
    return None


@channels_app.command()
def setup() -> None:
    """Register the Telegram webhook at RELAIS_PUBLIC_URL/webhooks/telegram."""
    setup_logging("WARNING")
    config = settings()
    from bot.channels.telegram import SECRET_RE_TEXT, secret_problem

    if not config.telegram_token:
        fail("RELAIS_TELEGRAM_TOKEN is not set: there is no Telegram bot to register")
    if not config.telegram_webhook_secret:
        fail("RELAIS_TELEGRAM_WEBHOOK_SECRET is not set: choose one "
             f"({SECRET_RE_TEXT}) so only Telegram can post updates")
    problem = secret_problem(config.telegram_webhook_secret) or telegram_url_problem(
        config.public_url
    )
    if problem:
        fail(problem)
    code, message = asyncio.run(_register(config))
    if code:
        fail(message, code)
    print(message)


async def _register(config: Settings) -> tuple[int, str]:
    """setWebhook; returns (exit code, the line to print)."""
    from telegram.error import BadRequest, InvalidToken, TelegramError

    from bot.channels.telegram import ALLOWED_UPDATES, WEBHOOK_PATH, make_bot, redact

    url = f"{config.public_url}{WEBHOOK_PATH}"
    token = config.telegram_token
    bot = make_bot(config)
    try:
        await bot.initialize()
        await bot.set_webhook(url=url, secret_token=config.telegram_webhook_secret,
                              allowed_updates=list(ALLOWED_UPDATES),
                              drop_pending_updates=False)
        info = await bot.get_webhook_info()
        line = f"Telegram webhook set for @{bot.username}: {url}"
    except InvalidToken:
        return EXIT_USAGE, "Telegram refused RELAIS_TELEGRAM_TOKEN (check it with BotFather)"
    except BadRequest as exc:
        return EXIT_USAGE, f"Telegram refused the webhook: {redact(exc.message, token)}"
    except TelegramError as exc:
        return EXIT_NOT_FOUND, f"Telegram could not be reached: {redact(str(exc), token)}"
    finally:
        await bot.shutdown()
    if info.pending_update_count:
        line += f" ({info.pending_update_count} updates waiting)"
    return 0, line
