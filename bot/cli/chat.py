"""``relais chat``: talk to the bot in the terminal, same engine and database."""

from __future__ import annotations

import asyncio
import getpass
import re

import typer
from rich.console import Console

from bot.cli.common import run, safe, settings, setup_logging
from bot.cli.root import app
from bot.types import Outbound

console = Console(highlight=False)


def _default_name() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "moi"
    return re.sub(r"[^A-Za-z0-9_.-]", "", name) or "moi"


@app.command()
def chat(
    name: str = typer.Option(None, "--as", help="Who you are (terminal:NAME)"),
    lang: str = typer.Option(None, "--lang", help="Your language (fr, en…)"),
) -> None:
    """Talk to the bot as a citizen, in this terminal."""
    setup_logging("WARNING")
    config = settings()
    who = name or _default_name()
    run(lambda: _chat(config, who, lang))


def _show(message: Outbound, text: str) -> None:
    console.print()
    for line in text.splitlines():
        console.print(f"[bold cyan]relais>[/] {safe(line)}" if line else "", markup=True,
                      soft_wrap=True)


async def _chat(config, who: str, lang: str | None) -> None:  # noqa: ANN001
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    from sqlalchemy import select

    from bot.channels.terminal import TerminalChannel
    from bot.i18n import normalise_language
    from bot.services import open_services
    from bot.storage.models import Address, Contact
    from bot.types import Inbound

    services = await open_services(config)
    services.registry.add(TerminalChannel(_show))
    worker = services.outbox_worker(only_to=who, poll_interval=1.0)
    scheduler = services.scheduler()
    lock = asyncio.Lock()
    if lang:
        async with services.sessions() as session, session.begin():
            contact = await session.scalar(
                select(Contact).join(Address, Address.contact_id == Contact.id).where(
                    Address.channel == "terminal", Address.external_id == who
                )
            )
            if contact is not None:
                contact.language = normalise_language(lang)

    async def drain() -> None:
        async with lock:
            await scheduler.run_due()
            while await worker.drain_once():
                pass

    async def background() -> None:  # mediators' replies arriving while we wait
        while True:
            await asyncio.sleep(1.0)
            await drain()

    console.print(f"[dim]Relais chat as terminal:{who}. Type a message; Ctrl-D to leave.[/]")
    poller = asyncio.create_task(background())
    try:
        while True:
            try:
                line = await asyncio.to_thread(input, "vous> ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if not line.strip():
                continue
            await services.engine.handle(
                Inbound("terminal", f"terminal:{who}", line, language_hint=lang)
            )
            await drain()
    finally:
        poller.cancel()
        await services.close()
    console.print("[dim]Au revoir.[/]")
