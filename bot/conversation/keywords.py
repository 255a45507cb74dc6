"""Keywords a person can send at any moment, in every shipped language.

A keyword is the whole message, trimmed, with case and accents folded and trailing
punctuation dropped ("stop." is STOP; "stop svp" is not). Words of other languages never
reuse a provider's opt-out words (STOP, CANCEL, END, QUIT, UNSUBSCRIBE…) for anything but
opting out.
"""

from __future__ import annotations

from bot.conversation.choices import fold

HELP = "help"
MENU = "menu"
LANGUAGE = "language"
STOP = "stop"
START = "start"
CANCEL_BOOKING = "cancel_booking"
MOVE_BOOKING = "move_booking"
FORGET = "forget"

# Provider opt-out words (Twilio's list): only ever mean STOP.
PROVIDER_OPT_OUT = ("stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout")
PROVIDER_OPT_IN = ("start", "unstop")

WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    HELP: {"fr": ("aide", "au secours", "humain", "conseiller"), "en": ("help", "human")},
    MENU: {"fr": ("menu", "accueil"), "en": ("menu", "home")},
    LANGUAGE: {"fr": ("langue",), "en": ("language", "lang")},
    STOP: {"fr": ("arret", "arrete", "desabonner"), "en": PROVIDER_OPT_OUT},
    START: {"fr": ("reprendre",), "en": PROVIDER_OPT_IN},
    CANCEL_BOOKING: {"fr": ("annuler",), "en": ("cancel call", "call off")},
    MOVE_BOOKING: {"fr": ("deplacer",), "en": ("move", "reschedule")},
    FORGET: {"fr": ("oublier",), "en": ("forget", "erase")},
}

_INDEX: dict[str, str] = {}
for _keyword, _by_language in WORDS.items():
    for _words in _by_language.values():
        for _word in _words:
            folded = fold(_word)
            if folded in _INDEX and _INDEX[folded] != _keyword:
                raise RuntimeError(f"keyword word {_word!r} is used twice")
            _INDEX[folded] = _keyword
for _word in PROVIDER_OPT_OUT:
    assert _INDEX[_word] == STOP, _word


def match(text: str) -> str | None:
    """The keyword the whole message is, or None. Telegram's /start is handled apart."""
    return _INDEX.get(fold(text))


def is_telegram_start(text: str) -> bool:
    first = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    return first.lower() == "/start" or first.lower().startswith("/start@")
