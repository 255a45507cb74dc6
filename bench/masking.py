"""Masking recall and false positives, on the phrasing corpus written apart from the detectors
(``tests/data/masking/``): N generated valid values in each template, per kind, train and
held-out apart; every look-alike message, per look-alike kind; and look-alike numbers
generated here (phone numbers in every French form, SIRET, tax numbers, postcodes after
"code"…) in a few sentences of this script's own.

    .venv/bin/python bench/masking.py [--n 50] [--seed 1] [--failures 20]

Pure logic: no database. Values are drawn from a seeded ``random.Random`` (the same figures on
every run); ``tests/unit/test_masking_corpus.py`` draws them through Hypothesis with the same
generators. Only failures of the *train* part are printed (``--failures``): the held-out part
is never used to tune the detectors, only to report them.

A value counts as masked when its kind is reported and no piece of it is left in the text
(none of its characters for a password or a code; no run of 6 of its digits for a number).
A look-alike counts as a false positive when anything in it is masked.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import bench.* and bot.* from the repository
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.fr import nif as stdnum_nif
from stdnum.fr import nir as stdnum_nir

from bot.core.masking import mask

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "masking"
KINDS = ("nir", "iban", "card", "password", "code")
SPLITS = ("train", "heldout")
RECALL_GOAL = 0.99
FALSE_POSITIVE_GOAL = 0.005

Generator = Callable[[random.Random], str]


# -- the corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    kind: str
    split: str
    text: str


def load(name: str, corpus: Path = CORPUS) -> list[Line]:
    """The lines of ``phrasings.tsv`` or ``lookalikes.tsv`` (``kind``, ``split``, text)."""
    with (corpus / name).open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        assert header[:2] == ["kind", "split"], header
        return [Line(row[0], row[1], row[2]) for row in rows if len(row) >= 3]


def phrasings(corpus: Path = CORPUS) -> list[Line]:
    return load("phrasings.tsv", corpus)


def lookalikes(corpus: Path = CORPUS) -> list[Line]:
    return load("lookalikes.tsv", corpus)


# -- valid values ------------------------------------------------------------------------------

_SPACINGS = (" ", " ", " ", "  ", ".", "-", "")


def _group(text: str, sizes: Sequence[int], separator: str) -> str:
    parts, start = [], 0
    for size in sizes:
        parts.append(text[start:start + size])
        start += size
    if start < len(text):
        parts.append(text[start:])
    return separator.join(part for part in parts if part)


def nir_value(rng: random.Random) -> str:
    """A valid NIR: sex, year, month, a place of birth (mainland, Corsica 2A/2B, a 3-digit
    overseas département, abroad), order, key; written with any spacing, the key apart too."""
    sex = rng.choice("1111122222" + "3478")
    year = f"{rng.randrange(100):02d}"
    month = f"{rng.randint(1, 12):02d}" if rng.random() < 0.95 else rng.choice(("20", "31", "62"))
    place = rng.random()
    if place < 0.6:
        department = f"{rng.choice([d for d in range(1, 96) if d != 20]):02d}"
        place_code, sizes = department + f"{rng.randint(1, 999):03d}", (1, 2, 2, 2, 3, 3)
    elif place < 0.75:
        place_code = rng.choice(("2A", "2B")) + f"{rng.randint(1, 999):03d}"
        sizes = (1, 2, 2, 2, 3, 3)
    elif place < 0.9:
        place_code = f"97{rng.randint(1, 6)}{rng.randint(1, 99):02d}"
        sizes = (1, 2, 2, 3, 2, 3)
    else:
        place_code, sizes = f"99{rng.randint(100, 999)}", (1, 2, 2, 2, 3, 3)
    body = sex + year + month + place_code + f"{rng.randint(1, 999):03d}"
    key = stdnum_nir.calc_check_digits(body)
    assert stdnum_nir.is_valid(body + key)
    if rng.random() < 0.3:
        body = body.lower()
    separator = rng.choice(_SPACINGS)
    written = _group(body, sizes, separator)
    if rng.random() < 0.3:  # the key apart
        return written + rng.choice((
            " clé {k}", " cle: {k}", " clé : {k}", " clef {k}", " (clé {k})", " ({k})",
            " - clé {k}", ", clé {k}", " cle {k}", " Clé {k}", " key {k}",
        )).format(k=key)
    return written + (separator or "") + key if separator else written + key


SEPA = (
    "AD AT BE BG CH CY CZ DE DK EE ES FI FR GB GI GR HR HU IE IS IT LI LT LU LV MC MT NL NO "
    "PL PT RO SE SI SK SM VA AL MD ME MK"
).split()
_BBAN_PART = re.compile(r"(\d+)!([nac])")
_ALPHABET = {"n": "0123456789", "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
             "c": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _bban(rng: random.Random, country: str) -> str:
    structure = stdnum_iban._ibandb.info(country + "00")[0][1]["bban"]
    return "".join(
        "".join(rng.choice(_ALPHABET[kind]) for _ in range(int(size)))
        for size, kind in _BBAN_PART.findall(structure)
    )


def iban_value(rng: random.Random) -> str:
    """A valid IBAN of a SEPA country (national checks included), grouped by four or not,
    upper or lower case."""
    country = rng.choice(SEPA)
    draws = random.Random(rng.getrandbits(64))  # national checks: up to ~100 draws, kept cheap
    for _ in range(10_000):
        bban = _bban(draws, country)
        number = country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban
        if stdnum_iban.is_valid(number):
            break
    else:  # pragma: no cover - the national checks are at worst 1 in 100
        raise AssertionError(f"no valid IBAN drawn for {country}")
    style = rng.random()
    if style < 0.55:
        number = stdnum_iban.format(number)
    elif style < 0.65:
        number = stdnum_iban.format(number, "-")
    if rng.random() < 0.2:
        number = number.lower()
    return number


_CARD_PREFIXES: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    # prefix, weight, lengths
    ("4", 40, (16,)), ("4", 2, (13, 19)), ("51", 6, (16,)), ("52", 6, (16,)), ("53", 6, (16,)),
    ("54", 6, (16,)), ("55", 6, (16,)), ("2221", 1, (16,)), ("23", 1, (16,)),
    ("25", 1, (16,)), ("270", 1, (16,)), ("2720", 1, (16,)), ("34", 4, (15,)),
    ("37", 6, (15,)), ("6011", 2, (16,)),
    ("65", 2, (16,)), ("62", 2, (16, 19)), ("35", 2, (16,)), ("6759", 1, (16, 19)),
)


def card_value(rng: random.Random) -> str:
    """A Luhn-valid card number with an issuer's prefix and length, written as cards are:
    groups of four (spaces, double spaces, dashes, dots), Amex 4-6-5, or one block."""
    prefix, _, lengths = rng.choices(_CARD_PREFIXES, [w for _, w, _ in _CARD_PREFIXES])[0]
    size = rng.choice(lengths)
    body = prefix + "".join(rng.choice("0123456789") for _ in range(size - len(prefix) - 1))
    number = body + luhn.calc_check_digit(body)
    style = rng.random()
    if style < 0.3:
        return number
    if size == 15 and rng.random() < 0.7:
        return _group(number, (4, 6, 5), rng.choice((" ", " ", "-")))
    return _group(number, (4,) * 5, rng.choice((" ", " ", " ", "  ", "-", ".")))


_PASSWORD_WORDS = (
    "soleil marie loulou chouchou nicolas bonheur doudou papillon julien camille mamour "
    "azerty france paris marseille amour chocolat princesse titou lucas emma maison jardin "
    "liberte chaton mimi toto bichette cocotte dupont martin fatima mohamed ahmed karim "
    "sarah ines yasmine kevin jordan loic pierre jean michel nathalie sylvie caf ameli "
    "famille enfants bebe lapin tigre lion dragon football psg om"
).split()
_SYMBOLS = "!?@#$*%&+._-"


def password_value(rng: random.Random) -> str:
    """A password as services require them (8+ characters, letters and a digit) and as people
    make them: a name or a word, a year or a postcode, maybe a capital and a symbol; or a
    generated string."""
    style = rng.random()
    if style < 0.15:  # generated by a browser or a site
        alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        chars = [rng.choice(alphabet) for _ in range(rng.randint(7, 13))]
        chars.insert(rng.randrange(len(chars) + 1), rng.choice("23456789"))
        if rng.random() < 0.5:
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(_SYMBOLS))
        return "".join(chars)
    word = rng.choice(_PASSWORD_WORDS)
    if rng.random() < 0.2:
        word += rng.choice(_PASSWORD_WORDS)
    case = rng.random()
    if case < 0.5:
        word = word.capitalize()
    elif case < 0.6:
        word = word.upper()
    if style < 0.25:  # leetspeak
        word = word.replace("a", "@").replace("o", "0").replace("e", "3")
    digits = rng.choice((
        str(rng.randint(1950, 2024)), f"{rng.randint(0, 99):02d}", f"{rng.randint(1, 95):02d}000",
        str(rng.randint(1, 9)), f"{rng.randint(0, 9999):04d}", "123", "1234",
    ))
    parts = [word, digits] if rng.random() < 0.85 else [digits, word]
    if rng.random() < 0.4:
        parts.append(rng.choice(_SYMBOLS[:8]))
    password = "".join(parts)
    while len(password) < 8:
        password += rng.choice("0123456789")
    return password


def code_value(rng: random.Random) -> str:
    """A one-time code, a PIN or a card security code: 3, 4, 6 or 8 digits (a 6-digit code is
    sometimes written 3 + 3). Five digits are left out: after the bare word "code" they are a
    postcode (see ``bot.core.pii``)."""
    size = rng.choices((3, 4, 6, 8), (1, 4, 6, 1))[0]
    code = "".join(rng.choice("0123456789") for _ in range(size))
    if size == 6 and rng.random() < 0.15:
        return code[:3] + " " + code[3:]
    return code


GENERATORS: dict[str, Generator] = {
    "nir": nir_value, "iban": iban_value, "card": card_value,
    "password": password_value, "code": code_value,
}


# -- generated look-alikes (this script's own sentences) ---------------------------------------


def _digits(rng: random.Random, size: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(size))


def phone_value(rng: random.Random) -> str:
    """A French phone number in any usual form, mainland or overseas."""
    if rng.random() < 0.7:
        national = "0" + rng.choice("1234567899") + _digits(rng, 8)
        country = "33"
    else:
        country, prefix = rng.choice((
            ("262", "0692"), ("262", "0693"), ("262", "0262"), ("262", "0639"),
            ("590", "0690"), ("590", "0590"), ("594", "0694"), ("594", "0594"),
            ("596", "0696"), ("596", "0596"),
        ))
        national = prefix + _digits(rng, 6)
    style = rng.randrange(9)
    pairs = _group(national, (2,) * 5, " ")
    if style == 0:
        return national
    if style == 1:
        return pairs
    if style == 2:
        return _group(national, (2,) * 5, rng.choice(".-"))
    if style == 3:
        return f"+{country} {national[1]} " + _group(national[2:], (2,) * 4, " ")
    if style == 4:
        return f"+{country}{national[1:]}"
    if style == 5:
        return f"00{country}{national[1:]}"
    if style == 6:
        return f"00{country} {national[1]} " + _group(national[2:], (2,) * 4, " ")
    if style == 7:
        return f"+{country} (0){national[1]} " + _group(national[2:], (2,) * 4, " ")
    return _group(national, (4, 2, 2, 2), " ")


def date_value(rng: random.Random) -> str:
    day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(1930, 2030)
    return rng.choice((
        f"{day:02d}/{month:02d}/{year}", f"{day:02d}-{month:02d}-{year}",
        f"{day:02d}.{month:02d}.{year}", f"{year}-{month:02d}-{day:02d}",
        f"{day:02d}{month:02d}{year}", f"{day:02d} {month:02d} {year}", f"{day}/{month}",
        f"{day:02d}/{month:02d}/{year % 100:02d}",
    ))


def time_value(rng: random.Random) -> str:
    hour, minute = rng.randint(0, 23), rng.choice((0, 5, 10, 15, 30, 45, 50))
    return rng.choice((f"{hour}h{minute:02d}", f"{hour:02d}:{minute:02d}", f"{hour} h {minute}",
                       f"{hour}h"))


def postcode_value(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return f"97{rng.randint(1, 6)}{rng.randint(0, 99):02d}"
    return f"{rng.randint(1, 95):02d}{rng.randint(0, 999):03d}"


def amount_value(rng: random.Random) -> str:
    euros = rng.choice((rng.randint(1, 999), rng.randint(1000, 99_999)))
    cents = rng.randint(0, 99)
    grouped = f"{euros:,}".replace(",", " ")
    return rng.choice((f"{euros} €", f"{grouped},{cents:02d} €", f"{euros}.{cents:02d} euros",
                       f"{grouped} euros", f"{euros},{cents:02d}€"))


def caf_value(rng: random.Random) -> str:
    number = _digits(rng, 7)
    return number if rng.random() < 0.8 else number[:3] + " " + number[3:]


def tax_value(rng: random.Random) -> str:
    body = rng.choice("0123") + _digits(rng, 9)
    number = body + stdnum_nif.calc_check_digits(body)
    assert stdnum_nif.is_valid(number)
    return number if rng.random() < 0.6 else stdnum_nif.format(number)


def siret_value(rng: random.Random) -> str:
    siren = _digits(rng, 8)
    siren += luhn.calc_check_digit(siren)
    body = siren + _digits(rng, 4)
    number = body + luhn.calc_check_digit(body)
    return number if rng.random() < 0.5 else _group(number, (3, 3, 3, 5), " ")


def tracking_value(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return rng.choice((
        rng.choice("68") + rng.choice(letters) + _digits(rng, 11),
        rng.choice(letters) + rng.choice(letters) + _digits(rng, 9) + "FR",
        "1" + rng.choice("ALK") + _digits(rng, 11),
        _digits(rng, 14),
    ))


LOOKALIKE_GENERATORS: dict[str, tuple[Generator, tuple[str, ...]]] = {
    "phone": (phone_value, (
        "rappelez-moi au {value}", "mon numéro {value}", "envoyez le code au {value}",
        "tel {value} merci",
    )),
    "date": (date_value, (
        "né le {value}", "rdv le {value} à la mairie", "le code a été envoyé le {value}",
    )),
    "time": (time_value, ("rdv à {value}", "le code arrive à {value}")),
    "postcode": (postcode_value, (
        "code {value}", "code postal {value}", "mon code c'est {value}", "code: {value}",
        "j'habite {value}", "CP {value}",
    )),
    "amount": (amount_value, ("j'ai payé {value}", "code promo de {value}", "facture de {value}")),
    "caf": (caf_value, ("numéro allocataire {value}", "mon numéro caf {value}")),
    "tax": (tax_value, ("numéro fiscal {value}", "identifiant fiscal {value}", "SPI {value}")),
    "siret": (siret_value, ("SIRET {value}", "le siret de mon entreprise {value}",
                            "facture siret {value}")),
    "tracking": (tracking_value, ("numéro de suivi {value}", "mon colis {value}")),
}


# -- scoring -----------------------------------------------------------------------------------


def leaked(kind: str, value: str, masked: str) -> bool:
    """Is a piece of ``value`` still readable in ``masked``?"""
    if kind in ("password", "code"):
        return any(part and part.lower() in masked.lower() for part in value.split())
    compact = re.sub(r"[^0-9A-Za-z]", "", value).upper()
    if kind == "nir":
        compact = re.sub(r"(CLEF?|KEY)", "", compact)
    text = re.sub(r"[^0-9A-Za-z]", "", masked).upper()
    return any(compact[i:i + 6] in text for i in range(0, max(1, len(compact) - 5)))


def is_masked(kind: str, value: str, template: str) -> tuple[bool, str]:
    """Whether ``value`` in ``template`` is masked (its kind reported, nothing of it left),
    and the masked text."""
    result = mask(template.replace("{value}", value))
    ok = kind in result.kinds and not leaked(kind, value, result.text)
    return ok, result.text


@dataclass
class Score:
    total: int = 0
    hits: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, ok: bool, text: str, masked: str) -> None:
        self.total += 1
        self.hits += ok
        if not ok:
            self.failures.append((text, masked))

    @property
    def rate(self) -> float:
        return self.hits / self.total if self.total else 1.0


def recall(lines: Iterable[Line], values: Callable[[str], str]) -> dict[str, Score]:
    """Per kind, the share of generated values masked in the templates; ``values(kind)`` draws
    one value."""
    scores: dict[str, Score] = defaultdict(Score)
    for line in lines:
        value = values(line.kind)
        ok, masked = is_masked(line.kind, value, line.text)
        scores[line.kind].add(ok, line.text.replace("{value}", value), masked)
    return scores


def false_positives(texts: Iterable[tuple[str, str]]) -> dict[str, Score]:
    """Per look-alike kind, the share of messages where something was masked (``hits`` counts
    the false positives here)."""
    scores: dict[str, Score] = defaultdict(Score)
    for kind, text in texts:
        result = mask(text)
        bad = bool(result.kinds) or result.text != text
        score = scores[kind]
        score.total += 1
        score.hits += bad
        if bad:
            score.failures.append((text, result.text))
    return scores


def generated_lookalikes(rng: random.Random, n: int) -> list[tuple[str, str]]:
    texts = []
    for kind, (generator, templates) in LOOKALIKE_GENERATORS.items():
        for template in templates:
            for _ in range(n):
                texts.append((kind, template.replace("{value}", generator(rng))))
    return texts


# -- the report --------------------------------------------------------------------------------


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f} %"


def main(argv: Sequence[str] | None = None) -> int:
    from bench.common import print_header, print_summary, print_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="values per template (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--failures", type=int, default=20,
                        help="train failures printed per kind (default 20)")
    args = parser.parse_args(argv)

    templates = phrasings()
    looks = lookalikes()
    print_header("Masking: recall on generated values, false positives on look-alikes", [
        f"{len(templates)} templates, {args.n} values each (seed {args.seed}); "
        f"{len(looks)} look-alike messages",
        f"goals: recall ≥ {100 * RECALL_GOAL:.0f} % per kind, "
        f"false positives ≤ {100 * FALSE_POSITIVE_GOAL:.1f} %",
    ])
    rng = random.Random(args.seed)
    by_split: dict[str, dict[str, Score]] = {}
    for split in SPLITS:
        lines = [line for line in templates if line.split == split] * args.n
        by_split[split] = recall(lines, lambda kind: GENERATORS[kind](rng))
    rows = []
    for kind in KINDS:
        cells = [kind]
        for split in SPLITS:
            score = by_split[split].get(kind, Score())
            cells += [f"{score.hits}/{score.total}", _pct(score.rate)]
        rows.append(cells)
    print_table("recall per kind", ["kind", "train", "", "held-out", ""], rows)

    fp_split = {
        split: false_positives((line.kind, line.text) for line in looks if line.split == split)
        for split in SPLITS
    }
    generated = false_positives(generated_lookalikes(random.Random(args.seed), args.n))
    look_kinds = sorted({line.kind for line in looks} | set(generated))
    fp_rows = []
    for kind in look_kinds:
        cells = [kind]
        for scores in (fp_split["train"], fp_split["heldout"], generated):
            score = scores.get(kind)
            cells += [f"{score.hits}/{score.total}", _pct(score.hits / score.total)] if score \
                else ["-", ""]
        fp_rows.append(cells)
    totals = ["all"]
    for scores in (fp_split["train"], fp_split["heldout"], generated):
        hits, total = sum(s.hits for s in scores.values()), sum(s.total for s in scores.values())
        totals += [f"{hits}/{total}", _pct(hits / total if total else 0.0)]
    fp_rows.append(totals)
    print_table("false positives per look-alike kind",
                ["look-alike", "train", "", "held-out", "", "generated", ""], fp_rows)

    if args.failures:
        shown = Counter[str]()
        for kind in KINDS:
            for text, masked in by_split["train"].get(kind, Score()).failures:
                if shown[kind] < args.failures:
                    print(f"MISSED {kind}: {text!r} -> {masked!r}")
                    shown[kind] += 1
        for kind, score in sorted(fp_split["train"].items()):
            for text, masked in score.failures[:args.failures]:
                print(f"FALSE POSITIVE {kind}: {text!r} -> {masked!r}")
        for kind, score in sorted(generated.items()):
            for text, masked in score.failures[:args.failures]:
                print(f"FALSE POSITIVE (generated) {kind}: {text!r} -> {masked!r}")

    summary = []
    for split in SPLITS:
        figures = ", ".join(f"{kind} {_pct(by_split[split][kind].rate)}" for kind in KINDS)
        summary.append(f"recall ({split}, {args.n} values per template): {figures}")
    for name, scores in (("train", fp_split["train"]), ("held-out", fp_split["heldout"]),
                         ("generated", generated)):
        hits, total = sum(s.hits for s in scores.values()), sum(s.total for s in scores.values())
        summary.append(f"false positives ({name} look-alikes): {hits}/{total} "
                       f"({_pct(hits / total if total else 0.0)})")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
