"""What follows a failed send, decided from the error alone (``bot.delivery.policy``): no
database, no provider. The outbox worker and the status webhooks both write what it says."""

from __future__ import annotations

import pytest

from bot.channels import twilio
from bot.core.channel import Failure, SendError
from bot.core.retry import backoff
from bot.delivery.policy import Action, after_failed_status, decide


def test_a_provider_pause_waits_for_its_retry_after_on_the_right_scope() -> None:
    channel = decide(SendError(Failure.THROTTLED, "429", retry_after=7.0), 1, 8)
    person = decide(SendError(Failure.THROTTLED, "pair rate", retry_after=2.0,
                              scope="person"), 1, 8)
    assert (channel.action, channel.wait) == (Action.PAUSE_CHANNEL, 7.0)
    assert (person.action, person.wait) == (Action.PAUSE_PERSON, 2.0)
    assert decide(SendError(Failure.THROTTLED, "429"), 1, 8).wait == 1.0  # no Retry-After


def test_bad_credentials_disable_the_channel_and_never_fail_the_row() -> None:
    assert decide(SendError(Failure.AUTH, "401"), 1, 8).action is Action.DISABLE_CHANNEL


def test_a_retryable_error_backs_off_then_fails_after_the_last_attempt() -> None:
    first = decide(SendError(Failure.RETRYABLE, "503"), 1, 3)
    assert first.action is Action.RETRY and first.wait is not None and first.wait >= 0
    assert backoff(3, 3) is None
    last = decide(SendError(Failure.RETRYABLE, "503"), 3, 3)
    assert (last.action, last.block_address) == (Action.FAIL, False)


@pytest.mark.parametrize(("failure", "blocks", "follows"), [
    (Failure.STOPPED, True, False),
    (Failure.UNDELIVERABLE, True, True),
    (Failure.WINDOW_CLOSED, False, True),
    (Failure.FAILED, False, False),
])
def test_a_refusal_blocks_the_address_and_whatsapp_may_follow_up(
    failure: Failure, blocks: bool, follows: bool
) -> None:
    sent = decide(SendError(failure, "refused"), 1, 8)
    told = after_failed_status(failure)  # the same rule for a "failed" status callback
    for decision in (sent, told):
        assert (decision.action, decision.block_address, decision.follow_up) == (
            Action.FAIL, blocks, follows)


def test_only_an_undeliverable_landline_marks_the_address_a_landline() -> None:
    assert decide(SendError(Failure.UNDELIVERABLE, "x", landline=True), 1, 8).landline
    assert not decide(SendError(Failure.STOPPED, "x", landline=True), 1, 8).landline
    assert not after_failed_status(Failure.UNDELIVERABLE).landline


def test_twilio_says_which_codes_are_landlines() -> None:
    """The adapter, not the outbox, knows its provider's codes."""
    from twilio.base.exceptions import TwilioRestException

    def error(code: int) -> SendError:
        return twilio.send_error(TwilioRestException(400, "/Messages", "refused", code, "POST"))

    assert error(21614).failure is Failure.UNDELIVERABLE and error(21614).landline
    assert error(30006).landline
    assert error(21211).failure is Failure.UNDELIVERABLE and not error(21211).landline
    assert error(21610).failure is Failure.STOPPED and not error(21610).landline
