"""The retry policy: a pure function from the attempt count to a delay, or give up."""

from __future__ import annotations

import random

BASE_SECONDS = 2.0
CAP_SECONDS = 15 * 60.0


def backoff(attempts: int, max_attempts: int, rng: random.Random | None = None) -> float | None:
    """Full-jitter exponential backoff (AWS): a delay in seconds, or None to give up.

    ``attempts`` is how many tries were made so far (1 after the first failure).
    """
    if attempts >= max_attempts:
        return None
    # The exponent is bounded: the cap is reached long before, and 2 ** 1024 overflows a float.
    ceiling = min(CAP_SECONDS, BASE_SECONDS * 2.0 ** min(max(0, attempts - 1), 64))
    return (rng or random).uniform(0, ceiling)
