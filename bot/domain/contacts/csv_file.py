"""A contacts file: read line by line (UTF-8, or Windows-1252 for a file with no UTF-8
in it), its delimiter and header (English or French, any case, accents ignored), then row
by row, each bad row reported with its line number and reason."""

from __future__ import annotations

import csv
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache

import phonenumbers
from babel import Locale

from bot.core.addresses import (
    CHANNELS,
    OVERSEAS_PREFIXES,
    PHONE_CHANNELS,
    AddressError,
    parse_address,
    parse_phone,
    timezone_for,
)
from bot.core.addresses import Address as AddressValue
from bot.domain.contacts.base import MAX_NAME, MAX_TAG

# -- the file -------------------------------------------------------------------------------

ADDRESS, PHONE, WHATSAPP, TELEGRAM = "address", "phone", "whatsapp", "telegram"
NAME, FIRST_NAME, LANGUAGE, POSTCODE, TAGS, CONSENT = (
    "name", "first_name", "language", "postcode", "tags", "consent"
)
# Folded header names (lower case, no accents, punctuation as spaces) -> field.
HEADERS: dict[str, str] = {}
for _field, _names in {
    ADDRESS: "address|relais address",
    PHONE: "phone|phone number|telephone|tel|portable|mobile|numero de telephone|"
           "telephone portable|telephone mobile|numero de portable|gsm|cell|cellphone|"
           "mobile phone|sms|n de telephone|no de telephone|num tel|num telephone",
    WHATSAPP: "whatsapp|numero whatsapp",
    TELEGRAM: "telegram|telegram id",
    NAME: "name|nom|full name|nom complet|nom prenom|prenom nom|nom et prenom|last name|"
          "lastname|surname|nom de famille",
    FIRST_NAME: "first name|firstname|prenom|given name",
    LANGUAGE: "language|langue|lang|langue parlee|spoken language",
    POSTCODE: "postcode|post code|postal code|zip|zip code|zipcode|code postal|cp",
    TAGS: "tags|tag|etiquettes|etiquette|groupe|groupes|group|groups",
    CONSENT: "consent|consentement|accord|consent news|news|actualites|optin|opt in|"
             "consentement actualites",
}.items():
    for _name in _names.split("|"):
        HEADERS[_name] = _field
ADDRESS_FIELDS = {ADDRESS: None, PHONE: "sms", WHATSAPP: "whatsapp", TELEGRAM: "telegram"}

YES = {"yes", "y", "oui", "o", "1", "true", "vrai", "x", "ok", "d'accord", "daccord"}
NO = {"no", "n", "non", "0", "false", "faux"}

# Overseas numbers that the French plan also accepts (0596…, 0508…): their own region first.


def fold(text: str) -> str:
    """Lower case, no accents, punctuation as single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^a-z0-9']+", " ", plain).split())


def _language_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for locale in ("en", "fr"):
        for code, name in Locale(locale).languages.items():
            if len(code) == 2:
                names.setdefault(fold(name), code)
    return names


_LANGUAGES: dict[str, str] = {}


@cache
def parse_language(raw: str) -> str | None:
    """An ISO 639-1 code from ``fr``, ``FR``, ``fr-FR``, ``Français``, ``arabic``…"""
    if not _LANGUAGES:
        _LANGUAGES.update(_language_names())
    text = fold(raw)
    code = re.split(r"[ _\-]", text)[0] if text else ""
    if len(code) == 2 and code in _LANGUAGES.values():
        return code
    return _LANGUAGES.get(text)


@cache
def parse_postcode(raw: str) -> str | None:
    digits = re.sub(r"[\s.]", "", raw)
    if re.fullmatch(r"\d{4}", digits):  # a spreadsheet dropped the leading zero
        digits = "0" + digits
    if re.fullmatch(r"\d{5}", digits) and digits[:2] != "00":
        return digits
    return None


@cache
def parse_consent(raw: str) -> bool | None:
    text = fold(raw)
    if text in YES:
        return True
    if text in NO:
        return False
    raise ValueError(raw)


@cache
def parse_tags(raw: str) -> tuple[str, ...]:
    """Tags of a cell, lower case: several separated by commas, semicolons or spaces."""
    tags: list[str] = []
    for part in re.split(r"[,;|\s]+", raw):
        tag = part.strip().strip("#").lower()[:MAX_TAG]
        if tag and tag not in tags:
            tags.append(sys.intern(tag))
    return tuple(tags)


_FR_NATIONAL = re.compile(r"^(?:\+33|0033|0)?([1-9]\d{8})$")
_MOBILE_TYPES = (
    phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
)


@cache
def _french_kind(prefix: str) -> phonenumbers.PhoneNumberType | None:
    """The type of French numbers starting with these 5 national digits (None: invalid).
    Every French numbering pattern is decided by at most 5 leading digits, 9 in all."""
    number = phonenumbers.parse("0" + prefix + "0000", "FR")
    return phonenumbers.number_type(number) if phonenumbers.is_valid_number(number) else None


def phone_kind(raw: str) -> tuple[str, bool]:
    """(E.164, is a mobile) of a number written any usual way; overseas prefixes tried in
    their own region first (``0596…`` is Martinique). Raise AddressError."""
    text = raw.strip()
    digits = re.sub(r"[\s.\-/()]", "", text.replace("(0)", ""))
    national = _FR_NATIONAL.match(digits)
    if national is not None and "0" + national.group(1)[:3] not in OVERSEAS_PREFIXES:
        kind = _french_kind(national.group(1)[:5])
        if kind is not None:
            return "+33" + national.group(1), kind in _MOBILE_TYPES
    number = None
    region = OVERSEAS_PREFIXES.get(digits[:4]) if digits.startswith("0") else None
    if region is not None:
        try:
            number = phonenumbers.parse(digits, region)
        except phonenumbers.NumberParseException:
            number = None
        if number is not None and not phonenumbers.is_valid_number(number):
            number = None
    if number is None:
        number = parse_phone(text)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, phonenumbers.number_type(number) in _MOBILE_TYPES


def parse_phone_number(raw: str) -> str:
    """E.164 of a number written any usual way (see ``phone_kind``)."""
    return phone_kind(raw)[0]


def parse_contact_address(raw: str, channel: str | None) -> tuple[AddressValue, bool]:
    """An address cell: ``CHANNEL:ID``, or a number (``sms:`` unless the column says).
    Returns the address and whether it is a landline (an SMS number that is no mobile)."""
    text = raw.strip()
    prefix, sep, rest = text.partition(":")
    kind = prefix.strip().lower()
    if sep and kind in CHANNELS and kind not in PHONE_CHANNELS:
        return parse_address(text), False
    if channel == "telegram":
        return parse_address(f"telegram:{text}"), False
    if sep and kind in PHONE_CHANNELS:
        channel, text = kind, rest
    e164, mobile = phone_kind(text)
    channel = channel or "sms"
    return AddressValue(channel, e164), channel == "sms" and not mobile


def contact_timezone(postcode: str | None, address: AddressValue, default: str) -> str:
    """As ``bot.core.addresses.timezone_for``, without parsing metropolitan numbers again."""
    if address.channel in PHONE_CHANNELS and address.id.startswith("+33"):
        return timezone_for(postcode, None, default)
    return timezone_for(postcode, address, default)


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


NO_LANDLINES: frozenset[AddressValue] = frozenset()


@dataclass(slots=True)
class Person:
    """One person read from the file (rows sharing an address merged)."""

    line: int
    addresses: list[AddressValue]
    landlines: set[AddressValue] | frozenset[AddressValue] = NO_LANDLINES
    name: str | None = None
    language: str | None = None
    postcode: str | None = None
    tags: list[str] = field(default_factory=list)
    consent: bool | None = None

    def merge(self, other: Person) -> None:
        for address in other.addresses:
            if address not in self.addresses:
                self.addresses.append(address)
        if other.landlines:
            self.landlines = set(self.landlines) | other.landlines
        self.name = self.name or other.name
        self.language = self.language or other.language
        self.postcode = self.postcode or other.postcode
        self.tags += [t for t in other.tags if t not in self.tags]
        if other.consent is False or self.consent is None:
            self.consent = other.consent if other.consent is not None else self.consent


@dataclass
class ContactsFile:
    people: list[Person] = field(default_factory=list)
    rejected: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    error: str | None = None
    rows: int = 0
    duplicates: int = 0  # rows merged into an earlier row of the same person


def key_of(address: AddressValue) -> str:
    """The same number on SMS and WhatsApp is the same person."""
    return f"phone:{address.id}" if address.channel in PHONE_CHANNELS else str(address)


NOT_UTF8 = "not UTF-8 text"
UNTERMINATED = "unterminated quote"
MAX_SPAN = 10  # physical lines one quoted cell may run over (a line break typed in a cell)


def decode_lines(data: bytes) -> tuple[list[str | None], int | None]:
    """The file's lines (with their ends) as text, None for a line that cannot be read,
    and the first line that was not UTF-8 when the file was read as Windows-1252.

    The rule: a file is UTF-8 (with or without BOM), line by line, so one bad byte loses
    one row, never the accents of the others. A file that is not UTF-8 and holds not one
    non-ASCII UTF-8 character (no BOM either) is what Excel writes for "CSV" in
    Windows-1252: it is read whole as Windows-1252 (with a warning)."""
    bom = data.startswith(b"\xef\xbb\xbf")
    parts = data[3:].split(b"\n") if bom else data.split(b"\n")
    raw = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        raw.append(parts[-1])
    lines: list[str | None] = []
    first_bad: int | None = None
    utf8_seen = bom
    for number, chunk in enumerate(raw, start=1):
        try:
            lines.append(chunk.decode("utf-8"))
            utf8_seen = utf8_seen or not chunk.isascii()
        except UnicodeDecodeError:
            lines.append(None)
            first_bad = first_bad or number
    if first_bad is None or utf8_seen:
        return lines, None
    windows: list[str | None] = []
    for chunk in raw:
        try:
            windows.append(chunk.decode("cp1252"))
        except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: not text either way
            windows.append(None)
    return windows, first_bad


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _parse(text: str, delimiter: str) -> tuple[list[str] | None, str | None]:
    """One record from ``text``: (fields, None), or (None, "open") when a quoted cell is
    still open at its end, or (None, why) for another fault."""
    if '"' not in text and "\x00" not in text:  # most lines: what csv would do, faster
        body = text[:-1] if text.endswith("\n") else text
        body = body[:-1] if body.endswith("\r") else body
        if "\r" not in body and "\n" not in body:
            return (body.split(delimiter) if body else []), None
    try:
        rows = list(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return None, "open" if "unexpected end of data" in str(exc) else str(exc)
    if len(rows) > 1:
        return None, "several records"
    return (rows[0] if rows else []), None


def _records(
    lines: list[str | None], delimiter: str, expected: Callable[[], int | None],
) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line number, fields, problem) for each record, physical lines numbered from 1.

    A line is a record. A quoted cell left open at the end of its line may go on over the
    next lines (a line break typed in a spreadsheet cell) only when the quote closes within
    ``MAX_SPAN`` lines and the record then has the header's number of fields (``expected()``;
    None: the header is not read yet); otherwise it is an unterminated quote: that line is
    reported and the next line is read as a record of its own, never swallowed."""
    index = 0
    while index < len(lines):
        number, text = index + 1, lines[index]
        index += 1
        if text is None:
            yield number, None, NOT_UTF8
            continue
        fields, fault = _parse(text, delimiter)
        if fault == "open":
            joined, end = text, index
            fields = None
            while end < len(lines) and end - index < MAX_SPAN - 1:
                more = lines[end]
                if more is None:
                    break
                joined += more
                end += 1
                found, again = _parse(joined, delimiter)
                if again is None:
                    if expected() is not None and len(found or []) == expected():
                        fields, index = found, end
                    break
                if again != "open":
                    break
            yield number, fields, None if fields is not None else UNTERMINATED
            continue
        if fault is not None:  # a stray quote after a quoted cell: read as spreadsheets do
            try:
                fields = next(csv.reader([text], delimiter=delimiter), [])
            except csv.Error as exc:  # a NUL byte, a lone carriage return...
                yield number, None, f"the CSV is broken here ({exc})"
                continue
        yield number, fields, None


def read_contacts(
    data: bytes, *, extra_tags: Iterable[str] = ()
) -> ContactsFile:
    """Check a whole contacts file and merge its rows by person; nothing is stored here.

    Encoding: ``decode_lines``; a line that is not text is reported and skipped. Quotes:
    ``_records``. Every faulty row is reported by its line number and the rest imports."""
    result = ContactsFile()
    if b"\x00" in data[:4096]:
        result.error = "not a CSV text file"
        return result
    lines, not_utf8 = decode_lines(data)
    if not_utf8 is not None:
        result.warnings.append(Problem(
            not_utf8, "the file is not UTF-8: read as Windows-1252 (save it as CSV UTF-8)"
        ))
    if not any(line is None or line.strip() for line in lines):
        result.error = "the file is empty"
        return result
    first = next((line for line in lines if line is None or line.strip()), None)
    if first is None:
        result.error = "line 1: not UTF-8 text (save it as CSV UTF-8)"
        return result
    columns: list[str | None] = []
    header_read = False
    records = _records(lines, _delimiter(first),
                       lambda: len(columns) if header_read else None)
    header: list[str] = []
    header_line = 0
    for header_line, fields, problem in records:
        if problem is not None:
            result.error = f"line {header_line}: not a CSV header ({problem})"
            return result
        header = fields or []
        if any(h.strip() for h in header):
            break
    for position, name in enumerate(header, start=1):
        folded = fold(name)
        known = HEADERS.get(folded)
        if known is None and folded:
            result.warnings.append(
                Problem(header_line, f"column {position} {name.strip()!r} is not used")
            )
        if known is not None and known in columns and known not in ADDRESS_FIELDS:
            result.warnings.append(
                Problem(header_line, f"column {position} {name.strip()!r} repeats "
                                     f"{known}: only the first is used")
            )
            known = None
        columns.append(known)
    header_read = True
    if not any(c in ADDRESS_FIELDS for c in columns):
        found = ", ".join(repr(h.strip()) for h in header if h.strip())
        result.error = (f"line {header_line}: no phone or address column (found {found}); "
                        "name one 'phone', 'téléphone', 'portable' or 'address'")
        return result
    tags = [t for tag in extra_tags for t in parse_tags(tag)]
    owner: dict[str, Person] = {}
    for line, fields, problem in records:
        if problem is not None:
            result.rows += 1
            result.rejected.append(Problem(line, problem))
            continue
        if not fields or not any(value.strip() for value in fields):
            continue
        result.rows += 1
        person = _person(columns, fields, line, result, tags)
        if person is None:
            continue
        _add(person, owner, result)
    seen: set[int] = set()
    for person in owner.values():
        if id(person) not in seen:
            seen.add(id(person))
            result.people.append(person)
    result.people.sort(key=lambda p: p.line)
    return result


def _add(person: Person, owner: dict[str, Person], result: ContactsFile) -> None:
    """Merge a row into the person already read with one of its addresses, if any."""
    known: list[Person] = []
    for address in person.addresses:
        found = owner.get(key_of(address))
        if found is not None and all(found is not p for p in known):
            known.append(found)
    if not known:
        target = person
    else:
        target = known[0]
        result.duplicates += 1
        target.merge(person)
        for other in known[1:]:  # this row joins two people read before: one person
            target.merge(other)
            for address in other.addresses:
                owner[key_of(address)] = target
    for address in target.addresses:
        owner[key_of(address)] = target


def _person(
    columns: list[str | None], fields: list[str], line: int, result: ContactsFile,
    extra_tags: list[str],
) -> Person | None:
    if len(fields) > len(columns) and any(v.strip() for v in fields[len(columns):]):
        result.rejected.append(
            Problem(line, f"{len(fields)} fields where the header has {len(columns)}")
        )
        return None
    values: dict[str, list[str]] = {}
    for name, value in zip(columns, fields, strict=False):
        if name is not None and value.strip():
            values.setdefault(name, []).append(" ".join(value.split()))
    addresses: list[AddressValue] = []
    landlines: set[AddressValue] | frozenset[AddressValue] = NO_LANDLINES
    problems: list[str] = []
    for name, channel in ADDRESS_FIELDS.items():
        for cell in values.get(name, []):
            for part in _split_numbers(cell):
                try:
                    address, landline = parse_contact_address(part, channel)
                except AddressError as exc:
                    problems.append(_why(part, channel, exc))
                    continue
                if address in addresses:
                    continue
                addresses.append(address)
                if landline:
                    landlines = {*landlines, address}
    if not addresses:
        reason = "; ".join(problems) if problems else "no phone number or address"
        result.rejected.append(Problem(line, reason))
        return None
    for problem in problems:  # another number of the row was fine: keep the row
        result.warnings.append(Problem(line, f"{problem}: left out"))
    person = Person(line=line, addresses=addresses, landlines=landlines)
    name = " ".join(values.get(FIRST_NAME, [])[:1] + values.get(NAME, [])[:1]).strip()
    if len(name) > MAX_NAME:
        result.warnings.append(Problem(line, f"name cut to {MAX_NAME} characters"))
        name = name[:MAX_NAME]
    person.name = name or None
    for raw in values.get(LANGUAGE, [])[:1]:
        person.language = parse_language(raw)
        if person.language is None:
            result.warnings.append(
                Problem(line, f"language {raw!r} is not a language code like fr or en: "
                              "left empty")
            )
    for raw in values.get(POSTCODE, [])[:1]:
        person.postcode = parse_postcode(raw)
        if person.postcode is None:
            result.warnings.append(
                Problem(line, f"postcode {raw!r} is not a French postcode: left empty")
            )
    for raw in values.get(TAGS, []):
        person.tags += [t for t in parse_tags(raw) if t not in person.tags]
    person.tags += [t for t in extra_tags if t not in person.tags]
    for raw in values.get(CONSENT, [])[:1]:
        try:
            person.consent = parse_consent(raw)
        except ValueError:
            result.warnings.append(
                Problem(line, f"consent {raw!r} is not yes/no/oui/non: not recorded")
            )
    return person


def _split_numbers(cell: str) -> list[str]:
    """A cell may hold two numbers: ``06 12 34 56 78 / 01 23 45 67 89``."""
    parts = re.split(r"\s*(?:/|\||;|\bou\b|\bor\b|\bet\b|\band\b)\s*", cell)
    return [p for p in (part.strip() for part in parts) if p]


def _why(raw: str, channel: str | None, exc: AddressError) -> str:
    prefix, sep, _rest = raw.partition(":")
    if channel == "telegram" or (sep and prefix.strip().lower() in CHANNELS):
        return f"{raw!r} is not a valid address ({str(exc).split(': ', 1)[-1]})"
    return f"phone {raw!r} is not a valid phone number"
