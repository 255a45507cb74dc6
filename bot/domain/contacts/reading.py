"""Looking people up, listing and tagging them, and a shared phone number."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.addresses import Address as AddressValue
from bot.core.addresses import (
    parse_address,
    timezone_for,
)
from bot.domain.contacts.base import NEWS, log
from bot.domain.contacts.csv_file import parse_tags
from bot.storage.bulk import chunks, is_in
from bot.storage.models import Address, Consent, Contact, Tag

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
    for chunk in [ids] if everyone else chunks(ids):

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
    from bot.domain.staff import find_contact

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


async def attach_shared_phone(session: AsyncSession, address: str, phone: str,
                              now: datetime, default_tz: str) -> bool:
    """A person shared their own phone number (a Telegram contact): it becomes their
    ``sms:`` address, unless it is known already; without a postcode, the number's region
    gives their time zone (Réunion…). True when the address was added."""
    value = parse_address(address)
    found = await session.scalar(
        select(Address).where(Address.channel == value.channel,
                              Address.external_id == value.id)
    )
    if found is None:
        return False
    contact_id = found.contact_id
    known = await session.scalar(
        select(Address).where(Address.channel == "sms", Address.external_id == phone)
    )
    if known is not None:
        if known.contact_id != contact_id:
            log.warning("shared phone number already belongs to contact %s; not merged",
                        known.contact_id)
        return False
    session.add(Address(contact_id=contact_id, channel="sms", external_id=phone,
                        created_at=now, landline=False))
    contact = await session.get(Contact, contact_id)
    if contact is not None and not contact.postcode:  # the number's region tells more
        contact.timezone = timezone_for(None, AddressValue("sms", phone), default_tz)
    log.info("contact %s shared a phone number: sms address added", contact_id)
    return True
