"""Inbound events through ``Engine.handle`` (no HTTP), on a fresh SQLite file and a fresh
PostgreSQL database, sequentially and with 8 events in flight; compared with the raw rate of
one-row INSERT transactions through the same SQLAlchemy engine.

    .venv/bin/python bench/engine.py [--events 2000] [--db sqlite|postgres|both] [--pg-url URL]
                                     [--explain N] [--json FILE]

About a quarter as many people as events write in: each a first message (``/start`` on
Telegram), then a mix of menu answers (numbers, words, Telegram buttons), keywords (MENU,
AIDE, LANGUE, STOP/START), free text and a few provider redeliveries, interleaved with the
other people's messages as they would arrive.

Per database, for the sequential run, it prints the SQL statements per event and the Python
CPU time per event. Statements are counted with ``before_cursor_execute`` on
``AsyncEngine.sync_engine``: every statement sent to the driver, ``SAVEPOINT`` / ``RELEASE
SAVEPOINT`` included (each is a round trip), and on SQLite the ``BEGIN IMMEDIATE`` that
``bot.storage.db`` emits. ``COMMIT`` (and on PostgreSQL the ``BEGIN`` asyncpg sends by
itself) are driver calls the hook does not see: they are counted apart, from the engine's
``begin`` / ``commit`` / ``rollback`` events. CPU is ``time.process_time()`` around the run
divided by the events: this process only, every thread (aiosqlite's worker thread and the
drivers' own work included), the database server not counted.

``--explain N`` runs, after the usual warm-up, N typical events (N known people, each in the
main menu, each answering it: "6", change language) and prints every statement (its first 100
characters) grouped by the Python caller that sent it (the first ``file:function`` outside
SQLAlchemy on the stack; "flush" when the ORM's unit of work wrote it), with counts: the map
of what to cut. The full benchmark is not run then.

``--json FILE`` also writes the figures as one JSON object (``-`` for stdout)::

    {"bench": "engine", "events": 2000, "concurrency": 8, "machine": "...",
     "results": {                        # one key per database run: "sqlite", "postgres"
       "sqlite": {
         "sequential": {                 # mode: "sequential" or "concurrent"
           "events_per_s": 71.2,         # Engine.handle calls per second, wall clock
           "statements_per_event": 17.5, # before_cursor_execute count / events
           "savepoints_per_event": 4.0,  # of which SAVEPOINT / RELEASE / ROLLBACK TO
           "begin_statements_per_event": 1.0,  # of which BEGIN (SQLite only; else 0)
           "transactions_per_event": 1.0,       # engine "begin" events / events
           "commits_per_event": 1.0,     # engine "commit" events (driver calls, not counted
                                         # in statements_per_event)
           "cpu_ms_per_event": 10.8,     # time.process_time() of this process / events
           "p50_ms": 12.0, "p99_ms": 40.0,      # latency of one event
           "insert_tx_per_s": 280.0,     # the database's own one-row INSERT transactions
                                         # per second, same mode (the ceiling)
           "concurrency": 1              # events in flight
         },
         "concurrent": {...},
         "round_trip_ms": 0.3,           # one SELECT 1 through an AsyncSession
         "server_version": "3.40.1"
       }
     },
     "explain": {                        # only with --explain N
       "sqlite": {"events": 50, "statements_per_event": 12.0,
                  "callers": [{"caller": "bot/engine.py:_contact", "per_event": 1.0,
                               "statements": [{"sql": "SELECT ...", "count": 50}]}]}
     }}

Figures are per event and rounded to 3 decimals; a database that could not be reached is
absent from ``results`` (the exit status is then 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: import bench.* and bot.* from the repository
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import greenlet
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import (
    BenchDB,
    DatabaseUnavailable,
    Stopwatch,
    add_db_arguments,
    backends,
    fmt_ms,
    fmt_rate,
    goal_text,
    machine_description,
    percentile,
    print_header,
    print_summary,
    print_table,
    rate,
    run,
    temp_database,
)
from bot.core.types import Inbound
from bot.engine import Engine, Outcome
from bot.storage.models import Message, Outbox, Ticket

GOALS = {"sqlite": 320.0, "postgres": 600.0}  # events/s
CONCURRENCY = 8
SEED = 20240601

# -- the workload ----------------------------------------------------------------------------

FIRST = (
    "Bonjour", "bonjour", "Bonjour madame", "Salut", "allo ?", "Bonjour, j'ai besoin d'aide",
    "Bonjour je voudrais de l'aide pour la CAF", "Hello",
)
FREE = (
    "je n'arrive pas à me connecter sur ameli",
    "mon mot de passe ne marche plus",
    "comment je fais pour imprimer mon attestation ?",
    "j'ai reçu un courrier de France Travail, je comprends pas",
    "c'est pour ma déclaration d'impôts",
    "j'ai perdu mon identifiant FranceConnect",
    "vous pouvez m'appeler au 06 12 34 56 78 ?",
    "mon mail c'est jeanne.martin@example.org",
    "il faut que je refasse ma carte d'identité",
    "je dois envoyer un scan de mon avis d'imposition",
    "merci",
    "ok",
    "d'accord merci beaucoup",
    "je ne comprends pas",
    "c'est urgent, ma CAF est suspendue depuis le mois dernier",
    "Je n'ai plus de crédit sur mon téléphone, je vous écris quand je peux",
)
LANGUAGE_ANSWERS = (("1", "fr"), ("1", "fr"), ("français", "fr"), ("Francais", "fr"),
                    ("2", "en"))
MENU_HUMAN = (("1", "human"), ("1.", "human"), ("un", "human"), ("parler", "human"))
MENU_LANGUAGE = (("2", "language"), ("deux", "language"))
OFFER_YES = (("1", "yes"), ("oui", "yes"), ("Oui", "yes"))
OFFER_NO = (("2", "no"), ("non", "no"))


@dataclass
class Person:
    address: str
    channel: str
    hint: str | None
    messages: list[tuple[str, str | None]] = field(default_factory=list)  # (text, choice id)


@dataclass(frozen=True)
class Event:
    person: int
    inbound: Inbound
    kind: str  # first, answer, keyword, free, redelivery


def _weighted(rng: random.Random, options: list[tuple[int, str]]) -> str:
    return rng.choices([o for _w, o in options], weights=[w for w, _o in options])[0]


def _script(rng: random.Random, person: Person, length: int) -> list[tuple[str, str, str]]:
    """(text, choice id or "", kind) for one person, following roughly where the bot is."""
    telegram = person.channel == "telegram"
    out: list[tuple[str, str, str]] = [
        ("/start" if telegram else rng.choice(FIRST), "", "first")
    ]
    state = "menu" if person.hint else "language"
    misunderstood = 0

    def answer(options: tuple[tuple[str, str], ...]) -> tuple[str, str, str]:
        text, choice_id = rng.choice(options)
        if telegram and rng.random() < 0.7:  # a button press
            return "", choice_id, "answer"
        return text, "", "answer"

    while len(out) < length:
        if state == "language":
            pick = _weighted(rng, [(80, "answer"), (20, "free")])
            if pick == "answer":
                out.append(answer(LANGUAGE_ANSWERS))
                state = "menu"
            else:
                out.append((rng.choice(FREE), "", "free"))
        elif state == "menu":
            pick = _weighted(rng, [(15, "human"), (8, "language"), (30, "free"), (10, "MENU"),
                                   (12, "AIDE"), (5, "LANGUE"), (3, "STOP")])
            if pick == "human":
                out.append(answer(MENU_HUMAN))
                state = "waiting"
            elif pick == "language":
                out.append(answer(MENU_LANGUAGE))
                state = "language"
            elif pick == "free":
                out.append((rng.choice(FREE), "", "free"))
                misunderstood += 1
                if misunderstood >= 2:
                    state, misunderstood = "offer", 0
            else:
                out.append((pick if rng.random() < 0.7 else pick.lower(), "", "keyword"))
                state = {"MENU": "menu", "AIDE": "waiting", "LANGUE": "language",
                         "STOP": "stopped"}[pick]
        elif state == "waiting":
            pick = _weighted(rng, [(70, "free"), (15, "MENU"), (10, "AIDE"), (5, "STOP")])
            if pick == "free":
                out.append((rng.choice(FREE), "", "free"))
            else:
                out.append((pick, "", "keyword"))
                state = {"MENU": "menu", "AIDE": "waiting", "STOP": "stopped"}[pick]
        elif state == "offer":
            pick = _weighted(rng, [(50, "yes"), (40, "no"), (10, "free")])
            if pick == "free":
                out.append((rng.choice(FREE), "", "free"))
            else:
                out.append(answer(OFFER_YES if pick == "yes" else OFFER_NO))
                state = "waiting" if pick == "yes" else "menu"
        else:  # stopped
            pick = _weighted(rng, [(70, "START"), (30, "free")])
            if pick == "START":
                out.append(("START", "", "keyword"))
                state = "menu"
            else:
                out.append((rng.choice(FREE), "", "free"))
    return out


def workload(events: int, seed: int, prefix: str, first_person: int) -> tuple[list[Event], int]:
    """``events`` inbound events from about ``events / 4`` people, in arrival order; people
    are numbered from ``first_person`` (runs on one database use distinct ranges)."""
    rng = random.Random(seed)
    people_count = max(1, events // 4)
    lengths = [1] * people_count
    for index in rng.choices(range(people_count), k=events - people_count):
        lengths[index] += 1
    per_person: list[list[Event]] = []
    serial = 0
    for index, length in enumerate(lengths):
        channel = _weighted(rng, [(55, "sms"), (25, "whatsapp"), (20, "telegram")])
        number = 10_000_000 + first_person + index
        ident = f"{700_000_000 + number}" if channel == "telegram" else f"+336{number:08d}"
        person = Person(f"{channel}:{ident}", channel, "fr" if channel == "telegram" else None)
        chain: list[Event] = []
        for body, choice_id, kind in _script(rng, person, length):
            if chain and rng.random() < 0.01:  # the provider delivers the last one again
                chain.append(Event(index, chain[-1].inbound, "redelivery"))
                if len(chain) >= length:
                    break
            serial += 1
            chain.append(Event(index, Inbound(
                channel, person.address, body, provider_id=f"{prefix}-{serial}",
                choice_id=choice_id or None, language_hint=person.hint,
                profile_name=f"Personne {index}" if channel != "sms" else None,
            ), kind))
        per_person.append(chain[:length])
    # Interleave: a random arrival order that keeps each person's own order.
    slots = [p for p, chain in enumerate(per_person) for _ in chain]
    rng.shuffle(slots)
    cursors = [0] * people_count
    ordered: list[Event] = []
    for p in slots:
        ordered.append(per_person[p][cursors[p]])
        cursors[p] += 1
    return ordered, people_count


# -- statements ------------------------------------------------------------------------------

_SAVEPOINT = ("SAVEPOINT", "RELEASE", "ROLLBACK TO")
_HERE = str(Path(__file__).resolve().parent.parent) + os.sep
_SKIP_FRAMES = (f"{os.sep}sqlalchemy{os.sep}", f"{os.sep}greenlet{os.sep}",
                f"{os.sep}asyncio{os.sep}", f"{os.sep}aiosqlite{os.sep}",
                f"{os.sep}asyncpg{os.sep}")


_OWN_FRAMES = frozenset({"_frames", "caller", "_on_execute"})


def _frames() -> Iterator[FrameType]:
    """This greenlet's frames, innermost first, then those of the greenlets that started it:
    SQLAlchemy's asyncio layer runs the ORM in a greenlet whose parent holds the coroutines
    that called it."""
    frame: FrameType | None = sys._getframe(1)
    current = greenlet.getcurrent()
    while True:
        while frame is not None:
            yield frame
            frame = frame.f_back
        current = current.parent
        if current is None:
            return
        frame = current.gr_frame


def caller() -> str:
    """``file:function`` of the first frame outside SQLAlchemy (and the drivers, asyncio,
    this log); " (flush)" when the ORM's unit of work sent the statement."""
    flushed = False
    for frame in _frames():
        name = frame.f_code.co_filename
        if name == __file__ and frame.f_code.co_name in _OWN_FRAMES:
            continue
        if name.startswith("<sqlalchemy") or any(part in name for part in _SKIP_FRAMES):
            if frame.f_code.co_name in ("flush", "_flush", "_autoflush"):
                flushed = True
            continue
        if name.startswith(_HERE):
            name = name[len(_HERE):]
        return f"{name}:{frame.f_code.co_name}" + (" (flush)" if flushed else "")
    return "?"


def _kind(statement: str) -> str:
    head = statement.lstrip()[:12].upper()
    if head.startswith("BEGIN"):
        return "begin"
    if head.startswith(_SAVEPOINT):
        return "savepoint"
    return "query"


class StatementLog:
    """Statements sent to the driver (``before_cursor_execute``: an ``executemany`` counts
    once), by kind, and the transactions' ``begin`` / ``commit`` / ``rollback`` driver calls.
    ``explain``: also every statement's caller and first 100 characters."""

    def __init__(self, engine: AsyncEngine, *, explain: bool = False) -> None:
        self.kinds: Counter[str] = Counter()
        self.transactions: Counter[str] = Counter()
        self.by_caller: dict[str, Counter[str]] = {}
        self._explain = explain
        self._engine = engine.sync_engine
        self._hooks: list[tuple[str, Any]] = [
            ("before_cursor_execute", self._on_execute),
            ("begin", lambda _conn: self._on_transaction("begin")),
            ("commit", lambda _conn: self._on_transaction("commit")),
            ("rollback", lambda _conn: self._on_transaction("rollback")),
        ]
        for name, hook in self._hooks:
            event.listen(self._engine, name, hook)

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        self.kinds[_kind(statement)] += 1
        if self._explain:
            sql = " ".join(statement.split())[:100]
            self.by_caller.setdefault(caller(), Counter())[sql] += 1

    def _on_transaction(self, name: str) -> None:
        self.transactions[name] += 1

    def close(self) -> None:
        for name, hook in self._hooks:
            event.remove(self._engine, name, hook)


# -- measures --------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    count: int
    seconds: float
    latencies: list[float]
    statements: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0  # this process, every thread (aiosqlite's included)
    kinds: Counter[str] = field(default_factory=Counter)  # query, savepoint, begin
    transactions: Counter[str] = field(default_factory=Counter)  # begin, commit, rollback
    concurrency: int = 1

    @property
    def per_second(self) -> float:
        return rate(self.count, self.seconds)

    def per_event(self, value: float) -> float:
        return value / max(1, self.count)

    def figures(self, ceiling: Run) -> dict[str, float | int]:
        """The keys of ``--json`` for one mode (see the module docstring)."""
        return {
            "events_per_s": round(self.per_second, 3),
            "statements_per_event": round(self.per_event(self.statements), 3),
            "savepoints_per_event": round(self.per_event(self.kinds["savepoint"]), 3),
            "begin_statements_per_event": round(self.per_event(self.kinds["begin"]), 3),
            "transactions_per_event": round(self.per_event(self.transactions["begin"]), 3),
            "commits_per_event": round(self.per_event(self.transactions["commit"]), 3),
            "cpu_ms_per_event": round(self.per_event(self.cpu_seconds) * 1000, 3),
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 3),
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 3),
            "insert_tx_per_s": round(ceiling.per_second, 3),
            "concurrency": self.concurrency,
        }


async def run_sequential(engine: Engine, events: list[Event], db: BenchDB) -> Run:
    counter = StatementLog(db.engine)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    cpu = time.process_time()
    try:
        with Stopwatch() as total:
            for item in events:
                with Stopwatch() as one:
                    result = await engine.handle(item.inbound)
                latencies.append(one.seconds)
                outcomes[_outcome(result)] += 1
    finally:
        counter.close()
    return Run("sequential", len(events), total.seconds, latencies, counter.count, outcomes,
               time.process_time() - cpu, counter.kinds, counter.transactions)


async def run_concurrent(engine: Engine, events: list[Event], db: BenchDB,
                         concurrency: int) -> Run:
    """All events gathered at once; a semaphore keeps ``concurrency`` in flight, and a lock
    per person keeps each person's own order (tasks queue on both in arrival order)."""
    gate = asyncio.Semaphore(concurrency)
    person_locks: dict[int, asyncio.Lock] = {}
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()

    async def one(item: Event) -> None:
        lock = person_locks.setdefault(item.person, asyncio.Lock())
        async with lock, gate:
            with Stopwatch() as watch:
                result = await engine.handle(item.inbound)
        latencies.append(watch.seconds)
        outcomes[_outcome(result)] += 1

    counter = StatementLog(db.engine)
    cpu = time.process_time()
    try:
        with Stopwatch() as total:
            await asyncio.gather(*(one(item) for item in events))
    finally:
        counter.close()
    return Run(f"concurrency {concurrency}", len(events), total.seconds, latencies,
               counter.count, outcomes, time.process_time() - cpu, counter.kinds,
               counter.transactions, concurrency)


def _outcome(result: object) -> str:
    outcome = getattr(result, "outcome", None)
    if outcome is Outcome.DUPLICATE:
        return "duplicate"
    if getattr(result, "step_failed", False):
        return "step failed"
    return "written"


SCRATCH = Table(
    "bench_scratch", MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("body", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)


async def insert_ceiling(db: BenchDB, rows: int, concurrency: int) -> Run:
    """One-row INSERT transactions into a scratch table, through the same AsyncEngine."""
    body = "Bonjour, j'ai besoin d'aide pour la CAF"
    latencies: list[float] = []

    async def one() -> None:
        with Stopwatch() as watch:
            async with db.engine.begin() as conn:
                await conn.execute(insert(SCRATCH).values(body=body, at=datetime.now(UTC)))
        latencies.append(watch.seconds)

    with Stopwatch() as total:
        if concurrency == 1:
            for _ in range(rows):
                await one()
        else:
            gate = asyncio.Semaphore(concurrency)

            async def limited() -> None:
                async with gate:
                    await one()

            await asyncio.gather(*(limited() for _ in range(rows)))
    label = "sequential" if concurrency == 1 else f"concurrency {concurrency}"
    return Run(label, rows, total.seconds, latencies, concurrency=concurrency)


async def round_trip(db: BenchDB, count: int = 500) -> float:
    """Seconds for one ``SELECT 1`` through an AsyncSession inside a transaction: what every
    statement of the engine pays before the database does any work."""
    async with db.sessions() as session, session.begin():
        for _ in range(50):
            await session.execute(text("SELECT 1"))
        with Stopwatch() as watch:
            for _ in range(count):
                await session.execute(text("SELECT 1"))
    return watch.seconds / count


async def table_counts(db: BenchDB) -> dict[str, int]:
    async with db.sessions() as session:
        return {
            "messages": await session.scalar(select(func.count()).select_from(Message)) or 0,
            "outbox": await session.scalar(select(func.count()).select_from(Outbox)) or 0,
            "tickets": await session.scalar(select(func.count()).select_from(Ticket)) or 0,
        }


# -- one backend -----------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    sequential: Run
    concurrent: Run
    ceiling_sequential: Run
    ceiling_concurrent: Run
    round_trip: float = 0.0
    server_version: str = ""

    def figures(self) -> dict[str, Any]:
        return {
            "sequential": self.sequential.figures(self.ceiling_sequential),
            "concurrent": self.concurrent.figures(self.ceiling_concurrent),
            "round_trip_ms": round(self.round_trip * 1000, 3),
            "server_version": self.server_version,
        }


def statement_lines(run_: Run, backend: str) -> list[str]:
    """The statements and CPU of one run, per event, as printed."""
    n = run_.count
    queries, savepoints, begins = (run_.kinds[k] / n for k in ("query", "savepoint", "begin"))
    commits = run_.transactions["commit"] / n
    rollbacks = run_.transactions["rollback"] / n
    driver_begin = (f"{run_.transactions['begin'] / n:.1f} BEGIN (asyncpg sends it itself), "
                    if backend == "postgres" else "")
    return [
        f"  SQL statements per event, {run_.label}: {run_.statements / n:.1f} = "
        f"{queries:.1f} queries + {savepoints:.1f} SAVEPOINT/RELEASE (each a statement) + "
        f"{begins:.1f} BEGIN IMMEDIATE (a statement on SQLite); not counted there: "
        f"{driver_begin}{commits:.1f} COMMIT, {rollbacks:.2f} ROLLBACK (driver calls)",
        f"  Python CPU per event, {run_.label}: {fmt_ms(run_.cpu_seconds / n)} ms "
        f"(time.process_time() of this process around the run / events: the drivers' work "
        f"in this process and aiosqlite's thread included, the database server not)",
    ]


async def bench_backend(db: BenchDB, events: int, inserts: int) -> BackendResult:
    engine = Engine(db.sessions, db.settings)
    warm, _ = workload(40, SEED - 1, "warm", 0)
    for item in warm:  # catalogs, compiled statements, pool connections
        await engine.handle(item.inbound)
    await run_concurrent(engine, workload(40, SEED - 2, "warm2", 100)[0], db, CONCURRENCY)

    sequential_events, people = workload(events, SEED, "seq", 1_000)
    concurrent_events, _ = workload(events, SEED + 1, "conc", 1_000 + events)
    kinds = Counter(e.kind for e in sequential_events)
    before = await table_counts(db)
    sequential = await run_sequential(engine, sequential_events, db)
    after = await table_counts(db)
    concurrent = await run_concurrent(engine, concurrent_events, db, CONCURRENCY)

    async with db.engine.begin() as conn:
        await conn.run_sync(SCRATCH.create)
    try:
        ceiling_seq = await insert_ceiling(db, inserts, 1)
        ceiling_conc = await insert_ceiling(db, inserts, CONCURRENCY)
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(SCRATCH.drop)

    trip = await round_trip(db)
    made = {k: after[k] - before[k] for k in after}
    print(f"{db.backend}: {db.where} ({db.backend} {db.server_version})")
    print(f"  workload: {events} events from {people} people "
          f"({', '.join(f'{n} {k}' for k, n in kinds.most_common())})")
    print(f"  sequential run wrote {made['messages']} messages, {made['outbox']} outbox rows "
          f"({made['outbox'] / max(1, events):.2f} per event), {made['tickets']} tickets; "
          f"outcomes: {dict(sequential.outcomes)}")
    per_event = sequential.statements / events
    for line in statement_lines(sequential, db.backend):
        print(line)
    print(f"  with concurrency {CONCURRENCY}: {concurrent.statements / events:.1f} statements "
          f"and {fmt_ms(concurrent.cpu_seconds / events)} ms CPU per event "
          f"({os.cpu_count()} cores)")
    print(f"  one statement round trip (SELECT 1 through an AsyncSession): {fmt_ms(trip)} ms, "
          f"x {per_event:.1f} statements = {fmt_ms(trip * per_event)} ms of the "
          f"{fmt_ms(sequential.seconds / events)} ms per event")
    goal = GOALS[db.backend]
    rows = []
    for run_, ceiling in ((sequential, ceiling_seq), (concurrent, ceiling_conc)):
        rows.append([
            f"engine, {run_.label}", fmt_rate(run_.per_second),
            fmt_ms(percentile(run_.latencies, 50)), fmt_ms(percentile(run_.latencies, 99)),
            f"{run_.per_second / ceiling.per_second:.0%}",
            goal_text(run_.per_second, goal, "events/s"),
        ])
    for ceiling in (ceiling_seq, ceiling_conc):
        rows.append([
            f"INSERT ceiling, {ceiling.label}", fmt_rate(ceiling.per_second),
            fmt_ms(percentile(ceiling.latencies, 50)),
            fmt_ms(percentile(ceiling.latencies, 99)), "", "",
        ])
    print_table(
        f"{db.backend}: events/s (INSERT rows: one-row transactions/s)",
        ["", "per second", "p50 ms", "p99 ms", "of ceiling", "goal"],
        rows,
    )
    return BackendResult(db.backend, sequential, concurrent, ceiling_seq, ceiling_conc,
                         trip, db.server_version)


# -- the map of what to cut ------------------------------------------------------------------

EXPLAIN_ANSWER = "6"  # the main menu's last item: change language (a question is asked)
# First message, French, level skipped, a postcode, no news: then in the main menu.
ONBOARDING = ("Bonjour", "1", "4", "75011", "2")


async def explain_backend(db: BenchDB, count: int) -> dict[str, Any]:
    """``count`` typical events (a known person answering the main menu), every statement
    grouped by its caller; printed, and returned for ``--json``."""
    engine = Engine(db.sessions, db.settings)
    warm, _ = workload(40, SEED - 1, "warm", 0)
    for item in warm:  # catalogs, compiled statements, pool connections
        await engine.handle(item.inbound)
    people = [f"sms:+3367{n:07d}" for n in range(count)]  # not the workload's numbers
    for n, address in enumerate(people):  # onboarding, to the main menu
        for step, body in enumerate(ONBOARDING):
            await engine.handle(Inbound("sms", address, body, provider_id=f"ex-{n}-{step}"))
    async with db.sessions() as session:
        from bot.storage.models import Address, Conversation

        states = Counter((await session.execute(
            select(Conversation.flow, Conversation.state)
            .join(Address, Address.contact_id == Conversation.contact_id)
            .where(Address.external_id.in_([a.partition(":")[2] for a in people]))
        )).all())
    log = StatementLog(db.engine, explain=True)
    cpu = time.process_time()
    try:
        for n, address in enumerate(people):
            await engine.handle(Inbound("sms", address, EXPLAIN_ANSWER,
                                        provider_id=f"ex-{n}-menu"))
    finally:
        log.close()
    cpu = time.process_time() - cpu
    total = log.count / count
    print(f"{db.backend}: {count} known people in "
          f"{', '.join(f'{f}.{s} ({k})' for (f, s), k in states.most_common())} "
          f"each answer {EXPLAIN_ANSWER!r}: {total:.1f} statements per event "
          f"({log.kinds['savepoint'] / count:.1f} SAVEPOINT/RELEASE, "
          f"{log.kinds['begin'] / count:.1f} BEGIN; plus "
          f"{log.transactions['commit'] / count:.1f} COMMIT as a driver call), "
          f"{fmt_ms(cpu / count)} ms CPU per event")
    callers = []
    for name, statements in sorted(log.by_caller.items(),
                                   key=lambda kv: (-sum(kv[1].values()), kv[0])):
        per_event = sum(statements.values()) / count
        print(f"  {per_event:5.2f}  {name}")
        for sql, n in statements.most_common():
            print(f"         {n / count:5.2f}  {sql}")
        callers.append({"caller": name, "per_event": round(per_event, 3),
                        "statements": [{"sql": sql, "count": n}
                                       for sql, n in statements.most_common()]})
    print()
    return {"events": count, "statements_per_event": round(total, 3),
            "cpu_ms_per_event": round(cpu / count * 1000, 3), "callers": callers}


def write_json(target: str, payload: dict[str, Any]) -> None:
    text_ = json.dumps(payload, indent=2, ensure_ascii=False)
    if target == "-":
        print(text_)
        return
    Path(target).write_text(text_ + "\n", encoding="utf-8")


def summary_line(result: BackendResult) -> str:
    best = max(result.sequential, result.concurrent, key=lambda r: r.per_second)
    ceiling = (result.ceiling_sequential if best is result.sequential
               else result.ceiling_concurrent)
    goal = GOALS[result.backend]
    parts = []
    for run_ in (result.sequential, result.concurrent):
        parts.append(f"{fmt_rate(run_.per_second)} events/s {run_.label} "
                     f"(p50 {fmt_ms(percentile(run_.latencies, 50))} ms, "
                     f"p99 {fmt_ms(percentile(run_.latencies, 99))} ms)")
    return (
        f"engine {result.backend}: {'; '.join(parts)}; insert ceiling "
        f"{fmt_rate(ceiling.per_second)} tx/s ({best.label}), engine at "
        f"{best.per_second / ceiling.per_second:.0%} of it; goal {goal_text(best.per_second, goal, 'events/s')}"  # noqa: E501
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events per run (2000)")
    parser.add_argument("--inserts", type=int, default=None,
                        help="one-row INSERT transactions per ceiling run (1000)")
    parser.add_argument("--explain", type=int, default=None, metavar="N",
                        help="only run N typical events (a known person answering the "
                        "main menu) and print each statement grouped by its caller")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the figures as JSON to FILE ('-': stdout); keys "
                        "in the module docstring")
    add_db_arguments(parser)
    args = parser.parse_args()
    if args.events < 4:
        parser.error("--events must be at least 4")
    if args.explain is not None and args.explain < 1:
        parser.error("--explain must be at least 1")
    inserts = args.inserts or min(args.events, 1000)
    if args.explain is not None:
        print_header("Relais engine benchmark: statements of a typical event, by caller", [
            machine_description(),
            f"{args.explain} events; per event: count, then caller (file:function outside "
            "SQLAlchemy), then each statement's first 100 characters",
        ])
    else:
        print_header("Relais engine benchmark", [
            machine_description(),
            f"{args.events} events per run, concurrency {CONCURRENCY} for the concurrent "
            f"run; {inserts} one-row INSERT transactions for the ceiling",
        ])
    payload: dict[str, Any] = {"bench": "engine", "events": args.events,
                               "concurrency": CONCURRENCY, "machine": machine_description(),
                               "results": {}}
    lines: list[str] = []
    status = 0
    for backend in backends(args.db):
        try:
            async with temp_database(backend, args.pg_url) as db:
                if args.explain is not None:
                    payload.setdefault("explain", {})[backend] = await explain_backend(
                        db, args.explain)
                    continue
                result = await bench_backend(db, args.events, inserts)
        except DatabaseUnavailable as exc:
            print(f"{backend}: skipped: {exc}", file=sys.stderr)
            lines.append(f"engine {backend}: skipped (database unavailable)")
            status = 1
            continue
        print()
        payload["results"][backend] = result.figures()
        lines.append(summary_line(result))
    if lines:
        print_summary(lines)
    if args.json:
        write_json(args.json, payload)
    return status


if __name__ == "__main__":
    raise SystemExit(run(main))
