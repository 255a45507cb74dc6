"""Fuzz every endpoint of the real ``relais serve`` app much longer than the test suite does:
the same Hypothesis strategies as ``tests/e2e/test_fuzz.py`` (random forms, JSON, headers and
sizes, valid Twilio / Meta signatures and the Telegram secret over random bodies, random
query strings on ``/media`` and the subscription check), then the fixed list of known
poison inputs, on a fresh SQLite file and/or a fresh PostgreSQL database.

    .venv/bin/python bench/fuzz.py [--examples 2000] [--db sqlite|postgres|both]
                                   [--pg-url URL] [--only twilio,telegram,whatsapp,any]

Prints, per target: requests sent, answers by status, 5xx answers, ERROR log records, and
requests per second. Exit status 1 when any answer was a 5xx, carried a traceback, or an
ERROR was logged (the first few are printed).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bench.common import (  # noqa: E402
    DEFAULT_PG_URL,
    add_db_arguments,
    backends,
    machine_description,
    print_header,
    print_table,
    temp_database,
)
from tests.e2e import test_fuzz as fz  # noqa: E402


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def targets() -> dict[str, tuple[st.SearchStrategy[Any], Any]]:
    """The strategies and actions of the test suite, by name."""
    headers = st.dictionaries(
        st.sampled_from([b"Content-Type", b"X-Twilio-Signature", b"X-Hub-Signature-256",
                         b"X-Telegram-Bot-Api-Secret-Token", b"Cookie", b"Accept"]),
        fz.header_bytes, max_size=4)
    return {
        "twilio": (st.tuples(st.sampled_from(["/webhooks/twilio", "/webhooks/twilio/status"]),
                             fz.twilio_params), fz._twilio),
        "telegram": (fz.mostly(st.tuples(st.just(0), fz.telegram_update()), st.one_of(
            st.tuples(st.just(1), st.one_of(fz.json_value, st.binary(max_size=200))),
            st.tuples(st.just(2), fz.json_value)), odds=3), fz._telegram),
        "whatsapp": (fz.mostly(st.tuples(st.just(0), fz.whatsapp_payload()), st.one_of(
            st.tuples(st.just(1), st.one_of(fz.json_value, st.binary(max_size=200))),
            st.tuples(st.just(2), fz.query_bytes)), odds=3), fz._whatsapp),
        "any": (st.tuples(st.sampled_from(["GET", "POST", "PUT", "HEAD"]),
                          st.sampled_from(fz.PATHS), fz.query_bytes, headers,
                          st.one_of(st.binary(max_size=300), st.just(fz.nested(10_000)))),
                fz._anything),
    }


def fuzz_one(loop: asyncio.AbstractEventLoop, running: fz.Stack, name: str,
             strategy: st.SearchStrategy[Any], act: Any, examples: int,
             errors: _Errors) -> tuple[Counter[int], list[str], int, float]:
    statuses: Counter[int] = Counter()
    bad: list[str] = []
    before = len(errors.records)
    started = time.perf_counter()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(example: Any) -> None:
        loop.run_until_complete(act(running, example))
        for where, answer in running.answers:
            statuses[answer.status] += 1
            if answer.status >= 500 or answer.status == 0 or "Traceback" in answer.text:
                bad.append(f"{where} {answer.status}: {example!r:.300}")
        running.answers.clear()

    one()
    return statuses, bad, len(errors.records) - before, time.perf_counter() - started


def poison(loop: asyncio.AbstractEventLoop, running: fz.Stack, errors: _Errors
           ) -> tuple[Counter[int], list[str], int, float]:
    statuses: Counter[int] = Counter()
    bad: list[str] = []
    before = len(errors.records)
    started = time.perf_counter()
    for label, request in fz.poison_requests():
        answer = loop.run_until_complete(request(running))
        statuses[answer.status] += 1
        if answer.status >= 500 or answer.status == 0 or "Traceback" in answer.text:
            bad.append(f"{label} {answer.status}")
    running.answers.clear()
    return statuses, bad, len(errors.records) - before, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per target")
    parser.add_argument("--only", default="twilio,telegram,whatsapp,any",
                        help="comma-separated targets")
    add_db_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    logging.getLogger().setLevel(logging.INFO)  # records reach the handler below
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.CRITICAL)  # the console stays quiet
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    chosen = {name: target for name, target in targets().items()
              if name in args.only.split(",")}
    print_header("relais fuzz: never a 500 for bad input", [
        machine_description(), f"{args.examples} examples per target",
        f"targets: {', '.join(chosen)} and the known poison inputs"])
    failed = False
    for backend in backends(args.db):
        loop = asyncio.new_event_loop()
        db_manager = temp_database(backend, args.pg_url or DEFAULT_PG_URL, suffix="_fuzz")
        db = loop.run_until_complete(db_manager.__aenter__())
        manager = fz.stack(db.url)
        running = loop.run_until_complete(manager.__aenter__())
        rows = []
        problems: list[str] = []
        try:
            results = [(name, fuzz_one(loop, running, name, strategy, act, args.examples,
                                       errors)) for name, (strategy, act) in chosen.items()]
            results.append(("poison", poison(loop, running, errors)))
            for name, (statuses, bad, error_logs, seconds) in results:
                total = sum(statuses.values())
                rows.append([name, str(total),
                             " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
                             str(len(bad)), str(error_logs),
                             f"{total / seconds:.0f}" if seconds else "-"])
                problems += bad[:5]
                failed = failed or bool(bad) or bool(error_logs)
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
            loop.run_until_complete(db_manager.__aexit__(None, None, None))
            loop.close()
        print_table(f"{backend}", ["target", "requests", "statuses", "5xx", "ERROR logs",
                                   "req/s"], rows)
        for line in problems:
            print("  5xx:", line)
    for record in errors.records[:5]:
        print("  ERROR:", record.name, record.getMessage()[:200],
              repr(record.exc_info[1])[:200] if record.exc_info else "")
    print("result:", "FAILED" if failed else "no 5xx, no traceback, no ERROR")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
