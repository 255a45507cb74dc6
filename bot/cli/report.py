"""``relais report [--since DATE] [--until DATE] [--json] [--csv DIR] [--html FILE]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from bot.cli.common import EXIT_USAGE, fail, plain, run, settings, setup_logging
from bot.cli.root import app
from bot.clock import Clock


@app.command("report")
def report(
    since: str | None = typer.Option(None, "--since", help="First day (YYYY-MM-DD); "
                                                           "default: 30 days ago"),
    until: str | None = typer.Option(None, "--until", help="Last day, included; "
                                                           "default: today"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout"),
    csv_dir: Path | None = typer.Option(None, "--csv", help="Write CSV tables in this folder"),
    html_file: Path | None = typer.Option(None, "--html",
                                          help="Write one self-contained HTML page (French)"),
) -> None:
    """Activity figures: people, check-ins, tickets, callbacks, broadcasts, SMS."""
    from bot import reports

    setup_logging("WARNING")
    config = settings()
    try:
        period = reports.make_period(since, until, config.timezone, Clock().now())
    except reports.ReportError as exc:
        fail(str(exc), EXIT_USAGE)

    async def go() -> dict[str, Any]:
        from bot.services import open_services

        services = await open_services(config)
        try:
            async with services.sessions() as session:
                return await reports.build(session, period, config.org_name)
        finally:
            await services.close()

    data = run(go)
    if csv_dir is not None:
        try:
            files = reports.write_csv(data, csv_dir)
        except OSError as exc:
            fail(f"--csv: cannot write in {csv_dir}: {exc.strerror}", EXIT_USAGE)
        typer.echo(f"{len(files)} CSV files written in {csv_dir}", err=True)
    if html_file is not None:
        try:
            html_file.write_text(reports.as_html(data), encoding="utf-8")
        except OSError as exc:
            fail(f"--html: cannot write {html_file}: {exc.strerror}", EXIT_USAGE)
        typer.echo(f"HTML report written to {html_file}", err=True)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False))
    elif csv_dir is None and html_file is None:
        lines = reports.as_text(data).splitlines()
        typer.echo("".join(plain(line) + "\n" for line in lines), nl=False)
