"""Drive the engine like a person would, and read what the bot sent back.

``Dialog`` sends inbound texts through the real engine, drains the real outbox worker into a
recording channel, and returns the messages the person received.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bot.app import Services
from bot.core.channel import SendResult
from bot.core.render import numbered
from bot.core.types import Inbound, Outbound


@dataclass
class RecordingChannel:
    """A channel that keeps what it is asked to send (a terminal, for tests)."""

    name: str = "terminal"
    rate: float | None = None
    rate_by_segments: bool = False
    call_timeout: float = 5.0
    sent: list[Outbound] = field(default_factory=list)

    async def send(self, message: Outbound) -> SendResult:
        self.sent.append(message)
        return SendResult(provider_id=f"rec-{len(self.sent)}")


class Dialog:
    _ids = itertools.count()

    def __init__(self, services: Services, who: str = "alice", channel: str = "terminal"):
        self.services = services
        self.address = f"{channel}:{who}"
        self.channel_name = channel
        self.recorder = RecordingChannel(name=channel)
        services.registry.add(self.recorder)
        self.worker = services.outbox_worker(only_to=who if channel == "terminal" else None)

    async def send(self, text: str = "", *, choice_id: str | None = None,
                   language_hint: str | None = None, media: tuple = ()) -> list[Outbound]:
        before = len(self.recorder.sent)
        await self.services.engine.handle(
            Inbound(self.channel_name, self.address, text,
                    provider_id=f"t-{next(self._ids)}", choice_id=choice_id,
                    language_hint=language_hint, media=media)
        )
        await self.drain()
        return self.recorder.sent[before:]

    async def drain(self) -> None:
        while await self.worker.drain_once():
            pass

    @staticmethod
    def texts(messages: list[Outbound]) -> list[str]:
        return [numbered(m.text, m.choices) for m in messages]

    @staticmethod
    def last_choices(messages: list[Outbound]) -> list[str]:
        for message in reversed(messages):
            if message.choices:
                return [c.id for c in message.choices]
        return []


async def choose(dialog: Dialog, offered: list[Outbound], choice_id: str) -> list[Outbound]:
    """Answer the last question by the number the person sees for ``choice_id``."""
    ids = Dialog.last_choices(offered)
    assert choice_id in ids, f"{choice_id!r} not offered; offered: {ids}"
    return await dialog.send(str(ids.index(choice_id) + 1))
