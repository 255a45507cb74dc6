"""What every part of a broadcast shares: its kinds and jobs, limits, and errors."""

from __future__ import annotations

import re
from datetime import timedelta

from bot.storage.models import Broadcast

__all__ = ["Broadcast"]

PURPOSE = "news"
KIND = "broadcast"
SEND_JOB = "broadcast.send"
TICK_JOB = "broadcast.tick"
SETTLE_JOB = "broadcast.settle"
BATCH = 2000
WEEK = timedelta(days=7)
REPLY_WINDOW = timedelta(hours=48)
TICK_EVERY = timedelta(minutes=1)
LOOKAHEAD = timedelta(minutes=2)  # a row due this soon is held if quiet hours begin by then
SENDABLE_CHANNELS = ("sms", "whatsapp", "telegram")
REASONS = ("no_address", "stop", "no_consent", "blocked", "landline", "suppressed",
           "weekly_cap")
ACTIVE = ("queued", "sending", "in_doubt")
# A person's outcome, from their latest row of the broadcast (an SMS fallback is newer).
OUTCOMES = ("queued", "held", "sent", "delivered", "read", "failed", "cancelled")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_POSTCODE = re.compile(r"^[0-9][0-9AB]{0,4}$")


class BroadcastError(ValueError):
    """A broadcast that cannot be made as asked; ``str()`` says why, in one line."""


class NotFound(LookupError):
    """No broadcast with this id."""
