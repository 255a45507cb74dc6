"""Private data masked before storage and logs: social-security numbers, IBANs, card numbers,
passwords and codes.

Each detector plugs into ``bot.masking`` (importing this module registers them, in this
order: NIR, IBAN, card, password). A number is masked only when its check digits are right
(python-stdnum), so look-alikes stay readable: phone numbers, dates, amounts, postcodes and
SIRET numbers (which pass the Luhn check: they are tested first and kept). Masks are neutral,
language-independent tokens, since the masked text is what is stored and shown to staff.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.fr import nir as stdnum_nir
from stdnum.fr import siret as stdnum_siret

from bot.masking import Masked, register

NIR = "nir"
IBAN = "iban"
CARD = "card"
PASSWORD = "password"
KINDS = (NIR, IBAN, CARD, PASSWORD)

TOKENS = {
    NIR: "[NIR]",
    IBAN: "[IBAN]",
    CARD: "[CARTE]",
    PASSWORD: "[MOT DE PASSE]",
    "code": "[CODE]",
}
_TOKEN_SET = frozenset(TOKENS.values())

# -- social-security numbers (NIR) --------------------------------------------------------

# sex (1, 2; 3, 7, 8 for provisional numbers), year, month, département (2A/2B in Corsica),
# commune, order, key; people write it with spaces, dots or dashes between the groups.
_SEP = r"[ .\-]?"
_NIR = re.compile(
    r"(?<![\w\[])([1-378])" + _SEP + r"(\d{2})" + _SEP + r"(\d{2})" + _SEP
    + r"(\d{2}|2[AB])" + _SEP + r"(\d{3})" + _SEP + r"(\d{3})" + _SEP + r"(\d{2})(?!\w)",
    re.IGNORECASE,
)


@register
def mask_nir(text: str) -> Masked:
    found = False

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        compact = "".join(match.groups()).upper()
        if stdnum_nir.is_valid(compact):
            found = True
            return TOKENS[NIR]
        return match.group(0)

    masked = _NIR.sub(replace, text)
    return Masked(masked, (NIR,) if found else ())


# -- IBANs -----------------------------------------------------------------------------------

_IBAN_START = re.compile(r"(?<![A-Za-z0-9\[])[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){10,40}")
_IBAN_MIN = 15  # Norway's 15 characters are the shortest


@register
def mask_iban(text: str) -> Masked:
    """The longest valid IBAN from each candidate start, ending at a word's end."""
    out: list[str] = []
    position = 0
    found = False
    for match in _IBAN_START.finditer(text):
        if match.start() < position:
            continue
        end = _valid_iban_end(text, match.start(), match.end())
        if end is None:
            continue
        out.append(text[position:match.start()])
        out.append(TOKENS[IBAN])
        position = end
        found = True
    if not found:
        return Masked(text)
    out.append(text[position:])
    return Masked("".join(out), (IBAN,))


def _valid_iban_end(text: str, start: int, stop: int) -> int | None:
    for end in range(stop, start + _IBAN_MIN - 1, -1):
        if end < len(text) and text[end].isalnum():
            continue  # never cut a word or a group in two
        if not text[end - 1].isalnum():
            continue
        candidate = text[start:end]
        if sum(c.isalnum() for c in candidate) < _IBAN_MIN:
            return None
        if stdnum_iban.is_valid(candidate):
            return end
    return None


# -- card numbers ------------------------------------------------------------------------------

# Runs of digits with single spaces, dashes or dots between groups. A run is then searched
# for a span of whole groups that is a card number.
_DIGIT_RUN = re.compile(r"(?<![\w+\[])\d+(?:[ .\-]\d+)*(?!\w)")
_CARD_WORDS = re.compile(
    r"\b(?:carte|cb|card|visa|mastercard|master card|amex|american express|maestro|"
    r"num[ée]ro de carte|credit|cr[ée]dit|d[ée]bit)\b",
    re.IGNORECASE,
)
# Numbers people must be able to give a mediator, which a card check could take for a card:
# a tax number, a benefits file, an order or parcel number…
_OTHER_NUMBER_WORDS = re.compile(
    r"\b(?:fiscal|fiscale|spi|imp[oô]ts?|allocataire|dossier|facture|commande|colis|suivi|"
    r"r[ée]f[ée]rence|r[ée]f|identifiant|siret|siren|tva|contrat|client|tracking|order|"
    r"invoice|parcel)\b",
    re.IGNORECASE,
)
_CURRENCY_AFTER = re.compile(r"^\s*(?:€|eur\b|euros?\b|e\b|\$|£)", re.IGNORECASE)
_CURRENCY_BEFORE = re.compile(r"(?:€|\$|£|eur)\s*$", re.IGNORECASE)
_CONTEXT = 40  # characters before a number where a card word gives context


def _groups(run: str) -> list[tuple[int, int]]:
    """(start, end) of each group of digits in ``run``."""
    return [(m.start(), m.end()) for m in re.finditer(r"\d+", run)]


def _card_shaped(sizes: list[int]) -> bool:
    """How cards are written: one block, groups of four, or 4-6-5 / 4-6-4 (Amex, Diners)."""
    if len(sizes) == 1:
        return True
    if all(size == 4 for size in sizes[:-1]) and 1 <= sizes[-1] <= 4:
        return True
    return sizes in ([4, 6, 5], [4, 6, 4])


def _looks_like_timestamp(digits: str) -> bool:
    for fmt, size in (("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12)):
        if len(digits) == size:
            try:
                datetime.strptime(digits, fmt)
            except ValueError:
                continue
            return True
    return False


def _looks_like_phone(digits: str) -> bool:
    """12 to 15 digits that are an international number written without its ``+``."""
    if len(digits) > 15:
        return False
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def is_card_number(digits: str, *, shaped: bool = True, context: bool = False) -> bool:
    """A payment card number: 12-19 digits, an issuer's first digit, the Luhn check, and not
    a SIRET, a date-time or a phone number."""
    if not 12 <= len(digits) <= 19 or digits[0] not in "23456":
        return False
    if len(digits) == 14 and stdnum_siret.is_valid(digits):
        return False  # a company's SIRET passes Luhn too: keep it
    if not luhn.is_valid(digits):
        return False
    if not context and (_looks_like_timestamp(digits) or _looks_like_phone(digits)):
        return False
    return shaped or context


@register
def mask_card(text: str) -> Masked:
    out: list[str] = []
    position = 0
    found = False
    for match in _DIGIT_RUN.finditer(text):
        run = match.group(0)
        groups = _groups(run)
        if sum(end - start for start, end in groups) < 12:
            continue
        before = text[max(0, match.start() - _CONTEXT):match.start()]
        context = bool(_CARD_WORDS.search(before))
        if not context and _OTHER_NUMBER_WORDS.search(before):
            continue
        spans = _card_spans(run, groups, context)
        for start, end in spans:
            absolute_start, absolute_end = match.start() + start, match.start() + end
            if _CURRENCY_AFTER.match(text[absolute_end:]) or _CURRENCY_BEFORE.search(
                text[:absolute_start]
            ):
                continue
            out.append(text[position:absolute_start])
            out.append(TOKENS[CARD])
            position = absolute_end
            found = True
    if not found:
        return Masked(text)
    out.append(text[position:])
    return Masked("".join(out), (CARD,))


def _card_spans(run: str, groups: list[tuple[int, int]], context: bool) -> list[tuple[int, int]]:
    """Spans of whole groups of ``run`` that are card numbers, longest first, not overlapping."""
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(groups):
        best: tuple[int, int] | None = None
        for j in range(min(len(groups), i + 19), i, -1):
            chosen = groups[i:j]
            digits = "".join(run[s:e] for s, e in chosen)
            if len(digits) > 19:
                continue
            if len(digits) < 12:
                break
            shaped = _card_shaped([e - s for s, e in chosen])
            if is_card_number(digits, shaped=shaped, context=context):
                best = (chosen[0][0], chosen[-1][1])
                i = j
                break
        if best is None:
            i += 1
        else:
            spans.append(best)
    return spans


# -- passwords and codes -----------------------------------------------------------------------

_PASSWORD_WORDS = r"mot[ \-]?de[ \-]?passe|mdp|password|passwd|pwd|pass"
_CODE_WORDS = (
    r"code(?:[ \-](?:pin|secret|confidentiel|d'acc[eè]s|de connexion|d'activation|"
    r"de validation|de s[ée]curit[ée]|de confirmation|sms))?|pin|cvv|cvc|cryptogramme"
)
_KEYWORD = re.compile(
    rf"(?<![\w\[])(?:(?P<password>{_PASSWORD_WORDS})|(?P<code>{_CODE_WORDS}))(?!\w)",
    re.IGNORECASE,
)
# What may come between the word and the secret: "mdp: x", "code = x", "c'est x", "is x".
_CONNECTOR = re.compile(
    r"\s*(?:(?P<symbol>:|=|->|=>)|(?P<word>(?:est|c'est|c’est|is|étant)(?!\w)))?\s*",
    re.IGNORECASE,
)
_SECRET = re.compile(r"\S+")
# Words after "mot de passe" or "code" that are not the secret itself.
_NOT_SECRET = frozenset(
    """
    postal postale de du des d la le les l un une mon ma mes ton ta votre vos son sa ses
    pour par sur avec sans et ou a au aux en dans qui que quoi est c ce cet cette il elle
    oublie oublies perdu perdue bloque bloquee faux fausse incorrect incorrecte errone
    erronee invalide mauvais mauvaise expire expiree change nouveau nouvelle ancien
    pas plus trop toujours jamais ne n marche fonctionne recu envoye demande
    promo insee ape naf route civil penal barre barres couleur source
    the a an my your his her our their for of to on in is not too wrong incorrect
    expired locked forgotten lost new old reset please
    """.split()
)


def _fold(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip(".,;:!?'\"()")


def _secret_looking(token: str) -> bool:
    """A word that is probably a password: a digit, a symbol inside, or mixed case."""
    core = token.rstrip(".,;:!?")
    if any(c.isdigit() for c in core):
        return True
    if any(not c.isalnum() for c in core):
        return True
    return any(c.isupper() for c in core[1:]) and any(c.islower() for c in core)


@register
def mask_password(text: str) -> Masked:
    out: list[str] = []
    position = 0
    found = False
    for match in _KEYWORD.finditer(text):
        if match.start() < position:
            continue
        connector = _CONNECTOR.match(text, match.end())
        assert connector is not None
        secret = _SECRET.match(text, connector.end())
        if secret is None or connector.end() == match.end() and secret.start() == match.end():
            continue  # "mdp" glued to something: not a keyword
        token = secret.group(0)
        if token in _TOKEN_SET or token.startswith("["):
            continue
        if _fold(token) in _NOT_SECRET:
            continue
        is_code = match.group("code") is not None
        if connector.group("symbol"):
            keep = False
        elif is_code:
            keep = not any(c.isdigit() for c in token)
        elif connector.group("word"):
            keep = False
        else:
            keep = not _secret_looking(token)
        if keep:
            continue
        out.append(text[position:secret.start()])
        out.append(TOKENS["code" if is_code else PASSWORD])
        position = secret.end()
        found = True
    if not found:
        return Masked(text)
    out.append(text[position:])
    return Masked("".join(out), (PASSWORD,))
