"""Telling staff: new tickets (urgent at once to every on-duty staff member; others batched,
at most one notice per staff member per 5 minutes), tickets waiting longer than
``RELAIS_QUEUE_REMIND_MINUTES`` announced again, and a taken ticket whose mediator stays
silent for 2 hours put back in the queue.

Staff notices ignore quiet hours (staff chose to be on duty) and go only to staff on duty.
Each goes to the staff member's last used address, as a priority-0 outbox row, worded in
their language. Scheduler handlers receive no settings: the few they need travel in the
job's payload, as they were when the job was planned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation.context import Context
from bot.core.config import Settings
from bot.core.i18n import Translator
from bot.core.types import PRIORITY_REPLY, Reply
from bot.delivery.scheduler import JobContext, JobKind, schedule
from bot.delivery.writer import enqueue
from bot.domain.rights import FreedSlot
from bot.domain.tickets import queue
from bot.storage import about as about_people
from bot.storage.models import (
    Contact,
    Job,
    MediaItem,
    Message,
    Outbox,
    Staff,
    Ticket,
    TicketNote,
)

log = logging.getLogger("relais.notify")

NOTICE_GAP = timedelta(minutes=5)
SILENCE = timedelta(hours=2)
NOTICE_JOB = "queue.notice"
REMIND_JOB = "queue.remind"
SILENCE_JOB = "queue.silence"
KIND_NOTICE = "staff.notice"  # batched notices (at most one per NOTICE_GAP)
KIND_URGENT = "staff.urgent"
KIND_STAFF = "staff"  # relays, answers, hand-overs
LINES_PER_NOTICE = 5

Make = Callable[[Translator], str]


# -- reaching staff ----------------------------------------------------------------------------


async def on_duty(session: AsyncSession, exclude: int | None = None) -> list[Staff]:
    query = select(Staff).where(Staff.on_duty.is_(True)).order_by(Staff.id)
    if exclude is not None:
        query = query.where(Staff.id != exclude)
    return list((await session.scalars(query.execution_options(populate_existing=True))).all())


def staff_tz(contact: Contact, settings: Settings) -> str:
    return contact.timezone or settings.timezone


async def tell(
    session: AsyncSession, staff: Staff, now: datetime, make: Make, *,
    kind: str = KIND_STAFF, sink: list[Outbox] | None = None, about: Iterable[int] = (),
) -> Outbox | None:
    """Write one message to a staff member, in their language, on the staff address they
    last used.

    The row is linked to ``about`` and to every person whose ticket this transaction read
    (``bot.storage.about``): erasing one of them deletes it."""
    contact = await queue.staff_contact(session, staff)
    address = await queue.staff_address_of(session, staff, contact)
    if address is None:
        log.warning("staff member %s has no address to be told on", staff.id)
        return None
    text = make(Translator(contact.language))
    return enqueue(session, contact, address, Reply(text), now=now, kind=kind,
                   priority=PRIORITY_REPLY, sink=sink,
                   about=about_people.mentioned(session, about))


# -- words for staff ---------------------------------------------------------------------------


def waited_words(_: Translator, waited: timedelta) -> str:
    minutes = max(0, int(waited.total_seconds() // 60))
    if minutes < 60:
        return _("{minutes} min", minutes=minutes)
    if minutes < 24 * 60:
        return _("{hours} h {minutes}", hours=minutes // 60, minutes=f"{minutes % 60:02d}")
    return _("{days} d", days=minutes // (24 * 60))


def ticket_line(_: Translator, item: queue.TicketInfo, now: datetime) -> str:
    """``#12 URGENT 35 min - Marie (fr, sms): mon dossier CAF...``"""
    ticket = item.ticket
    urgent = _("URGENT") + " " if ticket.priority == "urgent" else ""
    what = item.words
    if what is None:
        label = queue.SOURCE_LABELS.get(ticket.source)
        what = "[" + (_(label) if label else ticket.source) + "]"
    name = item.first_name or "?"
    where = ", ".join(part for part in (ticket.language, ticket.channel) if part)
    return f"#{ticket.id} {urgent}{waited_words(_, item.waited(now))} - {name} ({where}): {what}"


def media_word(_: Translator, content_type: str) -> str:
    if content_type.startswith("image/"):
        return _("a photo")
    if content_type.startswith("audio/"):
        return _("a voice note")
    if content_type.startswith("video/"):
        return _("a video")
    return _("a file")


def clock(_: Translator, moment: datetime, tz: str, now: datetime) -> str:
    zone = ZoneInfo(tz)
    if moment.astimezone(zone).date() == now.astimezone(zone).date():
        return _.datetime(moment, tz, "HH:mm")
    return _.datetime(moment, tz, "dd/MM HH:mm")


async def entry_lines(
    session: AsyncSession, settings: Settings, _: Translator, entries: list[queue.Entry],
    tz: str, now: datetime,
) -> list[str]:
    from bot.domain.media_links import staff_link

    lines = []
    for entry in entries:
        at = clock(_, entry.at, tz, now)
        if entry.kind == "in":
            text = entry.text
            for media_id, content_type in entry.media:
                link = await staff_link(session, settings.base_url, media_id, now, _)
                text = (text + " " if text else "") + f"[{media_word(_, content_type)}] {link}"
            lines.append(f"{at} {entry.who or '?'}: {text}")
        elif entry.kind == "out":
            lines.append(f"{at} > {entry.text}")
        elif entry.kind == "note":
            lines.append(f"{at} " + _("[note] {name}: {text}", name=entry.who or "?",
                                      text=entry.text))
        else:
            lines.append(f"{at} {entry.who or 'Relais'} " + queue.note_text(_, entry.text))
    return lines


async def summary(
    session: AsyncSession, settings: Settings, _: Translator, ticket: Ticket, now: datetime,
    tz: str, first: str,
) -> str:
    """What a mediator needs when a ticket becomes theirs: who, the last messages, notes, a
    booked callback, and how to answer."""
    from bot.core.addresses import show_phone

    item = await queue.info(session, ticket)
    lines = [first, ticket_line(_, item, now)]
    if item.contact.level:
        lines.append(_("Ease with digital tools: {level} of 3.", level=item.contact.level))
    entries = await queue.history(session, ticket)
    talk = [e for e in entries if e.kind in ("in", "out")][-queue.RECENT_MESSAGES:]
    if talk:
        lines.append(_("Last messages:"))
        lines += await entry_lines(session, settings, _, talk, tz, now)
    notes = [e for e in entries if e.kind == "note"]
    if notes:
        lines.append(_("Notes:"))
        lines += await entry_lines(session, settings, _, notes, tz, now)
    slot = await queue.pending_callback(session, ticket.contact_id)
    if slot is not None:
        lines.append(_("Call booked: {when}, at {phone}.",
                       when=_.datetime(slot.start_at, tz, _("EEEE d MMMM 'at' H:mm")),
                       phone=show_phone(slot.phone or "")))
    lines.append(_("Write here to answer. /note {id} TEXT adds a note, /close {id} closes.",
                   id=ticket.id))
    return "\n".join(lines)


# -- new tickets -------------------------------------------------------------------------------


async def ticket_opened(ctx: Context, ticket: Ticket) -> None:
    """A ticket was opened, or became urgent: tell staff (once per ticket and priority in a
    transaction, so callers may call it more than once)."""
    seen: set[tuple[int, str]] = ctx.session.info.setdefault("relais.announced", set())
    key = (ticket.id, ticket.priority)
    if key in seen:
        return
    seen.add(key)
    if ticket.priority == "urgent":
        await urgent(ctx.session, ctx.settings, ctx.now, ticket, sink=ctx.sent)
    else:
        await plan_batches(ctx.session, ctx.settings, ctx.now)
    await plan_remind(ctx.session, ctx.settings, ticket, ctx.now)


async def urgent(session: AsyncSession, settings: Settings, now: datetime, ticket: Ticket,
                 sink: list[Outbox] | None = None) -> int:
    """Every on-duty staff member, at once. Returns how many were told."""
    await session.flush()
    item = await queue.info(session, ticket)
    told = 0
    for staff in await on_duty(session):
        if ticket.mediator_id == staff.id:
            continue  # the holder gets the person's words through the relay

        def make(_: Translator) -> str:
            return "\n".join([
                _("URGENT: a person may be in danger."),
                ticket_line(_, item, now),
                _("To answer: /take {id}", id=ticket.id),
            ])

        if await tell(session, staff, now, make, kind=KIND_URGENT, sink=sink,
                      about=(ticket.contact_id,)):
            told += 1
    return told


async def last_notice(session: AsyncSession, staff: Staff) -> datetime | None:
    return await session.scalar(
        select(func.max(Outbox.created_at))
        .where(Outbox.contact_id == staff.contact_id, Outbox.kind == KIND_NOTICE)
    )


async def plan_batches(session: AsyncSession, settings: Settings, now: datetime,
                       exclude: int | None = None) -> None:
    """Plan each on-duty staff member's next notice: now, or 5 minutes after their last."""
    for staff in await on_duty(session, exclude=exclude):
        last = await last_notice(session, staff)
        due = now if last is None else max(now, last + NOTICE_GAP)
        await schedule(session, NOTICE_JOB, f"staff:{staff.id}", due)


async def plan_remind(session: AsyncSession, settings: Settings, ticket: Ticket,
                      now: datetime) -> None:
    minutes = settings.queue_remind_minutes
    if minutes <= 0:
        return
    await schedule(session, REMIND_JOB, f"ticket:{ticket.id}", now + timedelta(minutes=minutes),
                   about=ticket.contact_id)


async def plan_silence(session: AsyncSession, settings: Settings, ticket: Ticket,
                       at: datetime) -> None:
    await schedule(session, SILENCE_JOB, f"ticket:{ticket.id}", at,
                   about=ticket.contact_id)


def _id(key: str) -> int:
    return int(key.partition(":")[2])


async def _notice_job(jc: JobContext, item: Job) -> None:
    staff = await jc.session.get(Staff, _id(item.key), populate_existing=True)
    if staff is None or not staff.on_duty:
        return
    await send_notice(jc.session, jc.settings, staff, jc.now)


async def send_notice(session: AsyncSession, settings: Settings, staff: Staff,
                      now: datetime) -> Outbox | None:
    """One notice: tickets new since the last one, and those waiting too long."""
    last = await last_notice(session, staff)
    waiting = await queue.list_tickets(session, (queue.OPEN,))
    back: set[int] = set()
    if last is not None and waiting:
        back = set((await session.scalars(
            select(TicketNote.ticket_id).where(
                TicketNote.ticket_id.in_([t.id for t in waiting]),
                TicketNote.body.in_((queue.SYSTEM + "released", queue.SYSTEM + "returned")),
                TicketNote.created_at > last)
        )).all())
    new = [t for t in waiting if t.id in back or (
        t.ticket.priority != "urgent" and (last is None or t.ticket.created_at > last))]
    remind = timedelta(minutes=settings.queue_remind_minutes)
    fresh = {t.id for t in new}
    late = [t for t in waiting if t.id not in fresh and settings.queue_remind_minutes > 0
            and now - t.ticket.created_at >= remind]
    if not new and not late:
        return None

    def make(_: Translator) -> str:
        lines = []
        if new:
            lines.append(_("New in the queue:"))
            lines += [ticket_line(_, t, now) for t in new[:LINES_PER_NOTICE]]
            if len(new) > LINES_PER_NOTICE:
                lines.append(_("and {count} more: /queue", count=len(new) - LINES_PER_NOTICE))
        if late:
            lines.append(_("Waiting for more than {minutes} min: {ids}",
                           minutes=settings.queue_remind_minutes,
                           ids=", ".join(f"#{t.id}" for t in late)))
        lines.append(_("To answer: /take N"))
        return "\n".join(lines)

    return await tell(session, staff, now, make, kind=KIND_NOTICE)


async def _remind_job(jc: JobContext, item: Job) -> None:
    session, now, settings = jc.session, jc.now, jc.settings
    ticket = await session.get(Ticket, _id(item.key), populate_existing=True)
    if ticket is None or ticket.state != queue.OPEN:
        return
    await plan_batches(session, settings, now)
    await plan_remind(session, settings, ticket, now)


# -- a silent mediator -------------------------------------------------------------------------


async def silent_since(session: AsyncSession, ticket: Ticket) -> datetime | None:
    """Since when the person has been waiting for the mediator holding ``ticket``: from
    their first message after the mediator's last answer or note (from the take itself when
    the mediator has not answered yet); None when it is the person's turn."""
    assert ticket.taken_at is not None
    last_out = await session.scalar(
        select(func.max(Outbox.created_at)).where(
            Outbox.ticket_id == ticket.id, Outbox.contact_id == ticket.contact_id,
            Outbox.kind.in_(queue.MEDIATOR_KINDS), Outbox.created_at >= ticket.taken_at)
    )
    last_note = await session.scalar(
        select(func.max(TicketNote.created_at)).where(
            TicketNote.ticket_id == ticket.id,
            TicketNote.staff_id == ticket.mediator_id,
            TicketNote.created_at >= ticket.taken_at)
    )
    if last_out is None:
        return max(ticket.taken_at, last_note or ticket.taken_at)
    last = max(last_out, last_note or last_out)
    return await session.scalar(
        select(func.min(Message.created_at)).where(
            Message.ticket_id == ticket.id, Message.direction == "in",
            Message.created_at > last)
    )


async def _silence_job(jc: JobContext, item: Job) -> None:
    session, now, settings = jc.session, jc.now, jc.settings
    ticket = await session.get(Ticket, _id(item.key), populate_existing=True)
    if ticket is None or ticket.state != queue.TAKEN:
        return
    await queue.citizen_context(session, settings, now, ticket.contact_id)  # lock order
    ticket = await queue.get_ticket(session, ticket.id)
    if ticket.state != queue.TAKEN:
        return
    if ticket.mediator_id is None:
        since: datetime | None = now - SILENCE  # its mediator left the staff: back at once
    else:
        since = await silent_since(session, ticket)
    if since is None:
        return  # the person's turn: their next message plans another check
    if now - since < SILENCE:
        await plan_silence(session, settings, ticket, since + SILENCE)
        return
    holder = await session.get(Staff, ticket.mediator_id) if ticket.mediator_id else None
    ticket.state, ticket.mediator_id, ticket.taken_at = queue.OPEN, None, None
    queue.add_note(session, ticket, None, queue.SYSTEM + "returned", now)
    queue.record_event(session, "ticket.returned", now, ticket)
    await session.flush()
    if holder is not None:
        await tell(session, holder, now, lambda _: _(
            "#{id} is back in the queue: no answer from you for 2 hours.", id=ticket.id),
            about=(ticket.contact_id,))
    await plan_batches(session, settings, now, exclude=holder.id if holder else None)
    await plan_remind(session, settings, ticket, now)


# -- the relay, citizen to mediator ------------------------------------------------------------


async def relay_to_holder(ctx: Context, ticket: Ticket, text: str) -> bool:
    """The person's message (and any photo or voice note, as a signed link) to the mediator
    holding ``ticket``. Returns False when nobody holds it."""
    if ticket.state != queue.TAKEN or ticket.mediator_id is None:
        return False
    holder = await ctx.session.get(Staff, ticket.mediator_id)
    if holder is None:
        return False
    from bot.domain.media_links import media_link

    media: list[tuple[str, str]] = []
    if ctx.message is not None:
        await ctx.session.flush()
        for item in (await ctx.session.scalars(
            select(MediaItem).where(MediaItem.message_id == ctx.message.id)
            .order_by(MediaItem.id)
        )).all():
            link = await media_link(ctx.session, ctx.settings.base_url, item.id, ctx.now)
            media.append((item.content_type, link))
    name = queue.first_name(ctx.contact.name) or "?"
    if ctx.message is not None and ctx.message.body is not None:
        text = ctx.message.body  # as stored: private data masked

    def make(_: Translator) -> str:
        lines = [f"#{ticket.id} {name}: {text}".rstrip()] if text.strip() else []
        for content_type, link in media:
            lines.append(_("#{id} {name} sent {what}: {link}", id=ticket.id, name=name,
                           what=media_word(_, content_type), link=link))
        return "\n".join(lines) or f"#{ticket.id} {name}: ..."

    await tell(ctx.session, holder, ctx.now, make, sink=ctx.sent, about=(ticket.contact_id,))
    await plan_silence(ctx.session, ctx.settings, ticket, ctx.now + SILENCE)
    return True


async def slots_freed(
    session: AsyncSession, settings: Settings, now: datetime, freed: Iterable[FreedSlot]
) -> None:
    """An erased person had booked these callbacks: each mediator learns theirs is free."""
    for slot in freed:
        staff = await session.get(Staff, slot.mediator_id) if slot.mediator_id else None
        if staff is None:
            continue
        contact = await queue.staff_contact(session, staff)
        tz = staff_tz(contact, settings)

        def make(_: Translator, start: datetime = slot.start_at, tz: str = tz) -> str:
            return _("The call on {when} is cancelled: the person asked us to erase their "
                     "data. The slot is free again.",
                     when=_.datetime(start, tz, _("EEEE d MMMM 'at' H:mm")))

        await tell(session, staff, now, make)


async def tell_transferred(
    session: AsyncSession, settings: Settings, now: datetime, ticket: Ticket, by: Staff,
    target: Staff, sink: list[Outbox] | None = None,
) -> None:
    contact = await queue.staff_contact(session, target)
    _ = Translator(contact.language)
    text = await summary(session, settings, _, ticket, now, staff_tz(contact, settings),
                         _("{name} passed you #{id}.", name=by.name, id=ticket.id))
    await tell(session, target, now, lambda _t: text, sink=sink, about=(ticket.contact_id,))


JOBS = (
    JobKind(NOTICE_JOB, _notice_job),
    JobKind(REMIND_JOB, _remind_job),
    JobKind(SILENCE_JOB, _silence_job),
)
