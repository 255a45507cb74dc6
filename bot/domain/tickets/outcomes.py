"""The outcomes of a ticket: a short closed list a mediator picks from when closing.

``/fermer 12 2`` or ``/fermer 12 oriente`` (``relais queue close 12 --outcome 2``): a number
of the list or one of its words, in French or English, case and accents ignored. What comes
after it is free text, kept only as a note on the ticket; the outcome stored on the ticket and
counted in reports is the category's id, never what was typed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.conversation.choices import fold
from bot.core.i18n import N_, Translator


@dataclass(frozen=True)
class Outcome:
    id: str  # stored on the ticket and in the report counters
    label: str  # a gettext msgid
    words: tuple[str, ...]  # folded: lower case, no accents


OUTCOMES: tuple[Outcome, ...] = (
    Outcome("resolved", N_("resolved"),
            ("resolu", "resolue", "resolved", "solved", "regle", "reglee", "fait", "done",
             "ok")),
    Outcome("referred", N_("referred to a partner"),
            ("oriente", "orientee", "orientation", "referred", "refer", "partenaire",
             "partner")),
    Outcome("appointment", N_("appointment in person"),
            ("rendez-vous", "rendez vous", "rdv", "appointment", "sur place", "in person",
             "in-person")),
    Outcome("callback", N_("callback planned"),
            ("rappel", "a rappeler", "rappeler", "callback", "call back")),
    Outcome("no-answer", N_("could not be reached"),
            ("injoignable", "no-answer", "no answer", "unreachable", "absent",
             "pas de reponse")),
    Outcome("not-needed", N_("no longer needed"),
            ("plus besoin", "plus-besoin", "sans suite", "sans-suite", "not-needed",
             "not needed", "no need")),
    Outcome("other", N_("other"), ("autre", "other", "divers")),
)
BY_ID = {o.id: o for o in OUTCOMES}
_WORDS = {word: o.id for o in OUTCOMES for word in (o.id, *o.words)}
_LONGEST = max(len(w.split()) for w in _WORDS)


def outcome_of(text: str) -> str | None:
    """The outcome id a number of the list or a word names ("2", "Orienté"), else None."""
    folded = fold(text).strip()
    if folded.isdigit():
        index = int(folded)
        return OUTCOMES[index - 1].id if 1 <= index <= len(OUTCOMES) else None
    return _WORDS.get(folded)


def split(text: str) -> tuple[str | None, str]:
    """``("referred", "dossier envoye")`` for "2 dossier envoye" or "orienté dossier envoye":
    the outcome its first words name (longest match first) and the rest, as written."""
    words = text.split()
    for size in range(min(_LONGEST, len(words)), 0, -1):
        found = outcome_of(" ".join(words[:size]))
        if found is not None:
            return found, " ".join(words[size:])
    return None, text.strip()


def label(_: Translator, outcome_id: str | None) -> str:
    """The outcome's words in the reader's language; an old free-text outcome as written."""
    if not outcome_id:
        return ""
    found = BY_ID.get(outcome_id)
    return _(found.label) if found is not None else outcome_id


def choices(_: Translator) -> str:
    """The numbered list, one per line: "1. résolu"."""
    return "\n".join(f"{n}. {_(o.label)}" for n, o in enumerate(OUTCOMES, start=1))


def described() -> str:
    """The values for a command-line error: "1 resolved, 2 referred, ..."."""
    return ", ".join(f"{n} {o.id}" for n, o in enumerate(OUTCOMES, start=1))
