"""Check-in rules: cadence per person or tag, consent, when the next check-in is due, and
planning it in the scheduler.

A person's own rule wins; else the shortest rule among their tags; else weekly. A check-in
goes at 10:00 in the person's time zone, and never in quiet hours. At most one check-in is
planned per person: planning one replaces the one that was waiting.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.config import Settings
from bot.delivery.quiet import next_allowed
from bot.delivery.scheduler import schedule
from bot.storage.models import Checkin, CheckinRule, Consent, Contact, Job, Tag

PURPOSE = "checkins"
DEFAULT_EVERY_DAYS = 7
MAX_EVERY_DAYS = 365
SEND_AT = time(10, 0)
ANSWER_WAIT = timedelta(hours=48)  # before the reminder, then before the "no news" item

SEND_JOB = "checkin.send"
REMIND_JOB = "checkin.remind"
SILENCE_JOB = "checkin.silence"

_EVERY = re.compile(r"^\s*(\d{1,3})\s*([dw])\s*$", re.IGNORECASE)


def parse_every(text: str) -> int:
    """``14d`` or ``2w`` → days; raise ValueError with a one-line reason."""
    match = _EVERY.match(text or "")
    if not match:
        raise ValueError(f"--every: expected a number of days or weeks like 14d or 2w, "
                         f"got {text!r}")
    days = int(match.group(1)) * (7 if match.group(2).lower() == "w" else 1)
    if not 1 <= days <= MAX_EVERY_DAYS:
        raise ValueError(f"--every: between 1d and {MAX_EVERY_DAYS}d, got {text!r}")
    return days


def contact_key(contact_id: int) -> str:
    return f"contact:{contact_id}"


def checkin_key(checkin_id: int) -> str:
    return f"checkin:{checkin_id}"


async def has_consent(session: AsyncSession, contact_id: int, purpose: str = PURPOSE) -> bool:
    """The latest decision for this purpose counts; no decision is no."""
    granted = await session.scalar(
        select(Consent.granted)
        .where(Consent.contact_id == contact_id, Consent.purpose == purpose)
        .order_by(Consent.at.desc(), Consent.id.desc())
        .limit(1)
    )
    return bool(granted)


async def cadence_days(session: AsyncSession, contact_id: int) -> int:
    """Days between check-ins: the person's rule, else their tags' shortest, else weekly.
    Tags match whatever their case."""
    own = await session.scalar(
        select(CheckinRule.every_days).where(CheckinRule.contact_id == contact_id)
    )
    if own is not None:
        return own
    shortest = await session.scalar(
        select(func.min(CheckinRule.every_days))
        .join(Tag, func.lower(Tag.tag) == func.lower(CheckinRule.tag))
        .where(Tag.contact_id == contact_id, CheckinRule.contact_id.is_(None))
    )
    return shortest if shortest is not None else DEFAULT_EVERY_DAYS


def timezone_of(contact: Contact, settings: Settings) -> str:
    return contact.timezone or settings.timezone


def due_after(moment: datetime, days: int, tz: str, settings: Settings) -> datetime:
    """10:00 local time, ``days`` calendar days after ``moment``'s local date (UTC), moved
    to the end of quiet hours if 10:00 falls inside them."""
    zone = ZoneInfo(tz)
    day = moment.astimezone(zone).date() + timedelta(days=days)
    due = datetime.combine(day, SEND_AT, tzinfo=zone).astimezone(UTC)
    return next_allowed(settings.quiet, tz, due)


async def plan(session: AsyncSession, contact_id: int, due_at: datetime) -> None:
    """Plan the person's next check-in at ``due_at``, replacing any that was waiting."""
    await unplan(session, contact_id)
    await schedule(session, SEND_JOB, contact_key(contact_id), due_at, about=contact_id)


async def plan_next(
    session: AsyncSession, contact: Contact, settings: Settings, moment: datetime
) -> datetime:
    """Plan the check-in after ``moment`` per the person's cadence; return when it is due."""
    days = await cadence_days(session, contact.id)
    due = due_after(moment, days, timezone_of(contact, settings), settings)
    await plan(session, contact.id, due)
    return due


async def unplan(session: AsyncSession, contact_id: int) -> None:
    """Drop the planned check-in that has not run yet (consent withdrawn, or replaced)."""
    await session.execute(
        delete(Job)
        .where(Job.kind == SEND_JOB, Job.key == contact_key(contact_id),
               Job.status == "queued")
        .execution_options(synchronize_session=False)
    )


async def planned_at(session: AsyncSession, contact_id: int) -> datetime | None:
    return await session.scalar(
        select(func.min(Job.run_at)).where(
            Job.kind == SEND_JOB, Job.key == contact_key(contact_id), Job.status == "queued"
        )
    )


async def latest(session: AsyncSession, contact_id: int) -> Checkin | None:
    return await session.scalar(
        select(Checkin)
        .where(Checkin.contact_id == contact_id)
        .order_by(Checkin.sent_at.desc(), Checkin.id.desc())
        .limit(1)
    )


def is_open(checkin: Checkin | None) -> bool:
    """Still answerable: not answered, and no "no news" item for mediators yet."""
    return checkin is not None and checkin.answered_at is None and checkin.no_news_at is None


async def set_rule(
    session: AsyncSession, every_days: int, now: datetime, *, tag: str | None = None,
    contact_id: int | None = None,
) -> CheckinRule:
    """Create or change the rule of a tag or of one person (exactly one of them)."""
    if (tag is None) == (contact_id is None):
        raise ValueError("a rule is for a tag or for a person")
    query = select(CheckinRule)
    if tag is not None:
        query = query.where(
            func.lower(CheckinRule.tag) == tag.lower(), CheckinRule.contact_id.is_(None)
        )
    else:
        query = query.where(CheckinRule.contact_id == contact_id, CheckinRule.tag.is_(None))
    rule = await session.scalar(query)
    if rule is None:
        rule = CheckinRule(tag=tag, contact_id=contact_id, every_days=every_days,
                           created_at=now)
        session.add(rule)
    else:
        rule.every_days = every_days
    await session.flush()
    return rule
