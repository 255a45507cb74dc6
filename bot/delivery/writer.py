"""The one writer of the outbox: every message that leaves Relais is a row written here
(``enqueue`` for one, ``enqueue_bulk`` for a broadcast's batch), with the same defaults;
``cancel_queued`` withdraws unsent rows (a STOP, a provider block)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import sms
from bot.core.render import choices_to_json, numbered
from bot.core.types import PRIORITY_REPLY, Reply
from bot.storage.bulk import bulk_insert
from bot.storage.models import Address, Contact, Outbox, OutboxAbout

MAX_ATTEMPTS = 8


def new_row(*, now: datetime, max_attempts: int = MAX_ATTEMPTS, **values: Any) -> dict[str, Any]:
    """The columns of a new queued row: ``values`` (who, what, kind, priority…) and the
    defaults every row starts with."""
    return {
        "status": "queued", "attempts": 0, "max_attempts": max_attempts,
        "next_attempt_at": now, "held": False, "was_in_doubt": False, "choices": None,
        "created_at": now, "updated_at": now, **values,
    }


def enqueue(
    session: AsyncSession,
    contact: Contact,
    address: Address,
    reply: Reply,
    *,
    now: datetime,
    kind: str = "reply",
    priority: int = PRIORITY_REPLY,
    max_attempts: int = 8,
    broadcast_id: int | None = None,
    ticket_id: int | None = None,
    sink: list[Outbox] | None = None,
    about: Iterable[int] = (),
) -> Outbox:
    """Write one outbox row (the only way a message leaves). Segments are counted as SMS.

    ``about``: the other people the row names or quotes (a staff-side row), erased with them.
    """
    rendered = sms.normalise(numbered(reply.text, reply.choices))
    row = Outbox(**new_row(
        now=now, max_attempts=max_attempts,
        contact_id=contact.id, address_id=address.id, channel=address.channel,
        to=address.external_id, priority=priority, kind=kind, body=reply.text,
        choices=choices_to_json(reply.choices) or None,
        language=contact.language or "fr", segments=sms.segments(rendered),
        broadcast_id=broadcast_id, ticket_id=ticket_id,
    ))
    row.about.add_all(OutboxAbout(contact_id=cid) for cid in sorted(set(about) - {contact.id}))
    session.add(row)
    if sink is not None:
        sink.append(row)
    return row


async def cancel_queued(session: AsyncSession, now: datetime, **where: Any) -> None:
    """Cancel unsent rows (a STOP, a provider block)."""
    conditions = [getattr(Outbox, key) == value for key, value in where.items()]
    await session.execute(
        update(Outbox)
        .where(Outbox.status == "queued", *conditions)
        .values(status="cancelled", updated_at=now, error_reason="cancelled")
        .execution_options(synchronize_session=False)
    )




async def enqueue_bulk(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Write many rows (each made by ``new_row``) in one statement."""
    await bulk_insert(session, Outbox.__table__, rows)
