"""``relais inspect TEXT [--lang XX] [--json]``: what Relais sees in one message, storing
nothing — the keyword it is, the danger it speaks of, the private data it holds and the text
as it would be stored. ``-`` as TEXT reads one message per line from stdin and writes JSON
Lines, flushed as it goes (for tests, corpora and staff who ask "why was this urgent?")."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from bot.cli.common import plain

# The English names of the keywords (ARCHITECTURE.md), by the flows' own keyword ids.
KEYWORD_NAMES = {
    "help": "HELP", "menu": "MENU", "language": "LANGUAGE", "stop": "STOP", "start": "START",
    "cancel_booking": "CANCEL", "move_booking": "MOVE", "forget": "FORGET",
    "join": "JOIN", "leave": "LEAVE",
}


def inspect_text(text: str) -> dict[str, Any]:
    """The decision Relais would take on one message, as a JSON-ready object."""
    from bot.conversation import keywords
    from bot.core import masking
    from bot.domain import danger

    masked = masking.mask(text)
    found = danger.match(text)
    keyword = keywords.match(text)
    return {
        "text": text,
        "keyword": KEYWORD_NAMES.get(keyword, keyword.upper()) if keyword else None,
        "danger": list(found.categories) if found is not None else None,
        "danger_language": found.language if found is not None else None,
        "private_data": list(masked.kinds),
        "masked": masked.text,
    }


def inspect(
    text: str = typer.Argument(
        ..., help="The message, or - to read one message per line from stdin."),
    lang: str = typer.Option(None, "--lang", help="The person's language (fr, en…)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print one JSON object (JSON Lines for -)."),
) -> None:
    """What Relais sees in one message: keyword, danger, private data. Stores nothing."""
    from bot.core.i18n import normalise_language

    language = normalise_language(lang) if lang else None  # a shipped one (else French)
    if text == "-":
        for line in sys.stdin:
            line = line.rstrip("\r\n")
            result = {**inspect_text(line), "language": language}
            sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        return
    result = {**inspect_text(text), "language": language}
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    typer.echo(f"keyword: {result['keyword'] or '-'}")
    danger = result["danger"]
    typer.echo(f"danger: {', '.join(danger) if danger else '-'}"
               + (f" ({result['danger_language']} words)" if danger else ""))
    typer.echo(f"private data: {', '.join(result['private_data']) or '-'}")
    typer.echo(f"stored as: {plain(result['masked'])}")
