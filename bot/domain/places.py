"""Help places near a person: the national open-data format of digital-inclusion places
(LaMednum ``standard-mediation-num``), postcodes, and opening hours in plain words.

A places file is checked as a file first (encoding, delimiter, required columns): a file
that is not right imports nothing. Then each row is checked: a bad row is reported with
its line number and reason, the good rows import (merged by ``id``). Optional fields that
cannot be understood (a phone number, opening hours, coordinates) are kept out or kept as
text, with a warning, rather than losing the place.

Nearest places are found by postcode: same postcode, then same département, then same
region, by name within each.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import opening_hours
import phonenumbers
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import sms
from bot.core.addresses import AddressError, parse_phone, show_phone
from bot.core.postcodes import REGION_OF, departement, region
from bot.domain.resources import insert_ignoring_conflicts
from bot.storage.models import Place

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "places-sample.csv"
log = logging.getLogger("relais.places")

def _prefix(dept: str) -> str:
    """The postcode prefix of a département (Corsica's postcodes all start with 20)."""
    return "20" if dept in ("2A", "2B") else dept


# -- opening hours in plain words ----------------------------------------------------------

_DAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
_DAY_NAMES = {
    "fr": ("lun", "mar", "mer", "jeu", "ven", "sam", "dim"),
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
}
_WORDS = {
    "fr": {"and": "et", "closed": "fermé", "every day": "tous les jours",
           "always": "tous les jours, 24h/24", "holidays": "jours fériés",
           "holidays closed": "fermé les jours fériés"},
    "en": {"and": "and", "closed": "closed", "every day": "every day",
           "always": "every day, 24 hours", "holidays": "public holidays",
           "holidays closed": "closed on public holidays"},
}
_TIME = r"(?:[01]?\d|2[0-4]):[0-5]\d"
_TIME_RANGE = re.compile(rf"^({_TIME})-({_TIME})$")
_DAY_ITEM = re.compile(r"^(Mo|Tu|We|Th|Fr|Sa|Su)(?:-(Mo|Tu|We|Th|Fr|Sa|Su))?$")
_RULE = re.compile(r"^(?:(?P<days>[A-Za-z,-]+)\s+)?(?P<what>[\d:,\s-]+|off|closed)$")


class _CannotRender(Exception):
    pass


def _time(value: str, language: str) -> str:
    hours, minutes = (int(part) for part in value.split(":"))
    if language == "fr":
        return f"{hours}h" + (f"{minutes:02d}" if minutes else "")
    if hours in (0, 24) and minutes == 0:
        return "midnight"
    suffix = "am" if hours % 24 < 12 else "pm"
    shown = hours % 12 or 12
    return f"{shown}" + (f":{minutes:02d}" if minutes else "") + suffix


def _days(selector: str, language: str) -> str:
    names = _DAY_NAMES[language]
    words = _WORDS[language]
    parts = []
    for item in selector.split(","):
        if item == "PH":
            parts.append(words["holidays"])
            continue
        match = _DAY_ITEM.match(item)
        if not match:
            raise _CannotRender(item)
        first = names[_DAYS.index(match.group(1))]
        parts.append(f"{first}-{names[_DAYS.index(match.group(2))]}" if match.group(2)
                     else first)
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + f" {words['and']} " + parts[-1]


def _times(selector: str, language: str) -> str:
    spans = []
    for item in selector.split(","):
        match = _TIME_RANGE.match(item.strip())
        if not match:
            raise _CannotRender(item)
        if (match.group(1), match.group(2)) in (("00:00", "24:00"), ("0:00", "24:00")):
            spans.append("24h/24" if language == "fr" else "24 hours")
            continue
        spans.append(f"{_time(match.group(1), language)}-{_time(match.group(2), language)}")
    return ", ".join(spans)


def _render_rule(rule: str, language: str) -> str:
    words = _WORDS[language]
    if rule == "24/7":
        return words["always"]
    if rule in ("off", "closed"):
        return words["closed"]
    match = _RULE.match(rule)
    if not match:
        raise _CannotRender(rule)
    days, what = match.group("days"), match.group("what").strip()
    if days == "PH" and what in ("off", "closed"):
        return words["holidays closed"]
    shown_days = _days(days, language) if days else words["every day"]
    if what in ("off", "closed"):
        return f"{shown_days} {words['closed']}"
    return f"{shown_days} {_times(what, language)}"


def hours_in_words(raw: str | None, language: str | None = "fr") -> str | None:
    """``Mo-Fr 09:00-12:00,14:00-17:00`` -> "lun-ven 9h-12h, 14h-17h" (French) or
    "Mon-Fri 9am-12pm, 2pm-5pm" (English). Forms it cannot put in words come back as
    they are; None when there are no hours."""
    if raw is None or not raw.strip():
        return None
    text = " ".join(raw.split())
    lang = "en" if language == "en" else "fr"
    candidates = [text]
    try:
        candidates.insert(0, str(opening_hours.OpeningHours(text).normalize()))
    except Exception:  # not valid OpenStreetMap hours: shown as written
        return text
    for candidate in candidates:
        try:
            rules = [r.strip() for r in candidate.split(";") if r.strip()]
            return "; ".join(_render_rule(rule, lang) for rule in rules)
        except _CannotRender:
            continue
    return text


def hours_valid(raw: str) -> bool:
    try:
        return bool(opening_hours.validate(raw))
    except Exception:  # the parser's own error types
        return False


# -- one place as a message ----------------------------------------------------------------

MAX_SEGMENTS = 2


def display_phone(phone: str | None) -> str | None:
    """A stored E.164 number the way people write it ("01 80 05 98 80")."""
    return show_phone(phone, national=True) if phone else None


def place_lines(place: Place, language: str | None, labels: dict[str, str]) -> list[str]:
    """Name, address, phone and hours; ``labels`` hold the translated "Phone: {phone}" and
    "Hours: {hours}" texts."""
    lines = [place.name]
    where = " ".join(p for p in (place.postcode, place.commune) if p)
    address = ", ".join(p for p in (place.address, where) if p)
    if address:
        lines.append(address)
    phone = display_phone(place.phone)
    if phone:
        lines.append(labels["phone"].format(phone=phone))
    hours = hours_in_words(place.hours, language)
    if hours:
        lines.append(labels["hours"].format(hours=hours))
    return lines


def fit_sms(lines: list[str], max_segments: int = MAX_SEGMENTS) -> str:
    """Join lines, shortening the longest ones ("…" as "...") until the text fits."""
    lines = list(lines)
    while True:
        text = "\n".join(lines)
        if sms.segments(sms.normalise(text)) <= max_segments:
            return text
        longest = max(range(len(lines)), key=lambda i: len(lines[i]))
        if len(lines[longest]) <= 12:
            return text  # nothing sensible left to cut
        keep = max(9, len(lines[longest]) - 12)
        lines[longest] = lines[longest][:keep].rstrip(" ,;-") + "..."


# -- nearest places ------------------------------------------------------------------------


def _name_key(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


async def nearest(session: AsyncSession, postcode: str, limit: int = 3) -> list[Place]:
    """Places with the same postcode, then the same département, then the same region;
    by name within each. Nothing outside the region."""
    dept = departement(postcode)
    if dept is None:
        return []
    area = REGION_OF[dept]
    prefixes = sorted({_prefix(d) for d, r in REGION_OF.items() if r == area})
    rows = (
        await session.scalars(
            select(Place).where(or_(*(Place.postcode.like(p + "%") for p in prefixes)))
        )
    ).all()

    def tier(place: Place) -> int:
        if place.postcode == postcode:
            return 0
        return 1 if departement(place.postcode or "") == dept else 2

    ranked = sorted(
        (p for p in rows if region(p.postcode or "") == area),
        key=lambda p: (tier(p), _name_key(p.name), p.id),
    )
    return ranked[:limit]


# -- the places file -----------------------------------------------------------------------

REQUIRED_COLUMNS = ("id", "nom", "adresse", "code_postal", "commune")
MAX_LENGTHS = {"id": 128, "nom": 300, "adresse": 300, "commune": 200}


@dataclass(frozen=True)
class RowProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class PlacesFile:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[RowProblem] = field(default_factory=list)
    warnings: list[RowProblem] = field(default_factory=list)
    error: str | None = None  # the file as a whole cannot be used: nothing is imported


def _header_name(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name.strip().lstrip("\ufeff"))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return re.sub(r"[^a-z0-9]+", "_", bare).strip("_")


def _delimiter(first_line: str) -> str:
    try:
        return csv.Sniffer().sniff(first_line, delimiters=",;").delimiter
    except csv.Error:
        return ";" if first_line.count(";") > first_line.count(",") else ","


def read_places(data: bytes) -> PlacesFile:
    """Check a whole places file; nothing is stored here."""
    result = PlacesFile()
    if b"\x00" in data[:4096]:
        result.error = "not a CSV text file"
        return result
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        result.error = f"line {line}: the file is not UTF-8 text (save it as CSV UTF-8)"
        return result
    if not text.strip():
        result.error = "the file is empty"
        return result
    first_line = text.lstrip().splitlines()[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line),
                        strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        result.error = f"line 1: not a CSV header ({exc})"
        return result
    columns = [_header_name(name) for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        result.error = (
            "not a places file in the standard-mediation-num format: missing column(s) "
            + ", ".join(missing)
        )
        return result
    seen: dict[str, int] = {}
    line = reader.line_num
    while True:
        start = line + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.error = f"line {start}: the CSV is broken here ({exc}); nothing imported"
            result.rows.clear()
            return result
        line = reader.line_num
        if not any(value.strip() for value in fields):
            continue
        if len(fields) != len(columns):
            result.rejected.append(
                RowProblem(start, f"{len(fields)} fields where the header has {len(columns)}")
            )
            continue
        values = {name: " ".join(value.split())  # line breaks inside a field: spaces
                  for name, value in zip(columns, fields, strict=True)}
        row = _row(values, start, result)
        if row is None:
            continue
        if row["id"] in seen:
            result.rejected.append(
                RowProblem(start, f"id {row['id']!r} is already used on line {seen[row['id']]}")
            )
            continue
        seen[row["id"]] = start
        result.rows.append(row)
    return result


def _row(values: dict[str, str], line: int, result: PlacesFile) -> dict[str, Any] | None:
    problems = []
    for name in ("id", "nom"):
        if not values.get(name):
            problems.append(f"{name} is empty")
    for name, limit in MAX_LENGTHS.items():
        if len(values.get(name, "")) > limit:
            problems.append(f"{name} is longer than {limit} characters")
    postcode = re.sub(r"\s", "", values.get("code_postal", ""))
    if re.fullmatch(r"\d{4}", postcode):  # a spreadsheet dropped the leading zero
        postcode = "0" + postcode
    if not postcode:
        problems.append("code_postal is empty")
    elif departement(postcode) is None:
        problems.append(f"code_postal {values.get('code_postal')!r} is not a French postcode")
    if problems:
        result.rejected.append(RowProblem(line, "; ".join(problems)))
        return None

    def warn(text: str) -> None:
        result.warnings.append(RowProblem(line, f"{values['id']}: {text}"))

    phone = None
    if values.get("telephone"):
        try:
            phone = phonenumbers.format_number(
                parse_phone(values["telephone"]), phonenumbers.PhoneNumberFormat.E164
            )
        except AddressError:
            warn(f"telephone {values['telephone']!r} is not a phone number; left out")
    coordinates: dict[str, float | None] = {"latitude": None, "longitude": None}
    for name, bound in (("latitude", 90.0), ("longitude", 180.0)):
        raw = values.get(name, "").replace(",", ".")
        if not raw:
            continue
        try:
            number = float(raw)
        except ValueError:
            number = None
        if number is None or not -bound <= number <= bound:
            warn(f"{name} {values[name]!r} is not a coordinate; left out")
        else:
            coordinates[name] = number
    hours = values.get("horaires") or None
    if hours and not hours_valid(hours):
        warn(f"horaires {hours!r} are not in the OpenStreetMap format; shown as written")
    if hours and len(hours) > 500:
        hours = hours[:500]
    address = values.get("adresse") or None
    if address and values.get("complement_adresse"):
        address = f"{address} ({values['complement_adresse']})"[:300]
    booking = values.get("prise_rdv") or None
    extra = {
        key: values[key]
        for key in ("pivot", "typologie", "courriels", "courriel", "site_web",
                    "dispositif_programmes_nationaux", "modalites_acces", "date_maj")
        if values.get(key)
    }
    return {
        "id": values["id"], "name": values["nom"], "address": address,
        "postcode": postcode, "commune": values.get("commune") or None,
        "latitude": coordinates["latitude"], "longitude": coordinates["longitude"],
        "phone": phone, "hours": hours, "services": values.get("services") or None,
        "booking_url": booking if booking and len(booking) <= 500 else None,
        "extra": extra or None,
    }


@dataclass(frozen=True)
class PlacesSummary:
    added: int
    updated: int
    unchanged: int
    samples_removed: int = 0

    @property
    def imported(self) -> int:
        return self.added + self.updated + self.unchanged


_COMPARED = ("name", "address", "postcode", "commune", "latitude", "longitude", "phone",
             "hours", "services", "booking_url", "extra")


async def merge_places(
    session: AsyncSession, rows: list[dict[str, Any]], now: datetime,
    replace_samples: bool = True,
) -> PlacesSummary:
    """Add and update places by id. Importing real places removes the shipped samples."""
    ids = [row["id"] for row in rows]
    existing: dict[str, Place] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for place in (await session.scalars(select(Place).where(Place.id.in_(chunk)))).all():
            existing[place.id] = place
    new_rows: list[dict[str, Any]] = []
    added = updated = unchanged = 0
    for row in rows:
        place = existing.get(row["id"])
        if place is None:
            new_rows.append({**row, "updated_at": now})
            added += 1
        elif any(getattr(place, key) != row[key] for key in _COMPARED):
            await session.execute(
                update(Place).where(Place.id == row["id"])
                .values(**{k: row[k] for k in _COMPARED}, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            updated += 1
        else:
            unchanged += 1
    for start in range(0, len(new_rows), 500):
        await session.execute(insert_ignoring_conflicts(session, Place),
                              new_rows[start:start + 500])
    removed = 0
    if replace_samples and rows:
        samples = {row["id"] for row in read_places(SAMPLE.read_bytes()).rows} - set(ids)
        if samples:
            result = await session.execute(
                delete(Place).where(Place.id.in_(sorted(samples)))
                .execution_options(synchronize_session=False)
            )
            removed = result.rowcount or 0
    await session.flush()
    return PlacesSummary(added, updated, unchanged, removed)


async def ensure_loaded(session: AsyncSession, now: datetime) -> int:
    """Load the sample places when there are none yet (first use); safe from several
    processes at once. Returns how many were added."""
    if await session.scalar(select(Place.id).limit(1)) is not None:
        return 0
    sample = read_places(SAMPLE.read_bytes())
    if sample.error or sample.rejected:
        raise RuntimeError(f"shipped sample places are invalid: {sample.error or sample.rejected}")
    rows = [{**row, "updated_at": now} for row in sample.rows]
    await session.execute(insert_ignoring_conflicts(session, Place), rows)
    await session.flush()
    log.warning("no help places yet: %d SAMPLE places loaded; import the real list with "
                "`relais resources import --places FILE.csv`", len(rows))
    return len(rows)
