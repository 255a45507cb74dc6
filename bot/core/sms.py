"""SMS encoding facts and helpers (GSM-7 / UCS-2), as pure functions.

An SMS is sent either in the GSM-7 default alphabet (3GPP TS 23.038) or, as soon as a
single character falls outside it, entirely in UCS-2 (in practice UTF-16).

* GSM-7: 160 septets fit in a single message; a concatenated message carries 153 septets
  per segment.  Characters of the extension table cost two septets (ESC + code) and the
  pair is never split across two segments.
* UCS-2: 70 UTF-16 code units fit in a single message; a concatenated message carries 67
  per segment.  A character outside the BMP (most emoji) is a surrogate pair, two code
  units that are never split across two segments.

:func:`normalise` rewrites French typography (curly quotes, guillemets, non-breaking
spaces, ellipsis, dashes...) and, when that makes the whole message GSM-7, folds accented
letters that have no GSM-7 form (``ê`` -> ``e``), in the spirit of Twilio Smart Encoding.
:func:`split` cuts a long text into parts at paragraph, line or word boundaries.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "GSM7",
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_MULTI_LIMIT",
    "GSM7_SINGLE_LIMIT",
    "UCS2",
    "UCS2_MULTI_LIMIT",
    "UCS2_SINGLE_LIMIT",
    "describe",
    "encoding",
    "is_gsm7",
    "length",
    "normalise",
    "segments",
    "septets",
    "split",
    "ucs2_units",
    "unsupported",
]

GSM7 = "GSM-7"
UCS2 = "UCS-2"

GSM7_SINGLE_LIMIT = 160
"""Septets in a single (non-concatenated) GSM-7 SMS."""
GSM7_MULTI_LIMIT = 153
"""Septets per segment of a concatenated GSM-7 SMS (7 septets go to the UDH)."""
UCS2_SINGLE_LIMIT = 70
"""UTF-16 code units in a single (non-concatenated) UCS-2 SMS."""
UCS2_MULTI_LIMIT = 67
"""UTF-16 code units per segment of a concatenated UCS-2 SMS."""

# 3GPP TS 23.038 default alphabet, in code order (0x00..0x7F), without 0x1B (ESC).
# ESC is the escape to the extension table, not a character a text can contain.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each of these costs ESC + code = 2 septets.
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

# Typographic characters with a plain GSM-7 equivalent of the same length (one BMP
# character for one ASCII character), so replacing them never lengthens a UCS-2 text.
_PUNCT_SAME_LENGTH: dict[str, str] = {
    **dict.fromkeys("«»“”„‟‹›″〃＂", '"'),
    **dict.fromkeys("’‘‚‛′ʼ´`＇", "'"),
    # No-break, thin, narrow, figure, em/en... spaces, tab, ideographic space.
    **dict.fromkeys("\t\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008", " "),
    **dict.fromkeys("\u2009\u200a\u202f\u205f\u3000", " "),
    # Hyphen, non-breaking hyphen, figure dash, en/em dash, bar, minus, bullets.
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043•‣◦▪●", "-"),
    "\u00b7": ".",  # middle dot, as in French inclusive writing "usager·ère·s"
    "\u2024": ".",  # one dot leader
    "\u2044": "/",  # fraction slash
}
# Replacements that change the length (ellipsis, invisible characters).
_PUNCT_OTHER: dict[str, str] = {
    "…": "...",
    "\u2025": "..",
    "\u00ad": "",  # soft hyphen
    "\u200b": "",  # zero width space
    "\u2060": "",  # word joiner
    "\ufeff": "",  # zero width no-break space / BOM
}
_SAME_LENGTH_TABLE = str.maketrans(_PUNCT_SAME_LENGTH)
_PUNCT_TABLE = str.maketrans({**_PUNCT_SAME_LENGTH, **_PUNCT_OTHER})

# Latin letters that Unicode does not decompose into base letter + accents.
_LETTER_FOLDS: dict[str, str] = {
    "œ": "oe",
    "Œ": "OE",
    "ﬁ": "fi",
    "ﬂ": "fl",
    "ﬀ": "ff",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "ı": "i",
}


def is_gsm7(text: str) -> bool:
    """Return True if every character of ``text`` is in the GSM-7 basic or extension table."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def unsupported(text: str) -> str:
    """Return the distinct characters of ``text`` that GSM-7 cannot encode, in order."""
    return "".join(
        dict.fromkeys(ch for ch in text if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION)
    )


def encoding(text: str) -> str:
    """Return ``"GSM-7"`` if ``text`` fits the GSM-7 alphabet, else ``"UCS-2"``."""
    return GSM7 if is_gsm7(text) else UCS2


def _septet_costs(text: str) -> list[int]:
    """Septets per character (1 basic, 2 extension); ValueError if not GSM-7."""
    costs = []
    for ch in text:
        if ch in GSM7_BASIC:
            costs.append(1)
        elif ch in GSM7_EXTENSION:
            costs.append(2)
        else:
            raise ValueError(f"{ch!r} (U+{ord(ch):04X}) is not in the GSM-7 alphabet")
    return costs


def _unit_costs(text: str) -> list[int]:
    """UTF-16 code units per character (2 outside the BMP, i.e. a surrogate pair)."""
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def septets(text: str) -> int:
    """Number of GSM-7 septets needed for ``text``.

    Raises:
        ValueError: if ``text`` contains a character outside GSM-7.
    """
    return sum(_septet_costs(text))


def ucs2_units(text: str) -> int:
    """Number of UTF-16 code units needed for ``text`` in a UCS-2 message."""
    return sum(_unit_costs(text))


def length(text: str) -> int:
    """Length of ``text`` in its SMS encoding: septets for GSM-7, UTF-16 units for UCS-2."""
    return septets(text) if is_gsm7(text) else ucs2_units(text)


def _count_segments(costs: list[int], single: int, multi: int) -> int:
    """Segments for per-character costs; a character is never split between segments."""
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    count, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            count += 1
            used = 0
        used += cost
    return count


def segments(text: str) -> int:
    """Number of SMS segments needed to send ``text`` (0 for an empty text).

    GSM-7: 1 segment up to 160 septets, else 153 septets per segment.  UCS-2: 1 segment
    up to 70 UTF-16 units, else 67 per segment.  A 2-septet extension character or a
    surrogate pair that would straddle a boundary moves whole to the next segment.
    """
    if is_gsm7(text):
        return _count_segments(_septet_costs(text), GSM7_SINGLE_LIMIT, GSM7_MULTI_LIMIT)
    return _count_segments(_unit_costs(text), UCS2_SINGLE_LIMIT, UCS2_MULTI_LIMIT)


def describe(text: str) -> tuple[str, int, int]:
    """Return ``(encoding, segments, length)``; length in septets or UTF-16 units."""
    return encoding(text), segments(text), length(text)


def _fold_char(ch: str) -> str | None:
    """GSM-7 spelling of a non-GSM Latin letter or stray accent, or None if there is none.

    Accents are dropped one by one from the end of the canonical decomposition until the
    letter is GSM-7 (``ǟ`` -> ``ä``, ``ê`` -> ``e``, ``ç`` -> ``c``).
    """
    if ch in _LETTER_FOLDS:
        return _LETTER_FOLDS[ch]
    if "\u0300" <= ch <= "\u036f":  # combining diacritical mark left over after NFC
        return ""
    if not unicodedata.category(ch).startswith("L"):
        return None
    if not unicodedata.name(ch, "").startswith("LATIN "):
        return None
    decomposed = unicodedata.normalize("NFD", ch)
    while len(decomposed) > 1 and unicodedata.combining(decomposed[-1]):
        decomposed = decomposed[:-1]
        candidate = unicodedata.normalize("NFC", decomposed)
        if is_gsm7(candidate):
            return candidate
    return None


def _fold_to_gsm7(text: str) -> str | None:
    """``text`` with every non-GSM character folded, or None if one cannot be folded."""
    out = []
    for ch in text:
        if ch in GSM7_BASIC or ch in GSM7_EXTENSION:
            out.append(ch)
            continue
        folded = _fold_char(ch)
        if folded is None:
            return None
        out.append(folded)
    return "".join(out)


def normalise(text: str) -> str:
    """Make ``text`` GSM-7 where a plain equivalent exists, without costing a segment.

    1. Typographic punctuation is replaced (``« » “ ” ‹ ›`` -> ``"``, ``’ ‘`` -> ``'``,
       no-break/thin spaces -> space, ``…`` -> ``...``, dashes, minus and bullets -> ``-``,
       invisible characters removed) and the text is put in NFC form.
    2. If the only characters still outside GSM-7 are Latin letters with a plain
       equivalent (``ç ê î ô û ë ï ÿ œ À Ê Ô...``), they are folded and the GSM-7 text is
       returned, provided it needs no more segments than the original.
    3. Otherwise the message stays UCS-2: letters are kept (``ê`` stays, emoji stay) and
       only the same-length punctuation replacements are applied.  ``…`` and invisible
       characters are then left alone, so the result never needs more segments.

    ``normalise`` is idempotent and ``segments(normalise(t)) <= segments(t)``.
    """
    if is_gsm7(text):
        return text
    folded = _fold_to_gsm7(unicodedata.normalize("NFC", text.translate(_PUNCT_TABLE)))
    if folded is not None and segments(folded) <= segments(text):
        return folded
    return text.translate(_SAME_LENGTH_TABLE)


# Split levels: paragraph breaks, then line breaks, then breaking whitespace (no-break
# spaces U+00A0, U+2007, U+202F keep e.g. "« oui »" together).
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_LINE_BREAK = re.compile(r"\n")
_WORD_BREAK = re.compile(r"[^\S\u00a0\u2007\u202f]+")
_LEVELS: tuple[tuple[re.Pattern[str], str], ...] = (
    (_PARAGRAPH_BREAK, "\n\n"),
    (_LINE_BREAK, "\n"),
    (_WORD_BREAK, " "),
)


def _hard_cut(word: str, max_chars: int) -> list[str]:
    """Cut ``word`` into pieces of at most ``max_chars``, not before a combining mark."""
    pieces = []
    while len(word) > max_chars:
        cut = max_chars
        while cut > 1 and (
            unicodedata.combining(word[cut]) or word[cut] == "\u200d" or word[cut - 1] == "\u200d"
        ):
            cut -= 1
        pieces.append(word[:cut])
        word = word[cut:]
    pieces.append(word)
    return [p for p in (piece.strip() for piece in pieces) if p]


def _split_level(text: str, max_chars: int, level: int) -> list[str]:
    """Split stripped ``text`` at ``_LEVELS[level]`` separators, packing pieces greedily."""
    if len(text) <= max_chars:
        return [text]
    if level == len(_LEVELS):
        return _hard_cut(text, max_chars)
    pattern, joiner = _LEVELS[level]
    parts: list[str] = []
    current = ""
    for raw in pattern.split(text):
        piece = raw.strip()
        if not piece:
            continue
        if len(piece) > max_chars:
            if current:
                parts.append(current)
                current = ""
            parts.extend(_split_level(piece, max_chars, level + 1))
        elif not current:
            current = piece
        elif len(current) + len(joiner) + len(piece) <= max_chars:
            current = current + joiner + piece
        else:
            parts.append(current)
            current = piece
    if current:
        parts.append(current)
    return parts


def split(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into stripped, non-empty parts of at most ``max_chars`` characters.

    Parts break at paragraph breaks first, then line breaks, then spaces; consecutive
    paragraphs (lines, words) are packed into one part while they fit, rejoined with a
    blank line (newline, space).  A word longer than ``max_chars`` is hard-cut.  Lengths
    are counted in Python characters (code points), not septets or UTF-16 units.

    Raises:
        ValueError: if ``max_chars`` is less than 1.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    text = text.strip()
    if not text:
        return []
    return _split_level(text, max_chars, 0)
