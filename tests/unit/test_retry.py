"""The retry policy: a pure function of the attempt count (no database, run once)."""

from __future__ import annotations

import random

import pytest

from bot.core.retry import BASE_SECONDS, CAP_SECONDS, backoff


def ceiling(attempts: int) -> float:
    return min(CAP_SECONDS, BASE_SECONDS * 2 ** max(0, min(attempts - 1, 64)))


@pytest.mark.parametrize("max_attempts", [1, 2, 6, 8])
def test_gives_up_exactly_at_max_attempts(max_attempts: int) -> None:
    rng = random.Random(1)
    for attempts in range(0, max_attempts):
        assert backoff(attempts, max_attempts, rng) is not None
    assert backoff(max_attempts, max_attempts, rng) is None
    assert backoff(max_attempts + 1, max_attempts, rng) is None


@pytest.mark.parametrize("attempts", [0, 1, 2, 3, 5, 9, 10, 11, 20, 60])
def test_full_jitter_stays_within_zero_and_the_ceiling(attempts: int) -> None:
    rng = random.Random(attempts)
    delays = [backoff(attempts, 100, rng) for _ in range(2000)]
    top = ceiling(attempts)
    assert all(d is not None and 0 <= d <= top for d in delays)
    # Full jitter: spread over the whole range, not bunched near the ceiling.
    assert min(d for d in delays if d is not None) < 0.05 * top
    assert max(d for d in delays if d is not None) > 0.95 * top


def test_ceiling_doubles_from_two_seconds_up_to_the_cap() -> None:
    assert [ceiling(a) for a in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    rng = random.Random(7)
    maxima = [max(backoff(a, 100, rng) or 0.0 for _ in range(500)) for a in range(1, 14)]
    assert all(m <= CAP_SECONDS for m in maxima)
    assert maxima[0] <= 2.0 < maxima[2] <= 8.0  # grows with the attempts ...
    assert maxima[-1] > 0.9 * CAP_SECONDS  # ... and stops at the cap (15 min)


def test_a_seeded_random_gives_the_same_delays() -> None:
    first = [backoff(a, 10, random.Random(42)) for a in range(1, 10)]
    again = [backoff(a, 10, random.Random(42)) for a in range(1, 10)]
    assert first == again


@pytest.mark.parametrize("attempts", [1025, 5000, 10**6])
def test_huge_attempt_counts_stay_capped(attempts: int) -> None:
    delay = backoff(attempts, attempts + 1, random.Random(3))
    assert delay is not None and 0 <= delay <= CAP_SECONDS
