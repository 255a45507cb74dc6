"""Settings from ``RELAIS_*`` environment variables (and ``.env`` outside tests).

A malformed value stops the program with one line naming the variable (exit status 2);
missing provider credentials only disable that channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_TIME_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class ConfigError(Exception):
    """A configuration value that cannot be used. ``str()`` is the one line to print."""


@dataclass(frozen=True)
class TimeRange:
    start: time
    end: time

    def contains(self, moment: time) -> bool:
        """True when ``moment`` is inside the range; ranges may wrap past midnight."""
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_time_range(text: str) -> TimeRange:
    match = _TIME_RANGE.match(text)
    if not match:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"not a time of day in {text!r}")
    return TimeRange(time(h1, m1), time(h2, m2))


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")
_RATE_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}


@dataclass(frozen=True)
class Rate:
    """``count`` events per ``period`` seconds, ``count`` of them at once (a burst)."""

    count: int
    period: float

    @property
    def interval(self) -> float:
        """Seconds between two events at the steady rate (GCRA's emission interval)."""
        return self.period / self.count

    @property
    def tolerance(self) -> float:
        """How far ahead of now the theoretical arrival time may be: the burst."""
        return self.period - self.interval

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """Seconds from "30", "30s", "2min" or "1h"; ValueError otherwise."""
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"not a duration (say 30s, 2min or 1h): {value!r}")
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def parse_rate(text: str) -> Rate | None:
    """``"20/min"``, ``"100/hour"``, ``"5/10s"``; ``"off"`` (or ``"0/min"``) is no limit."""
    if text.strip().lower() in ("off", "none", "0"):
        return None
    match = _RATE.match(text.lower())
    if not match or match.group(3) not in _RATE_UNITS:
        raise ValueError(f"expected a rate such as 20/min, 100/hour or off, got {text!r}")
    count = int(match.group(1))
    if count == 0:
        return None
    period = int(match.group(2) or 1) * _RATE_UNITS[match.group(3)]
    if period == 0:
        raise ValueError(f"a rate needs a period longer than 0, got {text!r}")
    return Rate(count, float(period))


def async_database_url(url: str) -> str:
    """Accept the usual spellings and return the async driver's URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r} (use sqlite or postgresql)")


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value.rstrip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELAIS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = "sqlite+aiosqlite:///relais.db"
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    org_name: str = "Relais"
    timezone: str = "Europe/Paris"
    quiet_hours: str = "20:00-09:00"
    retention_days: int = 365
    opening_hours: str = "Mo-Fr 09:00-17:00"
    queue_remind_minutes: int = 30
    max_broadcasts_per_week: int = 3
    sms_segment_price: float = 0.07
    twilio_rate: float = 10.0
    twilio_whatsapp_rate: float = 10.0
    whatsapp_rate: float = 80.0
    telegram_rate: float = 30.0
    whatsapp_template: str | None = None
    whatsapp_template_lang: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_sms_from: str | None = None
    twilio_whatsapp_from: str | None = None
    twilio_api_url: str = "https://api.twilio.com"
    telegram_token: str | None = None
    telegram_webhook_secret: str | None = None
    telegram_api_url: str = "https://api.telegram.org/bot"
    whatsapp_token: str | None = None
    whatsapp_phone_number_id: str | None = None
    whatsapp_app_secret: str | None = None
    whatsapp_verify_token: str | None = None
    whatsapp_api_url: str = "https://graph.facebook.com/v21.0"
    media_max_mb: float = 16.0  # largest file kept from a citizen (bot.domain.media_store)
    # Staff powers by SMS (the one channel whose sender can be forged): "challenge" sends a
    # one-time code back by SMS that opens a working session; "off" refuses them.
    staff_sms: Literal["challenge", "off"] = "challenge"
    staff_sms_session_hours: float = Field(default=8, gt=0, le=24 * 31)
    # Messages one sender may send (a burst of that many, refilled at that rate) before
    # Relais stops answering each one (bot/sender_limit.py); "off" for no limit.
    sender_limit: str = "20/min"
    # The age of the oldest unprocessed inbox row past which /healthz says "degraded"
    # (a number of seconds, or "30s", "2min", "1h").
    inbox_lag_degraded: str = "30s"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return async_database_url(value)

    @field_validator("public_url", "twilio_api_url", "telegram_api_url", "whatsapp_api_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _check_http_url(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        parse_time_range(value)
        return value.strip()

    @field_validator("sender_limit")
    @classmethod
    def _sender_limit(cls, value: str) -> str:
        parse_rate(value)
        return value.strip()

    @field_validator("inbox_lag_degraded")
    @classmethod
    def _inbox_lag(cls, value: str) -> str:
        parse_duration(value)
        return value.strip()

    @field_validator("opening_hours")
    @classmethod
    def _opening_hours(cls, value: str) -> str:
        import opening_hours

        try:
            opening_hours.OpeningHours(value)
        except Exception as exc:  # the library raises its own parser error type
            raise ValueError(f"not an OpenStreetMap opening_hours value: {value!r}") from exc
        return value

    @field_validator(
        "port", "retention_days", "queue_remind_minutes", "max_broadcasts_per_week"
    )
    @classmethod
    def _positive_int(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator(
        "twilio_rate", "twilio_whatsapp_rate", "whatsapp_rate", "telegram_rate",
        "sms_segment_price", "media_max_mb",
    )
    @classmethod
    def _positive_float(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def quiet(self) -> TimeRange:
        return parse_time_range(self.quiet_hours)

    @property
    def sender_rate(self) -> Rate | None:
        """``RELAIS_SENDER_LIMIT`` parsed; None when there is no limit."""
        return parse_rate(self.sender_limit)

    @property
    def inbox_lag_limit(self) -> float:
        """``RELAIS_INBOX_LAG_DEGRADED`` in seconds."""
        return parse_duration(self.inbox_lag_degraded)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(env_file: str | None = ".env", **overrides: Any) -> Settings:
    """Build settings; raise ConfigError with one line naming the faulty variable."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"RELAIS_{field.upper()}: {message}") from None
