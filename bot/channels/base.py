"""The contract between Relais and a provider: send an Outbound, or fail in a closed set.

A channel knows nothing of flows; a flow never calls a channel. Failures are one of the
``Failure`` kinds (courier's idea), each adapter mapping its provider's codes onto them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from bot.types import Outbound


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
