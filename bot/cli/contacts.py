"""``relais contacts import FILE.csv [--tag TAG] [--dry-run]`` · ``contacts list [--tag TAG]
[--json]`` · ``contacts show ADDRESS [--json]`` · ``contacts tag|untag ADDRESS TAG…``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    NotFound,
    check_address,
    console,
    fail,
    in_transaction,
    plain,
    run_app,
    safe,
    settings,
    when,
)

if TYPE_CHECKING:
    from bot.app import Services

contacts_app = typer.Typer(
    help="The people you follow: import a list, look someone up, tag them.",
    no_args_is_help=True,
)

__all__ = ["NotFound", "check_address", "contacts_app"]


def _error(text: str) -> None:
    sys.stderr.write(f"relais: {plain(text)}\n")


FILE_ARGUMENT = typer.Argument(
    ..., exists=True, dir_okay=False, readable=True, show_default=False,
    help="A CSV file with the columns phone (or address), name, language, postcode, tags "
         "and consent.",
)


@contacts_app.command("import")
def import_(
    file: Path = FILE_ARGUMENT,
    tag: list[str] = typer.Option(None, "--tag", help="Add this tag to everyone imported."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Check the file and count; store nothing."),
) -> None:
    """Import contacts: bad rows are reported with their line and the rest imports.
    Re-importing merges (tags added, empty fields filled, nothing erased)."""
    from bot.domain import contacts

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

    async def work(services: Services) -> contacts.ImportSummary:
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

    summary = run_app(work, config=config)
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
    tag: str = typer.Option(None, "--tag", help="Only the contacts with this tag."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array on stdout."),
) -> None:
    """Contacts, their addresses, language, postcode, tags and news consent."""
    from bot.domain import contacts

    async def work(session: AsyncSession, services: Services) -> list[contacts.ContactRow]:
        return await contacts.list_contacts(session, tag=tag)

    rows = in_transaction(work)
    if as_json:
        typer.echo(json.dumps([r.summary() for r in rows], ensure_ascii=False))
        return
    if not rows:
        typer.echo("no contacts" + (f" tagged {tag}" if tag else "")
                   + ": relais contacts import FILE.csv")
        return
    table = Table()  # the address is never cut: it is how a contact is named in commands
    table.add_column("address", no_wrap=True)
    table.add_column("name", overflow="fold", ratio=2)
    table.add_column("lang", no_wrap=True)
    table.add_column("postcode", no_wrap=True)
    table.add_column("tags", overflow="fold", ratio=1)
    table.add_column("news", no_wrap=True)
    table.add_column("notes", overflow="fold", ratio=1)
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
    address: str = typer.Argument(..., help="The contact's address: sms:+33…, whatsapp:+33…, "
                                            "telegram:ID, or a phone number."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """One contact: addresses (landline, blocked), tags, consents, language, postcode."""
    from bot.domain import contacts

    target = check_address(address)
    config = settings()

    async def work(session: AsyncSession, services: Services) -> contacts.ContactRow:
        row = await contacts.find(session, target)
        if row is None:
            raise NotFound(f"no contact at {target}")
        return row

    row = in_transaction(work, config=config)
    tz = config.timezone
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
        ("STOP since", when(details["opted_out_at"], tz)), ("staff", row.staff_role),
        ("created", when(details["created_at"], tz)),
        ("last wrote", when(details["last_inbound_at"], tz)),
    ):
        if value:
            out.print(f"  {label}: {safe(value)}")


def _tagging(address: str, tags: list[str], add: bool) -> None:
    from bot.domain import contacts

    target = check_address(address)
    if not any(contacts.parse_tags(t) for t in tags):
        fail("give at least one tag", EXIT_USAGE)

    async def work(session: AsyncSession, services: Services) -> list[str]:
        row = await contacts.find(session, target)
        if row is None:
            raise NotFound(f"no contact at {target}")
        change = contacts.add_tags if add else contacts.remove_tags
        return await change(session, row.id, tags)

    changed = in_transaction(work)
    verb = "tagged" if add else "untagged"
    if changed:
        typer.echo(f"{verb} {target}: {plain(' '.join(changed))}")
    else:
        typer.echo(f"{target}: nothing to change")


@contacts_app.command("tag")
def tag_(
    address: str = typer.Argument(..., help="The contact's address."),
    tags: list[str] = typer.Argument(..., help="One or more tags."),
) -> None:
    """Add tags to a contact (tags are lower case)."""
    _tagging(address, tags, add=True)


@contacts_app.command("untag")
def untag(
    address: str = typer.Argument(..., help="The contact's address."),
    tags: list[str] = typer.Argument(..., help="One or more tags."),
) -> None:
    """Remove tags from a contact."""
    _tagging(address, tags, add=False)
