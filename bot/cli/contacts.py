"""``relais contacts import FILE.csv [--tag TAG] [--dry-run]`` · ``contacts list [--tag TAG]
[--json]`` · ``contacts show ADDRESS [--json]`` · ``contacts tag|untag ADDRESS TAG…``."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.addresses import AddressError
from bot.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    console,
    fail,
    plain,
    run,
    safe,
    settings,
    setup_logging,
)
from bot.cli.root import app
from bot.config import Settings

T = TypeVar("T")

contacts_app = typer.Typer(
    help="The people you follow: import a list, look someone up, tag them.",
    no_args_is_help=True,
)
app.add_typer(contacts_app, name="contacts")


class NotFound(Exception):
    """Exit 1 with this one line."""


def _error(text: str) -> None:
    sys.stderr.write(f"relais: {plain(text)}\n")


async def _in_transaction(
    config: Settings, work: Callable[[AsyncSession, Any], Awaitable[T]]
) -> T:
    from bot.rights import CHECKPOINT
    from bot.services import open_services
    from bot.storage.db import checkpoint

    services = await open_services(config)
    try:
        async with services.sessions() as session, session.begin():
            result = await work(session, services.clock.now())
        if session.info.get(CHECKPOINT):  # an erasure: leave nothing in SQLite's WAL
            await checkpoint(services.db)
        return result
    finally:
        await services.close()


def execute(work: Callable[[AsyncSession, Any], Awaitable[T]]) -> T:
    """Run ``work(session, now)`` in one transaction; NotFound exits 1, a bad address 2."""
    setup_logging("WARNING")
    config = settings()
    try:
        return run(lambda: _in_transaction(config, work))
    except NotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except AddressError as exc:
        fail(f"bad address {exc}", EXIT_USAGE)


def check_address(address: str) -> str:
    from bot.addresses import parse_address

    try:
        return str(parse_address(address))
    except AddressError as exc:
        fail(f"bad address {exc}", EXIT_USAGE)


FILE_ARGUMENT = typer.Argument(
    ..., exists=True, dir_okay=False, readable=True, show_default=False,
    help="A CSV file: phone (or address), name, language, postcode, tags, consent",
)


@contacts_app.command("import")
def import_(
    file: Path = FILE_ARGUMENT,
    tag: list[str] = typer.Option(None, "--tag", help="Add this tag to everyone imported"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and count; store nothing"),
) -> None:
    """Import contacts: bad rows are reported with their line and the rest imports.
    Re-importing merges (tags added, empty fields filled, nothing erased)."""
    from bot import contacts

    setup_logging("WARNING")
    config = settings()
    parsed = contacts.read_contacts(file.read_bytes(), extra_tags=tag or ())
    if parsed.error:
        _error(f"{file.name}: {parsed.error}")
        _error(f"{file.name}: nothing imported")
        raise typer.Exit(EXIT_NOT_FOUND)
    problems = [(p.line, f"{p}: row rejected") for p in parsed.rejected]
    problems += [(p.line, str(p)) for p in parsed.warnings]
    for _line, text in sorted(problems, key=lambda item: item[0]):
        _error(f"{file.name} {text}")
    terminal = Console(stderr=True)
    progress = None
    if terminal.is_terminal and parsed.people:
        progress = Progress(
            TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=terminal, transient=True,
        )

    async def go() -> contacts.ImportSummary:
        from bot.services import open_services

        services = await open_services(config)
        try:
            if progress is None:
                return await contacts.import_contacts(
                    services.sessions, parsed, now=services.clock.now(),
                    default_timezone=config.timezone, source=file.name, dry_run=dry_run,
                )
            with progress:
                task = progress.add_task("import", total=len(parsed.people))
                return await contacts.import_contacts(
                    services.sessions, parsed, now=services.clock.now(),
                    default_timezone=config.timezone, source=file.name, dry_run=dry_run,
                    progress=lambda n: progress.advance(task, n),
                )
        finally:
            await services.close()

    summary = run(go)
    for conflict in summary.conflicts:
        _error(f"{file.name} {conflict}")
    for line in summary.skipped_lines:
        _error(f"{file.name} line {line}: skipped: this person asked to be forgotten "
               "after saying STOP")
    typer.echo(f"{'dry run, nothing stored: ' if dry_run else ''}{file.name}: {summary}")
    if parsed.rejected:
        raise typer.Exit(EXIT_NOT_FOUND)


@contacts_app.command("list")
def list_(
    tag: str = typer.Option(None, "--tag", help="Only contacts with this tag"),
    as_json: bool = typer.Option(False, "--json", help="One JSON array on stdout"),
) -> None:
    """Contacts, their addresses, language, postcode, tags and news consent."""
    from bot import contacts

    async def work(session: AsyncSession, now: Any) -> list[contacts.ContactRow]:
        return await contacts.list_contacts(session, tag=tag)

    rows = execute(work)
    if as_json:
        typer.echo(json.dumps([r.summary() for r in rows], ensure_ascii=False))
        return
    if not rows:
        typer.echo("no contacts" + (f" tagged {tag}" if tag else "")
                   + ": relais contacts import FILE.csv")
        return
    table = Table("address", "name", "lang", "postcode", "tags", "news", "notes")
    for r in rows:
        notes = []
        if r.opted_out_at is not None:
            notes.append("STOP")
        if any(a["landline"] for a in r.addresses):
            notes.append("landline")
        if r.staff_role:
            notes.append(r.staff_role)
        table.add_row(safe(r.address), safe(r.name), safe(r.language), safe(r.postcode),
                      safe(" ".join(r.tags)), _yes_no(r.consents.get("news")),
                      safe(", ".join(notes)))
    out = console()
    out.print(table)
    out.print(f"{len(rows)} contacts")


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


@contacts_app.command("show")
def show(
    address: str = typer.Argument(..., help="sms:+33…, whatsapp:+33…, telegram:ID, or a number"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout"),
) -> None:
    """One contact: addresses (landline, blocked), tags, consents, language, postcode."""
    from bot import contacts

    target = check_address(address)

    async def work(session: AsyncSession, now: Any) -> contacts.ContactRow:
        row = await contacts.find(session, target)
        if row is None:
            raise NotFound(f"no contact at {target}")
        return row

    row = execute(work)
    details = row.details()
    if as_json:
        typer.echo(json.dumps(details, ensure_ascii=False))
        return
    out = console()
    out.print(Text(plain(row.name or "(no name)"), style="bold"), f" contact {row.id}")
    for item in row.addresses:
        flags = [f for f, on in (("landline: no SMS", item["landline"]),
                                 (f"blocked {item['blocked_reason'] or ''}".strip(),
                                  item["blocked_at"])) if on]
        out.print("  " + safe(item["address"])
                  + (f"  ({safe(', '.join(flags))})" if flags else ""))
    for label, value in (
        ("language", row.language), ("postcode", row.postcode), ("time zone", row.timezone),
        ("tags", " ".join(row.tags)),
        ("consents", ", ".join(f"{k}: {_yes_no(v)}" for k, v in sorted(row.consents.items()))),
        ("STOP since", details["opted_out_at"]), ("staff", row.staff_role),
        ("created", details["created_at"]), ("last wrote", details["last_inbound_at"]),
    ):
        if value:
            out.print(f"  {label}: {safe(value)}")


def _tagging(address: str, tags: list[str], add: bool) -> None:
    from bot import contacts

    target = check_address(address)
    if not any(contacts.parse_tags(t) for t in tags):
        fail("give at least one tag", EXIT_USAGE)

    async def work(session: AsyncSession, now: Any) -> list[str]:
        row = await contacts.find(session, target)
        if row is None:
            raise NotFound(f"no contact at {target}")
        change = contacts.add_tags if add else contacts.remove_tags
        return await change(session, row.id, tags)

    changed = execute(work)
    verb = "tagged" if add else "untagged"
    if changed:
        typer.echo(f"{verb} {target}: {plain(' '.join(changed))}")
    else:
        typer.echo(f"{target}: nothing to change")


@contacts_app.command("tag")
def tag_(
    address: str = typer.Argument(..., help="The contact's address"),
    tags: list[str] = typer.Argument(..., help="One or more tags"),
) -> None:
    """Add tags to a contact (tags are lower case)."""
    _tagging(address, tags, add=True)


@contacts_app.command("untag")
def untag(
    address: str = typer.Argument(..., help="The contact's address"),
    tags: list[str] = typer.Argument(..., help="One or more tags"),
) -> None:
    """Remove tags from a contact."""
    _tagging(address, tags, add=False)
