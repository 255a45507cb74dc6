"""Phone callbacks: choose a free slot, confirm the number to call, get reminders; see, move or
cancel the booking (menu, ANNULER, DÉPLACER); be told when staff cancel or a call did not
reach the person, with other times offered.

Slot rules (free slots, the booking race, reminder times) live in ``bot.domain.slots``; this module
only talks. Times are shown in the person's own time zone with a date pattern that the
catalogs hold, so translators control it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation.context import (
    STAY,
    Context,
    Flow,
    Machine,
    MenuItem,
    Next,
    State,
    choice,
    enter_state,
    person_context,
)
from bot.conversation.context import goto as base_goto
from bot.core.addresses import PHONE_CHANNELS, AddressError, normalise_phone, show_phone
from bot.core.clock import minute_floor
from bot.core.config import Settings
from bot.core.i18n import N_
from bot.core.types import Choice, Reply
from bot.delivery.quiet import may_send_proactive, next_allowed
from bot.delivery.scheduler import JobContext, JobKind, schedule
from bot.domain import slots
from bot.flows.escalation import request_human
from bot.storage.models import Contact, Job, Slot

# Date patterns (Babel/CLDR), translated in the catalogs: fr "EEEE d MMMM 'à' H'h'mm" gives
# "mardi 5 mars à 9h30".
WHEN = N_("EEEE d MMMM 'at' H:mm")
TIME = N_("H:mm")

REMIND_EVENING = "callback.remind_evening"
REMIND_HOUR = "callback.remind_hour"
NOTICE = "callback.notice"

# Conversation data keys.
SLOT = "cb_slot"  # the slot chosen, until it is booked
MOVING = "cb_moving"  # the booked slot being moved
BAD_NUMBERS = "cb_bad_numbers"


# -- how things are written --------------------------------------------------------------------


def tz_of(contact: Contact, settings: Settings) -> str:
    return contact.timezone or settings.timezone


def when(ctx: Context, moment: datetime) -> str:
    _ = ctx._
    return _.datetime(moment, tz_of(ctx.contact, ctx.settings), _(WHEN))


def clock_time(ctx: Context, moment: datetime) -> str:
    _ = ctx._
    return _.datetime(moment, tz_of(ctx.contact, ctx.settings), _(TIME))


def _yes_no(yes: str, no: str) -> tuple[Choice, ...]:
    return (
        choice("yes", yes, "oui", "yes", "ok", "o"),
        choice("no", no, "non", "no", "n"),
    )


def _how_to_change(ctx: Context) -> str:
    return ctx._("To cancel, send CANCEL CALL. To change the time, send MOVE.")


def _will_call(ctx: Context, slot: Slot) -> str:
    return ctx._("A mediator of {org} will call you on {when}, at {phone}.", org=ctx.org,
                 when=when(ctx, slot.start_at), phone=show_phone(slot.phone or ""))


# -- entering from the menu and from keywords --------------------------------------------------


async def from_menu(ctx: Context) -> Next:
    ctx.remember(**{MOVING: None, SLOT: None})
    return "callbacks.offer"


MENU_ITEM = MenuItem("callback", N_("Be called back"), ("rappel", "appel", "call", "callback"),
                  from_menu)


async def cancel_keyword(ctx: Context) -> Next:
    """ANNULER: cancel the booked callback (after a yes)."""
    if await slots.booking_of(ctx.session, ctx.contact.id) is None:
        ctx.say(ctx._("You have no phone appointment booked."))
        return "menu.main"
    return "callbacks.cancel"


async def move_keyword(ctx: Context) -> Next:
    """DÉPLACER: choose another time; the booking is kept until a new one is made."""
    booking = await slots.booking_of(ctx.session, ctx.contact.id)
    if booking is None:
        ctx.say(ctx._("You have no phone appointment booked."))
        return "menu.main"
    ctx.remember(**{MOVING: booking.id, SLOT: None})
    return "callbacks.offer"


# -- choosing a time ---------------------------------------------------------------------------


def _moving(ctx: Context, booking: Slot | None) -> bool:
    moving = ctx.recall(MOVING)
    if moving is not None and (booking is None or booking.id != moving):
        ctx.remember(**{MOVING: None})
        return False
    return moving is not None


async def offer(ctx: Context) -> Next:
    _ = ctx._
    booking = await slots.booking_of(ctx.session, ctx.contact.id)
    moving = _moving(ctx, booking)
    if booking is not None and not moving:
        return "callbacks.manage"
    free = await slots.free_slots(ctx.session, ctx.now)
    if not free:
        if booking is not None:
            ctx.say(_("No other time is free right now. Your call on {when} is kept.",
                      when=when(ctx, booking.start_at)))
            ctx.remember(**{MOVING: None})
            return "menu.main!quiet"
        return "callbacks.none"
    text = _("Choose a new time for your call.") if moving else _(
        "When can we call you? Choose a time."
    )
    choices = [choice(f"slot{slot.id}", when(ctx, slot.start_at)) for slot in free]
    choices.append(choice("other", _("None of these times"), "aucun", "none"))
    ctx.ask(Reply(text, tuple(choices)))
    return None


async def offer_chosen(ctx: Context, choice_id: str) -> Next:
    if choice_id == "other":
        return await leave_message(ctx)
    slot_id = int(choice_id.removeprefix("slot"))
    slot = await slots.get_slot(ctx.session, slot_id)
    if slot is None or slot.status != slots.OPEN or slot.start_at <= ctx.now:
        return _taken(ctx)
    ctx.remember(**{SLOT: slot_id, BAD_NUMBERS: 0})
    return "callbacks.number" if await _known_phone(ctx) else "callbacks.ask_number"


def _taken(ctx: Context) -> Next:
    ctx.say(ctx._("Sorry, this time was just taken by someone else."))
    ctx.remember(**{SLOT: None})
    return "callbacks.offer"


# -- the number to call ------------------------------------------------------------------------


async def _known_phone(ctx: Context) -> str | None:
    """Their SMS/WhatsApp number, else the number they gave last time."""
    if ctx.address is not None and ctx.address.channel in PHONE_CHANNELS:
        return ctx.address.external_id
    return await slots.last_phone(ctx.session, ctx.contact.id)


async def confirm_number(ctx: Context) -> Next:
    _ = ctx._
    phone = await _known_phone(ctx)
    if phone is None:
        return "callbacks.ask_number"
    ctx.ask(Reply(
        _("We will call you at {phone}. Is this the right number?", phone=show_phone(phone)),
        (choice("yes", _("Yes"), "oui", "yes", "ok"),
         choice("other", _("Another number"), "autre", "non", "no", "other")),
    ))
    return None


async def number_confirmed(ctx: Context, choice_id: str) -> Next:
    if choice_id == "other":
        return "callbacks.ask_number"
    phone = await _known_phone(ctx)
    if phone is None:
        return "callbacks.ask_number"
    return await _book(ctx, phone)


async def number_typed(ctx: Context, text: str) -> Next:
    """A number written instead of "1"/"2" at the confirmation: that is the one to call."""
    try:
        phone = normalise_phone(text)
    except AddressError:
        return None
    return await _book(ctx, phone)


async def ask_number(ctx: Context) -> Next:
    ctx.ask(Reply(ctx._("What number should we call? For example: 06 12 34 56 78")))
    return None


async def number_given(ctx: Context, text: str) -> Next:
    try:
        phone = normalise_phone(text)
    except AddressError:
        bad = int(ctx.recall(BAD_NUMBERS, 0) or 0) + 1
        ctx.remember(**{BAD_NUMBERS: bad})
        if bad >= 3:
            return None  # the engine's "not understood", then the offer of a person
        ctx.say(ctx._("This number does not look right. Write it like this: 06 12 34 56 78"))
        return STAY
    return await _book(ctx, phone)


# -- booking -----------------------------------------------------------------------------------


async def _book(ctx: Context, phone: str) -> Next:
    _ = ctx._
    slot_id = ctx.recall(SLOT)
    if slot_id is None:
        return "callbacks.offer"
    booking = await slots.booking_of(ctx.session, ctx.contact.id)
    moving = _moving(ctx, booking)
    if booking is not None and not moving:
        ctx.remember(**{SLOT: None})
        return "callbacks.manage"  # one booking per person at a time
    if not await slots.book(ctx.session, int(slot_id), ctx.contact.id, phone, ctx.now):
        return _taken(ctx)
    slot = await slots.get_slot(ctx.session, int(slot_id))
    assert slot is not None
    if moving and booking is not None:
        await slots.release(ctx.session, booking)
        ctx.event("callback.moved")
    else:
        ctx.event("callback.booked")
    await schedule_reminders(ctx.session, ctx.settings, slot, tz_of(ctx.contact, ctx.settings),
                             ctx.now)
    ctx.remember(**{SLOT: None, MOVING: None, BAD_NUMBERS: 0})
    ctx.say(_("It is booked!") + " " + _will_call(ctx, slot))
    ctx.say(_how_to_change(ctx))
    return "menu.main!quiet"


# -- an existing booking: see, move, cancel ----------------------------------------------------


async def manage(ctx: Context) -> Next:
    _ = ctx._
    if await slots.booking_of(ctx.session, ctx.contact.id) is None:
        return "callbacks.offer"
    ctx.ask(Reply(
        _("You already have a phone appointment. What do you want to do?"),
        (choice("see", _("See it"), "voir", "see"),
         choice("move", _("Change the time"), "changer", "change"),
         choice("cancel", _("Cancel it"), "annuler")),
    ))
    return None


async def manage_chosen(ctx: Context, choice_id: str) -> Next:
    if choice_id == "move":
        return await move_keyword(ctx)
    if choice_id == "cancel":
        return await cancel_keyword(ctx)
    booking = await slots.booking_of(ctx.session, ctx.contact.id)
    if booking is None:
        return "callbacks.offer"
    ctx.say(_will_call(ctx, booking))
    ctx.say(_how_to_change(ctx))
    return "menu.main!quiet"


async def ask_cancel(ctx: Context) -> Next:
    _ = ctx._
    booking = await slots.booking_of(ctx.session, ctx.contact.id)
    if booking is None:
        ctx.say(_("You have no phone appointment booked."))
        return "menu.main"
    ctx.ask(Reply(_("Cancel your call on {when}?", when=when(ctx, booking.start_at)),
                  _yes_no(_("Yes, cancel it"), _("No, keep it"))))
    return None


async def cancel_answered(ctx: Context, choice_id: str) -> Next:
    _ = ctx._
    booking = await slots.booking_of(ctx.session, ctx.contact.id)
    if choice_id != "yes" or booking is None:
        if booking is not None:
            ctx.say(_("Your call is kept."))
        return "menu.main!quiet"
    await slots.release(ctx.session, booking)
    ctx.event("callback.cancelled", by="person")
    ctx.say(_("Your call is cancelled. To choose another time, send MENU."))
    return "menu.main!quiet"


# -- nothing free: a message for a mediator instead --------------------------------------------


async def nothing_free(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(
        _("No time is free for a call right now. Do you want to leave a message "
          "for a mediator?"),
        _yes_no(_("Yes"), _("No")),
    ))
    return None


async def nothing_free_answered(ctx: Context, choice_id: str) -> Next:
    if choice_id == "yes":
        return await leave_message(ctx)
    return "menu.main"


async def leave_message(ctx: Context) -> Next:
    nxt = await request_human(ctx, source="callback")
    ticket = await ctx.open_ticket_of()
    if ticket is not None and ticket.topic is None:
        ticket.topic = "callback"
    return nxt


FLOW = (
    Flow(
        "callbacks",
        {
            "offer": State(enter=offer, on_choice=offer_chosen),
            "number": State(enter=confirm_number, on_choice=number_confirmed,
                            on_text=number_typed),
            "ask_number": State(enter=ask_number, on_text=number_given),
            "manage": State(enter=manage, on_choice=manage_chosen),
            "cancel": State(enter=ask_cancel, on_choice=cancel_answered),
            "none": State(enter=nothing_free, on_choice=nothing_free_answered),
        },
    )
)


# -- outside a conversation: reminders and notices ---------------------------------------------


async def schedule_reminders(
    session: AsyncSession, settings: Settings, slot: Slot, tz: str, now: datetime
) -> None:
    due = slots.reminders_due(slot.start_at, tz, settings.quiet, now)
    payload: dict[str, Any] = {}
    if "evening" in due:
        await schedule(session, REMIND_EVENING, str(slot.id), due["evening"], payload,
                       about=slot.contact_id)
    if "hour" in due:
        await schedule(session, REMIND_HOUR, str(slot.id), due["hour"], payload,
                       about=slot.contact_id)


async def context_for(
    session: AsyncSession, settings: Settings, now: datetime, contact_id: int,
    machine: Machine | None = None,
) -> Context | None:
    """A flow context to speak to a person first (no inbound message)."""
    return await person_context(session, settings, now, contact_id, machine=machine)


async def goto(ctx: Context, target: Next) -> None:
    """Enter a state outside an inbound event, as a fresh question (nothing misunderstood)."""
    enter_state(ctx, f"{ctx.conversation.flow}.{ctx.conversation.state}", fresh=True)
    await base_goto(ctx, target)


async def _finish(ctx: Context) -> None:
    ctx.flush()
    ctx.conversation.updated_at = ctx.now
    await ctx.session.flush()


async def tell_slot_lost(
    session: AsyncSession, settings: Settings, now: datetime, slot: Slot, reason: str,
    *, machine: Machine,
) -> bool:
    """Tell the person their call will not happen (``cancelled`` by staff, or ``no_answer``)
    and offer other times. Sent now unless it is their quiet hours (then planned for the end
    of them). Returns True when sent now."""
    if slot.contact_id is None:
        return False
    contact = await session.get(Contact, slot.contact_id)
    if contact is None:
        return False
    tz = tz_of(contact, settings)
    if not may_send_proactive(settings, tz, now, contact.last_inbound_at):
        payload = {"reason": reason,
                   "contact_id": slot.contact_id, "start_at": slot.start_at.isoformat()}
        await schedule(session, NOTICE, str(slot.id), next_allowed(settings.quiet, tz, now),
                       payload, about=slot.contact_id)
        return False
    await _notice(session, settings, now, slot.contact_id, slot.start_at, reason, machine)
    return True


async def _notice(
    session: AsyncSession, settings: Settings, now: datetime, contact_id: int,
    start_at: datetime, reason: str, machine: Machine,
) -> None:
    ctx = await context_for(session, settings, now, contact_id, machine)
    if ctx is None:
        return
    _ = ctx._
    if reason == "no_answer":
        ctx.say(_("We tried to call you, but we could not reach you. Let's find another time."))
    else:
        ctx.say(_("We are sorry: we have to cancel your call on {when}.",
                  when=when(ctx, start_at)))
    ctx.remember(**{MOVING: None, SLOT: None})
    await goto(ctx, "callbacks.offer")
    await _finish(ctx)


async def _notice_job(jc: JobContext, item: Job) -> None:
    session, now, settings, payload = jc.session, jc.now, jc.settings, item.payload
    contact_id = int(payload["contact_id"])
    if await slots.booking_of(session, contact_id) is not None:
        return  # they booked again meanwhile: nothing to offer
    start_at = datetime.fromisoformat(str(payload["start_at"]))
    await _notice(session, settings, now, contact_id, start_at, str(payload["reason"]),
                  jc.machine)


async def _booked_context(jc: JobContext, item: Job) -> tuple[Context, Slot] | None:
    slot = await slots.get_slot(jc.session, int(item.key))
    if slot is None or slot.status != slots.BOOKED or slot.contact_id is None:
        return None
    ctx = await context_for(jc.session, jc.settings, jc.now, slot.contact_id, jc.machine)
    return None if ctx is None else (ctx, slot)


def _local_date(moment: datetime, tz: str) -> date:
    return moment.astimezone(ZoneInfo(tz)).date()


async def _remind_evening(jc: JobContext, item: Job) -> None:
    now = jc.now
    found = await _booked_context(jc, item)
    if found is None:
        return
    ctx, slot = found
    tz = tz_of(ctx.contact, ctx.settings)
    due = slots.evening_reminder_at(slot.start_at, tz, ctx.settings.quiet)
    if due is None or minute_floor(due) != item.due_at:
        return  # planned for a booking that has changed since
    if _local_date(now, tz) != _local_date(due, tz):
        return  # too late to say "tomorrow": the hour-before reminder will go
    if not may_send_proactive(ctx.settings, tz, now, ctx.contact.last_inbound_at):
        return  # late, and now quiet: the hour-before reminder will go
    _ = ctx._
    ctx.say(_("Reminder: tomorrow at {time}, a mediator of {org} will call you at {phone}.",
              time=clock_time(ctx, slot.start_at), org=ctx.org,
              phone=show_phone(slot.phone or "")), kind="reminder")
    ctx.say(_how_to_change(ctx), kind="reminder")
    ctx.event("callback.reminded", when="evening")
    await _finish(ctx)


async def _remind_hour(jc: JobContext, item: Job) -> None:
    found = await _booked_context(jc, item)
    if found is None:
        return
    ctx, slot = found
    if minute_floor(slots.hour_reminder_at(slot.start_at)) != item.due_at:
        return
    _ = ctx._
    # Always sent, quiet hours or not: the person booked this call.
    ctx.say(_("In one hour, at {time}, a mediator of {org} will call you at {phone}.",
              time=clock_time(ctx, slot.start_at), org=ctx.org,
              phone=show_phone(slot.phone or "")), kind="reminder.hour")
    ctx.event("callback.reminded", when="hour")
    await _finish(ctx)


JOBS = (
    JobKind(NOTICE, _notice_job),
    JobKind(REMIND_EVENING, _remind_evening),
    JobKind(REMIND_HOUR, _remind_hour),
)
