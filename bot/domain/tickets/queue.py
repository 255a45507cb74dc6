"""The escalation queue: tickets listed most urgent then oldest, taken by one mediator (a
conditional ``UPDATE … WHERE state = 'open'`` whose row count names the winner), answered,
annotated, released, transferred and closed. Staff chat commands and ``relais queue`` both
call these functions; they speak to the citizen themselves (the relay) and leave what is
said to the staff member to the caller.

Locks: an operation first locks the citizen's contact row (as the engine does for the
citizen's own messages), then changes the ticket. The order is always staff → citizen →
ticket, so a mediator's command and the citizen's message never deadlock.

System entries of a ticket's history (taken, released, transferred, closed, back to the
queue) are notes whose body starts with ``@@``; ``note_text`` words them per language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation.context import Context, enter_state, person_context, reachable_address
from bot.core.config import Settings
from bot.core.i18n import N_, Translator
from bot.core.types import Reply
from bot.delivery.quiet import QUIET_REASON, URGENT_SUFFIX, person_timezone, release_at
from bot.delivery.writer import enqueue
from bot.domain.tickets import outcomes
from bot.storage import about
from bot.storage.models import (
    Address,
    Contact,
    MediaItem,
    Message,
    Outbox,
    Slot,
    Staff,
    Ticket,
    TicketNote,
)

OPEN, TAKEN, CLOSED = "open", "taken", "closed"
ACTIVE = (OPEN, TAKEN)
PRIORITIES = ("urgent", "normal", "low")
KIND_MEDIATOR = "mediator"  # outbox rows a mediator wrote to a citizen
KIND_INTRO = "mediator.intro"  # "Alice, of …, answers you"
KIND_URGENT = KIND_MEDIATOR + URGENT_SUFFIX  # sent now, quiet hours or not (/urgent N TEXT)
MEDIATOR_KINDS = (KIND_MEDIATOR, KIND_URGENT)  # what a mediator wrote, as history shows it
SYSTEM = "@@"
WORDS_MAX = 40
RECENT_MESSAGES = 5

# Open, or taken by someone removed from staff since (``mediator_id`` set to NULL).
TAKEABLE = or_(Ticket.state == OPEN, and_(Ticket.state == TAKEN, Ticket.mediator_id.is_(None)))
_RANK = case({"urgent": 0, "normal": 1, "low": 2}, value=Ticket.priority, else_=1)

# How a ticket came, for staff who read the queue (when the person wrote nothing yet).
SOURCE_LABELS = {
    "keyword": N_("asked for a person"),
    "menu": N_("asked for a person"),
    "misunderstood": N_("the bot did not understand"),
    "checkin": N_("check-in: needs help"),
    "checkin_silence": N_("check-in: no news"),
    "media": N_("sent a photo or a voice note"),
    "danger": N_("danger words"),
    "callback": N_("wants a call"),
    "forget": N_("wants their data erased"),
    "places": N_("looking for a help desk"),
    "resource": N_("read a help page, still stuck"),
    "sender_limit": N_("sent many messages"),
}


class QueueError(Exception):
    """An operation that cannot be done; ``code`` says why (the caller words it).

    codes: ``not_found``, ``closed``, ``taken`` (``by`` = the holder), ``not_yours``
    (``by``), ``outcome`` (none or not of the list, ``detail`` = what was given),
    ``empty`` (no text), ``not_urgent`` (``/urgent`` on a ticket that is not).
    """

    def __init__(self, code: str, ticket_id: int | None = None, by: Staff | None = None,
                 detail: str = "") -> None:
        super().__init__(f"{code}: ticket {ticket_id} {detail}".strip())
        self.code = code
        self.ticket_id = ticket_id
        self.by = by
        self.detail = detail


# -- reading --------------------------------------------------------------------------------


@dataclass
class TicketInfo:
    ticket: Ticket
    contact: Contact
    person: str | None  # the citizen's CHANNEL:ID (where they last wrote from)
    words: str | None  # the first words they wrote
    mediator: Staff | None
    mediator_address: str | None

    @property
    def id(self) -> int:
        return self.ticket.id

    @property
    def first_name(self) -> str | None:
        return first_name(self.contact.name)

    def waited(self, now: datetime) -> timedelta:
        return (self.ticket.closed_at or now) - self.ticket.created_at


def first_name(name: str | None) -> str | None:
    """The first word of a name ("Alice Martin" → "Alice"); never the full name."""
    if not name or not name.strip():
        return None
    return name.strip().split()[0]


async def staff_address_of(session: AsyncSession, staff: Staff, contact: Contact
                           ) -> Address | None:
    """Where to tell a staff member something: the address they last wrote from when it is
    one of their staff addresses, else a registered one; a person's other addresses only
    when none is (their answer from there would carry no staff powers)."""
    from bot.storage.models import StaffAddress

    registered = {(row.channel, row.external_id) for row in (await session.execute(
        select(StaffAddress.channel, StaffAddress.external_id)
        .where(StaffAddress.staff_id == staff.id)
    )).all()}
    rows = (await session.scalars(
        select(Address).where(Address.contact_id == contact.id).order_by(Address.id)
    )).all()
    usable = [row for row in rows if row.blocked_at is None
              and (row.channel, row.external_id) in registered]
    for row in usable:
        if row.id == contact.last_address_id:
            return row
    return usable[0] if usable else await reachable_address(session, contact)


async def _words(session: AsyncSession, ticket: Ticket) -> str | None:
    from bot.conversation import keywords
    from bot.conversation.choices import number_in

    bodies = (await session.scalars(
        select(Message.body)
        .where(Message.ticket_id == ticket.id, Message.direction == "in")
        .order_by(Message.id).limit(20)
    )).all()
    for body in bodies:
        text = " ".join((body or "").split())
        if not text or keywords.match(text) or number_in(text) is not None:
            continue
        return shorten(text, WORDS_MAX)
    return None


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut + "..."


async def info(session: AsyncSession, ticket: Ticket) -> TicketInfo:
    about.mention(session, ticket.contact_id)
    contact = await session.get(Contact, ticket.contact_id)
    assert contact is not None
    address = await reachable_address(session, contact)
    mediator = await session.get(Staff, ticket.mediator_id) if ticket.mediator_id else None
    mediator_address = None
    if mediator is not None:
        staff_contact = await session.get(Contact, mediator.contact_id)
        if staff_contact is not None:
            found = await reachable_address(session, staff_contact)
            mediator_address = found.address if found else None
    return TicketInfo(ticket, contact, address.address if address else None,
                      await _words(session, ticket), mediator, mediator_address)


async def get_ticket(session: AsyncSession, ticket_id: int) -> Ticket:
    ticket = await session.get(Ticket, ticket_id, populate_existing=True)
    if ticket is None:
        raise QueueError("not_found", ticket_id)
    about.mention(session, ticket.contact_id)
    return ticket


async def list_tickets(
    session: AsyncSession, states: Sequence[str] = (OPEN,)
) -> list[TicketInfo]:
    """Tickets in ``states``, most urgent first, then oldest first."""
    where = Ticket.state.in_(tuple(states))
    if OPEN in states:  # held by someone no longer staff: waiting again
        where = or_(where, and_(Ticket.state == TAKEN, Ticket.mediator_id.is_(None)))
    tickets = (await session.scalars(
        select(Ticket).where(where)
        .order_by(_RANK, Ticket.created_at, Ticket.id)
        .execution_options(populate_existing=True)
    )).all()
    return [await info(session, ticket) for ticket in tickets]


async def held_by(session: AsyncSession, staff: Staff) -> list[Ticket]:
    held = list((await session.scalars(
        select(Ticket).where(Ticket.state == TAKEN, Ticket.mediator_id == staff.id)
        .order_by(Ticket.taken_at, Ticket.id)
        .execution_options(populate_existing=True)
    )).all())
    about.mention(session, *(t.contact_id for t in held))
    return held


async def count_waiting(session: AsyncSession) -> int:
    return int(await session.scalar(
        select(func.count()).select_from(Ticket).where(Ticket.state == OPEN)
    ) or 0)


async def staff_contact(session: AsyncSession, staff: Staff) -> Contact:
    contact = await session.get(Contact, staff.contact_id)
    assert contact is not None
    return contact


async def staff_name(session: AsyncSession, staff_id: int | None) -> str | None:
    if staff_id is None:
        return None
    staff = await session.get(Staff, staff_id)
    return staff.name if staff else None


# -- history --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One line of a ticket's history."""

    at: datetime
    kind: str  # "in" (the person), "out" (a mediator to the person), "note", "system"
    who: str | None  # a name (the person's first name, the staff member's name)
    text: str
    media: tuple[tuple[int, str], ...] = ()  # (media id, content type)


async def history(session: AsyncSession, ticket: Ticket, limit: int | None = None
                  ) -> list[Entry]:
    """What the person wrote, what mediators answered, notes and system entries, in order."""
    contact = await session.get(Contact, ticket.contact_id)
    person = first_name(contact.name if contact else None)
    entries: list[Entry] = []
    messages = (await session.scalars(
        select(Message).where(Message.ticket_id == ticket.id, Message.direction == "in")
        .order_by(Message.id)
    )).all()
    media_rows = (await session.scalars(
        select(MediaItem).where(MediaItem.message_id.in_([m.id for m in messages]))
        .order_by(MediaItem.id)
    )).all() if messages else []
    by_message: dict[int, list[MediaItem]] = {}
    for item in media_rows:
        by_message.setdefault(item.message_id, []).append(item)
    for message in messages:
        media = tuple((m.id, m.content_type) for m in by_message.get(message.id, []))
        entries.append(Entry(message.created_at, "in", person, message.body or "", media))
    outs = (await session.scalars(
        select(Outbox).where(Outbox.ticket_id == ticket.id,
                             Outbox.contact_id == ticket.contact_id,
                             Outbox.kind.in_(MEDIATOR_KINDS))
        .order_by(Outbox.id)
    )).all()
    for row in outs:
        entries.append(Entry(row.created_at, "out", None, row.body or ""))
    notes = (await session.scalars(
        select(TicketNote).where(TicketNote.ticket_id == ticket.id).order_by(TicketNote.id)
    )).all()
    for note in notes:
        name = await staff_name(session, note.staff_id)
        kind = "system" if note.body.startswith(SYSTEM) else "note"
        entries.append(Entry(note.created_at, kind, name, note.body))
    entries.sort(key=lambda e: e.at)
    return entries[-limit:] if limit else entries


def note_text(_: Translator, body: str) -> str:
    """Words for a system entry (``@@taken``, ``@@transferred:Bob``…); a note as written."""
    if not body.startswith(SYSTEM):
        return body
    action, _sep, detail = body[len(SYSTEM):].partition(":")
    if action == "taken":
        return _("took the ticket")
    if action == "released":
        return _("put the ticket back in the queue")
    if action == "transferred":
        return _("passed the ticket to {name}", name=detail)
    if action == "closed":
        return _("closed the ticket: {outcome}", outcome=outcomes.label(_, detail)) if (
            detail) else _("closed the ticket")
    if action == "returned":
        return _("back in the queue: no answer from the mediator for 2 hours")
    return detail or action


async def pending_callback(session: AsyncSession, contact_id: int) -> Slot | None:
    return await session.scalar(
        select(Slot).where(Slot.contact_id == contact_id, Slot.status == "booked")
        .order_by(Slot.start_at).limit(1)
    )


async def media_of(session: AsyncSession, ticket: Ticket) -> list[MediaItem]:
    return list((await session.scalars(
        select(MediaItem).join(Message, Message.id == MediaItem.message_id)
        .where(Message.ticket_id == ticket.id).order_by(MediaItem.id)
    )).all())


# -- speaking to the citizen --------------------------------------------------------------


async def citizen_context(
    session: AsyncSession, settings: Settings, now: datetime, contact_id: int
) -> Context:
    """A flow context for the ticket's person (``person_context``): their contact row
    locked, on the address they last wrote from."""
    ctx = await person_context(session, settings, now, contact_id)
    if ctx is None:
        raise QueueError("not_found", detail="the person was erased")
    return ctx


def enter(ctx: Context, target: str) -> None:
    """Put the person in ``target`` ("flow.state") without saying anything."""
    enter_state(ctx, target, fresh=True)


def reachable(ctx: Context) -> bool:
    return (ctx.address is not None and ctx.contact.opted_out_at is None
            and ctx.address.blocked_at is None)


def to_citizen(ctx: Context, ticket: Ticket, text: str, kind: str = KIND_MEDIATOR,
               sink: list[Outbox] | None = None) -> Outbox | None:
    """One message from a mediator to the person (joined to the ticket), or None when the
    person cannot get it (STOP, blocked address, no address). To a person who has not
    written in the last hour, it waits for the end of their quiet hours (``held_until``)."""
    if not reachable(ctx):
        return None
    assert ctx.address is not None
    row = enqueue(ctx.session, ctx.contact, ctx.address, Reply(text), now=ctx.now,
                  kind=kind, ticket_id=ticket.id, sink=sink)
    zone = person_timezone(ctx.contact.timezone, ctx.contact.postcode, ctx.address.channel,
                           ctx.address.external_id, ctx.settings.timezone)
    when = release_at(kind, zone, ctx.contact.last_inbound_at, ctx.now, ctx.settings)
    if when > ctx.now:
        row.next_attempt_at, row.error_reason = when, QUIET_REASON
    return row


def held_until(row: Outbox | None) -> datetime | None:
    """When a row written now will leave, if quiet hours hold it."""
    if row is None or row.error_reason != QUIET_REASON:
        return None
    return row.next_attempt_at


async def send_held_now(session: AsyncSession, ticket: Ticket, now: datetime) -> int:
    """``/urgent``: what the mediators of ``ticket`` wrote that waits for the end of the
    person's quiet hours goes now, in its order (kinds ``….urgent``)."""
    rows = (await session.scalars(
        select(Outbox).where(
            Outbox.contact_id == ticket.contact_id, Outbox.ticket_id == ticket.id,
            Outbox.status.in_(("queued", "in_doubt")), Outbox.error_reason == QUIET_REASON,
            Outbox.kind.in_((KIND_MEDIATOR, KIND_INTRO)))
        .order_by(Outbox.id)
    )).all()
    for row in rows:
        row.kind = row.kind + URGENT_SUFFIX
        row.next_attempt_at, row.error_reason, row.updated_at = now, None, now
    return len(rows)


def intro(ctx: Context, staff: Staff, again: bool = False) -> str:
    name = first_name(staff.name) or "?"
    if again:
        return ctx._("{name}, of {org}, is answering you now.", name=name, org=ctx.org)
    return ctx._("{name}, of {org}, is answering you. Write your message here.",
                 name=name, org=ctx.org)


# -- acting ---------------------------------------------------------------------------------


def add_note(session: AsyncSession, ticket: Ticket, staff: Staff | None, body: str,
             now: datetime) -> TicketNote:
    note = TicketNote(ticket_id=ticket.id, staff_id=staff.id if staff else None, body=body,
                      created_at=now)
    session.add(note)
    return note


def record_event(session: AsyncSession, kind: str, now: datetime, ticket: Ticket,
           **value: Any) -> None:
    from bot.storage import events

    events.record(session, kind, now, channel=ticket.channel, language=ticket.language,
                  value={"priority": ticket.priority, "source": ticket.source, **value})


# -- what a mediator writes as a command -----------------------------------------------------


_TICKET_REF = re.compile(r"^#?(\d{1,12})$")


def ticket_number(text: str) -> int | None:
    match = _TICKET_REF.match(text.strip())
    return int(match.group(1)) if match else None
