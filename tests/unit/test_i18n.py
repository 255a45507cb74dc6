"""The catalogs: complete in every shipped language, placeholders intact, SMS-friendly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot.core import sms
from bot.core.i18n import Translator, languages, po_path

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"\{(\w+)\}")
SAMPLE_VALUES = {
    "org": "Centre social des Tilleuls",
    "when": "mercredi 25 novembre à 14h00",
    "time": "14h00",
    "phone": "+33 6 12 34 56 78",
}


def code_messages() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT / "bot"), method_map=[("**.py", "python")], keywords={"_": None, "N_": None}
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def catalog(language: str) -> dict[str, str]:
    with po_path(language).open("rb") as handle:
        return {m.id: m.string for m in read_po(handle) if m.id}


def test_french_and_english_are_shipped():
    assert languages()[:1] == ("fr",)
    assert "en" in languages()


@pytest.mark.parametrize("language", languages())
def test_every_message_in_the_code_is_translated(language):
    translated = catalog(language)
    missing = sorted(m for m in code_messages() if not translated.get(m))
    assert missing == [], f"{language}: untranslated {missing}"


@pytest.mark.parametrize("language", languages())
def test_placeholders_are_kept(language):
    for message_id, text in catalog(language).items():
        assert set(PLACEHOLDER.findall(message_id)) == set(PLACEHOLDER.findall(text)), (
            f"{language}: {message_id!r} -> {text!r}"
        )


def test_every_french_message_fits_two_sms_segments(capsys):
    lines = []
    for message_id in sorted(code_messages()):
        names = PLACEHOLDER.findall(message_id)
        values = {name: SAMPLE_VALUES.get(name, "Xxxxxxxxxxxx") for name in names}
        text = Translator("fr")(message_id, **values)
        rendered = sms.normalise(text)
        encoding, segments, length = sms.describe(rendered)
        lines.append(f"{segments} seg {encoding:5} {length:4}  {rendered}")
        assert segments <= 2, rendered
    with capsys.disabled():
        print("\nFrench messages as SMS:\n" + "\n".join(lines))


def test_french_messages_avoid_needless_ucs2_punctuation():
    for text in catalog("fr").values():
        for bad in "’‘«»…“”\u00a0\u202f":
            assert bad not in text, f"{bad!r} in {text!r}"
