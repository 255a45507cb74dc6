"""A report as CSV files, one per table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from bot.core import csv_cells

# -- CSV -------------------------------------------------------------------------------------


def write_csv(report: dict[str, Any], folder: Path) -> list[Path]:
    """One CSV file per table (UTF-8 with BOM, for spreadsheets); returns the files. Text
    cells that a spreadsheet would run as a formula start with ``'`` (``bot.core.csv_cells``)."""
    folder.mkdir(parents=True, exist_ok=True)
    p, t = report["people"], report["tickets"]
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {
        "summary.csv": (["section", "figure", "value"], list(_summary_rows(report))),
        "people_by_channel.csv": (
            ["channel", "new", "active"],
            [[ch, p["new_by_channel"].get(ch, 0), p["by_channel"].get(ch, 0)]
             for ch in sorted(set(p["new_by_channel"]) | set(p["by_channel"]))]),
        "people_by_month.csv": (["month", "active"], list(p["active_by_month"].items())),
        "people_by_language.csv": (["language", "people"], list(p["by_language"].items())),
        "people_by_departement.csv": (["departement", "people"],
                                      list(p["by_departement"].items())),
        "people_by_level.csv": (["level", "people"], list(p["by_level"].items())),
        "checkin_answers.csv": (["answer", "count"],
                                list(report["checkins"]["answers"].items())),
        "ticket_outcomes.csv": (["outcome", "count"], list(t["outcomes"].items())),
        "broadcasts.csv": (
            ["id", "started_at", "segment", "recipients", "delivered", "read", "failed",
             "cancelled", "replied", "delivery_rate", "failure_rate"],
            [[i[k] for k in ("id", "started_at", "segment", "recipients", "delivered", "read",
                             "failed", "cancelled", "replied", "delivery_rate",
                             "failure_rate")]
             for i in report["broadcasts"]["items"]]),
        "daily.csv": (["date", "messages_received", "new_people", "tickets_opened"],
                      [list(d.values()) for d in report["daily"]]),
    }
    written = []
    for name, (header, rows) in tables.items():
        path = folder / name
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(csv_cells.row(header))
            writer.writerows(csv_cells.row(row) for row in rows)
        written.append(path)
    return written


def _summary_rows(report: dict[str, Any]) -> Any:
    for section in ("people", "messages", "checkins", "tickets", "callbacks", "broadcasts"):
        for key, value in report[section].items():
            if isinstance(value, (int, float)) or value is None:
                yield [section, key, "" if value is None else value]
