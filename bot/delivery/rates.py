"""Rates shared by every process through the ``rate_limits`` table: a channel's sends per
second (the outbox) and one sender's messages (``bot.domain.sender_limit``), both GCRA
(``tat``: the theoretical arrival time) with a ``paused_until`` mark."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.config import Rate
from bot.storage.models import RateLimit


async def rate_row(session: AsyncSession, key: str, now: datetime) -> RateLimit:
    """The rate row of ``key`` (made on first use), locked for this transaction on
    PostgreSQL (SQLite: the transaction's write lock)."""
    builder = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    await session.execute(
        builder(RateLimit).values(key=key, tat=now).on_conflict_do_nothing(
            index_elements=["key"]
        )
    )
    query = select(RateLimit).where(RateLimit.key == key)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    row = await session.scalar(query.execution_options(populate_existing=True))
    assert row is not None
    return row


def sender_key(contact_id: int) -> str:
    """The ``rate_limits`` key of one sender (a contact id: no other personal data)."""
    return f"sender:{contact_id}"


def gcra(tat: datetime, now: datetime, rate: Rate) -> datetime | None:
    """GCRA: the new theoretical arrival time when one more event at ``now`` conforms to
    ``rate`` (bursts of ``rate.count``), else None (the state is then left as it was)."""
    start = max(tat, now)
    if (start - now).total_seconds() > rate.tolerance + 1e-6:
        return None
    return start + timedelta(seconds=rate.interval)


async def forget_sender(session: AsyncSession, contact_id: int) -> None:
    """Erasure: the person's rate row goes with them."""
    await session.execute(
        delete(RateLimit).where(RateLimit.key == sender_key(contact_id))
        .execution_options(synchronize_session=False)
    )
