"""A human one word away: tickets from AIDE, the menu, a check-in, a photo, danger words or
after misunderstandings; the wait (and the relay once a mediator holds the ticket); the
hours when nobody answers; the one question after a close.

The queue itself (take, reply, close…) lives in ``bot.domain.tickets.queue``; staff notices in
``bot.domain.tickets.notify``; danger words in ``bot.domain.danger``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.conversation.choices import yes_no
from bot.conversation.context import STAY, Context, Flow, MenuItem, Next, State
from bot.core import hours
from bot.core.i18n import N_
from bot.core.text import clean_text
from bot.core.types import Choice, Reply
from bot.domain import danger as danger_words
from bot.domain.tickets import notify, queue
from bot.domain.tickets.opening import open_ticket
from bot.storage.models import Staff

if TYPE_CHECKING:
    from bot.domain.danger import Found

ACK_EVERY = timedelta(minutes=30)
DANGER_TOLD = "danger_told"  # conversation data: the ticket whose numbers were sent


def _tz(ctx: Context) -> str:
    return ctx.contact.timezone or ctx.settings.timezone


async def request_human(
    ctx: Context, source: str, priority: str = "normal", topic: str | None = None
) -> Next:
    """Open (or join) the person's ticket, tell staff, and tell the person what happens."""
    _ = ctx._
    before = await ctx.open_ticket_of()
    prior = before.priority if before is not None else None
    ticket, created = await open_ticket(ctx, source, priority, topic)
    if topic and ticket.topic is None:
        ticket.topic = topic
    if created or prior != ticket.priority:
        await notify.ticket_opened(ctx, ticket)
    ctx.remember(acked_at=ctx.now.isoformat())
    if ticket.state == queue.TAKEN and ticket.mediator_id is not None:
        holder = await ctx.session.get(Staff, ticket.mediator_id)
        if holder is not None:
            ctx.say(queue.intro(ctx, holder))
            return "ticket.waiting"
    if not hours.is_open(ctx.settings, ctx.now):
        when = hours.when_open_words(_, ctx.settings, ctx.now, _tz(ctx))
        if when is None:
            ctx.say(_("Thank you. Our team is away now. A person will read your message "
                      "as soon as possible."))
        else:
            ctx.say(_("Thank you. Our team is away now. A person will read your message "
                      "{when}.", when=when))
        if ticket.priority != "urgent" and source != "callback" and await _call_possible(ctx):
            return "ticket.after_hours"
        return "ticket.waiting"
    if created:
        ctx.say(_("Thank you. A person from {org} will answer you here.", org=ctx.org))
    else:
        ctx.say(_("We have your request. A person will answer you here."))
    return "ticket.waiting"


async def _call_possible(ctx: Context) -> bool:
    """A callback can be offered: the flow exists, a slot is free, none is booked yet."""
    if "callbacks" not in ctx.machine.flows:
        return False
    if await queue.pending_callback(ctx.session, ctx.contact.id) is not None:
        return False
    try:
        from bot.domain.slots import free_slots
    except ImportError:  # pragma: no cover - shipped with the callbacks flow
        return True
    return bool(await free_slots(ctx.session, ctx.now, limit=1))


# -- waiting, then talking with a mediator ---------------------------------------------------


async def waiting(ctx: Context) -> Next:
    return None


async def waiting_text(ctx: Context, text: str) -> Next:
    """A message while a ticket is open joins it (the person is told now and then); once a
    mediator holds the ticket, it goes to them."""
    ticket = await ctx.open_ticket_of()
    if ticket is None:  # closed meanwhile: start fresh
        return "menu.main"
    if await notify.relay_to_holder(ctx, ticket, text):
        return STAY
    if ctx.inbound is not None and ctx.inbound.media:
        ctx.say(ctx._("Thank you, we received it. A person will look at it."))
        ctx.remember(acked_at=ctx.now.isoformat())
        return STAY
    last = ctx.recall("acked_at")
    if last is None or ctx.now - datetime.fromisoformat(last) >= ACK_EVERY:
        ctx.say(ctx._("Your message is saved. A person will answer you here."))
        ctx.remember(acked_at=ctx.now.isoformat())
    return STAY


# -- outside opening hours: a call instead? ---------------------------------------------------


def _yes_no(ctx: Context) -> tuple[Choice, ...]:
    return yes_no(ctx._)


async def after_hours(ctx: Context) -> Next:
    ctx.ask(Reply(ctx._("Do you want us to call you back on the phone instead?"),
                  _yes_no(ctx)))
    return None


async def after_hours_answered(ctx: Context, choice_id: str) -> Next:
    if choice_id == "yes" and "callbacks" in ctx.machine.flows:
        return "callbacks.offer"
    ctx.say(ctx._("All right. You can write your message here."))
    return "ticket.waiting"


async def after_hours_text(ctx: Context, text: str) -> Next:
    await waiting_text(ctx, text)
    return "ticket.waiting"


# -- after misunderstandings ----------------------------------------------------------------


async def offer(ctx: Context) -> Next:
    if await ctx.open_ticket_of() is not None:
        ctx.say(ctx._("Your message is saved. A person will answer you here."))
        return "ticket.waiting"
    ctx.ask(Reply(ctx._("Do you want to talk to a person?"), _yes_no(ctx)))
    return None


async def offer_answered(ctx: Context, choice_id: str) -> Next:
    if choice_id == "yes":
        return await request_human(ctx, source="misunderstood")
    return "menu.main"


# -- danger words ---------------------------------------------------------------------------


def emergency_numbers(
    ctx: Context, categories: tuple[str, ...] = (), language: str | None = None
) -> list[str]:
    """The numbers the categories call for (``bot.domain.danger.NUMBERS``; all of them without a
    category), in messages of at most 2 SMS segments. Each message's first line says
    nothing a lock screen should not show."""
    from bot.core import sms
    from bot.core.i18n import Translator
    from bot.domain.danger import numbers_for

    _ = Translator(language) if language else ctx._
    lines = {
        "17": _("17 or 112: police, emergency"),
        "15": _("15 or 112: medical emergency"),
        "114": _("114: by text message if you cannot speak"),
        "3919": _("3919: violence against women, anonymous"),
        "3114": _("3114: suicidal thoughts"),
        "119": _("119: a child in danger"),
        "115": _("115: emergency shelter"),
        "food": _("Food aid: we will tell you where to find some."),
    }
    messages = [[_("Here are useful numbers, free, day and night:")]]
    for number in numbers_for(categories):
        longer = "\n".join([*messages[-1], lines[number]])
        if len(messages[-1]) > 1 and sms.segments(sms.normalise(longer)) > 2:
            messages.append([_("More useful numbers:")])
        messages[-1].append(lines[number])
    return ["\n".join(message) for message in messages]


async def danger(ctx: Context, found: Found, text: str) -> None:
    """Danger words: an urgent ticket, every on-duty staff member told at once, and the
    emergency numbers of what was found for the person (once per ticket), in their
    language (else the language they wrote in, when shipped; else French).

    After STOP the staff are told all the same, and the numbers still go out where the
    channel lets Relais write to a stopped person (``bot.domain.danger``); nothing else does."""
    from bot.core.i18n import Translator
    from bot.delivery.outbox import OPTOUT_KIND
    from bot.domain.danger import NUMBERS_AFTER_STOP_CHANNELS

    language = None if ctx.contact.language else found.language
    _ = Translator(language) if language else ctx._
    before = await ctx.open_ticket_of()
    told = before is not None and ctx.recall(DANGER_TOLD) == before.id
    ticket, _created = await open_ticket(ctx, "danger", "urgent", found.category)
    if ticket.topic is None:
        ticket.topic = found.category
    ctx.event("danger", category=found.category, categories=list(found.categories),
              language=found.language)
    if not told:
        await notify.ticket_opened(ctx, ticket)
        numbers = emergency_numbers(ctx, found.categories, language)
        address = ctx.address
        if ctx.contact.opted_out_at is None:
            for message in numbers:
                ctx.say(message)
        elif address is not None and address.blocked_at is None \
                and address.channel in NUMBERS_AFTER_STOP_CHANNELS:
            for message in numbers:  # the one exception to STOP (ARCHITECTURE.md)
                ctx.say(message, kind=OPTOUT_KIND, force=True)
        ctx.remember(**{DANGER_TOLD: ticket.id})
    if await notify.relay_to_holder(ctx, ticket, text):
        pass
    elif not told:
        if hours.is_open(ctx.settings, ctx.now):
            ctx.say(_("Thank you for telling us. A person from {org} will answer you here "
                      "very soon.", org=ctx.org))
        else:
            ctx.say(_("Thank you for telling us. A person from {org} will read your message "
                      "as soon as possible.", org=ctx.org))
        ctx.remember(acked_at=ctx.now.isoformat())
    else:
        await waiting_text(ctx, text)
    queue.enter(ctx, "ticket.waiting")


# -- after a close: the answer (the question: ``bot.domain.tickets.satisfaction``) -------


async def satisfaction(ctx: Context) -> Next:
    return None


async def satisfaction_answered(ctx: Context, choice_id: str) -> Next:
    ctx.event("ticket.satisfaction", answer=choice_id)
    if choice_id == "yes":
        ctx.say(ctx._("Thank you! Write to us any time."))
    else:
        ctx.say(ctx._("Thank you for telling us. Send AIDE to talk to a person again."))
    return "menu.main!quiet"


async def satisfaction_text(ctx: Context, text: str) -> Next:
    return "menu.main"  # anything else: a fresh start


FLOW = (
    Flow(
        "ticket",
        {
            "waiting": State(enter=waiting, on_text=waiting_text, expires=False),
            "offer": State(enter=offer, on_choice=offer_answered),
            "after_hours": State(enter=after_hours, on_choice=after_hours_answered,
                                 on_text=after_hours_text),
            "satisfaction": State(enter=satisfaction, on_choice=satisfaction_answered,
                                  on_text=satisfaction_text),
        },
    )
)


async def _from_menu(ctx: Context) -> Next:
    return await request_human(ctx, source="menu")


MENU_ITEM = MenuItem("human", N_("Talk to a person"), ("parler", "personne", "talk"), _from_menu)


# -- the danger-words step of the engine's pipeline -----------------------------------------


async def danger_step(ctx: Context) -> bool:
    """Danger words in a citizen's message (staff commands are a step of their own, run
    first): the emergency numbers and an urgent ticket. True when it handled the event."""
    inbound = ctx.inbound
    if inbound is None or not inbound.text or inbound.choice_id:
        return False
    found = danger_words.match(inbound.text)
    if found is None:
        return False
    text = ctx.message.body if ctx.message is not None and ctx.message.body else inbound.text
    await danger(ctx, found, clean_text(text))
    return True
