"""After a close: one short "Did we help you?" question, now or when the person's quiet
hours end (the ``ticket.satisfaction`` state of the ticket flow reads the answer)."""

from __future__ import annotations

from bot.conversation.choices import yes_no
from bot.conversation.context import Context
from bot.core.types import Reply
from bot.delivery.quiet import may_send_proactive, next_allowed
from bot.delivery.scheduler import JobContext, JobKind, schedule
from bot.domain.tickets import queue
from bot.storage.models import Job, Outbox, Ticket

SATISFACTION_JOB = "ticket.satisfaction"
STATE = "ticket.satisfaction"


async def ask_satisfaction(ctx: Context, ticket: Ticket, sink: list[Outbox]) -> None:
    """"Did we help you?" now, or when the person's quiet hours end. Either way the next
    message they send starts fresh."""
    queue.enter(ctx, "menu.main")
    if not queue.reachable(ctx):
        return
    tz = ctx.contact.timezone or ctx.settings.timezone
    if not may_send_proactive(ctx.settings, tz, ctx.now, ctx.contact.last_inbound_at):
        await schedule(ctx.session, SATISFACTION_JOB, f"ticket:{ticket.id}",
                       next_allowed(ctx.settings.quiet, tz, ctx.now),
                       about=ticket.contact_id)
        return
    _ask(ctx, ticket)
    ctx.flush()
    sink.extend(ctx.sent)


def _ask(ctx: Context, ticket: Ticket) -> None:
    queue.enter(ctx, STATE)
    ctx.remember(satisfaction_ticket=ticket.id)
    ctx.ask(Reply(ctx._("Did we help you?"), yes_no(ctx._)))


async def satisfaction_job(jc: JobContext, item: Job) -> None:
    """The question held for the person's quiet hours."""
    ticket = await jc.session.get(Ticket, int(item.key.partition(":")[2]))
    if ticket is None or ticket.state != queue.CLOSED:
        return
    ctx = await queue.citizen_context(jc.session, jc.settings, jc.now, ticket.contact_id)
    wrote = ctx.contact.last_inbound_at
    if (wrote is not None and ticket.closed_at is not None and wrote > ticket.closed_at) \
            or not queue.reachable(ctx):
        return  # they wrote since: the question would only confuse
    _ask(ctx, ticket)
    ctx.flush()


JOBS = (JobKind(SATISFACTION_JOB, satisfaction_job),)
