"""Recognising a choice in what a person wrote: "2", "2.", "deux", a keyword, a label."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from bot.core.types import Choice

_TRAILING = re.compile(r"[\s.!?,;:)…]+$")
_NUMBER = re.compile(r"^(?:n°|no|#)?\s*(\d{1,2})\s*[.)-]?$")

# Number words in the shipped languages (folded). Not user-facing text.
NUMBER_WORDS: dict[str, int] = {
    "un": 1, "une": 1, "premier": 1, "premiere": 1, "deux": 2, "trois": 3, "quatre": 4,
    "cinq": 5, "six": 6, "sept": 7, "huit": 8, "neuf": 9, "dix": 10,
    "one": 1, "first": 1, "two": 2, "three": 3, "four": 4, "five": 5, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10,
}


def fold(text: str) -> str:
    """Lower case, no accents, single spaces, trailing punctuation dropped."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    bare = " ".join(bare.casefold().split())
    return _TRAILING.sub("", bare)


def number_in(text: str) -> int | None:
    folded = fold(text)
    match = _NUMBER.match(folded)
    if match:
        return int(match.group(1))
    return NUMBER_WORDS.get(folded)


def resolve(text: str, choices: tuple[Choice, ...]) -> Choice | None:
    """The choice the text names, or None."""
    if not choices or not text.strip():
        return None
    number = number_in(text)
    if number is not None:
        return choices[number - 1] if 1 <= number <= len(choices) else None
    folded = fold(text)
    for choice in choices:
        names = (choice.id, choice.label, *choice.keywords)
        if any(folded == fold(name) for name in names):
            return choice
    return None


def by_id(choice_id: str, choices: tuple[Choice, ...]) -> Choice | None:
    return next((c for c in choices if c.id == choice_id), None)


def yes_no(_: Callable[[str], str]) -> tuple[Choice, ...]:
    """The two choices of a yes-or-no question, in the person's language."""
    return (Choice("yes", _("Yes"), ("oui", "yes", "ok")), Choice("no", _("No"), ("non", "no")))
