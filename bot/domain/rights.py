"""The people's data rights: access (export), erasure (forget), the suppression list, and the
retention rules that purge message bodies and people inactive for two years.

Export and erasure walk ``bot.storage.models.PERSONAL_DATA``, so a new table with personal
data is covered once it is listed there. Erasure keeps only the anonymous ``events``.
A person who said STOP and is then forgotten stays unreachable: a salted hash of each of
their addresses goes on the suppression list, which imports and broadcasts respect.

Erasure asked by message keeps, for a while, an empty shell: the contact row (no name, no
postcode), its addresses and the outbox row that tells the person it is done. A job deletes
the shell once that message has left, or after a day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, inspect, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import null

from bot.core.addresses import Address as AddressValue
from bot.core.config import Settings
from bot.delivery.rates import forget_sender as forget_sender_rate
from bot.delivery.scheduler import CHECKPOINT, JobContext, JobKind, schedule
from bot.storage import events, inbox
from bot.storage.models import (
    PERSONAL_DATA,
    Address,
    Base,
    Consent,
    Contact,
    Conversation,
    Job,
    MediaItem,
    Message,
    MessageAbout,
    Outbox,
    OutboxAbout,
    Slot,
    Staff,
    Ticket,
    TicketNote,
)
from bot.storage.suppression import suppress

log = logging.getLogger("relais.rights")

RETENTION_JOB = "rights.retention"
FINISH_JOB = "rights.forget.finish"
RETENTION_AT = time(4, 0)  # local time of the daily retention pass
INACTIVE_AFTER = timedelta(days=730)  # CNIL référentiel for social support: two years
INACTIVE_BATCH = 500  # people erased per retention pass (the rest in the next pass)
SHELL_FIRST_CHECK = timedelta(minutes=2)
SHELL_CHECK_EVERY = timedelta(minutes=10)
SHELL_MAX = timedelta(days=1)
ACTIVE_OUTBOX = ("queued", "sending", "in_doubt")

# Keys of the export, by table; a table added to PERSONAL_DATA appears under its own name.
EXPORT_NAMES = {
    "contacts": "contact",
    "contact_tags": "tags",
    "slots": "bookings",
    "conversations": "conversation",
}


# -- export -----------------------------------------------------------------------------------


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    return value


def _row(obj: Base) -> dict[str, Any]:
    mapper = inspect(type(obj))
    return {attr.key: _json(getattr(obj, attr.key)) for attr in mapper.column_attrs}


async def export(session: AsyncSession, contact_id: int, now: datetime) -> dict[str, Any] | None:
    """Everything Relais holds about one person, as one JSON-ready object (None if unknown).

    Times are ISO 8601 with their offset; people appear as ``CHANNEL:ID``.
    """
    contact = await session.get(Contact, contact_id)
    if contact is None:
        return None
    addresses = {
        a.id: a.address
        for a in await session.scalars(select(Address).where(Address.contact_id == contact_id))
    }
    data: dict[str, Any] = {"exported_at": now.isoformat()}
    for model, column in PERSONAL_DATA:
        table = model.__tablename__
        name = EXPORT_NAMES.get(table, table)
        if model is Contact:
            row = _row(contact)
            row["addresses"] = sorted(addresses.values())
            data[name] = row
            continue
        primary = inspect(model).primary_key
        rows = (
            await session.scalars(
                select(model).where(getattr(model, column) == contact_id).order_by(*primary)
            )
        ).all()
        items = [_export_row(obj, addresses) for obj in rows]
        if model.__tablename__ == "contact_tags":
            data[name] = [item["tag"] for item in items]
            continue
        if model is Ticket:
            await _with_notes(session, items)
        data[name] = items
    return data


def _export_row(obj: Base, addresses: dict[int, str]) -> dict[str, Any]:
    row = _row(obj)
    if isinstance(obj, Address):
        row["address"] = obj.address
    elif isinstance(obj, Outbox):
        row["address"] = f"{obj.channel}:{obj.to}"
    elif isinstance(obj, Message):
        row["address"] = addresses.get(obj.address_id) if obj.address_id else None
    return row


async def _with_notes(session: AsyncSession, tickets: list[dict[str, Any]]) -> None:
    ids = [t["id"] for t in tickets]
    notes: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        for note in await session.scalars(
            select(TicketNote).where(TicketNote.ticket_id.in_(ids)).order_by(TicketNote.id)
        ):
            notes[note.ticket_id].append(_row(note))
    for ticket in tickets:
        ticket["notes"] = notes[ticket["id"]]


# -- erasure ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keep:
    """What an erasure asked by message keeps until the last message has left: the contact
    row (emptied), its addresses, these outbox rows and the inbound message being handled
    (emptied)."""

    outbox_ids: frozenset[int] = frozenset()
    message_id: int | None = None


@dataclass
class Erased:
    counts: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    shell: bool = False
    freed_slots: list[FreedSlot] = field(default_factory=list)

    def describe(self) -> str:
        shown = [f"{n} {table}" for table, n in self.counts.items() if n]
        return ", ".join(shown) or "nothing else"


async def lock_contact(session: AsyncSession, contact_id: int) -> Contact | None:
    query = select(Contact).where(Contact.id == contact_id)
    if _is_pg(session):
        query = query.with_for_update()
    return await session.scalar(query)


async def erase(
    session: AsyncSession, contact: Contact, now: datetime, *, keep: Keep | None = None
) -> Erased:
    """Delete everything about a person (``keep``: leave the shell a message needs).

    The caller locks the contact and records the ``forget`` event.
    """
    cid = contact.id
    result = Erased(shell=keep is not None)
    counts = result.counts
    await session.flush()
    addresses = (await session.scalars(select(Address).where(Address.contact_id == cid))).all()
    if contact.opted_out_at is not None:
        result.suppressed = await suppress(
            session, [AddressValue(a.channel, a.external_id) for a in addresses], now
        )
    tickets = list(await session.scalars(select(Ticket.id).where(Ticket.contact_id == cid)))
    counts["staff copies"] = await _erase_staff_copies(session, cid, tickets)
    staff = await session.scalar(select(Staff).where(Staff.contact_id == cid))
    if staff is not None:  # their taken tickets go back to the queue
        await session.execute(
            update(Ticket)
            .where(Ticket.mediator_id == staff.id, Ticket.state == "taken")
            .values(state="open", mediator_id=None, taken_at=None)
            .execution_options(synchronize_session=False)
        )
    result.freed_slots = await _anonymise_slots(session, cid, now, counts)
    for model, column in reversed(PERSONAL_DATA):
        where = getattr(model, column) == cid
        if model in (Contact, Address, Slot):
            continue
        if model is Message and keep is not None and keep.message_id is not None:
            kept = await session.get(Message, keep.message_id)
            if kept is not None:
                kept.body, kept.media, kept.choice_id, kept.ticket_id = None, None, None, None
                await session.flush()
            where = where & (Message.id != keep.message_id)
        if model is Outbox and keep is not None and keep.outbox_ids:
            where = where & Outbox.id.not_in(sorted(keep.outbox_ids))
        if model is Conversation and keep is not None:
            conversation = await session.get(Conversation, cid)
            if conversation is not None:
                conversation.flow, conversation.state = "menu", "main"
                conversation.data, conversation.misunderstood = {}, 0
                conversation.expires_at = None
            continue
        deleted = await session.execute(
            delete(model).where(where).execution_options(synchronize_session=False)
        )
        counts[_label(model)] = counts.get(_label(model), 0) + (deleted.rowcount or 0)
    jobs = await session.execute(
        delete(Job)
        .where(or_(Job.contact_id == cid, Job.key == f"contact:{cid}"),
               Job.kind != FINISH_JOB)
        .execution_options(synchronize_session=False)
    )
    counts["jobs"] = jobs.rowcount or 0
    # webhooks not processed yet (by address or number), and processed ones' dedupe keys
    counts["inbox"] = await inbox.erase(session, cid, [a.address for a in addresses])


    await forget_sender_rate(session, cid)  # the rate row keyed by their id
    session.info[CHECKPOINT] = True
    if keep is not None:
        contact.name = contact.postcode = None
        contact.level = None
        contact.last_inbound_at = None
        await session.flush()
        return result
    counts["addresses"] = len(addresses)
    await session.execute(
        delete(Contact).where(Contact.id == cid).execution_options(synchronize_session=False)
    )
    session.expunge(contact)
    return result


def _label(model: type[Base]) -> str:
    table = model.__tablename__
    return EXPORT_NAMES.get(table, table).replace("_", " ")


async def _erase_staff_copies(session: AsyncSession, cid: int, tickets: list[int]) -> int:
    """Rows written to or by staff that name or quote the person: alerts, take summaries,
    relays, notices, a mediator's replies and notes as stored messages (linked through
    ``outbox_about`` / ``message_about`` when written, or through the person's tickets)."""
    count = 0
    linked_out = select(OutboxAbout.outbox_id).where(OutboxAbout.contact_id == cid)
    linked_in = select(MessageAbout.message_id).where(MessageAbout.contact_id == cid)
    out_where = Outbox.id.in_(linked_out)
    in_where = Message.id.in_(linked_in)
    if tickets:
        out_where = or_(out_where, Outbox.ticket_id.in_(tickets) & (Outbox.contact_id != cid))
        in_where = or_(in_where, Message.ticket_id.in_(tickets) & (Message.contact_id != cid))
    # A fallback copy points at the row it copies: unlink before deleting.
    await session.execute(
        update(Outbox).where(Outbox.fallback_of.in_(select(Outbox.id).where(out_where)))
        .values(fallback_of=None).execution_options(synchronize_session=False)
    )
    for model, where in ((Outbox, out_where), (Message, in_where)):
        deleted = await session.execute(
            delete(model).where(where).execution_options(synchronize_session=False)
        )
        count += deleted.rowcount or 0
    return count


@dataclass(frozen=True)
class FreedSlot:
    """A callback that was booked by an erased person: open again; its mediator is told."""

    slot_id: int
    start_at: datetime
    mediator_id: int | None


async def _anonymise_slots(
    session: AsyncSession, cid: int, now: datetime, counts: dict[str, int]
) -> list[FreedSlot]:
    """A future booked callback is freed for others; past ones lose who they were for."""
    booked = (await session.scalars(
        select(Slot).where(Slot.contact_id == cid, Slot.status == "booked", Slot.start_at > now)
    )).all()
    freed = [FreedSlot(s.id, s.start_at, s.mediator_id) for s in booked]
    if booked:
        await session.execute(
            update(Slot)
            .where(Slot.id.in_([s.id for s in booked]))
            .values(status="open", contact_id=None, phone=None, booked_at=None)
            .execution_options(synchronize_session=False)
        )
    past = await session.execute(
        update(Slot)
        .where(Slot.contact_id == cid)
        .values(contact_id=None, phone=None)
        .execution_options(synchronize_session=False)
    )
    counts["bookings"] = len(freed) + (past.rowcount or 0)
    return freed


async def forget(
    session: AsyncSession, contact: Contact, now: datetime, *, source: str
) -> Erased:
    """Erase a person entirely (``relais forget``, retention) and count it anonymously."""
    channel = await _last_channel(session, contact)
    erased = await erase(session, contact, now)
    events.record(session, "forget", now, channel=channel, value={"source": source})
    return erased


async def _last_channel(session: AsyncSession, contact: Contact) -> str | None:
    if contact.last_address_id is not None:
        address = await session.get(Address, contact.last_address_id)
        if address is not None:
            return address.channel
    return await session.scalar(
        select(Address.channel).where(Address.contact_id == contact.id).order_by(Address.id)
        .limit(1)
    )


async def plan_shell_removal(session: AsyncSession, contact_id: int, now: datetime) -> None:
    await schedule(session, FINISH_JOB, f"forget:{contact_id}", now + SHELL_FIRST_CHECK,
                   {"erased_at": now.isoformat()})


async def _finish_job(jc: JobContext, item: Job) -> None:
    await remove_shell(jc.session, int(item.key.partition(":")[2]),
                       datetime.fromisoformat(str(item.payload["erased_at"])), jc.now)


async def remove_shell(
    session: AsyncSession, contact_id: int, erased_at: datetime, now: datetime
) -> bool:
    """Delete the shell left by an erasure asked by message once its last message has left
    (or after a day). A person who wrote again since is a contact again. True when deleted."""
    contact = await lock_contact(session, contact_id)
    if contact is None:
        return False
    if contact.last_inbound_at is not None and contact.last_inbound_at > erased_at:
        return False  # they came back: a new start, not an erasure to finish
    active = await session.scalar(
        select(func.count()).select_from(Outbox).where(
            Outbox.contact_id == contact_id, Outbox.status.in_(ACTIVE_OUTBOX)
        )
    )
    if active and now < erased_at + SHELL_MAX:
        await schedule(session, FINISH_JOB, f"forget:{contact_id}", now + SHELL_CHECK_EVERY,
                       {"erased_at": erased_at.isoformat()})
        return False
    await erase(session, contact, now)
    return True


# -- retention --------------------------------------------------------------------------------


@dataclass
class Retention:
    messages: int = 0
    outbox: int = 0
    media: int = 0
    inbox: int = 0  # inbox rows past their keep (dedupe keys, parked rows)
    people: int = 0
    more: bool = False


async def purge_bodies(session: AsyncSession, now: datetime, retention_days: int) -> Retention:
    """Message bodies older than the retention period become NULL; the rows (and so the
    counts) stay. Media references of those messages go too."""
    cutoff = now - timedelta(days=retention_days)
    result = Retention()
    messages = await session.execute(
        update(Message)
        .where(Message.created_at < cutoff, Message.body.is_not(None))
        .values(body=None, media=null())
        .execution_options(synchronize_session=False)
    )
    result.messages = messages.rowcount or 0
    outbox = await session.execute(
        update(Outbox)
        .where(Outbox.created_at < cutoff, Outbox.body.is_not(None),
               Outbox.status.not_in(ACTIVE_OUTBOX))
        .values(body=None)
        .execution_options(synchronize_session=False)
    )
    result.outbox = outbox.rowcount or 0
    media = await session.execute(
        delete(MediaItem).where(MediaItem.created_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    result.media = media.rowcount or 0
    result.inbox = await inbox.purge(session, now, timedelta(days=retention_days))
    return result


async def inactive_people(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    """People who have not written, nor been recorded a consent, for two years (not staff,
    no callback to come)."""
    cutoff = now - INACTIVE_AFTER
    last_seen = func.coalesce(Contact.last_inbound_at, Contact.created_at)
    recent_consent = select(Consent.id).where(
        Consent.contact_id == Contact.id, Consent.at >= cutoff
    ).exists()
    is_staff = select(Staff.id).where(Staff.contact_id == Contact.id).exists()
    booked = select(Slot.id).where(
        Slot.contact_id == Contact.id, Slot.status == "booked", Slot.start_at > now
    ).exists()
    rows = await session.scalars(
        select(Contact.id)
        .where(last_seen < cutoff, ~recent_consent, ~is_staff, ~booked)
        .order_by(Contact.id)
        .limit(limit)
    )
    return list(rows)


async def apply_retention(
    session: AsyncSession, now: datetime, retention_days: int, limit: int = INACTIVE_BATCH
) -> Retention:
    """One retention pass: purge old bodies, erase people inactive for two years."""
    result = await purge_bodies(session, now, retention_days)
    ids = await inactive_people(session, now, limit)
    for contact_id in ids:
        contact = await lock_contact(session, contact_id)
        if contact is not None:
            await forget(session, contact, now, source="retention")
            result.people += 1
    result.more = len(ids) >= limit
    if result.messages or result.outbox or result.people:
        events.record(session, "retention", now, value={
            "messages": result.messages, "outbox": result.outbox, "people": result.people,
        })
    log.info("retention: %d message bodies, %d outbox bodies, %d media purged; %d people "
             "inactive for two years erased", result.messages, result.outbox, result.media,
             result.people)
    return result


def next_retention_at(now: datetime, tz: str) -> datetime:
    """The next 04:00 in the organisation's time zone, in UTC."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    due = datetime.combine(local.date(), RETENTION_AT, tzinfo=zone)
    if due <= local:
        due = datetime.combine(local.date() + timedelta(days=1), RETENTION_AT, tzinfo=zone)
    return due.astimezone(UTC)


def _retention_payload(settings: Settings) -> dict[str, Any]:
    return {"retention_days": settings.retention_days, "timezone": settings.timezone}


async def plan_retention(session: AsyncSession, settings: Settings, now: datetime) -> None:
    """Plan the daily retention pass (idempotent); planned passes take today's settings."""
    payload = _retention_payload(settings)
    await schedule(session, RETENTION_JOB, "daily", next_retention_at(now, settings.timezone),
                   payload)
    await session.execute(
        update(Job)
        .where(Job.kind == RETENTION_JOB, Job.status == "queued")
        .values(payload=payload)
        .execution_options(synchronize_session=False)
    )


async def plan_daily(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> None:
    """Called once when the scheduler starts (``relais serve``, ``relais worker``)."""
    async with sessions() as session, session.begin():
        await plan_retention(session, settings, now)


async def _retention_job(jc: JobContext, item: Job) -> None:
    """The daily pass, with the running settings (retention days, time zone)."""
    session, now, payload = jc.session, jc.now, item.payload or {}
    days, tz = jc.settings.retention_days, jc.settings.timezone
    result = await apply_retention(session, now, days)
    if result.more:  # many people at once: go on in a minute, in a fresh transaction
        await schedule(session, RETENTION_JOB, "more", now + timedelta(minutes=1), payload)
    await schedule(session, RETENTION_JOB, "daily", next_retention_at(now, tz), payload)


# -- helpers ----------------------------------------------------------------------------------


def _is_pg(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"


JOBS = (JobKind(FINISH_JOB, _finish_job), JobKind(RETENTION_JOB, _retention_job))
