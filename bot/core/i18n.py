"""Translations from the gettext catalogs under ``locales/``, chosen per message.

Message ids are English source text; each shipped language has a complete catalog (a test
checks it). A missing translation falls back to French, then to the id. Catalogs are read
from ``.po`` files at first use, so a fresh clone needs no compile step.
"""

from __future__ import annotations

import gettext
import io
import os
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

DOMAIN = "relais"
DEFAULT_LANGUAGE = "fr"


def locales_dir() -> Path:
    override = os.environ.get("RELAIS_LOCALES_DIR")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parent / "locales", here / "locales"):
        if candidate.is_dir():
            return candidate
    return here.parent / "locales"


def po_path(language: str) -> Path:
    return locales_dir() / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def languages() -> tuple[str, ...]:
    """Shipped languages, French first."""
    found = sorted(p.name for p in locales_dir().iterdir() if (p / "LC_MESSAGES").is_dir())
    return tuple(sorted(found, key=lambda code: (code != DEFAULT_LANGUAGE, code)))


def language_name(code: str) -> str:
    """The language's own name ("Français", "English", "العربية")."""
    try:
        name = Locale.parse(code).get_display_name(code) or code
    except (ValueError, TypeError):
        return code
    return name[:1].upper() + name[1:]


def _load(language: str) -> gettext.NullTranslations:
    path = po_path(language)
    if not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


@cache
def translations(language: str) -> gettext.NullTranslations:
    trans = _load(language)
    if language != DEFAULT_LANGUAGE:
        trans.add_fallback(_load(DEFAULT_LANGUAGE))
    return trans


def normalise_language(code: str | None) -> str:
    """A shipped language code for a hint like "fr-FR" or "EN"; French otherwise."""
    if code:
        short = code.replace("_", "-").split("-")[0].lower()
        if short in languages():
            return short
    return DEFAULT_LANGUAGE


class Translator:
    """Callable bound to one language: ``_("Hello {name}", name=…)``."""

    def __init__(self, language: str | None) -> None:
        self.language = normalise_language(language)
        self._trans = translations(self.language)

    def __call__(self, message: str, **values: Any) -> str:
        text = self._trans.gettext(message)
        return text.format(**values) if values else text

    def plural(self, singular: str, plural: str, count: int, **values: Any) -> str:
        text = self._trans.ngettext(singular, plural, count)
        return text.format(count=count, **values)

    def datetime(self, moment: datetime, tz: str, fmt: str = "EEEE d MMMM 'à' HH:mm") -> str:
        return format_datetime(moment.astimezone(ZoneInfo(tz)), fmt, locale=self.language)


def N_(message: str) -> str:  # noqa: N802 - gettext's conventional marker name
    """Mark a message for extraction; translate later with a Translator."""
    return message
