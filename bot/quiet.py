"""Quiet hours: nothing proactive (check-ins, reminders, broadcasts, notices) is sent to a
person during ``RELAIS_QUIET_HOURS`` of their own time zone. Replies to a person who wrote
in the last hour are not proactive, and neither is the reminder one hour before a callback
they booked."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.config import Settings, TimeRange

RECENT_WRITER = timedelta(hours=1)


def local(moment: datetime, tz: str) -> datetime:
    return moment.astimezone(ZoneInfo(tz))


def is_quiet(quiet: TimeRange, tz: str, moment: datetime) -> bool:
    return quiet.contains(local(moment, tz).time().replace(tzinfo=None))


def next_allowed(quiet: TimeRange, tz: str, moment: datetime) -> datetime:
    """``moment`` itself when outside quiet hours, else the end of these quiet hours (UTC)."""
    if not is_quiet(quiet, tz, moment):
        return moment
    here = local(moment, tz)
    end = here.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0)
    if end <= here:
        end += timedelta(days=1)
    # Re-anchor through the zone so a DST change overnight gives the right wall time.
    wall = end.replace(tzinfo=None)
    return wall.replace(tzinfo=ZoneInfo(tz)).astimezone(moment.tzinfo)


def may_send_proactive(
    settings: Settings, tz: str | None, moment: datetime, last_inbound: datetime | None = None
) -> bool:
    """True when a proactive message may go now to a person in ``tz``."""
    if last_inbound is not None and moment - last_inbound <= RECENT_WRITER:
        return True
    return not is_quiet(settings.quiet, tz or settings.timezone, moment)
