"""Staff commands from a chat, on every channel: a message from an address whose contact has
a ``staff`` row comes here, never into citizen flows (a citizen who types ``/queue`` is just a
citizen: staff powers come only from ``relais staff add``).

``/queue [page]``, ``/take N``, ``/reply N text``, ``/urgent N text`` (sent now even in
the person's quiet hours, urgent tickets only), a plain message (relayed to the one ticket
the mediator holds; ``#N text`` when they hold several), ``/note N text``, ``/release N``,
``/close N [outcome]``, ``/transfer N ADDRESS``, ``/history N``, ``/callbacks``, ``/done ID
reached|no-answer``, ``/on``, ``/off``, ``/help``; French aliases (``/file``, ``/prendre``…);
``/cmd@botname`` as Telegram sends it in groups. Unknown commands get the help. Answers are
in the staff member's language (French unless set otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select

from bot.conversation.choices import fold
from bot.conversation.context import Context
from bot.core.addresses import AddressError
from bot.core.hours import HOUR_MINUTES
from bot.core.i18n import Translator
from bot.domain import staff_sms
from bot.domain.tickets import commands, notify, outcomes, queue
from bot.storage import about, counters
from bot.storage.models import Message, MessageAbout, Slot, Staff, StaffAddress, Ticket

ALIASES = {
    "queue": "queue", "file": "queue", "q": "queue", "list": "queue",
    "take": "take", "prendre": "take",
    "reply": "reply", "repondre": "reply", "r": "reply",
    "urgent": "urgent",
    "note": "note",
    "release": "release", "liberer": "release",
    "transfer": "transfer", "transferer": "transfer",
    "close": "close", "fermer": "close",
    "history": "history", "historique": "history",
    "callbacks": "callbacks", "rappels": "callbacks",
    "done": "done", "fait": "done",
    "on": "on", "off": "off",
    "help": "help", "aide": "help", "start": "help", "commandes": "help",
}
OUTCOMES = {
    "reached": "reached", "joint": "reached", "ok": "reached", "oui": "reached",
    "yes": "reached",
    "no-answer": "no-answer", "noanswer": "no-answer", "no_answer": "no-answer",
    "absent": "no-answer", "injoignable": "no-answer", "non": "no-answer", "no": "no-answer",
    "pas-joint": "no-answer",
}
PAGE_SMS = 5
PAGE_OTHER = 10
_HASH = re.compile(r"^#(\d{1,12})\s*(.*)$", re.DOTALL)

Command = Callable[[Context, Staff, str], Awaitable[None]]


# -- the hook ---------------------------------------------------------------------------------


async def hook(ctx: Context) -> bool:
    if ctx.inbound is None or ctx.address is None:
        return False
    from bot.domain.staff import directory_for

    text = (ctx.message.body if ctx.message is not None else None) or ctx.inbound.text or ""
    # The registry from memory: one primary-key read of its version per event.
    directory = directory_for(ctx.session)
    await directory.load(ctx.session)
    counters.known_staff(ctx.session, ctx.contact.id,
                         directory.is_staff_contact(ctx.contact.id))
    entry = directory.at(ctx.address.channel, ctx.address.external_id)
    staff = await ctx.session.get(Staff, entry.staff_id) if entry else None
    registered: StaffAddress | None = None
    if staff is not None and entry is not None and ctx.address.channel == "sms":
        registered = await ctx.session.get(StaffAddress, entry.staff_address_id)
        if registered is None:  # removed since the registry was read: no powers
            staff = None
    if staff is None:  # powers come only from the exact addresses registered
        if parse(text)[0] not in (None, "unknown") and directory.is_staff_contact(
            ctx.contact.id
        ):
            ctx.say(ctx._("This address has no staff powers. On the server, run: relais "
                          "staff add {address} --name NAME --role ROLE",
                          address=ctx.address.address), force=True)
            return True
        return False
    ctx.conversation.misunderstood = 0
    ctx.staff_side = True
    if ctx.address.channel == "sms":
        assert registered is not None
        opened = await sms_gate(ctx, registered)
        if opened is None:
            return True
        text = opened
    await handle(ctx, staff, text)
    if ctx.message is not None:  # a reply or a note quotes the person: erased with them
        people = about.mentioned(ctx.session) - {ctx.contact.id}
        ctx.session.add_all(MessageAbout(message_id=ctx.message.id, contact_id=cid)
                            for cid in sorted(people))
    return True


async def sms_gate(ctx: Context, registered: StaffAddress) -> str | None:
    """The staff text to run now, or None when the SMS session is not open (the code asked
    for, confirmed with nothing waiting, wrong, or staff powers off by SMS)."""
    _ = ctx._
    decision = await staff_sms.check(
        ctx.session, registered, mode=ctx.settings.staff_sms,
        hours=ctx.settings.staff_sms_session_hours, now=ctx.now, code=ctx.sms_code,
        message_id=ctx.message.id if ctx.message is not None else None,
    )
    text = (ctx.message.body if ctx.message is not None else None) or ""
    if decision.gate is staff_sms.Gate.OPEN:
        return text
    if decision.gate is staff_sms.Gate.OFF:
        say(ctx, _("Staff commands do not work by SMS here. Use WhatsApp, Telegram or the "
                   "console."))
        return None
    if decision.gate is staff_sms.Gate.CHALLENGED:
        assert decision.code is not None
        ctx.say(_("To check it is you, send back this code: {code}. It works for 10 minutes.",
                  code=decision.code), kind="staff.code", force=True)
        return None
    if decision.gate is staff_sms.Gate.WRONG:
        say(ctx, _("Wrong or expired code. Send your message again to get a new code."))
        return None
    assert decision.until is not None
    until = decision.until.astimezone(ZoneInfo(tz(ctx)))
    ctx.say(_("Thank you, it is you. Staff commands by SMS work until {time}.",
              time=until.strftime("%H:%M")), kind="staff.session", force=True)
    if decision.pending_message_id is None:
        return None
    waiting = await ctx.session.get(Message, decision.pending_message_id)
    return waiting.body if waiting is not None and waiting.body else None


def parse(text: str) -> tuple[str | None, str]:
    """``("take", "12")`` for "/prendre@relais_bot 12"; ``(None, text)`` for plain text;
    ``("unknown", …)`` for an unknown command."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None, stripped
    word, _sep, rest = stripped[1:].partition(" ")
    if "\n" in word:
        word, _sep2, more = word.partition("\n")
        rest = more + (" " + rest if rest else "")
    name = fold(word.split("@", 1)[0])
    return ALIASES.get(name, "unknown"), rest.strip()


async def handle(ctx: Context, staff: Staff, text: str) -> None:
    command, rest = parse(text)
    if command is None:
        match = _HASH.match(rest)
        if match:
            await reply_to(ctx, staff, int(match.group(1)), match.group(2), confirm=False)
        elif rest:
            await plain(ctx, staff, rest)
        elif ctx.inbound is not None and ctx.inbound.media:
            say(ctx, ctx._("Only text can be passed on to the person. Write your message."))
        else:
            await show_help(ctx, staff, "")
        return
    await COMMANDS.get(command, show_help)(ctx, staff, rest)


def say(ctx: Context, text: str) -> None:
    ctx.say(text, force=True)  # they just wrote from this address: always answer staff


def tz(ctx: Context) -> str:
    return ctx.contact.timezone or ctx.settings.timezone


def error_text(_: Translator, error: queue.QueueError) -> str:
    number = error.ticket_id
    if error.code == "not_found":
        return _("There is no ticket #{id}.", id=number)
    if error.code == "closed":
        return _("#{id} is closed.", id=number)
    if error.code == "taken":
        return _("#{id} was already taken by {name}.", id=number,
                 name=error.by.name if error.by else "?")
    if error.code == "not_yours":
        return _("#{id} is held by {name}.", id=number, name=error.by.name if error.by else "?")
    if error.code == "empty":
        return _("Write the text after the number, like this: /reply {id} your text",
                 id=number)
    if error.code == "outcome":  # none given, or not one of the list: show the list
        return "\n".join([_("How did #{id} end? Send /close {id} and a number:", id=number),
                          outcomes.choices(_),
                          _("Text after the number is kept as a note on the ticket.")])
    if error.code == "not_urgent":
        return _("#{id} is not urgent: /urgent is only for urgent requests. Nothing was sent."
                 " /reply {id} TEXT sends it when their quiet hours end.", id=number)
    return str(error)


def _number(ctx: Context, rest: str, example: str) -> tuple[int | None, str]:
    head, _sep, tail = rest.partition(" ")
    number = queue.ticket_number(head)
    if number is None:
        say(ctx, ctx._("Which ticket? For example: {example}", example=example))
    return number, tail.strip()


def _warn_undelivered(ctx: Context, done: commands.Done) -> None:
    if not done.delivered:
        say(ctx, ctx._("Careful: this person cannot get messages now (STOP, or blocked)."))


# -- reading the queue --------------------------------------------------------------------------


async def show_queue(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    per = PAGE_SMS if ctx.address is not None and ctx.address.channel == "sms" else PAGE_OTHER
    items = await queue.list_tickets(ctx.session, (queue.OPEN,))
    mine = await queue.held_by(ctx.session, staff)
    page = queue.ticket_number(rest.strip()) or 1 if rest.strip() else 1
    pages = max(1, -(-len(items) // per))
    page = min(max(page, 1), pages)
    if not items:
        lines = [_("Nobody is waiting.")]
    elif pages > 1:
        lines = [_("Waiting: {count} (page {page} of {pages})", count=len(items), page=page,
                   pages=pages)]
    else:
        lines = [_("Waiting: {count}", count=len(items))]
    lines += [notify.ticket_line(_, item, ctx.now)
              for item in items[(page - 1) * per:page * per]]
    if page < pages:
        lines.append(_("Next page: /queue {page}", page=page + 1))
    if mine:
        lines.append(_("Yours: {ids}", ids=", ".join(f"#{t.id}" for t in mine)))
    if items:
        lines.append(_("To answer: /take N"))
    say(ctx, "\n".join(lines))


async def show_history(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    number, _tail = _number(ctx, rest, "/history 12")
    if number is None:
        return
    try:
        ticket = await queue.get_ticket(ctx.session, number)
    except queue.QueueError as error:
        say(ctx, error_text(_, error))
        return
    item = await queue.info(ctx.session, ticket)
    entries = await queue.history(ctx.session, ticket)
    lines = [_("History of #{id}:", id=number), notify.ticket_line(_, item, ctx.now)]
    lines += await notify.entry_lines(ctx.session, ctx.settings, _, entries, tz(ctx), ctx.now)
    if ticket.state == queue.CLOSED and ticket.outcome:
        lines.append(_("Outcome: {outcome}", outcome=outcomes.label(_, ticket.outcome)))
    say(ctx, "\n".join(lines))


# -- acting on tickets --------------------------------------------------------------------------


async def take(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    number, _tail = _number(ctx, rest, "/take 12")
    if number is None:
        return
    try:
        done = await commands.take(ctx.session, ctx.settings, ctx.now, number, staff)
    except queue.QueueError as error:
        say(ctx, error_text(_, error))
        return
    ctx.sent.extend(done.sent)
    first = (_("#{id} is already yours.", id=number) if done.already
             else _("#{id} is yours.", id=number))
    say(ctx, await notify.summary(ctx.session, ctx.settings, _, done.ticket, ctx.now, tz(ctx),
                                  first))
    _warn_undelivered(ctx, done)


async def reply_to(ctx: Context, staff: Staff, number: int, text: str, confirm: bool,
                   urgent: bool = False) -> None:
    _ = ctx._
    try:
        done = await commands.reply(ctx.session, ctx.settings, ctx.now, number, staff, text,
                                 urgent=urgent)
    except queue.QueueError as error:
        say(ctx, error_text(_, error))
        return
    ctx.sent.extend(done.sent)
    if done.took:
        say(ctx, _("#{id} is yours now: /history {id} shows what they wrote.", id=number))
    if not done.delivered:
        _warn_undelivered(ctx, done)
    elif done.held_until is not None:
        say(ctx, held_text(ctx, done.ticket, done.held_until))
    elif confirm:
        say(ctx, _("Sent to #{id}.", id=number))


def held_text(ctx: Context, ticket: Ticket, when: datetime) -> str:
    """"Message pour #12 envoyé demain à 09:00 (heures calmes)." in the mediator's clock;
    for an urgent ticket, how to send it now."""
    _ = ctx._
    zone = ZoneInfo(tz(ctx))
    day, today = when.astimezone(zone).date(), ctx.now.astimezone(zone).date()
    time = _.datetime(when, tz(ctx), "HH:mm")
    if day == today:
        text = _("Message for #{id} will be sent today at {time} (quiet hours).",
                 id=ticket.id, time=time)
    elif day == today + timedelta(days=1):
        text = _("Message for #{id} will be sent tomorrow at {time} (quiet hours).",
                 id=ticket.id, time=time)
    else:
        text = _("Message for #{id} will be sent on {date} at {time} (quiet hours).",
                 id=ticket.id, date=_.datetime(when, tz(ctx), "dd/MM"), time=time)
    if ticket.priority == "urgent":
        text += " " + _("If it is urgent: /urgent {id} TEXT", id=ticket.id)
    return text


async def reply(ctx: Context, staff: Staff, rest: str) -> None:
    number, text = _number(ctx, rest, "/reply 12 Hello")
    if number is not None:
        await reply_to(ctx, staff, number, text, confirm=True)


async def urgent(ctx: Context, staff: Staff, rest: str) -> None:
    """``/urgent N TEXT``: like ``/reply``, sent now even in the person's quiet hours (an
    urgent ticket only)."""
    number, text = _number(ctx, rest, "/urgent 12 Hello")
    if number is not None:
        await reply_to(ctx, staff, number, text, confirm=True, urgent=True)


async def plain(ctx: Context, staff: Staff, text: str) -> None:
    _ = ctx._
    held = await queue.held_by(ctx.session, staff)
    if len(held) == 1:
        await reply_to(ctx, staff, held[0].id, text, confirm=False)
    elif not held:
        say(ctx, _("You hold no ticket, so this was not sent. /queue shows who is waiting, "
                   "/help the commands."))
    else:
        ids = ", ".join(f"#{t.id}" for t in held)
        say(ctx, _("You hold {ids}. Start with the number, like this: #{id} your text",
                   ids=ids, id=held[0].id))


async def add_note(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    number, text = _number(ctx, rest, "/note 12 text")
    if number is None:
        return
    try:
        await commands.note(ctx.session, ctx.now, number, staff, text)
    except queue.QueueError as error:
        if error.code == "empty":
            say(ctx, _("Write the note after the number, like this: /note {id} text",
                       id=number))
        else:
            say(ctx, error_text(_, error))
        return
    say(ctx, _("Note added to #{id}. The person does not see it.", id=number))


async def release(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    number, _tail = _number(ctx, rest, "/release 12")
    if number is None:
        return
    try:
        done = await commands.release(ctx.session, ctx.settings, ctx.now, number, staff)
    except queue.QueueError as error:
        say(ctx, error_text(_, error))
        return
    say(ctx, _("#{id} was not taken.", id=number) if done.already
        else _("#{id} is back in the queue.", id=number))


async def close(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    number, text = _number(ctx, rest, "/close 12 1")
    if number is None:
        return
    outcome, note = outcomes.split(text)  # "2 dossier envoye": referred, and a note
    try:
        done = await commands.close(ctx.session, ctx.settings, ctx.now, number, staff, outcome,
                                 note)
    except queue.QueueError as error:
        say(ctx, error_text(_, error))
        return
    ctx.sent.extend(done.sent)
    say(ctx, _("#{id} was already closed.", id=number) if done.already
        else _("#{id} is closed. Thank you!", id=number))


async def transfer(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    number, address = _number(ctx, rest, "/transfer 12 sms:+33612345678")
    if number is None:
        return
    if not address:
        say(ctx, _("To whom? For example: /transfer {id} sms:+33612345678", id=number))
        return
    from bot.domain.staff import find_staff

    try:
        target = await find_staff(ctx.session, address)
    except AddressError:
        target = None
    if target is None:
        say(ctx, _("{address} is not a staff member.", address=address))
        return
    try:
        done = await commands.transfer(ctx.session, ctx.settings, ctx.now, number, staff, target)
    except queue.QueueError as error:
        say(ctx, error_text(_, error))
        return
    ctx.sent.extend(done.sent)
    lines = [_("#{id} already belongs to {name}.", id=number, name=target.name) if done.already
             else _("#{id} passed to {name}.", id=number, name=target.name)]
    if not target.on_duty:
        lines.append(_("{name} is off duty: they will see it when back.", name=target.name))
    say(ctx, "\n".join(lines))


# -- callbacks ----------------------------------------------------------------------------------


async def callbacks(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    zone = ZoneInfo(tz(ctx))
    start = ctx.now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    rows = (await ctx.session.scalars(
        select(Slot).where(
            Slot.start_at >= start, Slot.start_at < end,
            or_(Slot.mediator_id == staff.id, Slot.mediator_id.is_(None)),
            Slot.status.in_(("booked", "done")),
        ).order_by(Slot.start_at, Slot.id)
    )).all()
    if not rows:
        say(ctx, _("No calls for you today."))
        return
    from bot.core.addresses import show_phone
    from bot.storage.models import Contact

    lines = [_("Your calls today:")]
    for slot in rows:
        person = await ctx.session.get(Contact, slot.contact_id) if slot.contact_id else None
        name = queue.first_name(person.name if person else None) or "?"
        when = _.datetime(slot.start_at, tz(ctx), _(HOUR_MINUTES))
        state = ""
        if slot.status == "done":
            state = " - " + (_("reached") if slot.outcome == "reached" else _("no answer"))
        elif slot.mediator_id is None:
            state = " - " + _("anyone")
        lines.append(f"{slot.id}: {when} {name} {show_phone(slot.phone or '')}{state}")
    lines.append(_("After the call: /done ID reached, or /done ID no-answer"))
    say(ctx, "\n".join(lines))


async def done(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    parts = rest.split()
    outcome = OUTCOMES.get(fold(parts[1])) if len(parts) >= 2 else None
    if not parts or not parts[0].isdigit() or outcome is None:
        say(ctx, _("For example: /done 5 reached, or /done 5 no-answer"))
        return
    slot_id = int(parts[0])
    from bot.domain import slots
    from bot.storage import events

    try:  # the slot's mediator or a coordinator, once the call has begun (bot.domain.slots)
        slot = await slots.record_outcome(ctx.session, slot_id, outcome, now=ctx.now,
                                          staff=staff)
    except slots.NotYours as refused:
        name = refused.mediator.name if refused.mediator is not None else "?"
        say(ctx, _("Call {id} belongs to {name}: only they or a coordinator can mark it.",
                   id=slot_id, name=name))
        return
    except slots.NotStarted:
        say(ctx, _("Call {id} has not started yet: mark it after the call.", id=slot_id))
        return
    except (LookupError, ValueError, slots.SlotError):
        say(ctx, _("Call {id} cannot be marked: it is not a booked call.", id=slot_id))
        return

    events.record(ctx.session, "callback.reached" if outcome == "reached"
                  else "callback.no_answer", ctx.now)
    counters.count(ctx.session, ctx.settings.timezone, ctx.now, counters.CALLBACKS,
                   "reached" if outcome == "reached" else "no_answer")
    if outcome == "reached":
        say(ctx, _("Call {id}: reached. Thank you!", id=slot_id))
        return
    from bot.flows.callbacks import tell_slot_lost

    await tell_slot_lost(ctx.session, ctx.settings, ctx.now, slot, "no_answer",
                         machine=ctx.machine)
    say(ctx, _("Call {id}: no answer. The person is offered another time.", id=slot_id))


# -- duty and help ------------------------------------------------------------------------------


async def on(ctx: Context, staff: Staff, rest: str) -> None:
    from bot.domain.staff import bump_version

    _ = ctx._
    staff.on_duty = True
    await bump_version(ctx.session)  # every write to a staff row bumps the registry
    waiting = await queue.count_waiting(ctx.session)
    say(ctx, _("You are on duty: you will get notices of new requests. Waiting now: {count}."
               " /queue to see them.", count=waiting))


async def off(ctx: Context, staff: Staff, rest: str) -> None:
    from bot.domain.staff import bump_version

    staff.on_duty = False
    await bump_version(ctx.session)
    say(ctx, ctx._("You are off duty: no more notices. Send /on to come back."))


async def show_help(ctx: Context, staff: Staff, rest: str) -> None:
    _ = ctx._
    say(ctx, _("Commands:\n"
               "/queue: who is waiting\n"
               "/take 12: take request 12\n"
               "/reply 12 text: answer (or just write, if you hold one request)\n"
               "/note 12 text: internal note\n"
               "/release 12: put it back in the queue"))
    say(ctx, _("/transfer 12 ADDRESS: pass it to a colleague\n"
               "/close 12 outcome: close it\n"
               "/history 12: everything about it\n"
               "/callbacks: your calls today, then /done ID reached or /done ID no-answer\n"
               "/on, /off: on duty or not")
        + "\n" + _("/urgent 12 text: send now, even in quiet hours (urgent requests)"))


COMMANDS: dict[str, Command] = {
    "queue": show_queue, "take": take, "reply": reply, "urgent": urgent, "note": add_note,
    "release": release,
    "close": close, "transfer": transfer, "history": show_history, "callbacks": callbacks,
    "done": done, "on": on, "off": off, "help": show_help, "unknown": show_help,
}

