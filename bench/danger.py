"""Danger words against the corpus written apart from the lexicons (``tests/data/danger``):
recall and false alarms per language and per category, the training part and the held-out
part apart, and the time one message takes.

    .venv/bin/python bench/danger.py [--failures]

Recall counts a danger message as caught when anything is found (any category opens an
urgent ticket); the per-category table counts a category as caught when it is among those
found. A false alarm is a harmless message in which anything is found.

``--failures`` lists the *training* messages the lexicons get wrong, to improve them. The
held-out part is only ever counted: its messages are never printed, so that nobody tunes
the lexicons on it.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import bench.* and bot.* from the repository
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bot.domain import danger

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "danger"
TRAIN, HELDOUT = "train", "heldout"
GOALS = {"fr": 0.95}  # recall on the held-out part; other languages: DEFAULT_GOAL
DEFAULT_GOAL = 0.90
MAX_FALSE_ALARMS = 0.03


@dataclass(frozen=True)
class Example:
    language: str
    split: str
    expected: tuple[str, ...]  # () for a harmless message
    text: str


def read_corpus(directory: Path = CORPUS) -> list[Example]:
    """Every line of every ``<lang>.tsv`` (header ``split expected text``)."""
    examples = []
    for language in danger.LANGUAGES:
        path = directory / f"{language}.tsv"
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                expected = row["expected"].strip()
                categories = () if expected == "-" else tuple(
                    c.strip() for c in expected.split(",") if c.strip())
                examples.append(Example(language, row["split"].strip(), categories,
                                        row["text"]))
    return examples


@dataclass
class Tally:
    danger: int = 0
    caught: int = 0
    harmless: int = 0
    alarms: int = 0

    @property
    def recall(self) -> float:
        return self.caught / self.danger if self.danger else 1.0

    @property
    def false_alarms(self) -> float:
        return self.alarms / self.harmless if self.harmless else 0.0


Matcher = Callable[[str], "danger.Found | None"]


@dataclass(frozen=True)
class Scores:
    languages: dict[tuple[str, str], Tally]  # (split, language)
    categories: dict[tuple[str, str], Tally]  # (split, category): danger/caught, and
    # harmless/alarms: harmless messages in which this category was found


def score(examples: Iterable[Example], matcher: Matcher = danger.match) -> Scores:
    languages: dict[tuple[str, str], Tally] = {}
    categories: dict[tuple[str, str], Tally] = {}
    for example in examples:
        found = matcher(example.text)
        tally = languages.setdefault((example.split, example.language), Tally())
        if example.expected:
            tally.danger += 1
            tally.caught += found is not None
            for category in example.expected:
                per = categories.setdefault((example.split, category), Tally())
                per.danger += 1
                per.caught += found is not None and category in found.categories
        else:
            tally.harmless += 1
            tally.alarms += found is not None
            for category in danger.CATEGORIES:
                per = categories.setdefault((example.split, category), Tally())
                per.harmless += 1
                per.alarms += found is not None and category in found.categories
    return Scores(languages, categories)


def train_failures(examples: Iterable[Example],
                   matcher: Matcher = danger.match) -> list[tuple[Example, str]]:
    """Training messages missed, alarmed on, or given the wrong categories (never a
    held-out one)."""
    failures = []
    for example in examples:
        if example.split != TRAIN:
            continue
        found = matcher(example.text)
        got = found.categories if found is not None else ()
        if bool(got) != bool(example.expected):
            failures.append((example, "missed" if example.expected else "false alarm"))
        elif example.expected and not set(example.expected) <= set(got):
            failures.append((example, "categories " + ",".join(got)))
    return failures


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _rows(scores: Scores, split: str) -> list[list[str]]:
    rows, total = [], Tally()
    for language in danger.LANGUAGES:
        tally = scores.languages.get((split, language), Tally())
        for name in ("danger", "caught", "harmless", "alarms"):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
        goal = GOALS.get(language, DEFAULT_GOAL)
        met = tally.recall >= goal and tally.false_alarms <= MAX_FALSE_ALARMS
        rows.append([language, f"{tally.caught}/{tally.danger}", _pct(tally.recall),
                     f"{tally.alarms}/{tally.harmless}", _pct(tally.false_alarms),
                     f"≥ {goal:.0%}, ≤ {MAX_FALSE_ALARMS:.0%}: {'met' if met else 'MISSED'}"])
    rows.append(["all", f"{total.caught}/{total.danger}", _pct(total.recall),
                 f"{total.alarms}/{total.harmless}", _pct(total.false_alarms), ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failures", action="store_true",
                        help="list the training messages the lexicons get wrong")
    args = parser.parse_args(argv)

    from bench.common import machine_description, print_header, print_summary, print_table

    started = time.perf_counter()
    danger.lexicons()
    loaded = time.perf_counter() - started
    examples = read_corpus()
    started = time.perf_counter()
    scores = score(examples)
    per_message = (time.perf_counter() - started) / max(len(examples), 1)
    print_header("Danger words against the corpus", [
        machine_description(),
        f"{len(examples)} messages in {len(danger.LANGUAGES)} languages "
        f"({sum(e.split == HELDOUT for e in examples)} held out)",
        f"lexicons read in {loaded * 1000:.0f} ms; {per_message * 1000:.2f} ms a message "
        "(every lexicon tried on every message)",
    ])
    columns = ["language", "caught", "recall", "alarms", "false alarms", "goal (held-out)"]
    for split in (TRAIN, HELDOUT):
        print_table(f"{split}: per language", columns, _rows(scores, split))
    rows = []
    for category in danger.CATEGORIES:
        cells = [category]
        for split in (TRAIN, HELDOUT):
            tally = scores.categories.get((split, category), Tally())
            cells += [f"{tally.caught}/{tally.danger}", _pct(tally.recall), str(tally.alarms)]
        rows.append(cells)
    print_table("per category (recall: the category among those found; alarms: harmless "
                "messages in which it was found)",
                ["category", "train", "recall", "alarms", "held-out", "recall", "alarms"], rows)
    if args.failures:
        print("training messages the lexicons get wrong (held-out ones are never shown):")
        for example, why in train_failures(examples):
            expected = ",".join(example.expected) or "-"
            print(f"  {example.language}  {why:<22} {expected:<18} {example.text}")
    summary = []
    for split in (TRAIN, HELDOUT):
        for row in _rows(scores, split):
            summary.append(f"| {split} | {row[0]} | {row[1]} ({row[2]}) | {row[3]} ({row[4]}) |")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
