"""Text as Relais stores it."""

from __future__ import annotations

from bot.core.types import safe_text

MAX_TEXT = 10_000  # characters kept of one inbound text


def clean_text(text: str | None) -> str:
    """Text as stored: no NUL, control characters or lone surrogates (PostgreSQL refuses
    them), bounded."""
    if not text:
        return ""
    return safe_text(text)[:MAX_TEXT]
