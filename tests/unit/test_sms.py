"""Tests for bot.core.sms: GSM-7/UCS-2 encoding, segment counts, normalisation, splitting."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.sms import (
    describe,
    encoding,
    is_gsm7,
    length,
    normalise,
    segments,
    septets,
    split,
    ucs2_units,
    unsupported,
)

GSM_BASIC_DOC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION_DOC = "^{}\\[~]|€\f"
NOT_GSM_DOC = "ç`âêîôûëïÿÀÂÈÊËÎÏÔÙÛœŒ«»’‘“”\u00a0\u202f…–—•áíóú"

LONG_GSM = (
    "Bonjour, nous avons bien enregistré votre demande d'aide pour créer votre compte Ameli. "
    "Un conseiller numérique vous rappellera demain entre 9h et 12h. Pensez à préparer votre "
    "carte Vitale et un justificatif de domicile. Répondez STOP pour ne plus recevoir de messages."
)
LONG_UCS2 = (
    "Bonjour, nous avons bien reçu votre demande d'aide pour créer votre compte sur le site "
    "des impôts. Un conseiller numérique vous rappellera demain entre 9h et 12h. Pensez à "
    "préparer votre numéro fiscal et votre dernier avis d'imposition. Répondez STOP pour ne "
    "plus recevoir de messages."
)


# --- character set -----------------------------------------------------------------------


def test_gsm_basic_charset_is_gsm7():
    for ch in GSM_BASIC_DOC:
        assert is_gsm7(ch), repr(ch)
        assert septets(ch) == 1, repr(ch)


def test_gsm_extension_chars_cost_two_septets():
    for ch in GSM_EXTENSION_DOC:
        assert is_gsm7(ch), repr(ch)
        assert septets(ch) == 2, repr(ch)


def test_not_gsm7_chars():
    for ch in NOT_GSM_DOC:
        assert not is_gsm7(ch), repr(ch)
        assert encoding("abc" + ch) == "UCS-2", repr(ch)


def test_cedilla_capital_is_gsm_but_lowercase_is_not():
    assert is_gsm7("Ç")
    assert not is_gsm7("ç")


def test_septets_rejects_non_gsm():
    with pytest.raises(ValueError):
        septets("garçon")


def test_unsupported_lists_distinct_offenders_in_order():
    assert unsupported("Ça coûte 5 € « hors » frais, où ça ? ça !") == "û«»ç"
    assert unsupported("Très bien") == ""


# --- real bot messages -----------------------------------------------------------------

MESSAGES = [
    # (text, encoding, segments, length in septets / UTF-16 units)
    ("", "GSM-7", 0, 0),
    ("Bonjour ! Votre rendez-vous est confirmé pour mardi à 14h.", "GSM-7", 1, 58),
    ("Votre code de vérification est 482913. Il expire dans 10 minutes.", "GSM-7", 1, 65),
    # € [ ] are extension characters: 46 characters, 49 septets.
    ("L'abonnement est de 5 € [hors frais] par mois.", "GSM-7", 1, 49),
    # û alone makes it UCS-2; the € then counts one unit like any other character.
    ("L'abonnement coûte 5 € par mois.", "UCS-2", 1, 32),
    ("Ça va ? Très bien, merci. Où êtes-vous ?", "UCS-2", 1, 40),
    ("Aujourd’hui, l’atelier numérique est fermé.", "UCS-2", 1, 43),
    # 🙂 is a surrogate pair: 19 characters, 20 UTF-16 units.
    ("Merci ! À bientôt 🙂", "UCS-2", 1, 20),
    ("مرحبا، موعدك يوم الثلاثاء.", "UCS-2", 1, 26),
    # 269 septets: more than 160, at most 2 x 153.
    (LONG_GSM, "GSM-7", 2, 269),
    # 285 units because of ç and ô: 285 / 67 -> 5 segments.
    (LONG_UCS2, "UCS-2", 5, 285),
]


@pytest.mark.parametrize(("text", "enc", "segs", "size"), MESSAGES)
def test_real_messages(text, enc, segs, size):
    assert encoding(text) == enc
    assert segments(text) == segs
    assert length(text) == size
    assert describe(text) == (enc, segs, size)


def test_normalising_long_message_saves_segments():
    out = normalise(LONG_UCS2)
    assert "bien recu votre" in out and "des impots." in out
    assert describe(out) == ("GSM-7", 2, 285)


# --- segment boundaries ----------------------------------------------------------------

BOUNDARIES = [
    ("a" * 1, 1),
    ("a" * 160, 1),
    ("a" * 161, 2),
    ("a" * 306, 2),
    ("a" * 307, 3),
    ("a" * 459, 3),
    ("a" * 460, 4),
    ("€" * 80, 1),  # 160 septets
    ("€" * 81, 2),  # 162 septets; 76 € (152 septets) per segment
    ("€" * 152, 2),  # 304 septets, 76 + 76
    ("€" * 153, 3),  # 306 septets would fit 2 x 153 if pairs could be split
    ("a" * 152 + "€", 1),  # 154 septets, single message
    ("a" * 152 + "€" + "a" * 7, 2),  # 161: € (septets 153-154) moves to segment 2
    ("a" * 151 + "€" + "a" * 153, 2),  # 306: € ends exactly on septet 153
    ("a" * 152 + "€" + "a" * 152, 3),  # 306 septets, but € cannot straddle 153/154
    ("ç" * 70, 1),
    ("ç" * 71, 2),
    ("ç" * 134, 2),
    ("ç" * 135, 3),
    ("ç" + "€" * 69, 1),  # UCS-2: € is one unit
    ("😀" * 35, 1),  # 70 units
    ("😀" * 36, 2),  # 72 units; 33 emoji (66 units) per segment
    ("😀" * 67, 3),  # 134 units = 2 x 67 only if a pair could be split
    ("ç" * 66 + "😀" + "ç" * 66, 3),  # emoji would straddle units 67/68
    ("ç" * 65 + "😀" + "ç" * 67, 2),  # emoji ends exactly on unit 67
]


@pytest.mark.parametrize(("text", "expected"), BOUNDARIES)
def test_segment_boundaries(text, expected):
    assert segments(text) == expected


def test_ucs2_units_counts_surrogate_pairs():
    assert ucs2_units("é😀") == 3
    assert length("a😀") == 3
    assert length("a€") == 3  # GSM-7: 1 + 2 septets


# --- normalise -------------------------------------------------------------------------


def test_normalise_french_punctuation_to_gsm7():
    text = "Aujourd’hui «\u00a0rendez-vous\u202f» … "
    out = normalise(text)
    assert out == 'Aujourd\'hui " rendez-vous " ... '
    assert encoding(text) == "UCS-2"
    assert encoding(out) == "GSM-7"


def test_normalise_folds_letters_when_that_gives_gsm7():
    out = normalise("Ça va ? Très bien, merci. Où êtes-vous ?")
    assert out == "Ça va ? Très bien, merci. Où etes-vous ?"
    assert encoding(out) == "GSM-7"


def test_normalise_narrow_nbsp_before_punctuation():
    assert normalise("Où êtes-vous\u202f? Merci\u00a0!") == "Où etes-vous ? Merci !"


def test_normalise_letter_folds():
    assert normalise("çâêîôûëïÿ") == "caeiouei" + "y"
    assert normalise("ÀÂÈÊËÎÏÔÙÛ") == "AAEEEIIOUU"
    assert normalise("cœur Œuvre") == "coeur OEuvre"
    assert normalise("áíóú") == "aiou"


def test_normalise_folds_only_latin_letters():
    # Greek capital omega with tonos decomposes to Ω (GSM-7) but is not a Latin letter.
    assert normalise("ΏΔ") == "ΏΔ"
    assert normalise("Ĉ ǟ ł") == "C ä l"


def test_normalise_keeps_gsm_accented_letters():
    text = "éèùìòàÉÄÖÑÜäöñüÇ"
    assert normalise(text) == text
    assert normalise(text + "ê") == text + "e"


def test_normalise_other_punctuation():
    assert normalise("‹a› 1\u20092 x\u2011y 3\u22122 – — •") == '"a" 1 2 x-y 3-2 - - -'
    assert normalise("`code`") == "'code'"


def test_normalise_composes_decomposed_accents():
    # e + combining acute is é (GSM-7); e + combining circumflex is ê, folded to e.
    assert normalise("e\u0301te\u0302") == "éte"


def test_normalise_keeps_arabic():
    text = "مرحبا، موعدك يوم الثلاثاء."
    assert normalise(text) == text
    assert encoding(normalise(text)) == "UCS-2"


def test_normalise_ucs2_keeps_letters_but_fixes_punctuation():
    text = "Rendez-vous « demain » à l’hôpital — مرحبا"
    assert normalise(text) == 'Rendez-vous " demain " à l\'hôpital - مرحبا'


def test_normalise_keeps_emoji():
    text = "Merci 🙏 à bientôt, c’est noté"
    assert normalise(text) == "Merci 🙏 à bientôt, c'est noté"


def test_normalise_never_costs_a_segment():
    # 70 ellipses fit one UCS-2 SMS; as "..." they would need 210 septets = 2 segments.
    assert normalise("…" * 70) == "…" * 70
    assert normalise("…" * 40) == "..." * 40
    # In a message that stays UCS-2, "…" is kept: "..." would cost two more units each.
    assert normalise("مرحبا…") == "مرحبا…"


def test_normalise_removes_invisible_characters_when_gsm7():
    assert normalise("mot\u00adclé\u200b") == "motclé"


def test_normalise_gsm7_text_is_unchanged():
    text = "Votre code : 1234 {valable 10 min} ~ 5 €"
    assert normalise(text) == text


# --- split -----------------------------------------------------------------------------


def test_split_prefers_paragraph_breaks():
    text = "aaa bbb\nccc\n\nddd eee"
    assert split(text, 11) == ["aaa bbb\nccc", "ddd eee"]


def test_split_line_breaks_then_spaces():
    assert split("ligne un\nligne deux\nligne trois", 20) == [
        "ligne un\nligne deux",
        "ligne trois",
    ]
    assert split("a b c d e", 3) == ["a b", "c d", "e"]


def test_split_strips_trailing_spaces_of_lines():
    assert split("un  \ndeux", 5) == ["un", "deux"]
    assert split("un \r\ndeux \r\n\r\ntrois", 8) == ["un\ndeux", "trois"]


def test_split_packs_paragraphs_that_fit():
    assert split("Un.\n\nDeux.\n\nTrois.", 12) == ["Un.\n\nDeux.", "Trois."]


def test_split_hard_cuts_long_words():
    assert split("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert split("x https://example.org/very/long y", 10) == [
        "x",
        "https://ex",
        "ample.org/",
        "very/long",
        "y",
    ]


def test_split_keeps_no_break_spaces_together():
    assert split("x «\u00a0oui\u00a0» y", 7) == ["x", "«\u00a0oui\u00a0»", "y"]


def test_split_short_and_empty():
    assert split("  Bonjour !  ", 160) == ["Bonjour !"]
    assert split(" \n\n ", 10) == []
    assert split("", 10) == []
    with pytest.raises(ValueError):
        split("abc", 0)


def test_split_long_message_into_single_segment_parts():
    parts = split(LONG_GSM, 153)
    assert len(parts) == 2
    assert all(segments(p) == 1 for p in parts)
    assert " ".join(parts).split() == LONG_GSM.split()


# --- properties ------------------------------------------------------------------------

FRENCH_ALPHABET = st.sampled_from(
    list("aeéèàùçêôœÇÀÊ €[{~ \n?!.,’«»“…–—•😀🙏مح\u00a0\u202f\u200b`")
)
french_text = st.text(FRENCH_ALPHABET, max_size=400)
any_text = st.text(max_size=300)
# Texts whose non-GSM characters all have a same-length GSM-7 equivalent.
foldable_text = st.text(st.sampled_from(list("aeéçêîôÀÊ €[ ’«»“–\u00a0\u202f")), max_size=400)


@settings(max_examples=300)
@given(st.one_of(any_text, french_text))
def test_property_normalise_never_adds_segments(text):
    assert segments(normalise(text)) <= segments(text)


@settings(max_examples=300)
@given(st.one_of(any_text, french_text))
def test_property_normalise_is_idempotent(text):
    once = normalise(text)
    assert normalise(once) == once


@given(foldable_text)
def test_property_normalise_foldable_text_becomes_gsm7(text):
    out = normalise(text)
    assert is_gsm7(out)
    assert len(out) == len(text)


@given(french_text.filter(lambda t: any("\u0600" <= c <= "\u06ff" for c in t)))
def test_property_normalise_keeps_letters_when_ucs2(text):
    out = normalise(text)
    assert encoding(out) == "UCS-2"
    assert ucs2_units(out) == ucs2_units(text)
    for before, after in zip(text, out, strict=True):
        if before.isalpha():
            assert after == before


@given(st.text(st.sampled_from(list("abc xyz.,;:!?0123456789")), max_size=800))
def test_property_gsm_segments_closed_form(text):
    n = len(text)
    expected = 0 if n == 0 else 1 if n <= 160 else math.ceil(n / 153)
    assert segments(text) == expected


@given(st.text(st.sampled_from(list("açêوб中 ")), min_size=1, max_size=400))
def test_property_ucs2_bmp_segments_closed_form(text):
    n = len(text)
    expected = 0 if n == 0 else 1 if n <= 70 else math.ceil(n / 67)
    assert segments(text) == expected


@given(st.one_of(any_text, french_text), st.text(st.sampled_from(list("a€ç😀")), max_size=5))
def test_property_segments_monotonic(text, suffix):
    if encoding(text + suffix) == encoding(text):
        assert segments(text + suffix) >= segments(text)


@given(st.one_of(any_text, french_text), st.integers(min_value=1, max_value=200))
def test_property_split_respects_max_and_keeps_content(text, max_chars):
    parts = split(text, max_chars)
    for part in parts:
        assert part
        assert part == part.strip()
        assert len(part) <= max_chars
    # Nothing but whitespace is lost, even when long words are hard-cut.
    assert "".join("".join(parts).split()) == "".join(text.split())


@given(
    st.lists(
        st.text(st.sampled_from(list("abcdéçê’😀")), min_size=1, max_size=12),
        max_size=60,
    ),
    st.lists(st.sampled_from([" ", "\n", "\n\n", "  ", " \n \n"]), min_size=60, max_size=60),
    st.integers(min_value=12, max_value=160),
)
def test_property_split_never_loses_words(words, seps, max_chars):
    text = "".join(w + s for w, s in zip(words, seps, strict=False))
    parts = split(text, max_chars)
    assert " ".join(parts).split() == words
    assert "\n".join(parts).split() == words
    assert all(len(p) <= max_chars for p in parts)
