"""Outbox claim + mark-sent rate with a channel that returns at once, on a fresh SQLite file
and a fresh PostgreSQL database: 1 worker and 4 workers (separate ``OutboxWorker`` objects
running together in this process), batch size 100 and 500.

    .venv/bin/python bench/outbox.py [--rows 5000] [--db sqlite|postgres|both] [--pg-url URL]

Rows are enqueued first (not timed): a broadcast-like queue spread over many people (two
rows each by default, interleaved), so the per-person ordering rule does not serialise the
claim. The channel has no rate limit (``rate=None``), so what is measured is the outbox's own
database work: claim, mark started, record the results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import bench.* and bot.* from the repository
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from sqlalchemy import func, insert, select, text

from bench.common import (
    BenchDB,
    DatabaseUnavailable,
    StatementCounter,
    Stopwatch,
    add_db_arguments,
    backends,
    fmt_ms,
    fmt_rate,
    goal_text,
    machine_description,
    print_header,
    print_summary,
    print_table,
    rate,
    run,
    temp_database,
    vacuum_analyze,
    write_json,
)
from bot.core.channel import Registry, SendResult
from bot.core.types import PRIORITY_BULK, Outbound
from bot.delivery.outbox import OutboxWorker
from bot.storage.models import Address, Contact, Outbox

GOALS = {"sqlite": 1000.0, "postgres": 2000.0}  # rows/s
CHANNEL = "sms"
BODY = (
    "Bonjour, l'espace numérique de la médiathèque est ouvert mardi et jeudi de 14 h à 17 h. "
    "Venez avec vos identifiants. Répondez AIDE pour parler à une personne."
)
SCENARIOS = ((1, 100), (4, 100), (1, 500), (4, 500))  # (workers, batch size)


@dataclass
class NoopChannel:
    """A channel that accepts every message at once (a RecordingChannel that keeps nothing)."""

    name: str = CHANNEL
    rate: float | None = None
    rate_by_segments: bool = False
    call_timeout: float = 5.0
    sent: int = 0

    async def send(self, message: Outbound) -> SendResult:
        self.sent += 1
        return SendResult(provider_id=f"noop-{message.id}")


@dataclass
class Phases:
    """Time spent in each database step of the outbox, summed over the workers."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    claimed: int = 0

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1


class TimedWorker(OutboxWorker):
    """An OutboxWorker that times its claim, mark-started and record transactions."""

    def __init__(self, *args: Any, phases: Phases, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phases = phases

    async def claim(self) -> Any:
        started = time.perf_counter()
        claimed = await super().claim()
        if claimed:  # empty claims (waiting for the last rows) are counted apart
            self.phases.add("claim", time.perf_counter() - started)
            self.phases.claimed += len(claimed)
        else:
            self.phases.add("empty claim", time.perf_counter() - started)
        return claimed

    async def _mark_started(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super()._mark_started(*args, **kwargs)
        finally:
            self.phases.add("mark started", time.perf_counter() - started)

    async def _record(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super()._record(*args, **kwargs)
        finally:
            self.phases.add("record", time.perf_counter() - started)


# -- the queue -------------------------------------------------------------------------------


async def make_contacts(db: BenchDB, count: int) -> list[tuple[int, int, str]]:
    """``count`` people with one SMS address each: (contact id, address id, number)."""
    now = datetime.now(UTC)
    numbers = [f"+336{20_000_000 + i:08d}" for i in range(count)]
    async with db.sessions() as session, session.begin():
        contact_ids = list(await session.scalars(
            insert(Contact).returning(Contact.id, sort_by_parameter_order=True),
            [{"name": f"Personne {i}", "language": "fr", "timezone": "Europe/Paris",
              "created_at": now} for i in range(count)],
        ))
        address_ids = list(await session.scalars(
            insert(Address).returning(Address.id, sort_by_parameter_order=True),
            [{"contact_id": cid, "channel": CHANNEL, "external_id": number, "created_at": now,
              "landline": False} for cid, number in zip(contact_ids, numbers, strict=True)],
        ))
    return list(zip(contact_ids, address_ids, numbers, strict=True))


async def empty_tables(db: BenchDB) -> None:
    """Empty the outbox, events and rate rows between runs.

    Not a plain ``DELETE FROM outbox``: ``outbox.fallback_of`` references ``outbox.id`` with
    no index, so each deleted row scans the whole table for rows pointing at it (minutes for
    20,000 rows). PostgreSQL: ``TRUNCATE``; SQLite: ``DELETE`` with foreign keys off on that
    one connection (SQLite then empties the table at once).
    """
    tables = ("outbox_about", "outbox", "events", "rate_limits")  # outbox_about: migration 0004
    if db.backend == "postgres":
        async with db.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(tables)}"))
        return
    async with db.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("PRAGMA foreign_keys=OFF")
        try:
            for table in tables:
                await raw.execute(f"DELETE FROM {table}")
            await raw.commit()
        finally:
            await raw.execute("PRAGMA foreign_keys=ON")


async def reset_and_enqueue(db: BenchDB, people: list[tuple[int, int, str]], rows: int) -> None:
    """Empty the outbox (and what sending left behind), then queue ``rows`` due rows, the
    people interleaved so that the first ``len(people)`` rows belong to different people."""
    now = datetime.now(UTC) - timedelta(seconds=1)
    await empty_tables(db)
    chunk = 2000
    async with db.sessions() as session, session.begin():
        for first in range(0, rows, chunk):
            values = []
            for index in range(first, min(rows, first + chunk)):
                contact_id, address_id, number = people[index % len(people)]
                values.append({
                    "contact_id": contact_id, "address_id": address_id, "channel": CHANNEL,
                    "to": number, "priority": PRIORITY_BULK, "kind": "broadcast",
                    "body": BODY, "choices": None, "language": "fr", "segments": 2,
                    "status": "queued", "attempts": 0, "max_attempts": 8,
                    "next_attempt_at": now, "was_in_doubt": False, "created_at": now,
                    "updated_at": now,
                })
            await session.execute(insert(Outbox), values)
    await vacuum_analyze(db, "outbox", "events", "rate_limits", "contacts", "addresses")


# -- one scenario ----------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    workers: int
    batch: int
    rows: int
    seconds: float
    sent_rows: int
    statements: int
    phases: Phases
    timed_out: bool

    @property
    def per_second(self) -> float:
        return rate(self.rows, self.seconds)


async def run_scenario(db: BenchDB, people: list[tuple[int, int, str]], rows: int,
                       workers: int, batch: int, deadline_s: float) -> Result:
    await reset_and_enqueue(db, people, rows)
    channel = NoopChannel()
    registry = Registry()
    registry.add(channel)
    phases = Phases()
    pool = [
        TimedWorker(db.sessions, registry, worker_id=f"bench-{os.getpid()}-{n}",
                    batch_size=batch, phases=phases, settings=db.settings)
        for n in range(workers)
    ]
    timed_out = False
    deadline = time.perf_counter() + deadline_s

    async def loop(worker: OutboxWorker) -> None:
        nonlocal timed_out
        while channel.sent < rows:
            if time.perf_counter() > deadline:
                timed_out = True
                return
            if await worker.drain_once() == 0:
                await asyncio.sleep(0.01)  # the last rows are held by another worker

    counter = StatementCounter(db.engine)
    try:
        with Stopwatch() as watch:
            await asyncio.gather(*(loop(w) for w in pool))
    finally:
        counter.close()
    async with db.sessions() as session:
        sent_rows = await session.scalar(
            select(func.count()).select_from(Outbox).where(Outbox.status == "sent")
        ) or 0
    return Result(db.backend, workers, batch, rows, watch.seconds, sent_rows, counter.count,
                  phases, timed_out)


def phase_text(result: Result) -> str:
    parts = []
    for name in ("claim", "mark started", "record", "empty claim"):
        calls = result.phases.calls.get(name, 0)
        if calls:
            parts.append(f"{name} {fmt_ms(result.phases.seconds[name] / calls)} ms x {calls}")
    return ", ".join(parts)


async def bench_backend(db: BenchDB, rows: int, per_person: int) -> list[Result]:
    people = await make_contacts(db, max(1, rows // per_person))
    print(f"{db.backend}: {db.where} ({db.backend} {db.server_version}); {rows} rows for "
          f"{len(people)} people per run")
    results = []
    warm = min(rows, 500)
    await run_scenario(db, people, warm, 1, 100, 60)  # pool, compiled statements
    for workers, batch in SCENARIOS:
        result = await run_scenario(db, people, rows, workers, batch, deadline_s=90)
        if result.timed_out or result.sent_rows != rows:
            print(f"  {workers} worker(s), batch {batch}: only {result.sent_rows} of {rows} "
                  f"rows sent{' (timed out)' if result.timed_out else ''}")
        print(f"  {workers} worker(s), batch {batch}: {phase_text(result)}; "
              f"{result.statements / rows:.2f} statements per row")
        results.append(result)
    goal = GOALS[db.backend]
    print_table(
        f"{db.backend}: outbox rows claimed, sent and recorded per second",
        ["", "batch", "rows/s", "ms per row", "rows per claim", "goal"],
        [[f"{r.workers} worker{'s' if r.workers > 1 else ''}", str(r.batch),
          fmt_rate(r.per_second), f"{1000 * r.seconds / r.rows:.2f}",
          f"{r.phases.claimed / max(1, r.phases.calls.get('claim', 0)):.0f}",
          goal_text(r.per_second, goal, "rows/s")] for r in results],
    )
    return results


def summary_line(backend: str, results: list[Result]) -> str:
    by_batch: dict[int, list[Result]] = {}
    for result in results:
        by_batch.setdefault(result.batch, []).append(result)
    parts = []
    for batch, group in by_batch.items():
        rates = ", ".join(
            f"{r.workers} worker{'s' if r.workers > 1 else ''} {fmt_rate(r.per_second)}"
            for r in group
        )
        parts.append(f"batch {batch}: {rates} rows/s")
    best = max(results, key=lambda r: r.per_second)
    return (f"outbox {backend}: {'; '.join(parts)}; goal "
            f"{goal_text(best.per_second, GOALS[backend], 'rows/s')}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000, help="rows per run (5000)")
    parser.add_argument("--rows-per-person", type=int, default=2,
                        help="queued rows per person (2); 1 is a plain broadcast")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write the figures there as JSON")
    add_db_arguments(parser)
    args = parser.parse_args()
    if args.rows < 1 or args.rows_per_person < 1:
        parser.error("--rows and --rows-per-person must be at least 1")
    print_header("Relais outbox benchmark", [
        machine_description(),
        f"{args.rows} rows per run, {args.rows_per_person} per person; no-op channel "
        f"(rate=None); workers run together in this one process",
    ])
    lines: list[str] = []
    status = 0
    found: dict[str, Any] = {"machine": machine_description(), "goals": GOALS, "backends": {}}
    for backend in backends(args.db):
        try:
            async with temp_database(backend, args.pg_url) as db:
                results = await bench_backend(db, args.rows, args.rows_per_person)
        except DatabaseUnavailable as exc:
            print(f"{backend}: skipped: {exc}", file=sys.stderr)
            lines.append(f"outbox {backend}: skipped (database unavailable)")
            status = 1
            continue
        if any(r.timed_out or r.sent_rows != r.rows for r in results):
            status = 1
        print()
        lines.append(summary_line(backend, results))
        found["backends"][backend] = {
            "best_rows_per_s": max(r.per_second for r in results),
            "runs": [{"workers": r.workers, "batch": r.batch, "rows": r.rows,
                      "rows_per_s": r.per_second, "sent_rows": r.sent_rows,
                      "statements_per_row": r.statements / max(1, r.rows),
                      "timed_out": r.timed_out} for r in results]}
    print_summary(lines)
    write_json(args.json, found)
    return status


if __name__ == "__main__":
    raise SystemExit(run(main))
