"""The terminal as a channel, for ``relais chat``: messages are printed, choices numbered."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

from bot.core.channel import SendResult
from bot.core.render import numbered
from bot.core.types import Outbound


class TerminalChannel:
    name = "terminal"
    rate: float | None = None
    rate_by_segments = False
    call_timeout = 5.0

    def __init__(self, write: Callable[[Outbound, str], None]) -> None:
        self._write = write
        self._ids = count(1)

    async def send(self, message: Outbound) -> SendResult:
        self._write(message, numbered(message.text, message.choices))
        return SendResult(provider_id=f"term-{next(self._ids)}")
