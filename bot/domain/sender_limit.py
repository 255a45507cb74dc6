"""A sender cannot hurt others: past ``RELAIS_SENDER_LIMIT`` one person's messages are no
longer answered one by one.

Each citizen has a GCRA rate in the shared ``rate_limits`` table (the same rows, locking and
arithmetic as the outbox's channel rates: ``bot.delivery.rates``), keyed
``sender:<contact id>``. A message within the rate goes on as usual. A message over it is
still stored (the engine stored it before the step) and put on the person's ticket, opened
if none is (staff are told as for any ticket); the first such message gets ONE reply, "We
have your messages. A person will read them.", and the following ones none, until the
person's rate has fully recovered (a full burst is allowed again). The row's
``paused_until`` is that mark: set when the person was told, cleared on full recovery.

Never limited: danger words (their hook runs first), AIDE, STOP, START and OUBLIER, staff
(their hook runs first; ``ctx.staff_side``), and people who said STOP (they get no answer
anyway, and a ticket is not opened for them). Time is the step's clock (``ctx.now``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation import keywords
from bot.conversation.context import Context
from bot.delivery.rates import gcra, sender_key
from bot.domain.tickets.opening import open_ticket
from bot.storage.models import RateLimit

SOURCE = "sender_limit"  # the source of a ticket opened by the limit
ALWAYS_PASS = frozenset({keywords.HELP, keywords.STOP, keywords.START, keywords.FORGET})


def passes(ctx: Context, text: str) -> bool:
    """True for a message the limit never holds back (besides danger words and staff,
    handled by their hooks before the limit is asked)."""
    if ctx.staff_side or ctx.contact.opted_out_at is not None:
        return True
    inbound = ctx.inbound
    if inbound is None or inbound.choice_id or not text:
        return False
    return keywords.match(text) in ALWAYS_PASS


async def over_limit(ctx: Context, text: str) -> bool:
    """Count this inbound message against its sender's rate. True when it is over the limit:
    it has then been put on the person's ticket (and the person told once), and the step
    must stop there."""
    rate = ctx.settings.sender_rate
    if rate is None or ctx.inbound is None or passes(ctx, text):
        return False
    row = await sender_row(ctx.session, sender_key(ctx.contact.id), ctx.now)
    if row.tat <= ctx.now and row.paused_until is not None:
        row.paused_until = None  # fully recovered: a new flood is told again
    tat = gcra(row.tat, ctx.now, rate)
    if tat is not None:
        row.tat = tat
        return False
    ticket, _created = await open_ticket(ctx, SOURCE)
    if ctx.message is not None and ctx.message.ticket_id is None:
        ctx.message.ticket_id = ticket.id
    if row.paused_until is None:
        row.paused_until = row.tat  # told; no other notice before a full recovery
        ctx.say(ctx._("We have your messages. A person will read them."))
    ctx.event("inbound.limited")
    return True


async def sender_row(session: AsyncSession, key: str, now: datetime) -> RateLimit:
    """The rate row of ``key`` as ``bot.delivery.rates.rate_row`` gives it (made on first
    use, locked for this transaction on PostgreSQL, SQLite: the transaction's write lock),
    in one statement: an upsert that changes nothing and returns the row."""
    pg = session.bind.dialect.name == "postgresql"
    builder = postgresql.insert if pg else sqlite.insert
    statement = builder(RateLimit).values(key=key, tat=now)
    statement = statement.on_conflict_do_update(
        index_elements=["key"], set_={"tat": RateLimit.tat}  # the row as it is, now locked
    ).returning(RateLimit)
    row = await session.scalar(statement, execution_options={"populate_existing": True})
    assert row is not None
    return row
