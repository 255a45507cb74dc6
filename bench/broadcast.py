"""A broadcast to 100,000 contacts: import, preview, enqueue, and send to the fake providers.

    .venv/bin/python bench/broadcast.py [--contacts 100000] [--rate 500] [--send-limit N]
                                        [--workers 1] [--db sqlite|postgres|both]

1. A contacts CSV (a spreadsheet export: French headers, semicolons; 70 % SMS numbers,
   30 % Telegram ids; 95 % with the news consent) is imported with ``bot.domain.contacts`` in a
   child process (its own peak memory is reported apart), then 1 % of people say STOP.
2. ``broadcast preview`` and ``broadcast send`` (create + every batch written to the outbox)
   are timed in this process; its peak RSS (``resource.getrusage``) after the enqueue is the
   figure for the goal.
3. The fake Twilio and Telegram servers (``tests/fakes``) run in a child process with a rate
   ceiling of ``--rate`` messages/s each; this process runs the real channel adapters and
   ``--workers`` outbox workers until every row has left (or ``--send-limit`` messages,
   then the rest is cancelled). The achieved send rate of each channel (first to last
   message the fake accepted) is given as a share of its ceiling, with the messages the
   fakes refused as over their rate, and any recipient that got the broadcast twice.

Goals (2 cores): enqueue of 100,000 ≤ 10 s; peak RSS ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import bench.*, bot.* and tests.* from here
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from sqlalchemy import func, select, text, update

from bench.common import (
    BenchDB,
    DatabaseUnavailable,
    Stopwatch,
    add_db_arguments,
    backends,
    machine_description,
    print_header,
    print_summary,
    print_table,
    run,
    temp_database,
    vacuum_analyze,
    write_json,
)
from bot.core.config import load_settings
from bot.storage.models import Contact, Outbox

ENQUEUE_GOAL_S = 10.0
RSS_GOAL_MB = 300.0
TEXTS = {
    "fr": "Distribution alimentaire samedi 10h a la salle des fetes. Venez avec un sac.",
    "en": "Food distribution on Saturday at 10am in the village hall. Bring a bag.",
}
DEPARTEMENTS = ("59", "62", "75", "93", "13", "69", "33", "974", "972", "2A")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# -- the contacts file and its import (child process) -----------------------------------------


def contacts_csv(count: int, seed: int = 7) -> bytes:
    """A spreadsheet export: French headers, semicolons, a BOM, numbers written as people do."""
    rng = random.Random(seed)
    lines = ["\ufeffTéléphone;Nom;Langue;Code postal;Étiquettes;Consentement"]
    for index in range(count):
        dept = DEPARTEMENTS[index % len(DEPARTEMENTS)]
        postcode = (dept.replace("2A", "20") + "000")[:5] if len(dept) == 2 else dept + "00"
        if index % 10 < 7:
            number = f"06{index:08d}"
            address = " ".join(number[i:i + 2] for i in range(0, 10, 2))
        else:
            address = f"telegram:{500_000_000 + index}"
        language = ("fr", "fr", "fr", "fr", "fr", "fr", "fr", "fr", "en", "ar")[index % 10]
        tags = "nord benevoles" if dept == "59" else "atelier"
        consent = "non" if rng.random() < 0.05 else "oui"
        lines.append(f"{address};Personne {index};{language};{postcode};{tags};{consent}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def import_child(url: str, count: int, out: Any) -> None:
    """Import the file in a child process: (seconds, summary, peak RSS MB) on ``out``."""
    from bot.domain import contacts
    from bot.storage.db import make_engine, sessionmaker

    async def go() -> tuple[float, str]:
        engine = make_engine(url)
        try:
            data = contacts_csv(count)
            started = time.perf_counter()
            parsed = contacts.read_contacts(data)
            summary = await contacts.import_contacts(
                sessionmaker(engine), parsed, now=datetime.now(UTC),
                default_timezone="Europe/Paris", source="bench.csv")
            return time.perf_counter() - started, str(summary)
        finally:
            await engine.dispose()

    seconds, summary = asyncio.run(go())
    out.send((seconds, summary, peak_rss_mb()))
    out.close()


async def import_contacts(db: BenchDB, count: int) -> tuple[float, str, float]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=import_child, args=(db.url, count, child))
    process.start()
    child.close()
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(None, parent.recv)
    except EOFError:
        raise RuntimeError("the import process died") from None
    except BaseException:  # interrupted: stop the child too (its pipe closes, recv returns)
        process.terminate()
        raise
    finally:
        await loop.run_in_executor(None, process.join)
    return result  # type: ignore[no-any-return]


# -- the fake providers (child process) ---------------------------------------------------------


def fakes_child(rate: float, conn: Any) -> None:
    from tests.fakes.telegram import FakeTelegram
    from tests.fakes.twilio import FakeTwilio

    async def go() -> None:
        async with FakeTwilio(rate_limit=rate) as twilio, \
                FakeTelegram(rate_limit=rate) as telegram:
            conn.send((twilio.url, telegram.url))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, conn.recv)  # "stop"
            conn.send({name: _stats(fake) for name, fake in (("sms", twilio),
                                                            ("telegram", telegram))})

    asyncio.run(go())
    conn.close()


def _stats(fake: Any) -> dict[str, Any]:
    times = [m["time"] for m in fake.sent]
    recipients = [m["to"] for m in fake.sent]
    return {"sent": len(fake.sent), "unique": len(set(recipients)),
            "seconds": (max(times) - min(times)) if len(times) > 1 else 0.0,
            "throttled": fake.throttled, "unexpected": len(fake.unexpected)}


@dataclass
class SendResult:
    stats: dict[str, dict[str, Any]]
    seconds: float
    rows_sent: int
    cancelled: int


async def send_to_fakes(db: BenchDB, broadcast_id: int, rate: float, workers: int,
                        limit: int | None) -> SendResult:
    from bot.app import close_channels, open_channels, open_services
    from bot.domain import broadcasts as bc
    from tests.fakes.telegram import TEST_TOKEN
    from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

    context = multiprocessing.get_context("spawn")
    conn, child = context.Pipe()
    process = context.Process(target=fakes_child, args=(rate, child))
    process.start()
    loop = asyncio.get_running_loop()
    twilio_url, telegram_url = await loop.run_in_executor(None, conn.recv)
    settings = load_settings(
        env_file=None, database_url=db.url, public_url="http://127.0.0.1:9",
        twilio_account_sid=TEST_ACCOUNT_SID, twilio_auth_token=TEST_AUTH_TOKEN,
        twilio_sms_from="+33757000100", twilio_api_url=twilio_url,
        telegram_token=TEST_TOKEN, telegram_webhook_secret="s" * 32,
        telegram_api_url=f"{telegram_url}/bot", twilio_rate=rate, telegram_rate=rate,
    )
    services = await open_services(settings, migrate=False)
    cancelled = 0
    try:
        await open_channels(services)
        pool = [services.outbox_worker(batch_size=200) for _ in range(workers)]
        done = asyncio.Event()

        async def loop_worker(worker: Any) -> None:
            while not done.is_set():
                if await worker.drain_once() == 0:
                    await asyncio.sleep(0.02)

        async def watch() -> None:
            while True:
                await asyncio.sleep(1.0)
                async with services.sessions() as session:
                    sent = await session.scalar(select(func.count()).select_from(Outbox)
                                                .where(Outbox.status == "sent"))
                    left = await session.scalar(select(func.count()).select_from(Outbox)
                                                .where(Outbox.status.in_(bc.ACTIVE)))
                if not left or (limit is not None and (sent or 0) >= limit):
                    done.set()
                    return

        with Stopwatch() as watch_time:
            await asyncio.gather(watch(), *(loop_worker(w) for w in pool))
        async with services.sessions() as session, session.begin():
            try:
                cancelled = await bc.cancel(session, broadcast_id, datetime.now(UTC))
            except bc.BroadcastError:  # already done: nothing was left
                cancelled = 0
            rows_sent = await session.scalar(select(func.count()).select_from(Outbox)
                                              .where(Outbox.status == "sent")) or 0
        await close_channels(services)
    except BaseException:  # interrupted: stop the fakes too
        process.terminate()
        await services.close()
        raise
    else:
        await services.close()
        conn.send("stop")
        stats = await loop.run_in_executor(None, conn.recv)
    finally:
        await loop.run_in_executor(None, process.join)
    return SendResult(stats, watch_time.seconds, rows_sent, cancelled)


# -- one database ---------------------------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    contacts: int
    import_s: float
    import_rss: float
    import_summary: str
    preview_s: float
    recipients: int
    excluded: dict[str, int]
    enqueue_s: float
    rows: int
    rss_after_enqueue: float
    send: SendResult | None
    rss_after_send: float


async def bench_backend(db: BenchDB, args: argparse.Namespace) -> Figures:
    from bot.core.clock import Clock
    from bot.domain import broadcasts as bc

    print(f"{db.backend}: {db.where} ({db.backend} {db.server_version})", flush=True)
    import_s, summary, import_rss = await import_contacts(db, args.contacts)
    print(f"  import: {import_s:.1f} s ({summary})", flush=True)
    async with db.sessions() as session, session.begin():
        await session.execute(update(Contact).where(text("contacts.id % 100 = 0"))
                              .values(opted_out_at=datetime.now(UTC)))
    await vacuum_analyze(db, "contacts", "addresses", "consents", "contact_tags", "outbox")
    settings = load_settings(env_file=None, database_url=db.url, quiet_hours="00:00-00:01")
    clock = Clock()
    with Stopwatch() as preview_time:
        async with db.sessions() as session:
            preview = await bc.preview(session, bc.Segment(), TEXTS, settings, clock.now())
    data = preview.as_json(settings)
    print(f"  preview: {preview_time.seconds:.2f} s, {data['recipients']:,} recipients, "
          f"left out {data['excluded_total']:,}", flush=True)
    with Stopwatch() as enqueue_time:
        async with db.sessions() as session, session.begin():
            broadcast = await bc.create(session, bc.Segment(), TEXTS, clock.now())
        rows = await bc.enqueue_all(db.sessions, broadcast.id, settings, clock)
    rss_enqueue = peak_rss_mb()
    print(f"  enqueue: {enqueue_time.seconds:.2f} s for {rows:,} rows; peak RSS "
          f"{rss_enqueue:.0f} MB", flush=True)
    sent = None
    if args.send_limit != 0:
        limit = None if args.send_limit < 0 else args.send_limit
        sent = await send_to_fakes(db, broadcast.id, args.rate, args.workers, limit)
        print(f"  send: {sent.rows_sent:,} messages in {sent.seconds:.1f} s "
              f"({sent.cancelled:,} cancelled after the limit)", flush=True)
    return Figures(db.backend, args.contacts, import_s, import_rss, summary,
                   preview_time.seconds, data["recipients"],
                   {k: v for k, v in data["excluded"].items() if v}, enqueue_time.seconds,
                   rows, rss_enqueue, sent, peak_rss_mb())


def send_rows(figures: Figures, rate: float) -> list[list[str]]:
    if figures.send is None:
        return []
    rows = []
    for channel, stats in figures.send.stats.items():
        achieved = stats["sent"] / stats["seconds"] if stats["seconds"] else 0.0
        rows.append([f"{figures.backend} {channel}", f"{stats['sent']:,}",
                     f"{stats['seconds']:.1f}", f"{achieved:,.0f}", f"{rate:,.0f}",
                     f"{100 * achieved / rate:.0f} %", f"{stats['throttled']:,}",
                     f"{stats['sent'] - stats['unique']:,}"])
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000, help="contacts (100000)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="each fake's ceiling and Relais's rate, messages/s (500)")
    parser.add_argument("--send-limit", type=int, default=-1,
                        help="stop sending after N messages (-1: all, 0: do not send)")
    parser.add_argument("--workers", type=int, default=1, help="outbox workers (1)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write the figures there as JSON")
    add_db_arguments(parser)
    args = parser.parse_args()
    if args.contacts < 1 or args.rate <= 0 or args.workers < 1:
        parser.error("--contacts, --rate and --workers must be positive")
    print_header("Relais broadcast benchmark", [
        machine_description(),
        f"{args.contacts:,} contacts; fake Twilio and Telegram in a child process at "
        f"{args.rate:,.0f} messages/s each; {args.workers} outbox worker(s) in this process",
    ])
    results: list[Figures] = []
    status = 0
    for backend in backends(args.db):
        try:
            async with temp_database(backend, args.pg_url, suffix="_broadcast") as db:
                results.append(await bench_backend(db, args))
        except DatabaseUnavailable as exc:
            print(f"{backend}: skipped: {exc}", file=sys.stderr)
            status = 1
    if not results:
        return status
    print()
    print_table("import, preview, enqueue", [
        "", "contacts", "import s", "import RSS MB", "preview s", "recipients", "enqueue s",
        "rows/s", "peak RSS MB"], [
        [f.backend, f"{f.contacts:,}", f"{f.import_s:.1f}", f"{f.import_rss:.0f}",
         f"{f.preview_s:.2f}", f"{f.recipients:,}", f"{f.enqueue_s:.2f}",
         f"{f.rows / f.enqueue_s:,.0f}", f"{f.rss_after_enqueue:.0f}"]
        for f in results])
    sending = [row for f in results for row in send_rows(f, args.rate)]
    if sending:
        print_table("sending to the fakes", [
            "", "messages", "seconds", "achieved/s", "ceiling/s", "share", "refused (rate)",
            "sent twice"], sending)
    lines = []
    for f in results:
        enqueue_ok = f.enqueue_s <= ENQUEUE_GOAL_S
        rss_ok = max(f.rss_after_enqueue, f.rss_after_send) <= RSS_GOAL_MB
        if not (enqueue_ok and rss_ok):
            status = 1
        share = ""
        if f.send is not None:
            parts = []
            for channel, stats in f.send.stats.items():
                achieved = stats["sent"] / stats["seconds"] if stats["seconds"] else 0.0
                parts.append(f"{channel} {achieved:,.0f}/s = {100 * achieved / args.rate:.0f} %")
            share = "; sent " + ", ".join(parts) + f" of {args.rate:,.0f}/s"
        lines.append(
            f"broadcast {f.backend}: import {f.contacts:,} in {f.import_s:.1f} s; enqueue "
            f"{f.rows:,} in {f.enqueue_s:.1f} s (goal ≤ {ENQUEUE_GOAL_S:.0f} s: "
            f"{'met' if enqueue_ok else 'MISSED'}); peak RSS "
            f"{max(f.rss_after_enqueue, f.rss_after_send):.0f} MB (goal ≤ {RSS_GOAL_MB:.0f}:"
            f" {'met' if rss_ok else 'MISSED'}){share}")
    print_summary(lines)
    write_json(args.json, {"machine": machine_description(), "goals": {
        "enqueue_s": ENQUEUE_GOAL_S, "rss_mb": RSS_GOAL_MB}, "backends": {f.backend: {
            "contacts": f.contacts, "import_s": f.import_s, "preview_s": f.preview_s,
            "recipients": f.recipients, "enqueue_s": f.enqueue_s, "rows": f.rows,
            "peak_rss_mb": max(f.rss_after_enqueue, f.rss_after_send),
            "send": None if f.send is None else {
                channel: {"sent": stats["sent"], "seconds": stats["seconds"],
                          "achieved_per_s": (stats["sent"] / stats["seconds"]
                                             if stats["seconds"] else 0.0),
                          "throttled": stats["throttled"],
                          "sent_twice": stats["sent"] - stats["unique"]}
                for channel, stats in f.send.stats.items()}}
        for f in results}})
    return status


if __name__ == "__main__":
    sys.exit(run(main))
