"""CSV cells a spreadsheet will not run: formula injection (OWASP "CSV Injection").

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by
Excel, LibreOffice and Google Sheets as a formula (``=HYPERLINK(...)``, ``=cmd|...``,
``@SUM(...)``); it is written with a leading ``'``, which spreadsheets show as text. Numbers
Relais computes itself (``int``, ``float``) are written as they are, negative ones included:
they are figures, not text someone typed, and must stay numbers in the sheet. Every CSV
writer of Relais goes through ``cell``/``row``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """A value ready for ``csv.writer``: None is "", numbers stay numbers, text that a
    spreadsheet would run gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def row(values: Iterable[Any]) -> list[Any]:
    """``cell`` of each value of a row."""
    return [cell(v) for v in values]
