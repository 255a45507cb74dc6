"""Private data masked before storage and logs: social-security numbers (NIR), IBANs, card
numbers, passwords, and codes (one-time codes, PINs, card security codes).

The detectors are plain functions run in the order of ``DETECTORS`` by ``bot.core.masking.mask``
(nothing registers itself by being imported): IBAN first (its digits could hold a NIR or a
card), then NIR, card, and last passwords and codes, which skip what is already masked. Each
returns the masked text and the kinds it found, among ``KINDS``; the masks are neutral,
language-independent tokens (``TOKENS``), since the masked text is what is stored and shown
to staff, and masking masked text again changes nothing.

Numbers are masked when their check digits are right (python-stdnum):

- NIR: the key (mod 97), Corsica's 2A/2B, a 3-digit overseas département (97x and a 2-digit
  commune), any spacing (one or more spaces, dots, dashes, none), the key written apart
  ("… 084 clé 32", "cle: 32", "(32)");
- IBAN: mod 97 and the country's format (national checks included), any SEPA country,
  grouped by four or not, any case;
- card: Luhn, an issuer's prefix and length (Visa, Mastercard, Amex, CB co-badged cards,
  Maestro, Discover, JCB, UnionPay), written as cards are (one block, groups of four,
  4-6-5), after any word — "facture", "commande", "dossier" included.

Passwords and codes are found from the words that name them ("mdp", "mot de passe" and its
misspellings, "pass:", "identifiants", "code reçu par sms", "code secret", "code pin",
"cvv", "cryptogramme", "les 3 chiffres au dos", "sms : 482913"…), after them ("mon mdp c
est X", "mot de passe de mon compte ameli c'est X", "identifiant 1234567 mot de passe X",
"j'ai tapé X"), before them ("c'est X le mot de passe", "X est votre code", "X comme mot de
passe") or opening the next line or sentence. A code is digits (3 to 10, "482 913" too); a
password is any word, and an all-digit one given with a one-time or card word ("à usage
unique", "reçu par sms", "de ma carte") is a code. When a password word is followed by a
description rather than one word ("mon mot de passe c'est le prénom de ma fille"), the rest
of that clause is masked.

Look-alikes kept on purpose (a mediator needs them, and they are not secrets):

- phone numbers in every French form (``06 12 34 56 78``, ``+33…``, ``0033…``, overseas
  ``0692…``/``+262…``), dates, times and amounts: they have no check digits to match, a
  number written with a currency is never a card, and a French number written with its
  country code but no ``+`` (``33612345678``) is not a card;
- postcodes, even right after the bare word "code" ("code 93200", "mon code c'est 59000",
  "code postal 59000"): that is how people answer the postcode question. After a word that
  makes it a secret ("code reçu par sms 93200", "code secret", "code de vérification") a
  five-digit number is masked as a code;
- CAF numbers (7 digits), tax numbers (13-digit NIF: no card has that prefix and length),
  parcel numbers (letters inside, or no card prefix), invoice, order and file numbers,
  SIRET and SIREN numbers, IMEIs, date-times (``20230512103002``), bank and branch codes of
  a RIB ("code banque 30004"): a mediator needs them to help;
- the words of a code or a password that hold none: "j'ai oublié mon mot de passe", "le
  mot de passe c'est celui de la dernière fois", "le code ne marche pas", "code de la
  route", "code promo", "code erreur 500", "code INSEE 93066", "code APE", "pass navigo".

Masked on purpose although it may be harmless: a number that passes the Luhn check with a
card's prefix and length, whatever word comes before it (about one invoice or parcel number
in ten passes Luhn by chance; hiding one is better than storing a card). A SIRET is kept
unless a card word ("carte", "cb", "visa"…) comes just before: a 14-digit Diners card cannot
be told from a SIRET.

Not masked: a social-security number written without its key (13 digits cannot be told from
a tax number); a password of plain letters with no word linking it to its name ("mot de
passe papillon"; "mot de passe : papillon" and "mon mot de passe est papillon" are masked); a
five-digit code after the bare word "code"; logins and e-mail addresses.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.fr import nif as stdnum_nif
from stdnum.fr import nir as stdnum_nir
from stdnum.fr import siret as stdnum_siret

NIR = "nir"
IBAN = "iban"
CARD = "card"
PASSWORD = "password"
CODE = "code"
KINDS = (NIR, IBAN, CARD, PASSWORD, CODE)

TOKENS = {
    NIR: "[NIR]",
    IBAN: "[IBAN]",
    CARD: "[CARTE]",
    PASSWORD: "[MOT DE PASSE]",
    CODE: "[CODE]",
}
_TOKEN_RE = "|".join(re.escape(token) for token in TOKENS.values())


@dataclass(frozen=True)
class Masked:
    """A text with its private data replaced by tokens, and the kinds found (in ``KINDS``
    order)."""

    text: str
    kinds: tuple[str, ...] = ()


Detector = Callable[[str], Masked]


@functools.lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    if char in "’‘ʼ`´":
        return "'"
    lower = char.lower()
    if len(lower) != 1:
        lower = char
    base = "".join(
        c for c in unicodedata.normalize("NFKD", lower) if not unicodedata.combining(c)
    )
    return base if len(base) == 1 else lower


def fold(text: str) -> str:
    """Lower case, no accents, straight apostrophes; exactly as long as ``text``, so that a
    match in the folded text is a match at the same place in the original."""
    if text.isascii():
        return text.lower()
    return "".join(map(_fold_char, text))


def _replace(text: str, spans: Iterable[tuple[int, int, str]]) -> tuple[str, tuple[str, ...]]:
    """Replace non-overlapping (start, end, kind) spans by their tokens."""
    out: list[str] = []
    kinds: list[str] = []
    position = 0
    for start, end, kind in sorted(spans):
        if start < position:
            continue
        out.append(text[position:start])
        out.append(TOKENS[kind])
        position = end
        if kind not in kinds:
            kinds.append(kind)
    out.append(text[position:])
    return "".join(out), tuple(k for k in KINDS if k in kinds)


def _result(text: str, spans: list[tuple[int, int, str]]) -> Masked:
    if not spans:
        return Masked(text)
    masked, kinds = _replace(text, spans)
    return Masked(masked, kinds)


# -- IBANs -----------------------------------------------------------------------------------

# Country code and check digits, then letters and digits with at most two separators between
# them; the longest valid IBAN from each start wins, ending at a word's end.
_IBAN_START = re.compile(
    r"(?<![a-z0-9\[])[a-z]{2} ?\d{2}(?:(?:[ \t\u00a0\u202f]{1,2}|[\-.])?[a-z0-9]){10,40}"
)
_IBAN_MIN = 15  # Norway's 15 characters are the shortest


def mask_iban(text: str) -> Masked:
    folded = fold(text)
    spans: list[tuple[int, int, str]] = []
    position = 0
    for match in _IBAN_START.finditer(folded):
        if match.start() < position:
            continue
        end = _valid_iban_end(folded, match.start(), match.end())
        if end is None:
            continue
        spans.append((match.start(), end, IBAN))
        position = end
    return _result(text, spans)


def _valid_iban_end(text: str, start: int, stop: int) -> int | None:
    for end in range(stop, start + _IBAN_MIN - 1, -1):
        if end < len(text) and text[end].isalnum():
            continue  # never cut a word or a group in two
        if not text[end - 1].isalnum():
            continue
        candidate = text[start:end]
        if sum(c.isalnum() for c in candidate) < _IBAN_MIN:
            return None
        if stdnum_iban.is_valid(re.sub(r"[\s\-.]", "", candidate)):
            return end
    return None


# -- social-security numbers (NIR) --------------------------------------------------------

# sex (1, 2; 3, 4, 7, 8 for provisional numbers), year, month, département (2A/2B in
# Corsica, 97x overseas with a 2-digit commune), commune, order, key. People put spaces (one or
# more), dots, dashes or nothing between any of them, and write the key apart: "clé 32".
_NIR_SEP = r"(?:[ \t\u00a0\u202f]{1,3}|[.\-_/·])"
_NIR_RUN = re.compile(rf"(?<![\w\[+])[1-478](?:{_NIR_SEP}?[0-9ab]){{12,16}}")
_NIR_KEY_APART = re.compile(
    r"\s*[,;:\-/]?\s*[(\[]?\s*(?:(?:avec\s+|et\s+)?(?:la\s+|sa\s+)?"
    r"(?:cle|clef|key|cl)\b\.?\s*[:=]?\s*)?(\d)\s?(\d)(?!\d)\s*[)\]]?"
)


def _nir_units(run: str, offset: int) -> list[tuple[str, int, bool]]:
    """(character, position, separated from the previous one) for each digit or letter."""
    units: list[tuple[str, int, bool]] = []
    previous_end = None
    for index, char in enumerate(run):
        if char.isdigit() or char in "ab":
            units.append((char, offset + index, previous_end is not None
                          and previous_end != index))
            previous_end = index + 1
    return units


def _plausible_nir(compact: str) -> bool:
    month = int(compact[3:5])
    return (1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99) and compact[5:7] != "00"


def mask_nir(text: str) -> Masked:
    folded = fold(text)
    spans: list[tuple[int, int, str]] = []
    for match in _NIR_RUN.finditer(folded):
        units = _nir_units(match.group(0), match.start())
        if len(units) < 13:
            continue
        body = "".join(char for char, _, _ in units[:13]).upper()
        if not re.fullmatch(r"\d{5}(?:\d{2}|2[AB])\d{6}", body) or "A" in body[7:]:
            continue
        end: int | None = None
        key = ""
        rest = units[13:]
        if len(rest) >= 2 and rest[0][0].isdigit() and rest[1][0].isdigit() and (
            len(rest) == 2 or rest[2][2]
        ):
            key = rest[0][0] + rest[1][0]
            end = rest[1][1] + 1
        elif not rest or rest[0][2]:
            after = units[12][1] + 1
            apart = _NIR_KEY_APART.match(folded, after)
            if apart is not None:
                key = apart.group(1) + apart.group(2)
                end = apart.end()
                while end > after and folded[end - 1].isspace():
                    end -= 1
        if end is None or not _plausible_nir(body):
            continue
        if stdnum_nir.is_valid(body + key):
            spans.append((match.start(), end, NIR))
    return _result(text, spans)


# -- card numbers ------------------------------------------------------------------------------

# Runs of digits with spaces (up to three), dashes or dots between groups. A run is then
# searched for a span of whole groups that is a card number.
_DIGIT_RUN = re.compile(r"(?<![\w+\[])\d+(?:(?:[ \t\u00a0\u202f]{1,3}|[.\-])\d+)*(?![\w])")
_CARD_WORDS = re.compile(
    r"\b(?:cartes?(?!\s+(?:vitale|grise|d'identite|identite|de sejour|de resident|"
    r"d'electeur|navigo|mobilite|d'invalidite|d'inclusion|sim|cmi))|cb|card|visa|"
    r"mastercard|master card|amex|american express|maestro|num[eé]ro de carte|credit|debit|"
    r"bancaire|bleue?)\b",
)
_IMEI_WORD = re.compile(r"\bimei\b")
_CURRENCY_AFTER = re.compile(r"^\s*(?:€|eur\b|euros?\b|e\b|\$|£|usd\b)")
_CURRENCY_BEFORE = re.compile(r"(?:€|\$|£|\beur)\s*$")
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


def _issuer_length(digits: str) -> bool:
    """An issuer's prefix with one of its lengths (Visa, Mastercard, Amex, Diners, Discover,
    JCB, UnionPay, Maestro, Mir)."""
    size = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return size in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return size == 16
    if two in (34, 37):
        return size == 15
    if two == 36 or 300 <= int(digits[:3]) <= 305 or two in (38, 39):
        return size in (14, 16)
    if 2200 <= four <= 2204:
        return 16 <= size <= 19
    if two == 35 or digits[0] == "6":
        return 16 <= size <= 19
    if two == 50 or 56 <= two <= 58:
        return 13 <= size <= 19
    return False


def _looks_like_timestamp(digits: str) -> bool:
    for fmt, size in (("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12)):
        if len(digits) == size:
            try:
                datetime.strptime(digits, fmt)
            except ValueError:
                continue
            return True
    return False


_FRENCH_COUNTRY_CODES = ("33", "262", "269", "508", "590", "594", "596", "681", "687", "689")


def _looks_like_phone(digits: str) -> bool:
    """A French number (mainland or overseas) written with its country code and without its
    ``+``: 33612345678, 262692123456."""
    if len(digits) > 15 or not digits.startswith(_FRENCH_COUNTRY_CODES):
        return False
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def is_card_number(digits: str, *, shaped: bool = True, context: bool = False) -> bool:
    """A payment card number: 12-19 digits, the Luhn check, an issuer's prefix and length,
    and not another known number (a SIRET, a tax number, a date-time, a phone number), unless
    a card word comes before it (``context``)."""
    if not 12 <= len(digits) <= 19:
        return False
    if not _issuer_length(digits) and not (context and digits[0] in "23456"):
        return False
    if not luhn.is_valid(digits):
        return False
    if not context:
        if len(digits) == 14 and stdnum_siret.is_valid(digits):
            return False  # a company's SIRET passes Luhn too: keep it
        if len(digits) == 13 and stdnum_nif.is_valid(digits):
            return False
        if _looks_like_timestamp(digits) or _looks_like_phone(digits):
            return False
    return shaped or context


def mask_card(text: str) -> Masked:
    folded = fold(text)
    spans: list[tuple[int, int, str]] = []
    for match in _DIGIT_RUN.finditer(folded):
        run = match.group(0)
        groups = _groups(run)
        if sum(end - start for start, end in groups) < 12:
            continue
        before = folded[max(0, match.start() - _CONTEXT):match.start()]
        context = bool(_CARD_WORDS.search(before))
        if _IMEI_WORD.search(before):
            continue
        for start, end in _card_spans(run, groups, context):
            absolute_start, absolute_end = match.start() + start, match.start() + end
            if _CURRENCY_AFTER.match(folded[absolute_end:]) or _CURRENCY_BEFORE.search(
                folded[:absolute_start]
            ):
                continue
            spans.append((absolute_start, absolute_end, CARD))
    return _result(text, spans)


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

_PASSWORD_WORDS = (
    r"mots?[ \-]*(?:de|d'|d|2)[ \-]*pas{1,3}e?s?|mdps?|m2p|m\.d\.p|passwords?|passwd|pwd|pswd|"
    r"passe?[ \-]?word"
)
_PASS_WORDS = r"pass|pw"  # only with ':' or '=', or before a secret-looking word
_CODE_WORDS = (
    r"codes?|pin|nip|cvv2?|cvc2?|cryptogramme|crypto|otp|passcode|digicode|puk|"
    r"num[eé]ro (?:secret|confidentiel)|token|jeton|"
    r"clef? (?:de securite|d'activation|de validation|de connexion|d'acces|secrete)|"
    r"(?:(?:les|mes|ses) )?(?:3|4|6|8|trois|quatre|six|huit) "
    r"(?:derniers |petits )?chiffres|chiffres (?:au dos|derriere|de derriere|du dos|au verso)"
)
_SMS_WORDS = r"sms|texto|textos"  # a code only when one follows at once: "sms: 482913"
_CREDENTIALS_WORDS = r"identifiants|codes d'acces|credentials"  # a login, then its password
_KEYWORD = re.compile(
    rf"(?<![\w\[])(?:(?P<password>{_PASSWORD_WORDS})|(?P<pass>{_PASS_WORDS})|"
    rf"(?P<credentials>{_CREDENTIALS_WORDS})|(?P<code>{_CODE_WORDS})|(?P<sms>{_SMS_WORDS}))"
    rf"(?![\w])"
)
_CHUNK = re.compile(rf"{_TOKEN_RE}|[:=]+|[^\s:=]+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# What may stand between a password word and its secret: articles, prepositions, the account.
_QUALIFIERS = _words(
    """
    de du des d d' l l' la le les un une mon ma mes ton ta tes son sa ses notre nos votre vos
    leur leurs pour sur avec par a au aux en dans chez ce cet cette ici
    my your his her our their the for of on to from this that in at with
    compte comptes account espace personnel perso personnelle boite boites mail mails email
    e-mail mel messagerie adresse gmail hotmail yahoo outlook orange sfr free bouygues
    laposte poste banque bancaire banques appli application app site internet web portail
    ameli caf cpam msa impots impot france connect franceconnect travail emploi pole ants
    doctolib edf engie urssaf retraite cnav agirc arrco mutuelle netflix facebook instagram
    whatsapp amazon leboncoin vinted paypal apple icloud google microsoft windows wifi box
    ordinateur ordi telephone portable tel tablette smartphone session carte cb bleue bleu
    retrait vitale certicode identite numerique fiscal pro cesu pajemploi sncf navigo
    provisoire temporaire nouveau nouvelle nouveaux ancien ancienne vrai actuel actuelle
    unique usage secret secrete confidentiel confidentielle recu recus recue recues
    envoye envoyee envoyes sms texto textos message messages courrier lettre acces connexion
    verification validation confirmation activation securite 3d secure one-time one time
    verification login connection access pin otp personal new current temporary old
    mobile majuscule majuscules minuscule minuscules dessous ci-dessous ci-apres
    mere pere fils fille filles mari femme epouse epoux enfant enfants maman papa soeur frere
    grand-mere grand-pere oncle tante voisin voisine ami amie copain copine cousin cousine
    belle-mere beau-pere compagnon compagne conjoint conjointe petit-fils petite-fille
    """
)
# Words that show no secret follows: pronouns, negations, states, verbs, conjunctions.
_STOP = _words(
    """
    je j' j'ai jai j'y il elle on nous vous ils elles ca cela ceci celui celle ceux celles lui
    moi toi quoi qui que qu' quel quelle quels quelles comment pourquoi ou quand combien ne n'
    pas plus jamais rien aucun aucune non oui y ai as avait avez avons ont sont etre
    oublie oubliee oublies oubliees perdu perdue perdus bloque bloquee bloques incorrect
    incorrecte incorrects faux fausse errone erronee invalide expire expiree expires change
    changee changer modifie modifier reinitialise reinitialiser trop faible fort forte court
    courte long longue valable valide bon bonne mauvais mauvaise ecrit ecrite note notee
    marque meme pareil identique necessaire obligatoire demande demander requis refuse
    refusee accepte marche marchent fonctionne fonctionnent affiche arrive vient sert
    correspond ok okay merci svp stp please thanks bonjour bonsoir hello wrong expired locked
    forgotten lost reset not it i you we they what which how why sorry dit dis veut faut doit
    peut peux dois sais connais souviens retrouve retrouver trouve trouver recevoir recu
    comme si sinon mais et donc car puis alors ensuite aussi encore toujours deja
    est-ce suivant illisible creer cree mettre mis taper tape saisir saisi rentrer entrer
    redemander renvoyer envoyer donner
    """
)
_CONNECTORS = _words(
    """
    : = -> => > → ⇒ ➡ ➡️ 👉 c'est cest c ces c'etait cetait est etait sera is was are egal
    egale voici voila vaut ci-dessous suivant: it's its
    """
)
_BEFORE_CONNECTORS = _CONNECTORS | _words("comme as en tant que pour ca sa ceci cela this")
# Between a connector and the secret: "c'est toujours X", "est bien X".
_AFTER_CONNECTOR = _words(
    """
    bien toujours juste simplement normalement maintenant actuellement desormais aussi donc
    alors encore surement probablement plutot apparemment tout ceci: ca: still now just
    """
)
# Near a password word, these make an all-digit secret a code: "mot de passe reçu par sms".
_ONE_TIME = _words(
    "unique usage one-time time otp sms texto textos temporaire provisoire carte cb bancaire "
    "bleue chiffres chiffre pin digits telephone portable phone sim deverrouillage"
)
_OPENERS = _words("le la les voici voila here it it's is")
_LETTER_CASE = _words("majuscule majuscules minuscule minuscules capitals lowercase")
# Verbs after which a secret-looking word is a password: "j'ai tapé X", "j'ai mis X".
_WEAK_CONNECTORS = _words(
    "tape tapee mis mets met mettre essaye essayer saisi saisie entre rentre ecrit utilise "
    "donne donnee recu envoye choisi cree note typed entered tried used gave"
)
_STRONG_BEFORE = _words("c'est cest c voici voila ce sera")
_ARTICLES = _words("le la les l' un une mon ma mes son sa ses ton ta the my a an")
_SKIP_BEFORE = _ARTICLES | _words(
    "votre vos notre nouveau nouvelle ancien ancienne vrai bon new old your our their "
    "verification confirmation security login whatsapp instagram facebook google microsoft "
    "amazon apple paypal one-time"
)
# Words right after "code" that name something else than a secret.
_NOT_SECRET_CODE = re.compile(
    r"\s*(?:(?:de la|de l'|du|des|de|d')\s*)?(?:postal|postale|promo|promotionnel|reduction|"
    r"remise|avantage|parrainage|cadeau|barre|barres|qr|erreur|error|route|civil|penal|"
    r"travail|commerce|sante publique|action|general|monetaire|consommation|couleur|couleurs|"
    r"source|vestimentaire|conduite|insee|ape|naf|nace|rome|commune|departement|pays|article|"
    r"produit|client|dossier|commande|colis|suivi|bic|swift|iban|allocataire|"
    r"securite sociale|deontologie|procedure|electoral|education|urbanisme|environnement|"
    r"rural|mutualite|des assurances|des douanes|des impots)(?![\w])"
)
# A bank's and a branch's codes on a RIB: five digits.
_BANK_CODE = re.compile(r"\s+(?:banque|guichet|agence|etablissement)\s*:?\s*\d{5}(?!\d)")
_PASS_PRODUCTS = _words(
    """
    navigo culture sport sanitaire vaccinal numerique mobilite jeunes jeune rail famille
    pass'sport pass'culture ski annuel mensuel liberte emploi integral senior seniors
    imagine'r imaginer campus decouverte bus tram metro ter velo
    """
)
_SECRET_QUALIFIERS = re.compile(
    r"\s*(?:pin|secret|secrete|confidentiel|confidentielle|sms|otp|provisoire|temporaire|"
    r"unique|a usage unique|de (?:verification|securite|confirmation|validation|connexion|"
    r"ma carte|la carte|acces)|d'(?:acces|activation|authentification)|recu|envoye|"
    r"cb|carte)(?![\w])"
)
_CODE_LIKE = re.compile(r"(?:[a-z]-)?\d{3,10}")
_CODE_UNITS = _words(
    """
    chiffres chiffre caracteres caractere minutes minute min mn secondes seconde sec s heures
    heure h jours jour fois essais essai tentatives tentative ans an euros euro eur e € km m
    mois semaines semaine digits digit characters times attempts days hours seconds
    """
)
_DATE_WORDS = _words("le du au depuis ne nee date since on dated")
_CODE_NOT_BEFORE = _words("tel au rue en depuis annee l'annee")
_PUNCT = ".,;:!?()[]{}\"'«»…“”"
_DOMAIN = re.compile(r"[a-z][a-z0-9\-]*(?:\.[a-z0-9\-]+)*\.(?:fr|com|net|org|gouv|eu|info|be)")
_POSTCODE = re.compile(r"(?:0[1-9]|[1-8]\d|9[0-5])\d{3}|97[1-6]\d{2}|98[0-8]\d{2}")


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    raw: str  # as written
    word: str  # folded, without the punctuation around it
    masked: bool = False  # one of TOKENS
    stop: str = ""  # what ends here: "." a sentence, "?" a question, "\n" a line
    comma: bool = False  # a comma (or a semicolon) follows


_CONNECTOR_CHUNKS = (":", "=", "->", "=>", ">", "→", "⇒", "➡", "➡️", "👉")


def _tokens(text: str, folded: str) -> list[_Token]:
    """The words of ``text``; punctuation standing alone marks the word before it."""
    tokens: list[_Token] = []
    for match in _CHUNK.finditer(text):
        raw = match.group(0)
        gap = text[match.end():match.end() + 3]
        newline = "\n" if "\n" in gap[: len(gap) - len(gap.lstrip())] else ""
        if raw in TOKENS.values():
            tokens.append(_Token(match.start(), match.end(), raw, "", True, newline))
            continue
        if raw in _CONNECTOR_CHUNKS:
            tokens.append(_Token(match.start(), match.end(), raw, raw, False, newline))
            continue
        word = folded[match.start():match.end()].strip(_PUNCT + "-–—/|")
        tail = raw.rstrip("\"')»”]")
        stop = ""
        if not _glued_to_secret(raw):
            if re.search(r"[.!;…]$", tail):
                stop = "."
            elif tail.endswith("?"):
                stop = "?"
        comma = bool(re.search(r"[,;]$", tail))
        if not word:  # punctuation alone
            if tokens:
                previous = tokens[-1]
                tokens[-1] = _Token(
                    previous.start, previous.end, previous.raw, previous.word, previous.masked,
                    "." if "." in (stop, previous.stop) else (stop or previous.stop or newline),
                    previous.comma or comma,
                )
            continue
        tokens.append(_Token(match.start(), match.end(), raw, word, False, stop or newline,
                             comma))
    return tokens


def _glued_to_secret(raw: str) -> bool:
    """"Soleil2024!" ends no sentence: the mark may be part of the password."""
    core = raw.rstrip(".!?;…\"')»”]")
    if len(core) == len(raw):
        return False
    return any(c.isdigit() for c in core) and any(c.isalpha() for c in core) or any(
        not c.isalnum() and c not in "'’-" for c in core.strip(_PUNCT)
    )


def _base(word: str) -> str:
    """A word without its elided article: "l'ants" -> "ants", "d'acces" -> "acces"."""
    if len(word) > 2 and word[1] == "'" and word[0] in "ld":
        return word[2:]
    return word


def _is_stop(word: str) -> bool:
    if word in _STOP:
        return True
    return len(word) > 2 and word[1] == "'" and word[0] in "jnmsq" or word.startswith("qu'")


def _is_qualifier(token: _Token) -> bool:
    """A word between a password word and its secret: an article, the account's name…"""
    word = token.word
    if word in _QUALIFIERS or _base(word) in _QUALIFIERS or _DOMAIN.fullmatch(word):
        return True
    core = _base(token.raw.strip(_PUNCT).replace("’", "'"))
    return core.isalpha() and core.isupper() and 2 <= len(core) <= 6  # CAF, ANTS, URSSAF


def _core_span(token: _Token, text: str) -> tuple[int, int]:
    """The span of a secret: the whole chunk up to the next space, without the punctuation
    around it."""
    end = token.start
    while end < len(text) and not text[end].isspace():
        end += 1
    start = token.start
    while start < end and text[start] in "([«\"'“":
        start += 1
    while end > start and text[end - 1] in ",;)]»\"'”":
        end -= 1
    return start, end


def _secret_looking(token: _Token) -> bool:
    """A word that is probably a password: a digit, a symbol inside, or mixed case."""
    if token.masked:
        return False
    core = token.raw.strip(_PUNCT)
    if len(core) < 4 or _DOMAIN.fullmatch(core.lower()):
        return False
    if any(c.isdigit() for c in core):
        return True
    if any(not c.isalnum() and c not in "'’-" for c in core):
        return True
    core = _base(core.replace("’", "'"))
    return any(c.isupper() for c in core[1:]) and any(c.islower() for c in core)


def _strongly_secret_looking(token: _Token) -> bool:
    """Six characters or more with a letter and a digit, or a symbol inside."""
    core = token.raw.strip(_PUNCT)
    return len(core) >= 6 and (
        any(c.isalpha() for c in core) and any(c.isdigit() for c in core)
        or any(not c.isalnum() and c not in "'’-" for c in core)
    )


def _participle(token: _Token) -> bool:
    """A past participle as written with its accent ("envoyé", "créée"): a state, not a
    secret."""
    core = token.raw.strip(_PUNCT).lower()
    return core.isalpha() and core.endswith(("é", "ée", "és", "ées"))


def _is_connector(token: _Token) -> bool:
    return token.word in _CONNECTORS or token.raw.lower() in ("cé", "sé", "c'é", "c’é")


def _eligible(token: _Token) -> bool:
    """May this word be a secret given after a connector ("mon mdp est X")?"""
    if token.masked or not token.word or _is_connector(token):
        return False
    return not (_is_stop(token.word) or _participle(token) or token.word in _ARTICLES)


def _code_like(token: _Token) -> bool:
    """Digits (3 to 10), maybe after a letter and a dash ("G-482913"), maybe in bold
    ("*482913*")."""
    return not token.masked and bool(
        _CODE_LIKE.fullmatch(token.raw.strip(_PUNCT + "*_~").lower())
    )


@dataclass(frozen=True)
class _Found:
    start: int
    end: int
    kind: str


def mask_secrets(text: str) -> Masked:
    """Passwords and codes, found from the words that name them."""
    folded = fold(text)
    tokens = _tokens(text, folded)
    spans: list[tuple[int, int, str]] = []
    for match in _KEYWORD.finditer(folded):
        first = next((i for i, t in enumerate(tokens) if t.end > match.start()), None)
        last = next((i for i, t in enumerate(tokens) if t.end >= match.end()), None)
        if first is None or last is None or tokens[first].masked:
            continue
        if any(s <= match.start() < e for s, e, _ in spans):
            continue
        if match.group("code") is not None:
            found = _find_code(text, folded, tokens, match, first, last)
        elif match.group("credentials") is not None:
            found = _find_credentials(text, tokens, last)
        elif match.group("sms") is not None:
            found = _find_sms_code(tokens, last)
        else:
            found = _find_password(text, tokens, first, last, loose=bool(match.group("pass")))
        if found is not None and not any(s < found.end and found.start < e for s, e, _ in spans):
            spans.append((found.start, found.end, found.kind))
    return _result(text, spans)


def mask_password(text: str) -> Masked:
    """The passwords and codes detector under its former name."""
    return mask_secrets(text)


def _ahead(tokens: list[_Token], last: int, limit: int) -> list[int]:
    """Indexes of the tokens after the keyword ending at ``last``, to the end of the sentence
    (a question mark or a line break right after the keyword or a connector is crossed:
    "mdp ?  X", "code :\n X")."""
    if tokens[last].stop == ".":
        return []
    indexes: list[int] = []
    label = True  # only qualifiers and connectors so far: "code reçu par sms :\n X"
    for i in range(last + 1, min(len(tokens), last + 1 + limit)):
        indexes.append(i)
        token = tokens[i]
        label = label and (token.word in _CONNECTORS or _is_qualifier(token))
        if token.stop == "." or token.stop and not label:
            break
    return indexes


def _behind(tokens: list[_Token], first: int, limit: int) -> list[int]:
    """Indexes of the tokens of the sentence before the keyword starting at ``first``,
    nearest first."""
    indexes: list[int] = []
    for i in range(first - 1, max(-1, first - 1 - limit), -1):
        if tokens[i].stop:
            break
        indexes.append(i)
    return indexes


def _find_password(
    text: str, tokens: list[_Token], first: int, last: int, *, loose: bool
) -> _Found | None:
    ahead = _ahead(tokens, last, 30)
    if loose:
        following = tokens[ahead[0]] if ahead else None
        if following is None or following.word in _PASS_PRODUCTS:
            return None
    found = _password_after(text, tokens, ahead, direct_open=not tokens[last].comma, loose=loose)
    if found is None and not loose:
        found = _secret_before(text, tokens, first, PASSWORD)
    if found is None and not loose:
        following = _next_sentence(tokens, ahead[-1] if ahead else last)
        if following is not None and _secret_looking(tokens[following]):
            found = _Found(*_core_span(tokens[following], text), PASSWORD)
    nearby = ahead[:6] + _behind(tokens, first, 3)
    if found is not None and text[found.start:found.end].isdigit() and any(
        tokens[i].word in _ONE_TIME for i in nearby
    ):
        at = next(i for i, t in enumerate(tokens) if t.end > found.start)
        return _code_span(tokens, at)  # "mot de passe à usage unique 482913"
    return found


def _find_sms_code(tokens: list[_Token], last: int) -> _Found | None:
    """ "j'ai reçu un sms avec 482913", "texto : 482913": digits right after the word."""
    for i in _ahead(tokens, last, 6):
        token = tokens[i]
        if token.masked or token.comma and not _code_like(token):
            return None
        if _code_like(token):
            core = token.raw.strip(_PUNCT + "*_~")
            if len(core) >= 4 and _plain_code(token, tokens, i, qualified=len(core) != 5):
                return _code_span(tokens, i)
            return None
    return None


def _find_credentials(text: str, tokens: list[_Token], last: int) -> _Found | None:
    """ "mes identifiants : jean.dupont@free.fr / Soleil2024": the word after the login."""
    ahead = _ahead(tokens, last, 12)
    position = 0
    while position < len(ahead) and _is_qualifier(tokens[ahead[position]]):
        position += 1
    if position >= len(ahead) or not _is_connector(tokens[ahead[position]]):
        return None
    words = [i for i in ahead[position + 1:]
             if tokens[i].word not in ("/", "et", "and", "-") and not _is_connector(tokens[i])]
    if len(words) < 2 or tokens[words[0]].comma or not (
        tokens[words[0]].masked or _eligible(tokens[words[0]])
    ):
        return None
    secret = tokens[words[1]]
    if _eligible(secret) and not _is_qualifier(secret):
        return _Found(*_core_span(secret, text), PASSWORD)
    return None


def _skippable_after_connector(tokens: list[_Token], ahead: list[int], position: int) -> bool:
    """Adverbs between a connector and the secret: "c'est toujours X", "est bien X"."""
    word = tokens[ahead[position]].word
    if word in _AFTER_CONNECTOR:
        return True
    following = tokens[ahead[position + 1]].word if position + 1 < len(ahead) else ""
    return word == "en" and following in _LETTER_CASE or word in _LETTER_CASE


def _password_after(
    text: str, tokens: list[_Token], ahead: list[int], *, direct_open: bool = True,
    loose: bool = False,
) -> _Found | None:
    """The secret after a password word: the first secret-looking word right after it (the
    account's name may come between: "mdp ameli X"), else the word after a connector ("est",
    ":", "c'est"…) anywhere in the sentence; when a connector is followed by a description
    ("c'est le nom de mon chien"), the rest of that clause."""
    describe: int | None = None
    connector: _Token | None = None
    weak = False
    bridged = 0
    for position, i in enumerate(ahead):
        token = tokens[i]
        if token.masked:
            return None
        if _is_connector(token):
            connector = token
            direct_open = False
            continue
        if connector is not None:
            if _skippable_after_connector(tokens, ahead, position):
                continue
            symbol = connector.word in (":", "=")
            connector = None
            if _eligible(token) and (not loose or symbol or _secret_looking(token)):
                return _Found(*_core_span(token, text), PASSWORD)
            if token.word in _ARTICLES and describe is None and not loose:
                following = tokens[ahead[position + 1]] if position + 1 < len(ahead) else None
                if following is not None and not _is_stop(following.word) and not (
                    following.masked
                ):
                    describe = position
            continue
        if weak:
            weak = False
            if _secret_looking(token):
                return _Found(*_core_span(token, text), PASSWORD)
        if token.word in _WEAK_CONNECTORS:
            weak = True
            direct_open = False
            continue
        if direct_open:
            if _is_qualifier(token):
                direct_open = not token.comma
                continue
            if _secret_looking(token) and not _is_stop(token.word) and (
                not bridged or _strongly_secret_looking(token)
            ):
                return _Found(*_core_span(token, text), PASSWORD)
            # "mdp de l'ordi de la médiathèque X": a few plain words may name the account
            bridged += 1
            direct_open = (
                bridged <= 3 and not token.comma and token.word.isalpha()
                and not _is_stop(token.word) and not _participle(token)
            )
    if describe is not None:
        return _rest_of_clause(text, tokens, ahead[describe:])
    return None


def _rest_of_clause(text: str, tokens: list[_Token], indexes: list[int]) -> _Found | None:
    """From the first of ``indexes`` to the end of its clause (a comma, a conjunction, a
    pronoun or the end of the sentence)."""
    last: _Token | None = None
    for i in indexes:
        token = tokens[i]
        if last is not None and (_is_stop(token.word) or token.masked):
            break
        last = token
        if token.comma or token.stop:
            break
    if last is None:
        return None
    return _Found(tokens[indexes[0]].start, _core_span(last, text)[1], PASSWORD)


def _skip_before(tokens: list[_Token], behind: list[int], position: int) -> int:
    """Past the articles, adjectives, adverbs and names of the account before a password or
    code word: "X est votre nouveau code", "X is your Google verification code"."""
    skipped = 0
    while position < len(behind) and skipped < 5:
        token = tokens[behind[position]]
        if token.word in _BEFORE_CONNECTORS or token.masked or not (
            token.word in _SKIP_BEFORE or token.word in _AFTER_CONNECTOR
            or _is_qualifier(token) and not _secret_looking(token) and not _code_like(token)
        ):
            break
        position += 1
        skipped += 1
    return position


def _secret_before(text: str, tokens: list[_Token], first: int, kind: str) -> _Found | None:
    """The secret before its word: "X c'est mon mot de passe", "c'est X le code", "X comme
    mot de passe", "X est votre code", "X (mot de passe)"."""
    behind = _behind(tokens, first, 8)
    paren = tokens[first].raw.startswith("(")
    position = _skip_before(tokens, behind, 0)
    connector = False
    while position < len(behind) and tokens[behind[position]].word in _BEFORE_CONNECTORS:
        connector = True
        position = _skip_before(tokens, behind, position + 1)
    if position >= len(behind):
        return None
    candidate = tokens[behind[position]]
    if candidate.masked or not candidate.word or candidate.comma and not connector:
        return None
    end_token = candidate
    if (
        kind == CODE and re.fullmatch(r"\d{3}", candidate.word) and position + 1 < len(behind)
        and re.fullmatch(r"\d{3}", tokens[behind[position + 1]].word)
        and not tokens[behind[position + 1]].comma
    ):
        position += 1  # "482 913"
        candidate = tokens[behind[position]]
    previous = tokens[behind[position + 1]] if position + 1 < len(behind) else None
    strong = previous is not None and previous.word in _STRONG_BEFORE and not previous.comma
    alone = previous is None  # the secret opens the sentence: "X mon mot de passe"
    span = (_core_span(candidate, text)[0], _core_span(end_token, text)[1])
    if kind == CODE:
        if _code_like(candidate) and (connector or strong or paren or alone):
            return _Found(*span, CODE)
        return None
    if not _eligible(candidate) or _is_qualifier(candidate) and not _secret_looking(candidate):
        return None
    if strong or (connector or paren or alone) and _secret_looking(candidate):
        return _Found(*span, PASSWORD)
    return None


def _find_code(
    text: str, folded: str, tokens: list[_Token], match: re.Match[str], first: int, last: int
) -> _Found | None:
    rest = folded[match.end():]
    if _NOT_SECRET_CODE.match(rest) or _BANK_CODE.match(rest):
        return None
    if first > 0 and tokens[first - 1].word in ("erreur", "error", "http"):
        return None  # "erreur code 404"
    qualified = match.group("code") not in ("code", "codes") or bool(
        _SECRET_QUALIFIERS.match(rest)
    )
    ahead = _ahead(tokens, last, 25)
    for i in ahead:
        token = tokens[i]
        if token.masked:
            return None
        if not _code_like(token):
            continue
        if not _plain_code(token, tokens, i, qualified=qualified, first=i == last + 1):
            continue
        return _code_span(tokens, i)
    found = _password_after(text, tokens, ahead, direct_open=not tokens[last].comma)
    if found is not None and _has_letter_and_digit_or_symbol(text[found.start:found.end]):
        return found  # "le code de ma boite mail c'est Soleil2024": a password
    found = _secret_before(text, tokens, first, CODE) or _code_earlier(
        text, tokens, first, qualified
    )
    if found is None:
        following = _next_sentence(tokens, ahead[-1] if ahead else last)
        if following is not None and _code_like(tokens[following]) and _plain_code(
            tokens[following], tokens, following, qualified=qualified, first=True
        ):
            found = _code_span(tokens, following)
    return found


def _next_sentence(tokens: list[_Token], end: int) -> int | None:
    """ "J'ai reçu le code. C'est 482913" / "Voici mon mot de passe. Soleil2024": the word
    that opens the next sentence, or follows its opening "c'est", "le voici :"…"""
    if not tokens[end].stop or end + 1 >= len(tokens):
        return None
    i = end + 1
    for _ in range(4):
        if i >= len(tokens):
            return None
        token = tokens[i]
        if not (_is_connector(token) or token.word in _OPENERS):
            return i
        if token.stop == ".":
            return None
        i += 1
    return None


def _code_earlier(text: str, tokens: list[_Token], first: int, qualified: bool) -> _Found | None:
    """ "j'ai reçu 482913 par sms, c'est le code ?": a code earlier in the sentence, when the
    code word is introduced as naming it ("c'est le code", "est votre code")."""
    behind = _behind(tokens, first, 12)
    position = _skip_before(tokens, behind, 0)
    if position >= len(behind) or tokens[behind[position]].word not in _BEFORE_CONNECTORS:
        return None
    for i in behind[position + 1:]:
        token = tokens[i]
        if token.masked:
            return None
        if _code_like(token) and _plain_code(token, tokens, i, qualified=qualified):
            return _code_span(tokens, i)
    return None


def _digits_span(token: _Token) -> tuple[int, int]:
    core = token.raw.strip(_PUNCT + "*_~")
    start = token.start + max(0, token.raw.find(core))
    return start, start + len(core)


def _code_span(tokens: list[_Token], i: int) -> _Found:
    """The code at token ``i``, with its other half when it is written "482 913"."""
    start, end = _digits_span(tokens[i])

    def half(j: int) -> bool:
        return 0 <= j < len(tokens) and bool(re.fullmatch(r"\d{3}", tokens[j].raw))

    if re.fullmatch(r"\d{3}", tokens[i].raw.strip(_PUNCT)):
        if half(i + 1) or re.fullmatch(r"\d{3}[.,;!?)]*", tokens[i + 1].raw if i + 1 < len(
            tokens) else "") and not tokens[i].comma and not tokens[i].stop:
            end = _digits_span(tokens[i + 1])[1]
        elif half(i - 1) and not tokens[i - 1].comma and not tokens[i - 1].stop:
            start = tokens[i - 1].start
    return _Found(start, end, CODE)


def _plain_code(
    token: _Token, tokens: list[_Token], i: int, *, qualified: bool, first: bool = False
) -> bool:
    """Is this code-like number a code, not a phone number, a date, a postcode, an amount?
    (``first``: right after the code word, whatever comes before it.)"""
    core = token.raw.strip(_PUNCT + "*_~")
    previous = tokens[i - 1] if i > 0 and not first else None
    following = tokens[i + 1] if i + 1 < len(tokens) else None
    if previous is not None and (
        previous.word in _CODE_NOT_BEFORE or re.fullmatch(r"\d{1,2}", previous.word)
    ):
        return False
    if following is not None and (following.word in _CODE_UNITS
                                  or following.raw.startswith("€")):
        return False
    if token.raw.lstrip("(").startswith(("€", "$")) or token.raw.rstrip(",.;)").endswith("€"):
        return False
    if len(core) == 10 and core.startswith("0"):
        return False
    if len(core) == 8 and _looks_like_date(core) and previous is not None and (
        previous.word in _DATE_WORDS
    ):
        return False
    return not (len(core) == 5 and _POSTCODE.fullmatch(core) and not qualified)


def _looks_like_date(digits: str) -> bool:
    """Eight digits that are a date: 25092012 or 20120925."""
    for fmt in ("%d%m%Y", "%Y%m%d"):
        try:
            day = datetime.strptime(digits, fmt)
        except ValueError:
            continue
        if 1900 <= day.year <= 2099:
            return True
    return False


def _has_letter_and_digit_or_symbol(value: str) -> bool:
    return (
        any(c.isalpha() for c in value)
        and any(c.isdigit() or not c.isalnum() for c in value)
        and not value.startswith("[")
    )


DETECTORS: tuple[Detector, ...] = (mask_iban, mask_nir, mask_card, mask_secrets)
"""The detectors, in the order they run: each sees the text the previous ones masked."""
