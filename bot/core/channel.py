"""The contract between Relais and a provider.

Out: a ``Channel`` sends an ``Outbound``, or fails in a closed set (``SendError`` with one
of the ``Failure`` kinds, courier's idea: each adapter maps its provider's codes onto them).
In: an adapter's webhook turns what the provider posts into ``Inbound`` messages,
``StatusUpdate``s and ``ChannelEvent``s, handed to the ``InboundSink`` the application gives
it. An adapter never sees the engine, the application or the database; a flow never calls
a channel. Each adapter module exposes one ``AdapterSpec`` (``bot.channels.ADAPTERS``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot.core.types import Inbound, Media, Outbound, safe_text

if TYPE_CHECKING:
    from aiohttp import web

    from bot.core.clock import Clock
    from bot.core.config import Settings


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
        landline: bool = False,
    ) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason
        self.code = None if code is None else str(code)
        self.retry_after = retry_after
        self.scope = scope
        self.landline = landline  # UNDELIVERABLE because the number is a landline


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


# -- what an adapter hands the application ---------------------------------------------------

MAX_BODY = 1024 * 1024  # webhooks larger than 1 MiB get 413


@dataclass(frozen=True)
class StatusUpdate:
    """What a provider says about a message Relais sent (``provider_id``): ``status`` is one
    of the outbox's (``sent``, ``delivered``, ``read``, ``failed``); a failure comes mapped
    onto ``Failure`` by the adapter, with the provider's code and reason as given."""

    channel: str
    provider_id: str
    status: str
    error_code: str | None = None
    error_reason: str | None = None
    failure: Failure | None = None
    landline: bool = False  # the provider says the number is a landline


@dataclass(frozen=True)
class ChannelEvent:
    """A fact from a provider that is not a message: ``phone_shared`` (a Telegram user
    shared their own number: ``value`` is it, in E.164)."""

    channel: str
    address: str  # CHANNEL:ID of the person
    kind: str
    value: str | None = None


PHONE_SHARED = "phone_shared"


class Verdict(StrEnum):
    """What the application knows of a verified request's signature (``InboundSink.seen``)."""

    NEW = "new"  # first time this signature is seen
    RETRY = "retry"  # the same request again: let deduplication answer
    REPLAY = "replay"  # the same signature over other fields: refuse


def form_fields(url: str, pairs: Iterable[tuple[str, str]]) -> str:
    """A canonical, unambiguous form of a signed form POST (URL and every parameter)."""
    return json.dumps([url, sorted(pairs)], ensure_ascii=True, separators=(",", ":"))


class InboundSink(Protocol):
    """The application's door for adapters: store what came in, say what happened."""

    async def message(self, inbound: Inbound) -> str:
        """Store and handle one message (deduplicated on its provider id); returns the
        outcome (``written`` or ``duplicate``)."""
        ...

    async def status(self, update: StatusUpdate) -> None: ...

    async def event(self, event: ChannelEvent) -> None: ...

    async def seen(self, provider: str, signature: str, fields: str) -> Verdict:
        """Record a verified request's signature (digests only) and say if it was seen."""
        ...

    def count(self, channel: str, outcome: str) -> None:
        """Count an inbound request that stored nothing (``ignored``, ``replay``)."""
        ...


@dataclass
class Opened:
    """What an adapter opened for this process: its channels, and how to close them.
    ``state`` is the adapter's own (a client its webhooks need, e.g. the Telegram bot)."""

    channels: list[Channel] = field(default_factory=list)
    close: Callable[[], Awaitable[None]] | None = None
    state: Any = None


@dataclass
class Hub:
    """What an adapter's webhook handler is given: the running settings and clock, the
    application's sink, and what the adapter opened (None when it is disabled)."""

    settings: Settings
    clock: Clock
    sink: InboundSink
    opened: Opened | None = None


Webhook = Callable[["web.Request", Hub], Awaitable["web.StreamResponse"]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Webhook


@dataclass(frozen=True)
class AdapterSpec:
    """One provider adapter: its webhook routes (mounted by ``bot.web``), how to open its
    channels from the settings (None, with one log line, when it is not configured), and
    its state for ``relais channels`` (no network call)."""

    name: str
    open: Callable[[Settings], Awaitable[Opened | None]]
    routes: tuple[Route, ...] = ()
    status: Callable[[Settings], list[dict[str, Any]]] | None = None
