"""``relais report [--since DATE] [--until DATE] [--json] [--csv DIR] [--html FILE]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from bot.cli.common import EXIT_USAGE, fail, plain, run_app, settings
from bot.core.clock import Clock


def report(
    since: str | None = typer.Option(None, "--since", help="The first day (YYYY-MM-DD); "
                                                           "by default 30 days ago."),
    until: str | None = typer.Option(None, "--until", help="The last day, included; "
                                                           "by default today."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    csv_dir: Path | None = typer.Option(None, "--csv",
                                        help="Write the tables as CSV files in this folder."),
    html_file: Path | None = typer.Option(
        None, "--html", help="Write one self-contained HTML page (in French) to this file."),
) -> None:
    """Activity figures: people, check-ins, tickets, callbacks, broadcasts, SMS."""
    from bot.domain import reports

    config = settings()
    try:
        period = reports.make_period(since, until, config.timezone, Clock().now())
    except reports.ReportError as exc:
        fail(str(exc), EXIT_USAGE)

    async def work(services: Any) -> dict[str, Any]:
        async with services.sessions() as session:
            return await reports.build(session, period, config.org_name)

    data = run_app(work, config=config)
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
