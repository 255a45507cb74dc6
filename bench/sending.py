"""Outbox sending rate against the fake providers, at their rate ceiling: Twilio SMS, WhatsApp
Cloud API and Telegram, on a fresh SQLite file and a fresh PostgreSQL database.

    .venv/bin/python bench/sending.py [--messages 10000] [--ceiling 500] [--real-seconds 60]
                                      [--channels sms,whatsapp,telegram] [--margin 0]
                                      [--batch N] [--db sqlite|postgres|both] [--pg-url URL]

Messages are written straight into the outbox (``bot.delivery.writer.enqueue``;
two per person,
single-segment texts, many people), then one outbox worker (what ``relais serve`` runs, with
the real channel adapters) sends them to the fake provider of their channel (``tests/fakes``,
in a helper process on 127.0.0.1). The fake's ``rate_limit`` (a sliding 1 s window) and the
channel's rate in the settings (``RELAIS_TWILIO_RATE``, ``RELAIS_WHATSAPP_RATE``,
``RELAIS_TELEGRAM_RATE``) are the same number:

1. a high ceiling (``--ceiling``, 500/s): ``--messages`` messages per channel, capped in time;
2. the real ceiling (Relais's defaults: Twilio 10 segments/s, WhatsApp Cloud 80/s, Telegram
   30/s) for ``--real-seconds`` per channel (0 skips these runs).

Measured: the achieved rate (fake's first to last accepted message) as a share of the
ceiling, the messages the fake refused over its ceiling (Twilio and Telegram answer 429,
WhatsApp 400/130429), how late each call started after the slot the outbox reserved for it,
and the time lost between reserved slots (claim gaps, pauses after a refusal).
``--margin 0.02`` sets the rate in the settings to ceiling / 1.02 (a proposed safety margin).

Goal: ≥ 97 % of the ceiling and no message refused over it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import bench.*, bot.* and tests.* from here
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from sqlalchemy import func, insert, select

from bench.common import (
    BenchDB,
    Child,
    DatabaseUnavailable,
    achieved_rate,
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
    vacuum_analyze,
    write_json,
)
from bench.outbox import empty_tables
from bot.core.config import Settings, load_settings
from bot.core.types import PRIORITY_BULK, Reply
from bot.delivery.outbox import Claimed, OutboxWorker, worker_name
from bot.storage.models import Address, Contact, Outbox

GOAL_SHARE = 0.97
CHANNELS = ("sms", "whatsapp", "telegram")
FAKE_OF = {"sms": "twilio", "whatsapp": "whatsapp", "telegram": "telegram"}
RATE_SETTING = {"sms": "twilio_rate", "whatsapp": "whatsapp_rate", "telegram": "telegram_rate"}
RELAIS_NUMBER = "+33757000100"
# One GSM-7 segment (118 characters): Twilio's rate counts segments, the fake counts messages.
BODY = ("Distribution alimentaire samedi 10h a la salle des fetes. Venez avec un sac. "
        "Repondez STOP pour ne plus recevoir ces messages.")
PER_PERSON = 2
POLL = 0.25  # seconds between looks at the fake's count


def real_ceiling(channel: str) -> float:
    """Relais's default rate for the channel: the provider's documented limit."""
    return float(Settings.model_fields[RATE_SETTING[channel]].default)


# -- the outbox worker, watched ----------------------------------------------------------------


class ProbeWorker(OutboxWorker):
    """The outbox worker of ``relais serve``, noting each reserved slot, how late the provider
    call started after it, and each claim."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot_of: dict[int, datetime] = {}
        self.slots: list[datetime] = []
        self.lateness: list[float] = []  # seconds from the reserved slot to the call
        self.claims: list[int] = []  # rows per claim that got some

    async def claim(self) -> list[Claimed]:
        claimed = await super().claim()
        if claimed:
            self.claims.append(len(claimed))
        for item in claimed:
            self.slot_of[item.row.id] = item.send_at
        return claimed

    async def _call(self, channel: Any, row: Outbox) -> Any:
        slot = self.slot_of.pop(row.id, None)
        if slot is not None:  # rows given back after a refusal get a new slot when reclaimed
            self.slots.append(slot)
            self.lateness.append((self.clock.now() - slot).total_seconds())
        return await super()._call(channel, row)


def slot_gaps(slots: list[datetime], rate: float) -> tuple[float, float]:
    """(seconds between consecutive used slots beyond 1/rate, span of the slots): time
    lost to claims that came late and to pauses after a refusal."""
    ordered = sorted(slots)
    if len(ordered) < 2:
        return 0.0, 0.0
    step = 1.0 / rate
    lost = 0.0
    for before, after in zip(ordered, ordered[1:], strict=False):
        lost += max(0.0, (after - before).total_seconds() - step)
    return lost, (ordered[-1] - ordered[0]).total_seconds()


# -- people and their queue --------------------------------------------------------------------


async def make_people(db: BenchDB, channel: str, count: int, first: int) -> list[int]:
    """``count`` people with one address each on ``channel``; their address ids."""
    now = datetime.now(UTC)
    if channel == "telegram":
        ids = [str(600_000_000 + first + i) for i in range(count)]
    else:
        ids = [f"+336{first + i:08d}" for i in range(count)]
    async with db.sessions() as session, session.begin():
        contact_ids = list(await session.scalars(
            insert(Contact).returning(Contact.id, sort_by_parameter_order=True),
            [{"name": f"Personne {first + i}", "language": "fr", "timezone": "Europe/Paris",
              "created_at": now} for i in range(count)],
        ))
        return list(await session.scalars(
            insert(Address).returning(Address.id, sort_by_parameter_order=True),
            [{"contact_id": cid, "channel": channel, "external_id": ident, "created_at": now,
              "landline": False} for cid, ident in zip(contact_ids, ids, strict=True)],
        ))


async def queue_messages(db: BenchDB, address_ids: list[int], rows: int) -> None:
    """Empty the outbox, then ``enqueue`` ``rows`` messages: everyone's first, then everyone's
    second (a person's rows leave in order, so the claim is never held back by it)."""
    from bot.delivery.writer import enqueue

    await empty_tables(db)
    now = datetime.now(UTC) - timedelta(seconds=1)
    people = address_ids[: max(1, -(-rows // PER_PERSON))]
    async with db.sessions() as session, session.begin():
        addresses = {a.id: a for a in await session.scalars(
            select(Address).where(Address.id.in_(people)))}
        contacts = {c.id: c for c in await session.scalars(
            select(Contact).where(Contact.id.in_([a.contact_id for a in addresses.values()])))}
        reply = Reply(BODY)
        for index in range(rows):
            address = addresses[people[index % len(people)]]
            enqueue(session, contacts[address.contact_id], address, reply, now=now,
                    kind="broadcast", priority=PRIORITY_BULK)
    await vacuum_analyze(db, "outbox", "events", "rate_limits", "contacts", "addresses")


# -- one run -----------------------------------------------------------------------------------


@dataclass
class Run:
    backend: str
    channel: str
    label: str  # "high" or "real"
    ceiling: float
    setting: float  # the rate in the settings
    queued: int
    cap: float  # seconds
    seconds: float = 0.0  # worker running
    capped: bool = False
    fake: dict[str, Any] = field(default_factory=dict)
    lateness: list[float] = field(default_factory=list)
    gap_lost: float = 0.0
    slot_span: float = 0.0
    claims: list[int] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    load: tuple[float | None, float | None] = (None, None)
    cpu: float = 0.0  # seconds of this process (the worker and the adapters)
    fake_cpu: float = 0.0  # seconds of the fakes' process

    @property
    def achieved(self) -> float:
        return achieved_rate(self.fake.get("times", []))

    @property
    def share(self) -> float:
        return self.achieved / self.ceiling

    @property
    def throttled(self) -> int:
        return int(self.fake.get("throttled", 0))

    @property
    def met(self) -> bool:
        return self.share >= GOAL_SHARE and self.throttled == 0


def channel_settings(db: BenchDB, channel: str, fake_url: str, rate: float) -> Settings:
    from tests.fakes.telegram import TEST_TOKEN as TELEGRAM_TOKEN
    from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
    from tests.fakes.whatsapp import TEST_PHONE_NUMBER_ID
    from tests.fakes.whatsapp import TEST_TOKEN as WHATSAPP_TOKEN

    values: dict[str, Any] = {"public_url": "http://127.0.0.1:9", "opening_hours": "24/7",
                              RATE_SETTING[channel]: rate,
                              # unused here; set so that the adapters do not warn
                              "whatsapp_app_secret": "bench-app-secret",
                              "telegram_webhook_secret": "bench-webhook-secret"}
    if channel == "sms":
        values.update(twilio_account_sid=TEST_ACCOUNT_SID, twilio_auth_token=TEST_AUTH_TOKEN,
                      twilio_sms_from=RELAIS_NUMBER, twilio_api_url=fake_url)
    elif channel == "whatsapp":
        values.update(whatsapp_token=WHATSAPP_TOKEN, whatsapp_phone_number_id=TEST_PHONE_NUMBER_ID,
                      whatsapp_api_url=f"{fake_url}/v21.0")
    else:
        values.update(telegram_token=TELEGRAM_TOKEN, telegram_api_url=f"{fake_url}/bot")
    return load_settings(env_file=None, database_url=db.url, **values)


async def send_run(db: BenchDB, fakes: Child, result: Run, batch: int | None) -> Run:
    """Send the queue with one worker until the fake has it all, or the time cap."""
    from bot.app import close_channels, open_channels, open_services

    kind = FAKE_OF[result.channel]
    await fakes.ask(("reset", {kind: result.ceiling}))
    settings = channel_settings(db, result.channel, fakes.ready[kind], result.setting)
    services = await open_services(settings, migrate=False)
    result.load = (load_average(), None)
    try:
        await open_channels(services)
        if services.registry.get(result.channel) is None:
            raise RuntimeError(f"channel {result.channel} did not start against the fake")
        options: dict[str, Any] = {} if batch is None else {"batch_size": batch}
        worker = ProbeWorker(services.sessions, services.registry, services.clock,
                             metrics=services.metrics, worker_id=worker_name(),
                             settings=services.settings, **options)
        loop = asyncio.get_running_loop()
        started = loop.time()
        cpu = time.process_time()
        fake_cpu = await fakes.ask(("cpu",))
        task = asyncio.create_task(worker.run())
        try:
            while True:
                await asyncio.sleep(POLL)
                if task.done():
                    task.result()  # the worker's loop never ends by itself: show why
                sent, _throttled = await fakes.ask(("count", kind))
                if sent >= result.queued:
                    break
                if loop.time() - started >= result.cap:
                    result.capped = True
                    break
        finally:
            worker.stop()
            try:
                await asyncio.wait_for(task, 30)
            except TimeoutError:
                print("  the worker did not stop in 30 s", file=sys.stderr)
        result.seconds = loop.time() - started
        result.cpu = time.process_time() - cpu
        result.fake_cpu = await fakes.ask(("cpu",)) - fake_cpu
    finally:
        await close_channels(services)
        await services.close()
    result.load = (result.load[0], load_average())
    result.fake = await fakes.ask(("stats", kind))
    result.lateness = worker.lateness
    result.gap_lost, result.slot_span = slot_gaps(worker.slots, result.setting)
    result.claims = worker.claims
    async with db.sessions() as session:
        rows = await session.execute(
            select(Outbox.status, func.count()).group_by(Outbox.status))
        result.rows = {status: count for status, count in rows.all()}
    return result


# -- printing ----------------------------------------------------------------------------------


def describe(result: Run) -> str:
    fake = result.fake
    lateness = result.lateness
    early = fake.get("early_by", [])
    parts = [
        f"{result.backend} {result.channel} at {result.ceiling:,.0f}/s ({result.label}): "
        f"{fake.get('sent', 0):,} accepted of {result.queued:,} queued in "
        f"{result.seconds:.1f} s{' (time cap)' if result.capped else ''}",
        f"    calls after their reserved slot: p50 {fmt_ms(percentile(lateness, 50))} ms, "
        f"p99 {fmt_ms(percentile(lateness, 99))} ms, max {fmt_ms(max(lateness, default=0))} "
        f"ms; {len(result.claims)} claims of {sum(result.claims) / max(1, len(result.claims)):.0f}"
        f" rows on average; time between reserved slots beyond 1/rate: "
        f"{result.gap_lost:.2f} s of {result.slot_span:.1f} s",
    ]
    if early:
        shown = ", ".join(f"{1000 * e:.1f}" for e in sorted(early)[:8])
        parts.append(f"    refused over the ceiling: {len(early)}, each early by (ms): {shown}"
                     f"{' …' if len(early) > 8 else ''}")
    if fake.get("unexpected"):
        parts.append(f"    requests the fake found malformed: {fake['unexpected']} "
                     f"(e.g. {fake['unexpected_sample'][0]})")
    sent = max(1, fake.get("sent", 0))
    parts.append(f"    CPU per message accepted: {1000 * result.cpu / sent:.2f} ms in this "
                 f"process (worker, adapters, database driver), "
                 f"{1000 * result.fake_cpu / sent:.2f} ms in the fake's; load average "
                 f"{result.load[0] or 0:.1f} → {result.load[1] or 0:.1f}")
    parts.append(f"    outbox afterwards: {result.rows}; fake answers: {fake.get('requests')}")
    return "\n".join(parts)


def row(result: Run) -> list[str]:
    ceiling = f"{result.ceiling:,.0f}"
    if result.setting != result.ceiling:
        ceiling += f" ({result.setting:,.1f})"
    sent = max(1, result.fake.get("sent", 0))
    return [
        f"{result.backend} {result.channel} {result.label}", ceiling,
        f"{result.fake.get('sent', 0):,}",
        f"{result.achieved:,.1f}", f"{100 * result.share:.1f} %", f"{result.throttled:,}",
        f"{fmt_ms(percentile(result.lateness, 99))}", f"{result.gap_lost:.2f}",
        f"{1000 * result.cpu / sent:.2f}", "met" if result.met else "MISSED",
    ]


def summary_line(backend: str, results: list[Run]) -> str:
    parts = []
    for label in ("high", "real"):
        chosen = [r for r in results if r.label == label]
        if not chosen:
            continue
        cells = ", ".join(
            f"{r.channel} {r.achieved:,.1f}/s of {r.ceiling:,.0f} = {100 * r.share:.1f} % "
            f"({r.throttled} refused)" for r in chosen)
        what = (f"{chosen[0].queued:,} messages" if label == "high"
                else f"{chosen[0].cap:.0f} s each")
        parts.append(f"{'high ceiling' if label == 'high' else 'real ceilings'} ({what}): "
                     f"{cells}")
    verdict = "met" if all(r.met for r in results) else "MISSED"
    return (f"sending {backend}: {'; '.join(parts)}; goal ≥ {100 * GOAL_SHARE:.0f} % of the "
            f"ceiling and none refused: {verdict}")


# -- main --------------------------------------------------------------------------------------


async def bench_backend(db: BenchDB, args: argparse.Namespace, channels: list[str]
                        ) -> list[Run]:
    print(f"{db.backend}: {db.where} ({db.backend} {db.server_version})", flush=True)
    plans: list[Run] = []
    for channel in channels:
        ceiling = args.ceiling
        plans.append(Run(db.backend, channel, "high", ceiling, ceiling / (1 + args.margin),
                         args.messages, cap=2.0 * args.messages / ceiling + 30.0))
    if args.real_seconds > 0:
        for channel in channels:
            ceiling = real_ceiling(channel)
            queued = int(ceiling * args.real_seconds * 1.3) + 50
            plans.append(Run(db.backend, channel, "real", ceiling, ceiling / (1 + args.margin),
                             queued, cap=float(args.real_seconds)))
    people: dict[str, list[int]] = {}
    for index, channel in enumerate(channels):
        needed = max(-(-p.queued // PER_PERSON) for p in plans if p.channel == channel)
        people[channel] = await make_people(db, channel, needed, first=index * 1_000_000)
    results = []
    async with Child("fake providers", fake_providers_process,
                     {FAKE_OF[c]: None for c in channels}) as fakes:
        for plan in plans:
            warning = busy_warning(load_average())
            if warning:
                print(f"  {warning}", flush=True)
            await queue_messages(db, people[plan.channel], plan.queued)
            result = await send_run(db, fakes, plan, args.batch)
            print(describe(result), flush=True)
            results.append(result)
    return results


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000,
                        help="messages per channel at the high ceiling (10000)")
    parser.add_argument("--ceiling", type=float, default=500.0,
                        help="the high ceiling: the fake's rate_limit and the setting, /s (500)")
    parser.add_argument("--real-seconds", type=float, default=60.0,
                        help="seconds per channel at its real ceiling (60; 0 skips them)")
    parser.add_argument("--channels", default=",".join(CHANNELS),
                        help="comma-separated among sms, whatsapp, telegram (all)")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="rate in the settings = ceiling / (1 + margin) (0: equal)")
    parser.add_argument("--batch", type=int, default=None,
                        help="the worker's batch size (default: what relais serve uses)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write the figures there as JSON")
    add_db_arguments(parser)
    args = parser.parse_args()
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    if not channels or any(c not in CHANNELS for c in channels):
        parser.error(f"--channels takes names among {', '.join(CHANNELS)}")
    if args.messages < 2 or args.ceiling <= 0 or args.real_seconds < 0 or args.margin < 0:
        parser.error("--messages ≥ 2, --ceiling > 0, --real-seconds ≥ 0, --margin ≥ 0")
    real = ", ".join(f"{c} {real_ceiling(c):,.0f}/s" for c in channels)
    print_header("Relais sending benchmark", [
        machine_description(),
        f"channels {', '.join(channels)}; high ceiling {args.ceiling:,.0f}/s for "
        f"{args.messages:,} messages each; real ceilings ({real}) for "
        f"{args.real_seconds:.0f} s each" + (f"; rate setting = ceiling / {1 + args.margin:g}"
                                             if args.margin else ""),
        "fakes (tests/fakes) in a helper process; one outbox worker, real channel adapters",
    ])
    start_warning = busy_warning(load_average())
    if start_warning:
        print(start_warning + "\n", flush=True)
    results: list[Run] = []
    status = 0
    lines = []
    started = time.perf_counter()
    for backend in backends(args.db):
        try:
            async with temp_database(backend, args.pg_url, suffix="_sending") as db:
                found = await bench_backend(db, args, channels)
        except DatabaseUnavailable as exc:
            print(f"{backend}: skipped: {exc}", file=sys.stderr)
            lines.append(f"sending {backend}: skipped (database unavailable)")
            status = 1
            continue
        results += found
        lines.append(summary_line(backend, found))
        print()
    if results:
        print_table("achieved rate at the fake's ceiling", [
            "", "ceiling/s", "sent", "achieved/s", "share", "refused", "late p99",
            "gaps s", "CPU ms", "goal"], [row(r) for r in results])
        print("  ceiling/s: the fake's (the setting in brackets when --margin); refused: over "
              "the ceiling (429, WhatsApp\n  400/130429); late p99: ms from the reserved slot "
              "to the call; gaps: seconds between used slots\n  beyond 1/rate (late claims, "
              "pauses after a refusal); CPU: ms of this process per message sent")
        if not all(r.met for r in results):
            status = 1
    loads = [x for r in results for x in r.load if x is not None]
    if loads:
        lines.append(f"load average {min(loads):.1f}–{max(loads):.1f} on the machine during "
                     f"the runs; {time.perf_counter() - started:.0f} s in all")
    print_summary(lines)
    write_json(args.json, {"machine": machine_description(), "goal_share": GOAL_SHARE, "runs": [
        {"backend": r.backend, "channel": r.channel, "label": r.label, "ceiling": r.ceiling,
         "setting": r.setting, "sent": r.fake.get("sent", 0), "achieved_per_s": r.achieved,
         "share": r.share, "throttled": r.throttled,
         "late_p99_ms": 1000 * percentile(r.lateness, 99), "gaps_s": r.gap_lost,
         "met": r.met} for r in results]})
    return status


if __name__ == "__main__":
    raise SystemExit(run(main))
