"""What to do after a failed send: a pure decision from the error alone (``decide``), which
the outbox worker then writes. The same rule decides what a provider's "failed" status
callback leads to (``after_failed_status``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.core.channel import Failure, SendError
from bot.core.retry import backoff


class Action(StrEnum):
    PAUSE_CHANNEL = "pause_channel"  # the provider's rate: every row of the channel waits
    PAUSE_PERSON = "pause_person"  # one person's pair rate: their rows wait
    DISABLE_CHANNEL = "disable_channel"  # bad credentials: off in this process, loudly
    RETRY = "retry"  # again after ``wait`` seconds
    FAIL = "fail"  # the row is failed


@dataclass(frozen=True)
class Decision:
    action: Action
    wait: float | None = None  # seconds: the pause or the retry delay
    block_address: bool = False  # stop writing to that address until the person writes
    landline: bool = False  # and mark it a landline
    follow_up: bool = False  # WhatsApp: the template or SMS may carry the message instead


BLOCKING = frozenset({Failure.STOPPED, Failure.UNDELIVERABLE})
FOLLOWED_UP = frozenset({Failure.WINDOW_CLOSED, Failure.UNDELIVERABLE})


def after_failed_status(failure: Failure, landline: bool = False) -> Decision:
    """A row the provider says failed (a send refused, or a status callback)."""
    return Decision(Action.FAIL, block_address=failure in BLOCKING,
                    landline=landline and failure is Failure.UNDELIVERABLE,
                    follow_up=failure in FOLLOWED_UP)


def decide(error: SendError, attempts: int, max_attempts: int) -> Decision:
    """The decision for a send that raised ``error`` at its ``attempts``-th attempt."""
    failure = error.failure
    if failure is Failure.THROTTLED:
        wait = error.retry_after if error.retry_after else 1.0
        person = error.scope == "person"
        return Decision(Action.PAUSE_PERSON if person else Action.PAUSE_CHANNEL, wait)
    if failure is Failure.AUTH:
        return Decision(Action.DISABLE_CHANNEL)
    if failure is Failure.RETRYABLE:
        delay = backoff(attempts, max_attempts)
        if delay is not None:
            return Decision(Action.RETRY, delay)
    return after_failed_status(failure, error.landline)
