"""Phone callback slots: opening them, the free ones, booking (one winner per slot), releasing,
cancelling, outcomes, and when the reminders are due.

A slot is ``open`` (free), ``booked`` (one person, one number to call), ``cancelled`` (by
staff) or ``done`` (with an outcome). Booking is one conditional ``UPDATE … WHERE status =
'open'`` whose row count says who won: on PostgreSQL the second writer waits for the row
lock and then sees the slot booked; on SQLite writers are serialised by ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.config import TimeRange
from bot.delivery.quiet import is_quiet
from bot.storage.models import Address, Contact, Slot, Staff

OPEN = "open"
BOOKED = "booked"
CANCELLED = "cancelled"
DONE = "done"
OUTCOMES = ("reached", "no-answer")

LEAD_TIME = timedelta(hours=1)  # a slot is offered only when it starts at least this late
OFFERED = 4  # free slots shown at once
EVENING = time(18, 0)  # the reminder the evening before, local time
HOUR_BEFORE = timedelta(hours=1)
TOO_SOON = timedelta(minutes=10)  # no "in one hour" reminder right after booking


class SlotError(Exception):
    """A slot that cannot be changed that way; ``str()`` is one line for the operator."""


class NotYours(SlotError):
    """The call belongs to another mediator (``mediator`` is their staff row)."""

    def __init__(self, slot: Slot, mediator: Staff | None) -> None:
        self.slot, self.mediator = slot, mediator
        who = mediator.name if mediator is not None else "another mediator"
        super().__init__(f"slot {slot.id} is {who}'s call: only they or a coordinator can "
                         "record how it went")


class NotStarted(SlotError):
    """The call has not begun yet: its outcome cannot be known."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        super().__init__(f"slot {slot.id} has not started yet: record how the call went "
                         "after it")


# -- opening -----------------------------------------------------------------------------------


def parse_start(text: str, default_timezone: str) -> datetime:
    """ISO 8601 start (``2030-03-05T14:00``, with or without offset) as aware UTC.

    Without an offset the time is read in ``default_timezone``. Raises ValueError.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO 8601 date and time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(default_timezone))
    return moment.astimezone(UTC)


async def open_slots(
    session: AsyncSession, start: datetime, *, count: int, minutes: int, now: datetime,
    mediator_id: int | None = None,
) -> list[Slot]:
    """``count`` back-to-back slots of ``minutes`` from ``start``."""
    if count < 1 or minutes < 1:
        raise ValueError("count and minutes must be at least 1")
    slots = [
        Slot(start_at=start + timedelta(minutes=minutes * n), minutes=minutes,
             mediator_id=mediator_id, status=OPEN, created_at=now)
        for n in range(count)
    ]
    session.add_all(slots)
    await session.flush()
    return slots


# -- reading -----------------------------------------------------------------------------------


async def free_slots(
    session: AsyncSession, now: datetime, limit: int = OFFERED, exclude: Iterable[int] = ()
) -> list[Slot]:
    """The next open slots starting at least ``LEAD_TIME`` from now, earliest first."""
    query = (
        select(Slot)
        .where(Slot.status == OPEN, Slot.start_at >= now + LEAD_TIME)
        .order_by(Slot.start_at, Slot.id)
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    excluded = tuple(exclude)
    if excluded:
        query = query.where(Slot.id.not_in(excluded))
    return list((await session.scalars(query)).all())


async def booking_of(session: AsyncSession, contact_id: int) -> Slot | None:
    """The person's booked slot (one at a time), or None."""
    return await session.scalar(
        select(Slot)
        .where(Slot.contact_id == contact_id, Slot.status == BOOKED)
        .order_by(Slot.start_at)
        .limit(1)
        .execution_options(populate_existing=True)
    )


async def get_slot(session: AsyncSession, slot_id: int) -> Slot | None:
    return await session.get(Slot, slot_id, populate_existing=True)


async def last_phone(session: AsyncSession, contact_id: int) -> str | None:
    """The number the person gave for their latest callback, if any."""
    return await session.scalar(
        select(Slot.phone)
        .where(Slot.contact_id == contact_id, Slot.phone.is_not(None))
        .order_by(Slot.booked_at.desc(), Slot.id.desc())
        .limit(1)
    )


# -- booking -----------------------------------------------------------------------------------


async def book(
    session: AsyncSession, slot_id: int, contact_id: int, phone: str, now: datetime
) -> bool:
    """Take an open, future slot for a person. True for the one writer that got it."""
    result = await session.execute(
        update(Slot)
        .where(Slot.id == slot_id, Slot.status == OPEN, Slot.start_at > now)
        .values(status=BOOKED, contact_id=contact_id, phone=phone, booked_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def release(session: AsyncSession, slot: Slot) -> None:
    """The person gave the slot up (cancelled or moved): it is free again for others."""
    await session.execute(
        update(Slot)
        .where(Slot.id == slot.id, Slot.status == BOOKED, Slot.contact_id == slot.contact_id)
        .values(status=OPEN, contact_id=None, phone=None, booked_at=None)
        .execution_options(synchronize_session=False)
    )


async def cancel(session: AsyncSession, slot_id: int) -> tuple[Slot, bool]:
    """Staff cancel a slot. Returns (slot, was_booked); a booked slot keeps its
    ``contact_id``: that person is to be told."""
    slot = await get_slot(session, slot_id)
    if slot is None:
        raise LookupError(f"no slot {slot_id}")
    if slot.status in (CANCELLED, DONE):
        raise SlotError(f"slot {slot_id} is already {slot.status}")
    was_booked = slot.status == BOOKED
    slot.status = CANCELLED
    await session.flush()
    return slot, was_booked


def may_record(slot: Slot, staff: Staff | None, now: datetime) -> bool:
    """Who may say how a call went, and when: the slot's own mediator (anyone on staff when
    the slot has none) or a coordinator, once the slot has started (``start_at <= now``).
    ``staff`` None is the operator at the command line without ``--as`` (trusted: only the
    time is checked)."""
    if staff is not None and staff.role != "coordinator" and slot.mediator_id is not None \
            and slot.mediator_id != staff.id:
        return False
    return slot.start_at <= now


async def check_may_record(
    session: AsyncSession, slot: Slot, staff: Staff | None, now: datetime
) -> None:
    """``may_record``, raising NotYours or NotStarted (in that order) when it is not."""
    if may_record(slot, staff, now):
        return
    if staff is not None and not may_record(slot, staff, slot.start_at):
        mediator = await session.get(Staff, slot.mediator_id) if slot.mediator_id else None
        raise NotYours(slot, mediator)
    raise NotStarted(slot)


async def record_outcome(
    session: AsyncSession, slot_id: int, outcome: str, *, now: datetime,
    staff: Staff | None = None,
) -> Slot:
    """After the call: ``reached`` or ``no-answer``. Only a booked slot has an outcome, and
    only who ``may_record`` gives it (NotYours, NotStarted otherwise; nothing changes)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
    slot = await get_slot(session, slot_id)
    if slot is None:
        raise LookupError(f"no slot {slot_id}")
    if slot.status != BOOKED:
        raise SlotError(f"slot {slot_id} is {slot.status}, not booked")
    await check_may_record(session, slot, staff, now)
    slot.status = DONE
    slot.outcome = outcome
    await session.flush()
    return slot


# -- reminders ---------------------------------------------------------------------------------


def evening_reminder_at(start_at: datetime, tz: str, quiet: TimeRange) -> datetime | None:
    """18:00 local the day before the call, or the latest time before it outside quiet hours
    (still on the day before); None when the whole evening is quiet."""
    zone = ZoneInfo(tz)
    day_before = start_at.astimezone(zone).date() - timedelta(days=1)
    moment = datetime.combine(day_before, EVENING, tzinfo=zone).astimezone(UTC)
    for _minute in range(24 * 60):
        if not is_quiet(quiet, tz, moment):
            break
        moment -= timedelta(minutes=1)
    else:
        return None
    return moment if moment.astimezone(zone).date() == day_before else None


def hour_reminder_at(start_at: datetime) -> datetime:
    return start_at - HOUR_BEFORE


def reminders_due(
    start_at: datetime, tz: str, quiet: TimeRange, now: datetime
) -> dict[str, datetime]:
    """The reminders still worth planning for a call booked ``now``: kind → due time."""
    due: dict[str, datetime] = {}
    hour = hour_reminder_at(start_at)
    evening = evening_reminder_at(start_at, tz, quiet)
    if evening is not None and now < evening < hour:
        due["evening"] = evening
    if hour >= now + TOO_SOON:
        due["hour"] = hour
    return due


# -- listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotRow:
    id: int
    start_at: datetime
    minutes: int
    status: str
    mediator: str | None  # CHANNEL:ID
    mediator_name: str | None
    person: str | None  # CHANNEL:ID
    phone: str | None
    outcome: str | None


async def _address_of(session: AsyncSession, contact_id: int | None) -> str | None:
    if contact_id is None:
        return None
    contact = await session.get(Contact, contact_id)
    query = select(Address).where(Address.contact_id == contact_id)
    if contact is not None and contact.last_address_id is not None:
        preferred = await session.get(Address, contact.last_address_id)
        if preferred is not None:
            return preferred.address
    first = await session.scalar(query.order_by(Address.id).limit(1))
    return first.address if first is not None else None


async def list_slots(
    session: AsyncSession, now: datetime, tz: str, everything: bool = False
) -> list[SlotRow]:
    """Slots from the start of today (``tz``) on, and booked ones not yet done; or all."""
    query = select(Slot).order_by(Slot.start_at, Slot.id)
    if not everything:
        today = now.astimezone(ZoneInfo(tz)).replace(hour=0, minute=0, second=0, microsecond=0)
        query = query.where(or_(Slot.start_at >= today.astimezone(UTC), Slot.status == BOOKED))
    rows = []
    for slot in (await session.scalars(query)).all():
        staff = await session.get(Staff, slot.mediator_id) if slot.mediator_id else None
        rows.append(SlotRow(
            id=slot.id, start_at=slot.start_at, minutes=slot.minutes, status=slot.status,
            mediator=await _address_of(session, staff.contact_id) if staff else None,
            mediator_name=staff.name if staff else None,
            person=await _address_of(session, slot.contact_id), phone=slot.phone,
            outcome=slot.outcome,
        ))
    return rows
