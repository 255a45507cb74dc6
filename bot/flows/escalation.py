"""A human one word away: tickets from AIDE, the menu, or after misunderstandings.

The mediator queue itself (take, relay, close) builds on these tickets.
"""

from __future__ import annotations

from datetime import timedelta

from bot.flows.base import STAY, Context, Flow, Next, State, choice, register
from bot.types import Reply

ACK_EVERY = timedelta(minutes=30)


async def request_human(ctx: Context, source: str, priority: str = "normal") -> Next:
    _ = ctx._
    ticket, created = await ctx.open_ticket(source, priority)
    if created:
        ctx.say(_("Thank you. A person from {org} will answer you here.", org=ctx.org))
    else:
        ctx.say(_("We have your request. A person will answer you here."))
    ctx.remember(acked_at=ctx.now.isoformat())
    return "ticket.waiting"


async def waiting(ctx: Context) -> Next:
    return None


async def waiting_text(ctx: Context, text: str) -> Next:
    """A message while a ticket is open joins it; the person is told now and then."""
    ticket = await ctx.open_ticket_of()
    if ticket is None:  # closed meanwhile: start fresh
        return "menu.main"
    last = ctx.recall("acked_at")
    if last is None or ctx.now - _parse(last) >= ACK_EVERY:
        ctx.say(ctx._("Your message is saved. A person will answer you here."))
        ctx.remember(acked_at=ctx.now.isoformat())
    return STAY


async def offer(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(
        Reply(
            _("Do you want to talk to a person?"),
            (choice("yes", _("Yes"), "oui", "yes", "ok"), choice("no", _("No"), "non", "no")),
        )
    )
    return None


async def offer_answered(ctx: Context, choice_id: str) -> Next:
    if choice_id == "yes":
        return await request_human(ctx, source="misunderstood")
    return "menu.main"


def _parse(value: str):  # noqa: ANN202 - tiny local helper
    from datetime import datetime

    return datetime.fromisoformat(value)


FLOW = register(
    Flow(
        "ticket",
        {
            "waiting": State(enter=waiting, on_text=waiting_text, expires=False),
            "offer": State(enter=offer, on_choice=offer_answered),
        },
    )
)
