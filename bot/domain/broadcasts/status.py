"""What became of a broadcast: each person's outcome, the replies, its description and
the listing."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.broadcasts.audience import Segment
from bot.domain.broadcasts.base import ACTIVE, OUTCOMES, REASONS, REPLY_WINDOW
from bot.storage.models import Broadcast, Message, Outbox

# -- status ----------------------------------------------------------------------------------


async def status_counts(
    session: AsyncSession, broadcast_id: int, now: datetime
) -> dict[str, Any]:
    """What became of a broadcast, one outcome per person (their latest row: an SMS
    fallback replaces the WhatsApp message it stands for)."""
    latest = (
        select(func.max(Outbox.id)).where(Outbox.broadcast_id == broadcast_id)
        .group_by(Outbox.contact_id)
    )
    rows = await session.execute(
        select(Outbox.status, Outbox.held, Outbox.channel, func.count())
        .where(Outbox.id.in_(latest))
        .group_by(Outbox.status, Outbox.held, Outbox.channel)
    )
    counts: Counter[str] = Counter()
    by_channel: dict[str, Counter[str]] = {}
    for status, held, channel, n in rows.all():
        outcome = _outcome(status, bool(held))
        counts[outcome] += n
        by_channel.setdefault(channel, Counter())[outcome] += n
    failures = await session.execute(
        select(Outbox.failure, Outbox.error_code, Outbox.error_reason, func.count())
        .where(Outbox.id.in_(latest), Outbox.status == "failed", Outbox.held.is_(False))
        .group_by(Outbox.failure, Outbox.error_code, Outbox.error_reason)
        .order_by(func.count().desc())
    )
    return {
        "recipients": sum(counts.values()),
        **{outcome: counts[outcome] for outcome in OUTCOMES},
        "replied": await replied(session, broadcast_id),
        "failures": [
            {"failure": failure, "code": code, "reason": reason, "count": n}
            for failure, code, reason, n in failures.all()
        ],
        "by_channel": {
            channel: {outcome: c[outcome] for outcome in OUTCOMES}
            for channel, c in sorted(by_channel.items())
        },
    }


def _outcome(status: str, held: bool) -> str:
    if held:
        return "held"  # WhatsApp window closed: waits for the person to write (template)
    if status in ACTIVE:
        return "queued"
    return status if status in OUTCOMES else "failed"


async def replied(session: AsyncSession, broadcast_id: int) -> int:
    """People who wrote within 48 hours after the broadcast reached them."""
    sent = (
        select(Outbox.contact_id, func.min(Outbox.sent_at).label("sent_at"))
        .where(Outbox.broadcast_id == broadcast_id, Outbox.sent_at.is_not(None))
        .group_by(Outbox.contact_id)
        .subquery()
    )
    bounds = (await session.execute(select(func.min(sent.c.sent_at),
                                           func.max(sent.c.sent_at)))).first()
    if bounds is None or bounds[0] is None:
        return 0
    first_sent, last_sent = _as_utc(bounds[0]), _as_utc(bounds[1])
    rows = await session.execute(
        select(sent.c.contact_id, sent.c.sent_at, Message.created_at)
        .join(Message, Message.contact_id == sent.c.contact_id)
        .where(Message.direction == "in", Message.created_at >= first_sent,
               Message.created_at <= last_sent + REPLY_WINDOW)
    )
    people = set()
    for contact_id, sent_at, at in rows.all():
        start = _as_utc(sent_at)
        if start <= at <= start + REPLY_WINDOW:
            people.add(contact_id)
    return len(people)


def _as_utc(value: Any) -> datetime:
    """Aggregates of a UTCDateTime column, whatever the driver gives back."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def describe(session: AsyncSession, broadcast: Broadcast, now: datetime
                   ) -> dict[str, Any]:
    """``broadcast status``: the broadcast and what became of it."""
    figures = await status_counts(session, broadcast.id, now)
    status = broadcast.status
    if status == "sending" and broadcast.enqueued_at is not None and not figures["queued"]:
        status = "done"
    totals = broadcast.totals or {}
    return {
        "id": broadcast.id,
        "status": status,
        "segment": Segment.from_json(broadcast.filters).as_json(),
        "test_address": broadcast.test_address,
        "languages": sorted(broadcast.texts or {}),
        "created_at": _iso(broadcast.created_at),
        "scheduled_at": _iso(broadcast.scheduled_at),
        "started_at": _iso(broadcast.started_at),
        "finished_at": _iso(broadcast.finished_at),
        "excluded": {reason: int((totals.get("excluded") or {}).get(reason, 0))
                     for reason in REASONS},
        "sms_segments": int(totals.get("sms_segments") or 0),
        **figures,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def listing(session: AsyncSession, limit: int = 50) -> list[dict[str, Any]]:
    """Broadcasts, newest first (``broadcast list``)."""
    rows = (await session.scalars(
        select(Broadcast).order_by(Broadcast.id.desc()).limit(limit)
    )).all()
    found = []
    for b in rows:
        status = b.status
        if status == "sending" and b.enqueued_at is not None:
            left = await session.scalar(select(Outbox.id).where(
                Outbox.broadcast_id == b.id, Outbox.status.in_(ACTIVE)).limit(1))
            status = "sending" if left is not None else "done"
        found.append({
            "id": b.id, "status": status, "segment": Segment.from_json(b.filters).as_json(),
            "test_address": b.test_address, "languages": sorted(b.texts or {}),
            "created_at": _iso(b.created_at), "scheduled_at": _iso(b.scheduled_at),
            "recipients": int((b.totals or {}).get("recipients") or 0),
        })
    return found
