"""Quiet hours: nothing proactive (check-ins, reminders, broadcasts, notices, a mediator's
message) is sent to a person during ``RELAIS_QUIET_HOURS`` of their own time zone. Replies to
a person who wrote in the last hour are not proactive, and neither are the reminder one hour
before a callback they booked, the STOP confirmation, the emergency numbers, nor what a
mediator sends on purpose with ``/urgent``. Staff are never held: they chose to be on duty.

``release_at`` is the one rule: flows and the queue use it when they write a row, and the
outbox applies it again when it claims one, so a retry, a fallback or a provider pause never
delivers a proactive row inside quiet hours: the row waits for the end of them instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.core.addresses import PHONE_CHANNELS, POSTCODE_TIMEZONES, timezone_for
from bot.core.addresses import Address as AddressValue
from bot.core.config import Settings, TimeRange

RECENT_WRITER = timedelta(hours=1)

# How quiet hours treat a row, by its ``Outbox.kind``.
NEVER_HELD = frozenset({
    "optout",  # the STOP confirmation
    "forget",  # "your data is erased": the person's record is gone, so is their last message
    "reminder.hour",  # the reminder one hour before a callback the person booked
    "emergency",  # the emergency numbers after danger words
    "broadcast.test",  # ``relais broadcast send --test``: a coordinator's own phone
})
URGENT_SUFFIX = ".urgent"  # sent now on a mediator's decision (``/urgent N TEXT``, ``--now``)
STAFF_PREFIX = "staff"  # notices, relays and answers to staff
WAITS_EVEN_FOR_WRITERS = frozenset({"broadcast"})  # news waits, even for a person who is writing
# ``Outbox.error_reason`` of a row waiting for the end of its person's quiet hours.
QUIET_REASON = "quiet hours"


def local(moment: datetime, tz: str) -> datetime:
    return moment.astimezone(ZoneInfo(tz))


def is_quiet(quiet: TimeRange, tz: str, moment: datetime) -> bool:
    return quiet.contains(local(moment, tz).time().replace(tzinfo=None))


def next_allowed(quiet: TimeRange, tz: str, moment: datetime) -> datetime:
    """``moment`` itself when outside quiet hours, else the end of these quiet hours (in
    ``moment``'s time zone, UTC for the Clock's values)."""
    if not is_quiet(quiet, tz, moment):
        return moment
    zone = ZoneInfo(tz)
    here = moment.astimezone(zone)
    wall = here.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0,
                        microsecond=0, tzinfo=None)
    if wall <= here.replace(tzinfo=None):
        wall += timedelta(days=1)
    # Re-anchor through the zone so a DST change overnight gives the right wall time.
    end = wall.replace(tzinfo=zone)
    if end <= moment:  # the end is a wall time seen twice (autumn): the second one
        end = wall.replace(tzinfo=zone, fold=1)
    if end.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        # The end falls in a spring-forward gap: quiet hours end when the clocks jump.
        end = max(moment, _first_allowed(quiet, tz, wall.replace(tzinfo=zone, fold=1), end))
    return end.astimezone(moment.tzinfo)


def _first_allowed(quiet: TimeRange, tz: str, low: datetime, high: datetime) -> datetime:
    """The first whole second from ``low`` (quiet) to ``high`` (not quiet) that is not quiet:
    quiet hours are a range of wall-clock times, and a DST gap skips part of it."""
    low, high = low.astimezone(UTC), high.astimezone(UTC)
    while high - low > timedelta(seconds=1):
        middle = (low + (high - low) / 2).replace(microsecond=0)
        if is_quiet(quiet, tz, middle):
            low = middle
        else:
            high = middle
    return high


def person_timezone(tz: str | None, postcode: str | None, channel: str, to: str,
                    default: str) -> str:
    """A person's zone: as stored, else from their postcode or number, else the default."""
    if tz:
        return tz
    if channel not in PHONE_CHANNELS or (to.startswith("+33") and not (
            postcode and postcode[:3] in POSTCODE_TIMEZONES)):
        return timezone_for(postcode, None, default)
    return timezone_for(postcode, AddressValue(channel, to), default)


def is_held_kind(kind: str) -> bool:
    """False for the kinds quiet hours never hold (whoever the person is)."""
    return not (kind in NEVER_HELD or kind.endswith(URGENT_SUFFIX)
                or kind.split(".", 1)[0] == STAFF_PREFIX)


def release_at(
    kind: str, tz: str | None, last_inbound: datetime | None, now: datetime,
    settings: Settings, *, to_staff: bool = False,
) -> datetime:
    """When a message of ``kind`` may leave for a person in ``tz`` (None: the default zone)
    who last wrote at ``last_inbound``: ``now``, or the end of their quiet hours.

    Never held: staff (``to_staff``), the kinds of ``NEVER_HELD``, ``….urgent`` kinds.
    Not held either: anything but a broadcast to a person who wrote in the last hour."""
    if to_staff or not is_held_kind(kind):
        return now
    if (kind not in WAITS_EVEN_FOR_WRITERS and last_inbound is not None
            and now - last_inbound <= RECENT_WRITER):
        return now
    return next_allowed(settings.quiet, tz or settings.timezone, now)


def may_have_held(previous_inbound: datetime | None, now: datetime) -> bool:
    """Whether a row can be waiting for the end of a person's quiet hours when they write
    at ``now``, their previous message at ``previous_inbound`` (``Contact.last_inbound_at``
    before this one). False lets the caller skip ``release_quiet``: rows written or claimed
    since a message less than ``RECENT_WRITER`` ago were not held (``release_at``: replies
    to a recent writer go now), and that message released those held before it. Broadcasts
    can wait, but ``release_quiet`` leaves them waiting anyway."""
    if previous_inbound is None:
        return True
    return not timedelta(0) <= now - previous_inbound <= RECENT_WRITER


def may_send_proactive(
    settings: Settings, tz: str | None, moment: datetime, last_inbound: datetime | None = None
) -> bool:
    """True when a proactive message may go now to a person in ``tz``."""
    return release_at("proactive", tz, last_inbound, moment, settings) <= moment
