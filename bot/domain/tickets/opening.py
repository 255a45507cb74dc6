"""A person's ticket: their open one, or a new one that on-duty staff are told of."""

from __future__ import annotations

from bot.conversation.context import Context
from bot.domain.tickets import notify
from bot.storage.models import Ticket

RANK = {"urgent": 0, "normal": 1, "low": 2}


def _rank(priority: str) -> int:
    return RANK.get(priority, 1)


async def open_ticket(
    ctx: Context, source: str, priority: str = "normal", topic: str | None = None
) -> tuple[Ticket, bool]:
    """The person's open ticket, or a new one. Returns (ticket, created). On-duty staff are
    told of a new ticket, and again when its priority rises."""
    ticket = await ctx.open_ticket_of()
    if ticket is not None:
        if _rank(priority) < _rank(ticket.priority):
            ticket.priority = priority
            await notify.ticket_opened(ctx, ticket)
        return ticket, False
    ticket = Ticket(
        contact_id=ctx.contact.id, priority=priority, source=source, topic=topic,
        state="open", language=ctx.contact.language,
        channel=ctx.address.channel if ctx.address else None,
        level=ctx.contact.level, created_at=ctx.now,
    )
    ctx.session.add(ticket)
    await ctx.session.flush()
    if ctx.message is not None and ctx.message.ticket_id is None:
        ctx.message.ticket_id = ticket.id
    ctx.event("ticket.opened", source=source, priority=priority)
    await notify.ticket_opened(ctx, ticket)
    return ticket, True
