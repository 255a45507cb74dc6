"""``relais resources import FILE`` · ``resources import --places FILE.csv`` ·
``resources list [--places] [--json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from sqlalchemy import select

from bot.cli.common import EXIT_NOT_FOUND, EXIT_USAGE, Usage, plain, run_app, safe, settings
from bot.cli.common import console as common_console

resources_app = typer.Typer(
    help="The resource catalogue and the help places (LaMednum open data).",
    no_args_is_help=True,
)

FILE_ARGUMENT = typer.Argument(
    ..., exists=True, dir_okay=False, readable=True, show_default=False,
    help="A catalogue (YAML) or, with --places, a places file (CSV).",
)


def _error(text: str) -> None:
    sys.stderr.write(f"relais: {plain(text)}\n")


@resources_app.command("import")
def import_(
    file: Path = FILE_ARGUMENT,
    places: bool = typer.Option(
        False, "--places", help="FILE is a places CSV in the standard-mediation-num format."
    ),
) -> None:
    """Import a catalogue (checked whole first: nothing is imported if anything is
    wrong), or with --places a list of help places (bad rows are reported and skipped)."""
    config = settings()
    if places:
        _import_places(config, file)
    else:
        _import_catalogue(config, file)


def _import_catalogue(config: Any, file: Path) -> None:
    from bot.domain import resources

    catalogue = resources.load_file(file)
    if not catalogue.ok:
        for issue in catalogue.issues:
            _error(f"{file.name}: {issue}")
        _error(f"{file.name}: nothing imported ({len(catalogue.issues)} problem(s))")
        raise typer.Exit(EXIT_NOT_FOUND)

    async def work(services: Any) -> resources.MergeSummary:
        now = services.clock.now()
        async with services.sessions() as session, session.begin():
            await resources.ensure_loaded(session, now)
            return await resources.merge(session, catalogue.entries, now)

    summary = run_app(work, config=config)
    typer.echo(f"resources: {summary}")


def _import_places(config: Any, file: Path) -> None:
    from bot.domain import places

    parsed = places.read_places(file.read_bytes())
    if parsed.error:
        _error(f"{file.name}: {parsed.error}")
        _error(f"{file.name}: nothing imported")
        raise typer.Exit(EXIT_NOT_FOUND)
    reports = [(p.line, 0, f"{p}: row rejected") for p in parsed.rejected]
    reports += [(p.line, 1, str(p)) for p in parsed.warnings]
    for _line, _kind, text in sorted(reports, key=lambda report: report[:2]):
        _error(f"{file.name} {text}")

    async def work(services: Any) -> places.PlacesSummary:
        async with services.sessions() as session, session.begin():
            return await places.merge_places(session, parsed.rows, services.clock.now())

    summary = run_app(work, config=config)
    line = (f"places: {summary.imported} imported ({summary.added} added, "
            f"{summary.updated} updated, {summary.unchanged} unchanged), "
            f"{len(parsed.rejected)} rejected")
    if summary.samples_removed:
        line += f", {summary.samples_removed} sample places removed"
    typer.echo(plain(line))
    if parsed.rejected:
        raise typer.Exit(EXIT_NOT_FOUND)


@resources_app.command("list")
def list_(
    places: bool = typer.Option(False, "--places", help="List the help places instead."),
    postcode: str = typer.Option(None, "--postcode",
                                 help="With --places, the places nearest to this postcode."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array on stdout."),
) -> None:
    """The catalogue (loaded from the shipped file on first use), or the help places."""
    if postcode is not None and not places:
        _error("--postcode goes with --places")
        raise typer.Exit(EXIT_USAGE)
    rows = run_app(lambda services: _list(services, places, postcode))
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    console = common_console()
    if places:
        table = Table()
        table.add_column("id", overflow="fold")
        table.add_column("name", overflow="fold", ratio=2)
        table.add_column("postcode", no_wrap=True)
        table.add_column("commune", overflow="fold", ratio=1)
        table.add_column("phone", no_wrap=True)
        table.add_column("hours", overflow="fold", ratio=2)
        for row in rows:
            table.add_row(safe(row["id"]), safe(row["name"]), safe(row["postcode"]),
                          safe(row["commune"]), safe(row["phone"]), safe(row["hours"]))
    else:
        table = Table()
        table.add_column("id", no_wrap=True)
        table.add_column("theme", overflow="fold")
        table.add_column("level", no_wrap=True)
        table.add_column("title", overflow="fold", ratio=2)
        table.add_column("url", overflow="fold", ratio=2)  # folded, never cut
        for row in rows:
            title = (row["texts"].get("fr") or {}).get("title", "")
            table.add_row(safe(row["id"]), safe(row["theme"]), str(row["level"] or ""),
                          safe(title), safe(row["url"]))
    console.print(table)
    console.print(f"{len(rows)} {'places' if places else 'resources'}")


async def _list(services: Any, want_places: bool, postcode: str | None
                ) -> list[dict[str, Any]]:
    from bot.core.postcodes import parse_postcode
    from bot.domain import places as places_module
    from bot.domain import resources
    from bot.storage.models import Place, Resource

    now = services.clock.now()
    async with services.sessions() as session, session.begin():
        if not want_places:
            await resources.ensure_loaded(session, now)
            found = (await session.scalars(select(Resource).order_by(
                Resource.theme, Resource.id))).all()
            return [_resource_json(r) for r in found]
        await places_module.ensure_loaded(session, now)
        if postcode is not None:
            code = parse_postcode(postcode)
            if code is None:
                raise Usage(f"{postcode!r} is not a French postcode")
            chosen = await places_module.nearest(session, code)
        else:
            chosen = list((await session.scalars(select(Place).order_by(
                Place.postcode, Place.name))).all())
        return [_place_json(p) for p in chosen]


def _resource_json(resource: Any) -> dict[str, Any]:
    return {
        "id": resource.id, "theme": resource.theme, "level": resource.level,
        "url": resource.url, "keywords": list(resource.keywords or []),
        "texts": resource.texts or {}, "updated_at": resource.updated_at.isoformat(),
    }


def _place_json(place: Any) -> dict[str, Any]:
    return {
        "id": place.id, "name": place.name, "address": place.address,
        "postcode": place.postcode, "commune": place.commune,
        "latitude": place.latitude, "longitude": place.longitude, "phone": place.phone,
        "hours": place.hours, "services": place.services, "booking_url": place.booking_url,
        "updated_at": place.updated_at.isoformat(),
    }
