"""When mediators answer: ``RELAIS_OPENING_HOURS`` (OpenStreetMap ``opening_hours`` form,
read with ``opening-hours-py``) in ``RELAIS_TIMEZONE``, and how to say "lundi à 9h" to a
person in their own language and time zone.

A state the expression leaves unknown (a comment such as ``"sur rendez-vous"``) counts as
open: Relais never tells a person nobody is there when it is not sure.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import opening_hours
from babel.dates import format_date, format_time

from bot.core.config import Settings
from bot.core.i18n import N_, Translator

# Babel/CLDR time patterns, translated in the catalogs (fr: "9h", "9h30").
WHOLE_HOUR = N_("H:00")
HOUR_MINUTES = N_("H:mm")
MAX_CHANGES = 16  # state changes walked to find the next opening


@lru_cache(maxsize=8)
def _parsed(expression: str) -> opening_hours.OpeningHours:
    return opening_hours.OpeningHours(expression, country="FR")


def _local(moment: datetime, tz: str) -> datetime:
    """Naive wall-clock time in ``tz`` (what the library evaluates)."""
    return moment.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def is_open(settings: Settings, now: datetime) -> bool:
    """True when mediators are expected to answer at ``now``."""
    return not _parsed(settings.opening_hours).is_closed(_local(now, settings.timezone))


def next_opening(settings: Settings, now: datetime) -> datetime | None:
    """The next time the service opens (aware UTC), ``now`` when open, None when never."""
    hours = _parsed(settings.opening_hours)
    zone = ZoneInfo(settings.timezone)
    moment = _local(now, settings.timezone)
    if not hours.is_closed(moment):
        return now
    for _step in range(MAX_CHANGES):
        change = hours.next_change(moment)
        if change is None:
            return None
        change = change.replace(tzinfo=None)
        if not hours.is_closed(change):
            return change.replace(tzinfo=zone).astimezone(now.tzinfo)
        moment = change
    return None


def clock_words(_: Translator, moment: datetime, tz: str) -> str:
    """"9h" / "9h30" in French, "9:00" / "9:30" in English."""
    local = moment.astimezone(ZoneInfo(tz))
    pattern = _(WHOLE_HOUR) if local.minute == 0 else _(HOUR_MINUTES)
    return format_time(local, pattern, locale=_.language)


def when_words(_: Translator, moment: datetime, now: datetime, tz: str) -> str:
    """Plain words for a coming moment: "aujourd'hui à 14h", "demain à 9h", "lundi à 9h",
    "lundi 5 mars à 9h" (more than six days ahead)."""
    zone = ZoneInfo(tz)
    day = moment.astimezone(zone).date()
    today = now.astimezone(zone).date()
    time = clock_words(_, moment, tz)
    if day == today:
        return _("today at {time}", time=time)
    if day == today + timedelta(days=1):
        return _("tomorrow at {time}", time=time)
    if day - today < timedelta(days=7):
        weekday = format_date(day, "EEEE", locale=_.language)
        return _("{day} at {time}", day=weekday, time=time)
    return _("{day} at {time}", day=format_date(day, "EEEE d MMMM", locale=_.language),
             time=time)


def when_open_words(_: Translator, settings: Settings, now: datetime, tz: str) -> str | None:
    """When a person will be read, in plain words; None when the hours never open."""
    opening = next_opening(settings, now)
    if opening is None:
        return None
    return when_words(_, opening, now, tz)
