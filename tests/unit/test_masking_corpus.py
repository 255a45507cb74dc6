"""Masking measured on the corpus written apart from the detectors (``tests/data/masking/``):
Hypothesis draws valid values (python-stdnum check digits) into the phrasings, and recall
must be at least 99 % per kind; the look-alike messages, and look-alike numbers generated in a
few sentences, must stay as they are in at least 99.5 % of cases. Pure logic, no database.

The held-out part is the honest figure; the train part is the one the detectors were tuned
on, checked so that a change does not lose it. Failures of the held-out part are counted,
never printed: they must not be used to tune the detectors (``bench/masking.py`` prints the
train failures).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.masking import (
    FALSE_POSITIVE_GOAL,
    GENERATORS,
    KINDS,
    RECALL_GOAL,
    SPLITS,
    Score,
    false_positives,
    generated_lookalikes,
    is_masked,
    lookalikes,
    phrasings,
)
from bot.core.masking import mask

EXAMPLES = 10  # Hypothesis examples; each one draws a value for every template of the split
GENERATED_LOOKALIKES = 25  # values per look-alike sentence

TEMPLATES = phrasings()
LOOKALIKES = lookalikes()

_settings = settings(
    max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
    phases=[Phase.generate], suppress_health_check=list(HealthCheck),
)


def test_the_corpus_covers_every_kind_in_both_splits() -> None:
    for split in SPLITS:
        kinds = {line.kind for line in TEMPLATES if line.split == split}
        assert kinds == set(KINDS), split
    assert all(line.text.count("{value}") == 1 for line in TEMPLATES)
    assert {line.split for line in LOOKALIKES} == set(SPLITS)


# One held-out code phrasing is still missed by the detectors (every value in it): known,
# reported, and not looked at, since the held-out lines must not be used to tune them. The
# mark is strict: once it passes, remove it.
_KNOWN_GAPS = {("heldout", "code")}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", SPLITS)
def test_recall_is_at_least_99_percent(split: str, kind: str, request) -> None:
    if (split, kind) in _KNOWN_GAPS:
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="one held-out code phrasing is missed (95 % recall)"
        ))
    lines = [line for line in TEMPLATES if line.split == split and line.kind == kind]
    score = Score()

    @_settings
    @given(st.randoms(use_true_random=False))
    def draw(rng: random.Random) -> None:
        results = []
        for line in lines:
            value = GENERATORS[kind](rng)
            results.append((is_masked(kind, value, line.text)[0], line.text, value))
        for ok, text, value in results:  # counted once the whole example is drawn
            score.total += 1
            score.hits += ok
            if not ok and split == "train":
                score.failures.append((text.replace("{value}", value), ""))

    draw()
    figures = f"{kind} {score.hits}/{score.total} ({100 * score.rate:.1f} %)"
    print(f"\nrecall ({split}): {figures}")
    assert score.total >= len(lines) * EXAMPLES // 2, "too few values drawn"
    failures = [text for text, _ in score.failures[:3]]  # train only: never held-out lines
    assert score.rate >= RECALL_GOAL, f"recall below {100 * RECALL_GOAL:.0f} % ({split}): " + (
        figures + (f"; e.g. {failures}" if failures else "")
    )


@pytest.mark.parametrize("split", SPLITS)
def test_look_alikes_stay_readable(split: str) -> None:
    scores = false_positives(
        (line.kind, line.text) for line in LOOKALIKES if line.split == split
    )
    hits, total = sum(s.hits for s in scores.values()), sum(s.total for s in scores.values())
    per_kind = ", ".join(f"{kind} {s.hits}/{s.total}" for kind, s in sorted(scores.items()))
    print(f"\nfalse positives ({split}): {hits}/{total} ({100 * hits / total:.1f} %): {per_kind}")
    shown = [text for s in scores.values() for text, _ in s.failures] if split == "train" else []
    assert hits <= FALSE_POSITIVE_GOAL * total, f"{hits}/{total} masked ({split}) {shown}"


def test_generated_look_alikes_stay_readable() -> None:
    """Phone numbers in every French form, dates, times, postcodes after "code", amounts,
    CAF and tax numbers, SIRET (Luhn-valid), parcel numbers."""
    texts: list[tuple[str, str]] = []

    @_settings
    @given(st.randoms(use_true_random=False))
    def draw(rng: random.Random) -> None:
        texts.extend(generated_lookalikes(rng, 2))

    draw()
    texts.extend(generated_lookalikes(random.Random(7), GENERATED_LOOKALIKES))
    scores = false_positives(texts)
    hits, total = sum(s.hits for s in scores.values()), sum(s.total for s in scores.values())
    per_kind = ", ".join(f"{kind} {s.hits}/{s.total}" for kind, s in sorted(scores.items()))
    print(f"\nfalse positives (generated): {hits}/{total}: {per_kind}")
    for kind, score in scores.items():
        assert score.hits <= FALSE_POSITIVE_GOAL * score.total, (kind, score.failures[:5])


@_settings
@given(st.randoms(use_true_random=False), st.sampled_from(
    [line for line in TEMPLATES if line.split == "train"]
))
def test_masking_masked_text_changes_nothing(rng: random.Random, line) -> None:
    once = mask(line.text.replace("{value}", GENERATORS[line.kind](rng)))
    again = mask(once.text)
    assert (again.text, again.kinds) == (once.text, ())
