"""Rendering a Reply as plain text with numbered choices (SMS, terminal, fallbacks)."""

from __future__ import annotations

from bot.core.types import Choice, Reply


def numbered(text: str, choices: tuple[Choice, ...] | list[Choice]) -> str:
    """The text followed by one "N. label" line per choice."""
    if not choices:
        return text
    lines = [f"{n}. {choice.label}" for n, choice in enumerate(choices, start=1)]
    return text + "\n" + "\n".join(lines)


def numbered_reply(reply: Reply) -> str:
    return numbered(reply.text, reply.choices)


def choices_to_json(choices: tuple[Choice, ...]) -> list[dict[str, object]]:
    return [{"id": c.id, "label": c.label, "keywords": list(c.keywords)} for c in choices]


def choices_from_json(data: list[dict[str, object]] | None) -> tuple[Choice, ...]:
    if not data:
        return ()
    return tuple(
        Choice(str(d["id"]), str(d["label"]), tuple(str(k) for k in d.get("keywords") or ()))  # type: ignore[union-attr]
        for d in data
    )
