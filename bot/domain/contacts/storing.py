"""Importing contacts: rows that share an address merged, then stored in batches (one
transaction and a few bulk queries per thousand people), merged into what is known, the
suppression list respected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.addresses import (
    PHONE_CHANNELS,
)
from bot.core.addresses import Address as AddressValue
from bot.domain.contacts.base import BATCH, NEWS, SOURCE_MAX
from bot.domain.contacts.csv_file import ContactsFile, Person, Problem, contact_timezone
from bot.storage import counters, suppression
from bot.storage.bulk import bulk_insert, chunks, is_in
from bot.storage.models import Address, Consent, Contact, Event, Tag

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
        for chunk in chunks(sorted(wanted)):
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
    suppressed = await suppression.suppressed(session, newcomers) if newcomers else set()
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
        await bulk_insert(session, Contact.__table__, new_contacts)
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
        await bulk_insert(session, Event.__table__, event_rows)
        counters.new_people(session, default_timezone, now,
                            [row["channel"] for row in event_rows])
    if updates:
        await session.execute(update(Contact), updates)
    for rows, model in ((address_rows, Address), (tag_rows, Tag), (consent_rows, Consent)):
        if rows:
            await bulk_insert(session, model.__table__, rows)
    return summary


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
    from bot.core.postcodes import departement

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
    for chunk in chunks(ids):
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
