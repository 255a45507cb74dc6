"""What mediators do to a ticket: take, reply, note, release, transfer, close. Each writes
what the citizen is told and tells the other staff (``bot.domain.tickets.notify``); a close
asks the citizen one question (``bot.domain.tickets.satisfaction``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.config import Settings
from bot.domain.tickets import notify, outcomes
from bot.domain.tickets.queue import (
    CLOSED,
    KIND_INTRO,
    KIND_MEDIATOR,
    KIND_URGENT,
    OPEN,
    SYSTEM,
    TAKEABLE,
    TAKEN,
    QueueError,
    add_note,
    citizen_context,
    enter,
    first_name,
    get_ticket,
    held_until,
    intro,
    reachable,
    record_event,
    send_held_now,
    to_citizen,
)
from bot.domain.tickets.satisfaction import ask_satisfaction
from bot.storage import counters
from bot.storage.models import (
    Outbox,
    Staff,
    Ticket,
    TicketNote,
)


@dataclass
class Done:
    """What an operation did; ``sent`` lists the outbox rows it wrote (to wake workers)."""

    ticket: Ticket
    already: bool = False  # nothing changed: it was already so
    delivered: bool = True  # the person can get messages
    took: bool = False  # a reply took an open ticket first
    sent: list[Outbox] = field(default_factory=list)
    held_until: datetime | None = None  # the reply waits for the end of the quiet hours


def _may_act(ticket: Ticket, staff: Staff) -> bool:
    """The holder, a coordinator, or anyone while nobody holds it."""
    return (ticket.state == OPEN or ticket.mediator_id in (None, staff.id)
            or staff.role == "coordinator")


async def _holder_error(session: AsyncSession, ticket: Ticket) -> QueueError:
    holder = await session.get(Staff, ticket.mediator_id) if ticket.mediator_id else None
    return QueueError("not_yours", ticket.id, by=holder)


async def take(session: AsyncSession, settings: Settings, now: datetime, ticket_id: int,
               staff: Staff) -> Done:
    """Claim an open ticket: exactly one of several mediators gets it."""
    ticket = await get_ticket(session, ticket_id)
    ctx = await citizen_context(session, settings, now, ticket.contact_id)
    result = await session.execute(
        update(Ticket).where(Ticket.id == ticket_id, TAKEABLE)
        .values(state=TAKEN, mediator_id=staff.id, taken_at=now)
        .execution_options(synchronize_session=False)
    )
    ticket = await get_ticket(session, ticket_id)
    if result.rowcount != 1:
        if ticket.state == TAKEN and ticket.mediator_id == staff.id:
            return Done(ticket, already=True, delivered=reachable(ctx))
        if ticket.state == CLOSED:
            raise QueueError("closed", ticket_id)
        holder = await session.get(Staff, ticket.mediator_id) if ticket.mediator_id else None
        raise QueueError("taken", ticket_id, by=holder)
    await _count_first_take(session, settings, now, ticket)
    add_note(session, ticket, staff, SYSTEM + "taken", now)
    # No exact wait in the event: with its hour it could date the ticket to the minute
    # (durations are counted in ``counters``, by bucket and day).
    record_event(session, "ticket.taken", now, ticket)
    done = Done(ticket, delivered=reachable(ctx))
    to_citizen(ctx, ticket, intro(ctx, staff), KIND_INTRO, done.sent)
    enter(ctx, "ticket.waiting")


    await notify.plan_silence(session, settings, ticket, now + notify.SILENCE)
    await session.flush()
    return done


async def reply(session: AsyncSession, settings: Settings, now: datetime, ticket_id: int,
                staff: Staff, text: str, *, urgent: bool = False) -> Done:
    """Send ``text`` to the person; an open ticket is taken first. In the person's quiet
    hours (and they did not write in the last hour) it waits for their end, unless
    ``urgent`` (an urgent ticket only: else ``not_urgent``), which sends it now with what
    waited before it."""
    text = text.strip()
    if not text:
        raise QueueError("empty", ticket_id)
    ticket = await get_ticket(session, ticket_id)
    if urgent and ticket.state != CLOSED and ticket.priority != "urgent":
        raise QueueError("not_urgent", ticket_id)
    took = False
    if ticket.state == OPEN or (ticket.state == TAKEN and ticket.mediator_id is None):
        done = await take(session, settings, now, ticket_id, staff)
        ticket, took = done.ticket, True
        sent = done.sent
    else:
        sent = []
    if ticket.state == CLOSED:
        raise QueueError("closed", ticket_id)
    if ticket.mediator_id != staff.id:
        raise await _holder_error(session, ticket)
    ctx = await citizen_context(session, settings, now, ticket.contact_id)
    name = first_name(staff.name) or "?"
    if urgent:
        await send_held_now(session, ticket, now)
    row = to_citizen(ctx, ticket, ctx._("{name}: {text}", name=name, text=text),
                     KIND_URGENT if urgent else KIND_MEDIATOR, sent)
    if ctx.conversation.flow != "ticket" or ctx.conversation.state != "waiting":
        enter(ctx, "ticket.waiting")  # their answer comes back to the mediator
    record_event(session, "ticket.reply", now, ticket)


    await notify.plan_silence(session, settings, ticket, now + notify.SILENCE)
    await session.flush()
    return Done(ticket, delivered=row is not None, took=took, sent=sent,
                held_until=held_until(row))


async def note(session: AsyncSession, now: datetime, ticket_id: int, staff: Staff,
               text: str) -> Done:
    """An internal note: never sent to the person."""
    text = text.strip()
    if not text:
        raise QueueError("empty", ticket_id)
    ticket = await get_ticket(session, ticket_id)
    add_note(session, ticket, staff, text, now)
    await session.flush()
    return Done(ticket)


async def release(session: AsyncSession, settings: Settings, now: datetime, ticket_id: int,
                  staff: Staff, system: str = "released") -> Done:
    """Back to the queue, for someone else to take."""
    ticket = await get_ticket(session, ticket_id)
    await citizen_context(session, settings, now, ticket.contact_id)  # lock order
    ticket = await get_ticket(session, ticket_id)
    if ticket.state == CLOSED:
        raise QueueError("closed", ticket_id)
    if ticket.state == OPEN or ticket.mediator_id is None:
        return Done(ticket, already=True)
    if not _may_act(ticket, staff):
        raise await _holder_error(session, ticket)
    ticket.state, ticket.mediator_id, ticket.taken_at = OPEN, None, None
    add_note(session, ticket, staff, SYSTEM + system, now)
    record_event(session, f"ticket.{system}", now, ticket)


    await session.flush()
    await notify.plan_batches(session, settings, now, exclude=staff.id)
    await notify.plan_remind(session, settings, ticket, now)
    return Done(ticket)


async def transfer(session: AsyncSession, settings: Settings, now: datetime, ticket_id: int,
                   staff: Staff, target: Staff) -> Done:
    """Give the ticket to another staff member, who is told at once."""
    ticket = await get_ticket(session, ticket_id)
    ctx = await citizen_context(session, settings, now, ticket.contact_id)
    ticket = await get_ticket(session, ticket_id)
    if ticket.state == CLOSED:
        raise QueueError("closed", ticket_id)
    if not _may_act(ticket, staff):
        raise await _holder_error(session, ticket)
    if ticket.state == TAKEN and ticket.mediator_id == target.id:
        return Done(ticket, already=True)
    before = ticket.mediator_id
    await _count_first_take(session, settings, now, ticket)
    ticket.state, ticket.mediator_id, ticket.taken_at = TAKEN, target.id, now
    add_note(session, ticket, staff, f"{SYSTEM}transferred:{target.name}", now)
    record_event(session, "ticket.transferred", now, ticket)
    done = Done(ticket, delivered=reachable(ctx))
    previous = await session.get(Staff, before) if before else None
    again = previous is not None and first_name(previous.name) != first_name(target.name)
    if previous is None or again:
        to_citizen(ctx, ticket, intro(ctx, target, again=previous is not None), KIND_INTRO,
                   done.sent)
    enter(ctx, "ticket.waiting")
    await session.flush()


    await notify.tell_transferred(session, settings, now, ticket, staff, target, done.sent)
    await notify.plan_silence(session, settings, ticket, now + notify.SILENCE)
    return done


async def close(session: AsyncSession, settings: Settings, now: datetime, ticket_id: int,
                staff: Staff, outcome: str | None = None, note: str | None = None) -> Done:
    """Close with an outcome of the closed list (``bot.domain.tickets.outcomes``: its number
    or a word; the
    ``outcome`` error otherwise); free text goes in ``note``, a note on the ticket, never in
    the outcome. The person gets one short "Did we help?" question."""
    ticket = await get_ticket(session, ticket_id)
    ctx = await citizen_context(session, settings, now, ticket.contact_id)
    ticket = await get_ticket(session, ticket_id)
    if ticket.state == CLOSED:
        return Done(ticket, already=True)
    if not _may_act(ticket, staff):
        raise await _holder_error(session, ticket)
    code = outcomes.outcome_of(outcome or "")
    if code is None:
        raise QueueError("outcome", ticket_id, detail=(outcome or "").strip()[:40])
    if note and note.strip():
        add_note(session, ticket, staff, note.strip(), now)
    first_taken = await _first_taken_at(session, ticket)
    ticket.state, ticket.closed_at, ticket.outcome = CLOSED, now, code
    if ticket.mediator_id is None:
        ticket.mediator_id = staff.id
    add_note(session, ticket, staff, f"{SYSTEM}closed:{code}", now)
    record_event(session, "ticket.closed", now, ticket)
    counters.count(session, settings.timezone, now, counters.CLOSED, code)
    if first_taken is not None:
        counters.duration(session, settings.timezone, now, counters.HANDLING,
                          (now - first_taken).total_seconds())
    done = Done(ticket, delivered=reachable(ctx))


    await ask_satisfaction(ctx, ticket, done.sent)
    await session.flush()
    return done


_FIRST_TAKE = or_(TicketNote.body == SYSTEM + "taken",
                  TicketNote.body.like(SYSTEM + "transferred:%"))


async def _first_taken_at(session: AsyncSession, ticket: Ticket) -> datetime | None:
    """When a mediator first had the ticket (taken, or given by a transfer)."""
    return await session.scalar(
        select(func.min(TicketNote.created_at))
        .where(TicketNote.ticket_id == ticket.id, _FIRST_TAKE)
    )


async def _count_first_take(session: AsyncSession, settings: Settings, now: datetime,
                            ticket: Ticket) -> None:
    """Reports count a ticket's first take and how long it waited for it (anonymous
    counters, ``bot.storage.counters``); a take after a release is not a new one."""
    if await _first_taken_at(session, ticket) is not None:
        return
    counters.count(session, settings.timezone, now, counters.TAKEN)
    counters.duration(session, settings.timezone, now, counters.WAIT,
                      (now - ticket.created_at).total_seconds())

