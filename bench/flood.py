"""One sender floods Relais while others talk to it: what the others see, what the flood
costs. Signed Twilio SMS webhooks into the real ``relais serve`` app, on a fresh SQLite file
and a fresh PostgreSQL database.

    .venv/bin/python bench/flood.py [--senders 20] [--every 2] [--seconds 20]
                                    [--flood 120] [--limit 20/min]
                                    [--db sqlite|postgres|both] [--pg-url URL]

The app (``bot.web.app.create_app`` with its outbox worker and scheduler) runs in a helper
process, its Twilio channel pointed at FakeTwilio in another (as ``bench/webhooks.py``
does), so every reply really goes out. This process sends, OPEN LOOP (each request at its
planned time, latency from that time to the end of the response):

- ``--senders`` normal senders, each writing once every ``--every`` seconds (a random
  phase each), after one unmeasured first message;
- in the flood runs, one more sender writing ``--flood`` messages spread evenly over the
  ``--seconds`` (the finding: 120 in one minute produced 124 paid replies).

Three runs per database, each with its own app: no flood; the flood with
``RELAIS_SENDER_LIMIT=off`` (Relais before the limit); the flood with ``--limit`` (default
the shipped 20/min). Figures: the normal senders' webhook latency p50 / p99 / max, their
replies, and the flooding sender's messages stored, replies sent and messages limited
(``relais_inbound_limited_total``). No figure here is a pass/fail goal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from math import nan
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import bench.*, bot.* and tests.* from here
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp
from sqlalchemy import func, select

from bench.common import (
    BenchDB,
    Child,
    DatabaseUnavailable,
    add_db_arguments,
    backends,
    busy_warning,
    fake_providers_process,
    fmt_ms,
    load_average,
    machine_description,
    percentile,
    print_header,
    print_summary,
    print_table,
    run,
    temp_database,
)
from bench.webhooks import (
    FAKE_CEILING,
    REQUEST_TIMEOUT,
    Hit,
    Sample,
    Signer,
    app_process,
    app_settings,
    fire,
    free_port,
    wait_for_outbox,
)
from bot.storage.models import Address, Message

FLOOD_TEXTS = ("allo ?", "MENU", "vous etes la ?", "bonjour", "repondez svp")
OUTBOX_CAP = 120.0  # seconds to wait for the replies to leave after a run
SEED = 20261203


@dataclass
class FloodRun:
    backend: str
    name: str  # "no flood", "flood, limit off", "flood, limit 20/min"
    limit: str
    flood: int  # messages the flooding sender sends (0: none)
    samples: list[Sample] = field(default_factory=list)
    unfinished: int = 0
    normal_replies: int = 0
    normal_messages: int = 0
    flood_stored: int = 0
    flood_replies: int = 0
    limited: int = 0
    drained_in: float | None = None
    app_cpu: float = 0.0  # the app's CPU seconds for the measured schedule and its replies
    load: tuple[float | None, float | None] = (None, None)

    def latencies(self, kind: str) -> list[float]:
        return [s.latency for s in self.samples if s.kind == kind and s.ok]

    def latency(self, kind: str, q: float) -> float:
        return percentile(self.latencies(kind), q)

    @property
    def errors(self) -> Counter[str]:
        found = Counter(str(s.status) for s in self.samples if not s.ok)
        if self.unfinished:
            found["unfinished"] += self.unfinished
        return found


def number(index: int) -> str:
    return f"+336{20_000_000 + index:08d}"


def schedule(signer: Signer, senders: list[str], flooder: str | None, seconds: float,
             every: float, flood: int, seed: int) -> list[tuple[float, Hit]]:
    """(planned second, request), in order: the normal senders' MENU every ``every`` s, and
    the flood evenly spread."""
    rng = random.Random(seed)
    planned: list[tuple[float, Hit]] = []
    for index, who in enumerate(senders):
        moment = rng.uniform(0.0, every)
        while moment < seconds:
            planned.append((moment, signer.inbound(index, who, "MENU", "", "normal")))
            moment += every
    if flooder is not None and flood:
        for i in range(flood):
            text = FLOOD_TEXTS[i % len(FLOOD_TEXTS)]
            planned.append((i * seconds / flood, signer.inbound(-1, flooder, text, "",
                                                                "flood")))
    planned.sort(key=lambda item: item[0])
    return planned


async def open_loop(http: aiohttp.ClientSession, url: str,
                    planned: list[tuple[float, Hit]]) -> tuple[list[Sample], int]:
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    t0 = loop.time() + 0.05
    for moment, hit in planned:
        target = t0 + moment
        delay = target - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(fire(http, url, hit, target, t0, samples))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    unfinished = 0
    if tasks:
        _done, pending = await asyncio.wait(set(tasks), timeout=REQUEST_TIMEOUT + 5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        unfinished = len(pending)
    return samples, unfinished


async def stored_from(db: BenchDB, who: str) -> int:
    async with db.sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(Message)
            .join(Address, Address.id == Message.address_id)
            .where(Message.direction == "in", Address.channel == "sms",
                   Address.external_id == who)) or 0


async def limited_total(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url + "/metrics") as response:
        text = await response.text()
    found = re.search(r'^relais_inbound_limited_total\{channel="sms"\} ([0-9.e+]+)$', text,
                      re.MULTILINE)
    return int(float(found.group(1))) if found else 0


async def one_run(db: BenchDB, result: FloodRun, args: argparse.Namespace,
                  first_index: int) -> FloodRun:
    async with Child("fake provider", fake_providers_process,
                     {"twilio": FAKE_CEILING}) as fakes:
        port = free_port()
        settings = app_settings("twilio", db.url, port, fakes.ready["twilio"])
        settings["sender_limit"] = result.limit
        async with Child("relais app", app_process, settings, os.devnull, "WARNING",
                         None) as app:
            url = settings["public_url"]
            signer = Signer("twilio", url)
            senders = [number(first_index + i) for i in range(args.senders)]
            flooder = number(first_index + args.senders) if result.flood else None
            connector = aiohttp.TCPConnector(limit=128)
            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                # unmeasured: everyone's first message (the welcome), then the replies leave
                warm = [(i * 0.02, signer.inbound(i, who, "Bonjour", "", "first"))
                        for i, who in enumerate(senders)]
                await open_loop(http, url, warm)
                await wait_for_outbox(db, OUTBOX_CAP)
                before, _throttled = await fakes.ask(("count", "twilio"))
                result.load = (load_average(), None)
                cpu_before = await app.ask("cpu")
                planned = schedule(signer, senders, flooder, args.seconds, args.every,
                                   result.flood, SEED)  # the same schedule in every run
                result.normal_messages = sum(1 for _m, h in planned if h.kind == "normal")
                result.samples, result.unfinished = await open_loop(http, url, planned)
                result.load = (result.load[0], load_average())
                result.drained_in = await wait_for_outbox(db, OUTBOX_CAP)
                result.app_cpu = await app.ask("cpu") - cpu_before
                sent = await fakes.ask(("sent", "twilio", before))
                recipients = Counter(to for _id, to in sent)
                result.normal_replies = sum(recipients[who] for who in senders)
                if flooder is not None:
                    result.flood_replies = recipients[flooder]
                    result.flood_stored = await stored_from(db, flooder)
                result.limited = await limited_total(http, url)
    return result


def ms(value: float) -> str:
    return "–" if value != value else fmt_ms(value)


def describe(r: FloodRun, args: argparse.Namespace) -> str:
    lines = [
        f"{r.backend}, {r.name}: {args.senders} senders every {args.every:g} s for "
        f"{args.seconds:g} s" + (f", one sender {r.flood} messages" if r.flood else ""),
        f"    others: {len(r.latencies('normal'))}/{r.normal_messages} answered 2xx, "
        f"p50 {ms(r.latency('normal', 50))} ms, p99 {ms(r.latency('normal', 99))} ms, max "
        f"{ms(max(r.latencies('normal'), default=nan))} ms; {r.normal_replies} replies "
        f"sent to them; errors {dict(r.errors) or 'none'}",
    ]
    if r.flood:
        lines.append(
            f"    flooding sender: {r.flood_stored}/{r.flood} stored, {r.flood_replies} "
            f"replies sent, {r.limited} limited; its webhooks p50 "
            f"{ms(r.latency('flood', 50))} ms")
    drained = (f"{r.drained_in:.1f} s" if r.drained_in is not None
               else f"NOT within {OUTBOX_CAP:.0f} s")
    lines.append(f"    outbox drained {drained} after the schedule; app CPU "
                 f"{r.app_cpu:.2f} s ({1000 * r.app_cpu / max(1, len(r.samples)):.1f} ms per "
                 f"request, replies included); load average "
                 f"{r.load[0] or 0:.1f} → {r.load[1] or 0:.1f}")
    return "\n".join(lines)


def row(r: FloodRun) -> list[str]:
    return [
        f"{r.backend} {r.name}", ms(r.latency("normal", 50)), ms(r.latency("normal", 99)),
        ms(max(r.latencies("normal"), default=nan)),
        f"{r.normal_replies}/{r.normal_messages}",
        f"{r.flood_stored}/{r.flood}" if r.flood else "–",
        str(r.flood_replies) if r.flood else "–",
        str(r.limited) if r.flood else "–",
        str(sum(r.errors.values())), f"{r.app_cpu:.2f}",
    ]


async def bench_backend(db: BenchDB, args: argparse.Namespace) -> list[FloodRun]:
    print(f"{db.backend}: {db.where} ({db.backend} {db.server_version})", flush=True)
    runs = [FloodRun(db.backend, "no flood", args.limit, 0),
            FloodRun(db.backend, "flood, limit off", "off", args.flood),
            FloodRun(db.backend, f"flood, limit {args.limit}", args.limit, args.flood)]
    results: list[FloodRun] = []
    for index, result in enumerate(runs):
        warning = busy_warning(load_average())
        if warning:
            print(f"  {warning}", flush=True)
        started = time.perf_counter()
        await one_run(db, result, args, (index + 1) * 10_000)
        print(describe(result, args) + f" ({time.perf_counter() - started:.0f} s in all)",
              flush=True)
        results.append(result)
    return results


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=20, help="normal senders (20)")
    parser.add_argument("--every", type=float, default=2.0,
                        help="seconds between two messages of a normal sender (2)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--flood", type=int, default=120,
                        help="messages of the flooding sender, spread over --seconds (120)")
    parser.add_argument("--limit", default="20/min",
                        help="RELAIS_SENDER_LIMIT of the limited run (20/min)")
    add_db_arguments(parser)
    args = parser.parse_args()
    if not 1 <= args.senders <= 1000 or args.every <= 0 or not 0 < args.seconds <= 600:
        parser.error("--senders in [1, 1000], --every > 0, --seconds in (0, 600]")
    if args.flood < 1:
        parser.error("--flood must be at least 1")
    from bot.core.config import parse_rate

    try:
        parse_rate(args.limit)
    except ValueError as exc:
        parser.error(f"--limit: {exc}")
    print_header("Relais flood benchmark", [
        machine_description(),
        f"{args.senders} senders every {args.every:g} s for {args.seconds:g} s; one sender "
        f"{args.flood} messages over the same time; Twilio SMS webhooks, open loop",
        "the app and FakeTwilio each in a helper process; this one generates the load",
    ])
    lines: list[str] = []
    status = 0
    results: list[FloodRun] = []
    for backend in backends(args.db):
        try:
            async with temp_database(backend, args.pg_url, suffix="_flood") as db:
                found = await bench_backend(db, args)
        except DatabaseUnavailable as exc:
            print(f"{backend}: skipped: {exc}", file=sys.stderr)
            lines.append(f"flood {backend}: skipped (database unavailable)")
            status = 1
            continue
        results += found
        for r in found:
            lines.append(
                f"flood {backend} {r.name}: others p50 {ms(r.latency('normal', 50))} / p99 "
                f"{ms(r.latency('normal', 99))} / max "
                f"{ms(max(r.latencies('normal'), default=nan))} ms"
                + (f"; flooding sender {r.flood} messages, {r.flood_stored} stored, "
                   f"{r.flood_replies} replies, {r.limited} limited" if r.flood else "")
                + f"; app CPU {r.app_cpu:.2f} s")
        print()
    if results:
        print_table("flood: the other senders' webhooks, the flooding sender's cost", [
            "", "others p50 ms", "p99 ms", "max ms", "their replies", "flood stored",
            "flood replies", "limited", "errors", "app CPU s"], [row(r) for r in results])
    print_summary(lines)
    return status


if __name__ == "__main__":
    raise SystemExit(run(main))
