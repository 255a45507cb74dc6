"""Core value types: what comes in from a channel and what a flow says back."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any


def safe_text(text: str) -> str:
    """``text`` without what no column can store: NUL and other control characters (but
    newlines and tabs) and lone surrogates (PostgreSQL refuses both, UTF-8 cannot say a
    surrogate)."""
    if text.isprintable():
        return text
    return "".join(c for c in text if c in "\n\t"
                   or unicodedata.category(c) not in ("Cc", "Cs"))


@dataclass(frozen=True)
class Media:
    """A photo, voice note or document a person sent; kept as a provider reference."""

    content_type: str
    ref: str
    caption: str | None = None


@dataclass(frozen=True)
class Inbound:
    """One event from a person: a text, a chosen button, or media.

    ``address`` is ``CHANNEL:ID``; ``provider_id`` is the provider's own id used for
    deduplication (Twilio ``MessageSid``, WhatsApp message ``id``, Telegram ``update_id``).
    """

    channel: str
    address: str
    text: str = ""
    provider_id: str | None = None
    choice_id: str | None = None
    media: tuple[Media, ...] = ()
    profile_name: str | None = None
    language_hint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    """One answer offered with a question. ``id`` is stable; the label is translated."""

    id: str
    label: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reply:
    """What a flow says: a text and, optionally, numbered choices."""

    text: str
    choices: tuple[Choice, ...] = ()


@dataclass(frozen=True)
class Outbound:
    """An outbox row as handed to a channel for sending."""

    id: int
    channel: str
    to: str
    text: str
    choices: tuple[Choice, ...] = ()
    language: str = "fr"
    priority: int = 0
    kind: str = "reply"  # "template": WhatsApp's approved template (outside the 24 h window)
    media_url: str | None = None
    media_type: str | None = None


PRIORITY_REPLY = 0
PRIORITY_BULK = 1
# An outbox row of this kind asks the channel for its approved template (WhatsApp outside
# the 24-hour window: "you have a message, reply to read it"), not for free text.
TEMPLATE_KIND = "template"
