"""The figures of a period, counted from the anonymous counters and events."""

from __future__ import annotations

from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import broadcasts as bc
from bot.domain.reports.base import CALLBACK_KINDS, CHECKIN_NEEDS, Period
from bot.storage import counters as cn
from bot.storage import inbox
from bot.storage.models import Broadcast, Event

# -- counting --------------------------------------------------------------------------------


def _in(period: Period) -> Any:
    return and_(Event.at >= period.since, Event.at < period.until)


async def _counts(session: AsyncSession, period: Period, *kinds: str) -> Counter[str]:
    rows = await session.execute(
        select(Event.kind, func.count()).where(_in(period), Event.kind.in_(kinds))
        .group_by(Event.kind)
    )
    found: Counter[str] = Counter()
    for kind, n in rows.all():
        found[kind] = n
    return found


async def _by(session: AsyncSession, period: Period, kind: str, column: Any
              ) -> Counter[str]:
    rows = await session.execute(
        select(column, func.count()).where(_in(period), Event.kind == kind).group_by(column)
    )
    found: Counter[str] = Counter()
    for key, n in rows.all():
        found["unknown" if key in (None, "") else str(key)] += n
    return found


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _sorted(mapping: dict[str, int]) -> dict[str, int]:
    return dict(sorted(mapping.items()))


def people(figures: cn.Figures, months: dict[str, int]) -> dict[str, Any]:
    """New people (their first message, or an import) and people counted once a month."""
    return {
        "new": figures.sum(cn.NEW),
        "new_by_channel": _sorted(figures.by(cn.NEW)),
        "imported": figures.sum(cn.IMPORTED),
        "active": figures.sum(cn.ACTIVE),
        "active_by_month": months,
        "by_channel": _sorted(figures.by(cn.ACTIVE_CHANNEL)),
        "by_language": figures.by(cn.ACTIVE_LANGUAGE),
        "by_departement": _sorted(figures.by(cn.ACTIVE_DEPARTEMENT)),
        "by_level": _sorted(figures.by(cn.ACTIVE_LEVEL)),
    }


async def messages(session: AsyncSession, period: Period, figures: cn.Figures
                   ) -> dict[str, Any]:
    """Received: the counters (citizens only). Sent: the outbox's anonymous events."""
    sent = await _by(session, period, "outbox.sent", Event.channel)
    segments = await session.scalar(
        select(func.coalesce(func.sum(Event.value["segments"].as_integer()), 0))
        .where(_in(period), Event.kind == "outbox.sent", Event.channel == "sms")
    )
    kinds = await _by(session, period, "outbox.sent", Event.value["kind"].as_string())
    in_doubt = await _counts(session, period, "outbox.in_doubt")
    waiting, parked, _lag = await inbox.depth(session, period.until)
    return {
        "received": figures.sum(cn.RECEIVED),
        "received_by_channel": _sorted(figures.by(cn.RECEIVED)),
        "sent": sum(sent.values()),
        "sent_by_channel": dict(sorted(sent.items())),
        "sent_broadcast": kinds.get(bc.KIND, 0),
        "sms_messages": sent.get("sms", 0),
        "sms_segments": int(segments or 0),
        "in_doubt": in_doubt["outbox.in_doubt"],
        # now, whatever the period: received, not processed yet / parked after retries
        "inbox_waiting": waiting,
        "inbox_parked": parked,
    }


def checkins(figures: cn.Figures) -> dict[str, Any]:
    answers = figures.by(cn.CHECKINS_ANSWER)
    sent = figures.sum(cn.CHECKINS_SENT)
    answered = sum(answers.values())
    return {
        "sent": sent,
        "reminded": figures.sum(cn.CHECKINS_REMINDED),
        "answered": answered,
        "answer_rate": _rate(answered, sent),
        "answers": answers,
        "needs": sum(answers.get(a, 0) for a in CHECKIN_NEEDS),
        "no_news": figures.sum(cn.CHECKINS_SILENCE),
    }


def tickets(figures: cn.Figures) -> dict[str, Any]:
    """Opened (by source, priority, channel), first taken, closed by outcome category; the
    median wait before the first take and handling time (first take to close) from the
    duration buckets; satisfaction."""
    satisfaction = figures.by(cn.SATISFACTION)
    answered = satisfaction.get("yes", 0) + satisfaction.get("no", 0)
    return {
        "opened": figures.sum(cn.OPENED),
        "by_source": figures.by(cn.OPENED),
        "by_priority": figures.by(cn.OPENED_PRIORITY),
        "by_channel": _sorted(figures.by(cn.OPENED_CHANNEL)),
        "taken": figures.sum(cn.TAKEN),
        "closed": figures.sum(cn.CLOSED),
        "median_wait_minutes": figures.median_minutes(cn.WAIT),
        "median_handling_minutes": figures.median_minutes(cn.HANDLING),
        "outcomes": figures.by(cn.CLOSED),
        "satisfaction": satisfaction,
        "satisfied_rate": _rate(satisfaction.get("yes", 0), answered),
        "sources": {"wait": "counters", "handling": "counters", "outcomes": "counters"},
    }


def callbacks(figures: cn.Figures) -> dict[str, Any]:
    found = figures.count.get(cn.CALLBACKS, {})
    return {kind: found.get(kind, 0) for kind in CALLBACK_KINDS}


async def broadcasts(session: AsyncSession, period: Period) -> dict[str, Any]:
    """Broadcasts started in the period: their settled figures (an event) when the 48 h
    replies window has closed, else what the outbox says now."""
    settled: dict[int, dict[str, Any]] = {}
    rows = await session.scalars(select(Event.value).where(Event.kind == "broadcast.settled"))
    for value in rows.all():
        if value and "broadcast_id" in value:
            settled[int(value["broadcast_id"])] = value
    started = (await session.scalars(
        select(Broadcast).where(Broadcast.test_address.is_(None),
                                Broadcast.started_at >= period.since,
                                Broadcast.started_at < period.until)
        .order_by(Broadcast.started_at)
    )).all()
    items = []
    for broadcast in started:
        figures = settled.get(broadcast.id)
        source = "events"
        if figures is None:
            figures = await bc.status_counts(session, broadcast.id, period.until)
            source = "outbox"
        items.append(_broadcast_item(broadcast, figures, source))
    total = Counter()
    for item in items:
        for key in ("recipients", "reached", "delivered", "failed", "cancelled", "replied"):
            total[key] += item[key]
    attempted = total["recipients"] - total["cancelled"]
    return {
        "count": len(items),
        "recipients": total["recipients"],
        "delivered": total["delivered"],
        "failed": total["failed"],
        "replied": total["replied"],
        "delivery_rate": _rate(total["delivered"], attempted),
        "failure_rate": _rate(total["failed"], attempted),
        "items": items,
    }


def _broadcast_item(broadcast: Broadcast, figures: dict[str, Any], source: str
                    ) -> dict[str, Any]:
    # Telegram reports no delivery: a message Telegram accepted counts as delivered.
    telegram_sent = int((figures.get("by_channel") or {}).get("telegram", {}).get("sent", 0))
    delivered = int(figures.get("delivered", 0)) + int(figures.get("read", 0)) + telegram_sent
    recipients = int(figures.get("recipients", 0))
    cancelled = int(figures.get("cancelled", 0))
    failed = int(figures.get("failed", 0))
    attempted = recipients - cancelled
    return {
        "id": broadcast.id,
        "started_at": broadcast.started_at.isoformat() if broadcast.started_at else None,
        "segment": bc.Segment.from_json(broadcast.filters).describe(),
        "recipients": recipients,
        "reached": delivered + int(figures.get("sent", 0)) - telegram_sent,
        "delivered": delivered,
        "read": int(figures.get("read", 0)),
        "failed": failed,
        "cancelled": cancelled,
        "replied": int(figures.get("replied", 0)),
        "delivery_rate": _rate(delivered, attempted),
        "failure_rate": _rate(failed, attempted),
        "source": source,
    }


DAILY = {cn.RECEIVED: "messages_received", cn.NEW: "new_people", cn.OPENED: "tickets_opened"}


async def daily(session: AsyncSession, period: Period) -> list[dict[str, Any]]:
    found = await cn.daily(session, period.first_day, period.last_day, DAILY)
    return [{"date": day.isoformat(),
             **{label: found.get(day, {}).get(name, 0) for name, label in DAILY.items()}}
            for day in period.days()]


async def _months(session: AsyncSession, period: Period) -> dict[str, int]:
    found = await cn.daily(session, period.first_day, period.last_day, [cn.ACTIVE])
    months: Counter[str] = Counter()
    for day in period.days():
        months[day.strftime("%Y-%m")] += found.get(day, {}).get(cn.ACTIVE, 0)
    return dict(sorted(months.items()))


async def build(session: AsyncSession, period: Period, org: str) -> dict[str, Any]:
    """The whole report, as one JSON-ready object."""
    figures = await cn.read(session, period.first_day, period.last_day)
    return {
        "organisation": org,
        "period": {"since": period.since.astimezone(ZoneInfo(period.tz)).isoformat(),
                   "until": period.until.astimezone(ZoneInfo(period.tz)).isoformat(),
                   "timezone": period.tz},
        "people": people(figures, await _months(session, period)),
        "messages": await messages(session, period, figures),
        "checkins": checkins(figures),
        "tickets": tickets(figures),
        "callbacks": callbacks(figures),
        "broadcasts": await broadcasts(session, period),
        "daily": await daily(session, period),
    }
