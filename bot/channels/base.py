"""The contract between Relais and a provider: send an Outbound, or fail in a closed set.

A channel knows nothing of flows; a flow never calls a channel. Failures are one of the
``Failure`` kinds (courier's idea), each adapter mapping its provider's codes onto them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from bot.types import Inbound, Media, Outbound, safe_text


class Failure(StrEnum):
    THROTTLED = "throttled"  # honour retry_after; scope "channel" or "person"
    RETRYABLE = "retryable"  # 5xx, timeouts, connection errors: backoff
    STOPPED = "stopped"  # the person blocked us / unsubscribed: never write until they do
    WINDOW_CLOSED = "window_closed"  # WhatsApp 24 h window: template or fallback
    UNDELIVERABLE = "undeliverable"  # invalid number, landline: flag the address
    FAILED = "failed"  # anything else, with the provider's code and reason
    AUTH = "auth"  # bad credentials: the channel is disabled, loudly


class SendError(Exception):
    def __init__(
        self,
        failure: Failure,
        reason: str,
        *,
        code: str | int | None = None,
        retry_after: float | None = None,
        scope: str = "channel",
    ) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason
        self.code = None if code is None else str(code)
        self.retry_after = retry_after
        self.scope = scope


@dataclass(frozen=True)
class SendResult:
    provider_id: str | None = None
    segments: int | None = None


@runtime_checkable
class Channel(Protocol):
    """One way out. ``name`` is the address prefix it serves (sms, whatsapp, telegram…)."""

    name: str
    rate: float | None  # sends per second for all processes together; None: no limit
    rate_by_segments: bool  # Twilio SMS counts segments, not messages
    call_timeout: float  # seconds; the outbox lease is longer than this

    async def send(self, message: Outbound) -> SendResult: ...


class Registry:
    """The channels this process can send on, by name."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def add(self, channel: Channel) -> None:
        self._channels[channel.name] = channel

    def remove(self, name: str) -> None:
        self._channels.pop(name, None)

    def get(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def names(self) -> list[str]:
        return sorted(self._channels)

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def __len__(self) -> int:
        return len(self._channels)


# -- the adapter boundary: what a webhook may hand the engine ------------------------------

# Column sizes (bot/storage/models.py) of what an Inbound is stored into.
MAX_EXTERNAL_ID = 64  # addresses.external_id
MAX_PROVIDER_ID = 128  # messages.provider_id
MAX_CHOICE_ID = 64  # messages.choice_id
MAX_NAME = 200  # contacts.name
MAX_LANGUAGE_HINT = 35  # a BCP 47 tag; normalised to 8 characters later
MAX_CONTENT_TYPE = 100  # media.content_type
MAX_MEDIA_REF = 1000  # media.ref


class BadInput(ValueError):
    """Input a provider (or anyone) sent that Relais cannot accept: the webhook answers 400
    with this message, or skips that one message in a batch."""


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    return value


def _id(value: str | None, limit: int, what: str) -> str | None:
    """A provider id as given: refused when it carries control characters or is longer
    than its column (cutting an id could make two people one)."""
    if value is None:
        return None
    if safe_text(value) != value or not value.isprintable():
        raise BadInput(f"{what} holds control characters")
    if len(value) > limit:
        raise BadInput(f"{what} is longer than {limit} characters")
    return value


def checked_inbound(inbound: Inbound) -> Inbound:
    """``inbound`` fit for storage: free text cleaned of NUL and lone surrogates, names cut
    to their column, ids checked (``BadInput`` when one is unusable)."""
    for name in ("address", "text", "provider_id", "choice_id", "profile_name",
                 "language_hint"):
        value = getattr(inbound, name)
        if value is not None and not isinstance(value, str):
            raise BadInput(f"{name} is not text")
    _, _, external = inbound.address.partition(":")
    _id(external, MAX_EXTERNAL_ID, "the sender's id")
    _id(inbound.provider_id, MAX_PROVIDER_ID, "the message id")
    choice = safe_text(inbound.choice_id) if inbound.choice_id is not None else None
    if choice is not None and (len(choice) > MAX_CHOICE_ID or not choice):
        choice = None  # not one of our choice ids: the text is read instead
    media = []
    for item in inbound.media:
        ref = _id(item.ref, MAX_MEDIA_REF, "a media reference")
        media.append(Media(content_type=safe_text(item.content_type)[:MAX_CONTENT_TYPE]
                           or "application/octet-stream", ref=ref or "",
                           caption=None if item.caption is None else safe_text(item.caption)))
    name = safe_text(inbound.profile_name).strip()[:MAX_NAME] or None \
        if inbound.profile_name else None
    hint = safe_text(inbound.language_hint)[:MAX_LANGUAGE_HINT] or None \
        if inbound.language_hint else None
    return replace(inbound, text=safe_text(inbound.text or ""), choice_id=choice,
                   media=tuple(media), profile_name=name, language_hint=hint,
                   extra=_clean_json(inbound.extra))


MAX_ERROR_CODE = 32  # outbox.error_code
MAX_ERROR_REASON = 500  # outbox.error_reason


def clean_error(code: object, reason: object) -> tuple[str | None, str | None]:
    """A provider's error code and reason from a status callback, fit for the outbox row."""
    clean_code = safe_text(str(code)).strip()[:MAX_ERROR_CODE] if code is not None else ""
    clean_reason = safe_text(str(reason)).strip()[:MAX_ERROR_REASON] if reason else ""
    return clean_code or None, clean_reason or None
