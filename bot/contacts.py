"""Contacts: the CSV import coordinators use (a spreadsheet export), and tags.

A contacts file is read line by line (``decode_lines``: UTF-8, or Windows-1252 for a file
with no UTF-8 in it at all; ``_records``: a quote left open loses its own line only), then
the delimiter and header, then row by row: a bad row is reported with its line number and
reason and the good rows import. Headers may be
English or French, in any case, with or without accents (ARCHITECTURE, "Contacts CSV").
Phone numbers are read in every form people write them, overseas numbers included, and
stored in E.164; a landline is kept but flagged (no SMS reaches it).

Rows of the file that share an address are one person (merged before anything is stored).
Importing merges into what is known: tags are added, empty fields filled, nothing erased;
a re-import adds nothing new. The suppression list is respected: a person who said STOP
and was then forgotten is not imported again. The work is done in batches (one
transaction and a few bulk queries per thousand people), so a large file imports quickly.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import phonenumbers
from babel import Locale
from sqlalchemy import (
    JSON,
    BigInteger,
    Integer,
    String,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import counters, rights
from bot.addresses import (
    CHANNELS,
    OVERSEAS_PREFIXES,
    PHONE_CHANNELS,
    AddressError,
    parse_address,
    parse_phone,
    timezone_for,
)
from bot.addresses import Address as AddressValue
from bot.storage.models import Address, Consent, Contact, Event, Tag

NEWS = "news"
BATCH = 1000
MAX_NAME = 200
MAX_TAG = 64
SOURCE_MAX = 64

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
    """As ``bot.addresses.timezone_for``, without parsing metropolitan numbers again."""
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


# -- storing ----------------------------------------------------------------------------------


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # forgotten after a STOP: on the suppression list
    rejected: int = 0
    duplicates: int = 0
    landlines: int = 0
    skipped_lines: list[int] = field(default_factory=list)
    conflicts: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.rows} rows: {self.created} created, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.duplicates} duplicate rows merged, "
            f"{self.skipped} skipped (forgotten after STOP), {self.rejected} rejected; "
            f"{self.landlines} landlines (kept, not reachable by SMS)"
        )

    def add(self, other: ImportSummary) -> None:
        for name in ("created", "updated", "unchanged", "skipped", "landlines"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped_lines += other.skipped_lines
        self.conflicts += other.conflicts


async def import_contacts(
    sessions: async_sessionmaker[AsyncSession],
    parsed: ContactsFile,
    *,
    now: datetime,
    default_timezone: str,
    source: str,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH,
) -> ImportSummary:
    """Store the people of a read file, ``batch_size`` people per transaction.

    ``source`` names the file (consents are recorded as ``import:<source>``). With
    ``dry_run`` every batch is rolled back: the summary says what would happen.
    ``progress`` is called with the number of people done after each batch.
    """
    summary = ImportSummary(rows=parsed.rows, rejected=len(parsed.rejected),
                            duplicates=parsed.duplicates)
    consent_source = f"import:{source}"[:SOURCE_MAX]
    next_analyze = 2 * batch_size
    for start in range(0, len(parsed.people), batch_size):
        people = parsed.people[start:start + batch_size]
        for attempt in range(3):
            async with sessions() as session:
                await session.begin()
                try:
                    batch = await _store(session, people, now, default_timezone,
                                         consent_source)
                except IntegrityError:  # someone wrote in meanwhile: read again
                    await session.rollback()
                    if attempt == 2:
                        raise
                    continue
                except BaseException:
                    await session.rollback()
                    raise
                if dry_run:
                    await session.rollback()
                else:
                    await session.commit()
            break
        summary.add(batch)
        if not dry_run and summary.created >= next_analyze:
            await _analyze(sessions)  # fresh statistics, or lookups turn into scans
            next_analyze = summary.created * 2
        if progress is not None:
            progress(len(people))
    return summary


async def _analyze(sessions: async_sessionmaker[AsyncSession]) -> None:
    """PostgreSQL plans from table statistics, stale after a large import until autovacuum
    comes by: refresh those of the tables an import fills."""
    async with sessions() as session, session.begin():
        if session.bind.dialect.name != "postgresql":
            return
        try:
            async with session.begin_nested():
                await session.execute(text("ANALYZE contacts, addresses, contact_tags, consents"))
        except DBAPIError:  # not the tables' owner: autovacuum will do it
            pass


@dataclass
class _Existing:
    contact: dict[str, Any]
    addresses: set[tuple[str, str]]  # those of the batch's addresses it already has
    tags: set[str]
    consent: bool | None


async def _store(
    session: AsyncSession, people: list[Person], now: datetime, default_timezone: str,
    consent_source: str,
) -> ImportSummary:
    summary = ImportSummary()
    if session.bind.dialect.name == "postgresql":
        # A generic plan of ``= ANY($1)`` scans the array for every row (after five runs
        # of a prepared statement PostgreSQL may switch to it): plan each lookup.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    by_channel: dict[tuple[str, ...], set[str]] = {}
    for person in people:
        for address in person.addresses:
            # the same number on either phone channel is the same person
            channels = PHONE_CHANNELS if address.channel in PHONE_CHANNELS else (
                address.channel,
            )
            by_channel.setdefault(tuple(channels), set()).add(address.id)
    exact: dict[tuple[str, str], int] = {}
    by_phone: dict[str, int] = {}
    for channels, wanted in by_channel.items():
        for chunk in _chunks(sorted(wanted)):
            rows = await session.execute(
                select(Address.contact_id, Address.channel, Address.external_id)
                .where(Address.channel.in_(channels), is_in(session, Address.external_id, chunk))
                .order_by(Address.id)
            )
            for contact_id, channel, external_id in rows:
                exact[(channel, external_id)] = contact_id
                if channel in PHONE_CHANNELS:
                    by_phone.setdefault(external_id, contact_id)
    owners: dict[int, int | None] = {}
    for index, person in enumerate(people):
        found: int | None = None
        kept: list[AddressValue] = []
        for address in person.addresses:
            owner = exact.get((address.channel, address.id))
            if owner is None and address.channel in PHONE_CHANNELS:
                owner = by_phone.get(address.id)
            if owner is not None and found is not None and owner != found:
                summary.conflicts.append(Problem(
                    person.line, f"{address} belongs to another contact: left there"))
                continue
            found = owner if owner is not None else found
            kept.append(address)
        person.addresses = kept
        owners[index] = found
    newcomers = [a for i, p in enumerate(people) if owners[i] is None for a in p.addresses]
    suppressed = await rights.suppressed(session, newcomers) if newcomers else set()
    known_ids = sorted({cid for cid in owners.values() if cid is not None})
    existing = await _load(session, known_ids)
    for (channel, external_id), cid in exact.items():
        existing[cid].addresses.add((channel, external_id))

    new_contacts: list[dict[str, Any]] = []
    new_people: list[Person] = []
    address_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    consent_rows: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for index, person in enumerate(people):
        cid = owners[index]
        if cid is None:
            if any(str(a) in suppressed for a in person.addresses):
                summary.skipped += 1
                summary.skipped_lines.append(person.line)
                continue
            summary.created += 1
            summary.landlines += len(person.landlines)
            phone = next((a for a in person.addresses if a.channel in PHONE_CHANNELS), None)
            new_contacts.append({
                "name": person.name, "language": person.language,
                "postcode": person.postcode,
                "timezone": contact_timezone(person.postcode, phone or person.addresses[0],
                                             default_timezone),
                "created_at": now,
            })
            new_people.append(person)
            continue
        summary.landlines += len(person.landlines)
        known = existing[cid]
        changed = _changes(person, known, default_timezone)
        if changed:
            updates.append({"id": cid, **changed})
        fresh_addresses = [
            a for a in person.addresses if (a.channel, a.id) not in known.addresses
        ]
        for address in fresh_addresses:
            known.addresses.add((address.channel, address.id))
            address_rows.append(_address_row(cid, address, person, now))
        fresh_tags = [t for t in person.tags if t not in known.tags]
        known.tags.update(fresh_tags)
        tag_rows += [{"contact_id": cid, "tag": t} for t in fresh_tags]
        consent = _consent_to_record(person.consent, known.consent)
        if consent is not None:
            known.consent = consent
            consent_rows.append({"contact_id": cid, "purpose": NEWS, "granted": consent,
                                 "at": now, "source": consent_source})
        if changed or fresh_addresses or fresh_tags or consent is not None:
            summary.updated += 1
        else:
            summary.unchanged += 1
    if new_contacts:
        new_ids = await _new_contact_ids(session, len(new_contacts))
        for cid, values in zip(new_ids, new_contacts, strict=True):
            values["id"] = cid
        await insert_rows(session, Contact, new_contacts)
        event_rows = []
        for cid, person in zip(new_ids, new_people, strict=True):
            address_rows += [_address_row(cid, a, person, now) for a in person.addresses]
            tag_rows += [{"contact_id": cid, "tag": t} for t in person.tags]
            if person.consent is not None:
                consent_rows.append({"contact_id": cid, "purpose": NEWS,
                                     "granted": person.consent, "at": now,
                                     "source": consent_source})
            event_rows.append({"at": now, "kind": "contact.new",
                               "channel": person.addresses[0].channel,
                               "language": person.language,
                               "value": {"source": "import",
                                         "departement": _departement(person.postcode)}})
        await insert_rows(session, Event, event_rows)
        counters.new_people(session, default_timezone, now,
                            [row["channel"] for row in event_rows])
    if updates:
        await session.execute(update(Contact), updates)
    for rows, model in ((address_rows, Address), (tag_rows, Tag), (consent_rows, Consent)):
        if rows:
            await insert_rows(session, model, rows)
    return summary


async def insert_rows(session: AsyncSession, model: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows at once: ``COPY`` on PostgreSQL (asyncpg would send an executemany
    row by row), ``executemany`` on SQLite (fast there). Rows share their keys."""
    table = model.__table__
    if not rows:
        return
    if session.bind.dialect.name != "postgresql":
        await session.execute(insert(table), rows)
        return
    columns = list(rows[0])
    as_json = {c for c in columns if isinstance(table.c[c].type, JSON)}
    records = [
        tuple(json.dumps(row[c]) if c in as_json else row[c] for c in columns) for row in rows
    ]
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(
        table.name, records=records, columns=columns
    )


async def _new_contact_ids(session: AsyncSession, count: int) -> list[int]:
    """Ids for new contacts, taken up front so rows can be inserted in one statement
    (``RETURNING`` in a given order would insert them one by one on SQLite). PostgreSQL:
    from the sequence; SQLite: after the largest id, under the write lock that ``BEGIN
    IMMEDIATE`` holds for the whole transaction."""
    if session.bind.dialect.name == "postgresql":
        rows = await session.scalars(
            text("SELECT nextval(pg_get_serial_sequence('contacts', 'id')) "
                 "FROM generate_series(1, :n)"),
            {"n": count},
        )
        return [int(i) for i in rows]
    last = await session.scalar(select(func.coalesce(func.max(Contact.id), 0)))
    return list(range(int(last or 0) + 1, int(last or 0) + 1 + count))


def _departement(postcode: str | None) -> str | None:
    if not postcode:
        return None
    from bot.places import departement

    return departement(postcode)


def _address_row(
    contact_id: int, address: AddressValue, person: Person, now: datetime
) -> dict[str, Any]:
    return {"contact_id": contact_id, "channel": address.channel,
            "external_id": address.id, "created_at": now,
            "landline": address in person.landlines}


def _changes(person: Person, known: _Existing, default_timezone: str) -> dict[str, Any]:
    """Empty fields filled; nothing that is known is replaced."""
    contact = known.contact
    changed: dict[str, Any] = {}
    for name in ("name", "language", "postcode"):
        value = getattr(person, name)
        if value and not contact.get(name):
            changed[name] = value
            contact[name] = value
    if "postcode" in changed:
        phone = next((a for a in person.addresses if a.channel in PHONE_CHANNELS), None)
        tz = contact_timezone(changed["postcode"], phone or person.addresses[0],
                              contact.get("timezone") or default_timezone)
        if tz != contact.get("timezone"):
            changed["timezone"] = contact["timezone"] = tz
    return changed


def _consent_to_record(wanted: bool | None, latest: bool | None) -> bool | None:
    """A "no" in the file is always respected; a "yes" never overrides a decision already
    recorded (the person's own "no" above all)."""
    if wanted is None:
        return None
    if wanted is False:
        return False if latest is not False else None
    return True if latest is None else None


async def _load(session: AsyncSession, ids: list[int]) -> dict[int, _Existing]:
    found: dict[int, _Existing] = {}
    for chunk in _chunks(ids):
        rows = await session.execute(
            select(Contact.id, Contact.name, Contact.language, Contact.postcode,
                   Contact.timezone).where(is_in(session, Contact.id, chunk))
        )
        for cid, name, language, postcode, tz in rows:
            found[cid] = _Existing(
                {"name": name, "language": language, "postcode": postcode, "timezone": tz},
                set(), set(), None,
            )
        for cid, tag in await session.execute(
            select(Tag.contact_id, Tag.tag).where(is_in(session, Tag.contact_id, chunk))
        ):
            found[cid].tags.add(tag)
        for cid, granted in await session.execute(
            select(Consent.contact_id, Consent.granted)
            .where(is_in(session, Consent.contact_id, chunk), Consent.purpose == NEWS)
            .order_by(Consent.contact_id, Consent.at, Consent.id)
        ):
            found[cid].consent = granted
    return found


def is_in(session: AsyncSession, column: Any, values: list[Any]) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY(array)``, one statement whatever the
    number of values (prepared once, planned fast)."""
    if session.bind.dialect.name != "postgresql":
        return column.in_(values)
    kind = BigInteger() if isinstance(column.type, (Integer, BigInteger)) else String()
    return column == any_(bindparam(None, values, type_=ARRAY(kind)))


def _chunks(values: list[Any], size: int = 1000) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


# -- reading and tagging ---------------------------------------------------------------------


@dataclass
class ContactRow:
    id: int
    name: str | None
    language: str | None
    postcode: str | None
    timezone: str | None
    level: int | None
    addresses: list[dict[str, Any]]
    tags: list[str]
    consents: dict[str, bool]
    opted_out_at: datetime | None
    created_at: datetime
    last_inbound_at: datetime | None
    staff_role: str | None = None

    @property
    def address(self) -> str | None:
        return self.addresses[0]["address"] if self.addresses else None

    def summary(self) -> dict[str, Any]:
        """The ``contacts list --json`` item."""
        return {
            "id": self.id,
            "address": self.address,
            "addresses": [a["address"] for a in self.addresses],
            "landlines": [a["address"] for a in self.addresses if a["landline"]],
            "name": self.name,
            "language": self.language,
            "postcode": self.postcode,
            "tags": self.tags,
            "news": self.consents.get(NEWS),
            "checkins": self.consents.get("checkins"),
            "opted_out": self.opted_out_at is not None,
            "staff_role": self.staff_role,
            "created_at": self.created_at.isoformat(),
            "last_inbound_at": _iso(self.last_inbound_at),
        }

    def details(self) -> dict[str, Any]:
        """The ``contacts show --json`` object."""
        return {
            **self.summary(),
            "addresses": self.addresses,
            "timezone": self.timezone,
            "level": self.level,
            "consents": self.consents,
            "opted_out_at": _iso(self.opted_out_at),
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def list_contacts(
    session: AsyncSession, *, tag: str | None = None, contact_ids: list[int] | None = None
) -> list[ContactRow]:
    """Contacts (all, with a tag, or these ids) with their addresses, tags and consents."""
    from bot.storage.models import Staff

    query = select(Contact).order_by(Contact.id)
    if tag is not None:
        query = query.where(
            Contact.id.in_(select(Tag.contact_id).where(func.lower(Tag.tag) == tag.lower()))
        )
    if contact_ids is not None:
        query = query.where(Contact.id.in_(contact_ids))
    contacts = (await session.scalars(query)).all()
    rows = {
        c.id: ContactRow(c.id, c.name, c.language, c.postcode, c.timezone, c.level, [], [],
                         {}, c.opted_out_at, c.created_at, c.last_inbound_at)
        for c in contacts
    }
    everyone = tag is None and contact_ids is None
    ids = list(rows)
    for chunk in [ids] if everyone else _chunks(ids):

        def among(column: Any, chunk: list[int] = chunk) -> Any:
            return True if everyone else is_in(session, column, chunk)

        for a in await session.scalars(
            select(Address).where(among(Address.contact_id)).order_by(Address.id)
        ):
            if a.contact_id not in rows:
                continue
            rows[a.contact_id].addresses.append({
                "address": a.address, "landline": a.landline,
                "blocked_at": _iso(a.blocked_at), "blocked_reason": a.blocked_reason,
                "last_inbound_at": _iso(a.last_inbound_at),
                "created_at": a.created_at.isoformat(),
            })
        for cid, tag_name in await session.execute(
            select(Tag.contact_id, Tag.tag).where(among(Tag.contact_id)).order_by(Tag.tag)
        ):
            if cid in rows:
                rows[cid].tags.append(tag_name)
        for cid, purpose, granted in await session.execute(
            select(Consent.contact_id, Consent.purpose, Consent.granted)
            .where(among(Consent.contact_id))
            .order_by(Consent.contact_id, Consent.at, Consent.id)
        ):
            if cid in rows:
                rows[cid].consents[purpose] = granted
        for cid, role in await session.execute(
            select(Staff.contact_id, Staff.role).where(among(Staff.contact_id))
        ):
            if cid in rows:
                rows[cid].staff_role = role
    for row in rows.values():  # where they last wrote from first
        row.addresses.sort(key=lambda a: a["last_inbound_at"] or "", reverse=True)
    return list(rows.values())


async def find(session: AsyncSession, address: str) -> ContactRow | None:
    """The contact at an address (raises AddressError when it cannot be understood)."""
    from bot.staff import find_contact

    contact = await find_contact(session, address)
    if contact is None:
        return None
    rows = await list_contacts(session, contact_ids=[contact.id])
    return rows[0] if rows else None


async def add_tags(session: AsyncSession, contact_id: int, tags: Iterable[str]) -> list[str]:
    """Add tags (lower case); returns those that were new."""
    wanted = [t for raw in tags for t in parse_tags(raw)]
    have = set(await session.scalars(select(Tag.tag).where(Tag.contact_id == contact_id)))
    fresh = [t for t in dict.fromkeys(wanted) if t not in have]
    for tag in fresh:
        session.add(Tag(contact_id=contact_id, tag=tag))
    await session.flush()
    return fresh


async def remove_tags(
    session: AsyncSession, contact_id: int, tags: Iterable[str]
) -> list[str]:
    """Remove tags (any case); returns those that were there."""
    wanted = {t for raw in tags for t in parse_tags(raw)}
    have = list(await session.scalars(select(Tag.tag).where(Tag.contact_id == contact_id)))
    gone = [t for t in have if t.lower() in wanted]
    if gone:
        await session.execute(
            delete(Tag).where(Tag.contact_id == contact_id, Tag.tag.in_(gone))
        )
    return gone
