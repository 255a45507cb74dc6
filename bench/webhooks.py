"""Signed provider webhooks at a fixed arrival rate into the real ``relais serve`` app, on a
fresh SQLite file and a fresh PostgreSQL database.

    .venv/bin/python bench/webhooks.py [--rate 100,200,320] [--seconds 10] [--preroll 5]
                                       [--provider twilio|whatsapp|telegram]
                                       [--db sqlite|postgres|both] [--pg-url URL]
                                       [--app-profile FILE]

The app (``bot.web.app.create_app`` with its outbox worker and scheduler, logging at INFO
to a file as ``relais serve`` does to stderr) runs in a helper process on a free port of
127.0.0.1; its channel points at the fake provider (``tests/fakes``, another helper
process), so every reply really goes out. This process is the load generator, OPEN LOOP:
request i starts at t0 + i / rate whatever became of the earlier ones, over a pool of
keep-alive aiohttp connections, and its latency runs from that planned start to the end of
the response (waiting for a free connection included: no coordinated omission). Each
webhook is answered once the engine has committed the message and its replies.

Traffic: many distinct people, each on their own clock (a first message, then menu answers,
button presses on WhatsApp and Telegram, keywords MENU/AIDE/LANGUE/STOP/START and free text
a few seconds apart), 1 % provider redeliveries, all signed as the provider does
(``X-Twilio-Signature``, ``X-Hub-Signature-256``, Telegram's secret token). A quarter of the
slots (``--status-share``) carry a status callback for a message the fake has accepted
("sent" then "delivered" on Twilio, "delivered" then "read" on WhatsApp; Telegram has none).

Each rate first runs ``--preroll`` seconds unmeasured (the same open loop, so that people
are mid-conversation when measuring starts), then ``--seconds`` measured. Figures per rate:
accepted/s (2xx responses completed per second during the measured window), errors, latency
p50 / p99 / max of the requests planned in the window, how late
the generator itself fired (it shares the machine), the app's CPU per request, and how long
the outbox took to send what was left afterwards.

Goals (2 cores): ≥ 320 accepted/s on SQLite (the app keeps up with an offered 320/s: at
least 99 % of it per second, no error); p99 ≤ 50 ms at 200/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from math import nan
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

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
    serve_parent,
    temp_database,
)
from bench.engine import FIRST, Person, _script
from bot.storage.models import Message, Outbox
from tests.fakes.signing import (
    META_SIGNATURE_HEADER,
    TELEGRAM_SECRET_HEADER,
    meta_signature,
    twilio_signature,
)

GOAL_ACCEPTED = {"sqlite": 320.0, "postgres": 320.0}  # accepted/s at an offered rate ≥ it
GOAL_P99_S = 0.050
GOAL_P99_AT = 200.0
KEEP_UP = 0.99  # share of the offered rate that counts as keeping up
PROVIDERS = ("twilio", "whatsapp", "telegram")
RELAIS_NUMBER = "+33757000100"
APP_SECRET = "0f3c9a7e5b2d4c6e8a1f3b5d7c9e2a4f"
VERIFY_TOKEN = "relais-verify-bench"
TELEGRAM_SECRET = "relais-bench-Webhook_secret-0123456789"
FAKE_CEILING = 5000.0  # the fake's rate limit and the channel's rate: not what is measured here
STATUS_SEQUENCE = {"twilio": ("sent", "delivered"), "whatsapp": ("delivered", "read")}
DRAIN_CAP = 20.0  # seconds to wait for responses after the schedule
SETTLE_CAP = 180.0  # seconds to wait for the app to finish requests the generator gave up on
OUTBOX_CAP = 60.0  # seconds to wait for the outbox to empty between rates
REQUEST_TIMEOUT = 15.0  # Twilio gives up on a webhook after 15 s
SEED = 20250611


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the app, in a helper process --------------------------------------------------------------


def app_process(conn: Any, settings: dict[str, Any], log_path: str, log_level: str,
                profile: str | None) -> None:
    """A ``Child`` target: ``relais serve`` (web app, outbox worker, scheduler) on
    ``settings["port"]``. Ready message: the channels it sends on. Request "cpu" → its CPU
    seconds. Last report: its CPU seconds. ``profile``: a file for cProfile's stats."""
    logging.basicConfig(level=getattr(logging, log_level), force=True, filename=log_path,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("aiosqlite", "asyncio", "httpx", "telegram", "twilio.http_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if profile is None:
        asyncio.run(_serve_app(conn, settings))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(_serve_app(conn, settings))
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


async def _serve_app(conn: Any, values: dict[str, Any]) -> None:
    from aiohttp import web

    from bot.core.config import load_settings
    from bot.web.app import SERVICES, create_app

    settings = load_settings(env_file=None, **values)
    app = create_app(settings, workers=True)
    runner = web.AppRunner(app, handle_signals=False)  # as ``relais serve``
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        conn.send({"channels": app[SERVICES].registry.names()})

        async def handle(request: Any) -> Any:
            if request == "cpu":
                return time.process_time()
            raise ValueError(f"unknown request {request!r}")

        await serve_parent(conn, handle)
    finally:
        cpu = time.process_time()
        await runner.cleanup()  # finishes in-flight sends, releases leases
    conn.send(cpu)


def app_settings(provider: str, db_url: str, port: int, fake_url: str) -> dict[str, Any]:
    from tests.fakes.telegram import TEST_TOKEN as TELEGRAM_TOKEN
    from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
    from tests.fakes.whatsapp import TEST_PHONE_NUMBER_ID
    from tests.fakes.whatsapp import TEST_TOKEN as WHATSAPP_TOKEN

    values: dict[str, Any] = {
        "database_url": db_url, "host": "127.0.0.1", "port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "opening_hours": "24/7",  # the same conversations whatever the hour of the run
    }
    if provider == "twilio":
        values.update(twilio_account_sid=TEST_ACCOUNT_SID, twilio_auth_token=TEST_AUTH_TOKEN,
                      twilio_sms_from=RELAIS_NUMBER, twilio_api_url=fake_url,
                      twilio_rate=FAKE_CEILING)
    elif provider == "whatsapp":
        values.update(whatsapp_token=WHATSAPP_TOKEN, whatsapp_phone_number_id=TEST_PHONE_NUMBER_ID,
                      whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY_TOKEN,
                      whatsapp_api_url=f"{fake_url}/v21.0", whatsapp_rate=FAKE_CEILING)
    else:
        values.update(telegram_token=TELEGRAM_TOKEN, telegram_webhook_secret=TELEGRAM_SECRET,
                      telegram_api_url=f"{fake_url}/bot", telegram_rate=FAKE_CEILING)
    return values


# -- the traffic -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One prepared webhook request."""

    path: str
    body: bytes
    headers: dict[str, str]
    kind: str  # first, answer, keyword, free, redelivery, status


class Signer:
    """Builds the webhooks a provider sends, signed for the app at ``base_url``."""

    def __init__(self, provider: str, base_url: str) -> None:
        self.provider = provider
        self.base_url = base_url
        self.serial = 0

    def inbound(self, person: int, ident: str, text: str, choice_id: str, kind: str) -> Hit:
        self.serial += 1
        if self.provider == "twilio":
            return self._twilio_inbound(ident, text, kind)
        if self.provider == "whatsapp":
            return self._whatsapp_inbound(person, ident, text, choice_id, kind)
        return self._telegram_inbound(ident, text, choice_id, kind)

    def _twilio_inbound(self, number: str, text: str, kind: str) -> Hit:
        from tests.fakes.twilio import inbound_params, new_sid

        params = inbound_params(number, text, to=RELAIS_NUMBER, message_sid=new_sid("SM"))
        return self._twilio_form("/webhooks/twilio", params, kind)

    def _twilio_form(self, path: str, params: dict[str, str], kind: str) -> Hit:
        from tests.fakes.twilio import TEST_AUTH_TOKEN

        signature = twilio_signature(TEST_AUTH_TOKEN, self.base_url + path, params)
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": signature,
                   "I-Twilio-Idempotency-Token": f"bench-{self.serial}"}
        return Hit(path, urlencode(params).encode("utf-8"), headers, kind)

    def _whatsapp_inbound(self, person: int, number: str, text: str, choice_id: str,
                          kind: str) -> Hit:
        from tests.fakes.whatsapp import inbound_button_reply, inbound_text, new_wamid

        wa_id = number.lstrip("+")
        name = f"Personne {person}"
        if choice_id:
            payload = inbound_button_reply(wa_id, choice_id, text or choice_id,
                                           id=new_wamid(wa_id), name=name)
        else:
            payload = inbound_text(wa_id, text, id=new_wamid(wa_id), name=name)
        return self._meta(payload, kind)

    def _meta(self, payload: dict[str, Any], kind: str) -> Hit:
        from tests.fakes.whatsapp import encode

        body = encode(payload)
        headers = {"Content-Type": "application/json",
                   META_SIGNATURE_HEADER: meta_signature(APP_SECRET, body)}
        return Hit("/webhooks/whatsapp", body, headers, kind)

    def _telegram_inbound(self, chat: str, text: str, choice_id: str, kind: str) -> Hit:
        from tests.fakes.telegram import callback_update, text_update

        update_id = 100_000_000 + self.serial  # Relais deduplicates on update_id
        if choice_id:
            update = callback_update(int(chat), choice_id, update_id=update_id)
        else:
            update = text_update(int(chat), text, update_id=update_id, message_id=self.serial)
        body = json.dumps(update, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", TELEGRAM_SECRET_HEADER: TELEGRAM_SECRET}
        return Hit("/webhooks/telegram", body, headers, kind)

    def status(self, provider_id: str, to: str, state: str) -> Hit:
        self.serial += 1
        if self.provider == "twilio":
            from tests.fakes.twilio import API_VERSION, TEST_ACCOUNT_SID

            params = {"SmsSid": provider_id, "SmsStatus": state, "MessageStatus": state,
                      "To": to, "MessageSid": provider_id, "AccountSid": TEST_ACCOUNT_SID,
                      "From": RELAIS_NUMBER, "ApiVersion": API_VERSION}
            if state == "delivered":
                params["RawDlrDoneDate"] = time.strftime("%y%m%d%H%M", time.gmtime())
            return self._twilio_form("/webhooks/twilio/status", params, "status")
        from tests.fakes.whatsapp import status

        return self._meta(status(provider_id, state, recipient_id=to), "status")


def inbound_traffic(signer: Signer, count: int, seconds: float, seed: int,
                    first_person: int) -> tuple[list[Hit], int]:
    """At least ``count`` inbound webhooks in arrival order, from people who each write a
    few seconds apart (reading the reply, typing), and how many people."""
    rng = random.Random(seed)
    timed: list[tuple[float, int, int, str, str, str]] = []
    people = 0
    while len(timed) < count:
        index = first_person + people
        people += 1
        channel = "sms" if signer.provider == "twilio" else "telegram"
        hint = "fr" if signer.provider == "telegram" else None
        # The script of a Telegram person gives button presses; WhatsApp people press
        # buttons too, but open with words rather than /start and give no language.
        script = _script(rng, Person(f"{channel}:{index}", channel, hint),
                         rng.choice((1, 2, 2, 3, 3, 4, 5, 6)))
        if signer.provider == "whatsapp":
            script[0] = (rng.choice(FIRST), "", "first")
        moment = rng.uniform(0.0, seconds)
        for order, (text, choice_id, kind) in enumerate(script):
            if moment >= seconds:
                break
            timed.append((moment, index, order, text, choice_id, kind))
            if order and rng.random() < 0.01:  # the provider delivers it again
                timed.append((moment + rng.uniform(0.2, 1.0), index, order, text, choice_id,
                              "redelivery"))
            moment += rng.uniform(0.5, 1.5) if rng.random() < 0.1 else rng.uniform(1.5, 5.0)
    timed.sort()
    hits: list[Hit] = []
    last: dict[tuple[int, int], Hit] = {}
    for _moment, index, order, text, choice_id, kind in timed[:count]:
        if kind == "redelivery" and (index, order) in last:
            original = last[(index, order)]
            hits.append(Hit(original.path, original.body, original.headers, "redelivery"))
            continue
        ident = (str(700_000_000 + index) if signer.provider == "telegram"
                 else f"+336{10_000_000 + index:08d}")
        hit = signer.inbound(index, ident, text, choice_id, kind)
        last[(index, order)] = hit
        hits.append(hit)
    return hits, people


class StatusFeed:
    """Status callbacks for the messages the fake accepted, oldest first."""

    def __init__(self, fakes: Child, signer: Signer) -> None:
        self.fakes = fakes
        self.signer = signer
        self.states = STATUS_SEQUENCE.get(signer.provider, ())
        self.pending: deque[tuple[str, str, str]] = deque(maxlen=50_000)
        self.since = 0
        self.messages: set[str] = set()  # those a callback was sent for

    async def reset(self) -> None:
        self.pending.clear()
        self.messages.clear()
        self.since, _throttled = await self.fakes.ask(("count", self.signer.provider))

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            new = await self.fakes.ask(("sent", self.signer.provider, self.since))
            self.since += len(new)
            for provider_id, to in new:
                for state in self.states:
                    self.pending.append((provider_id, to, state))
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except TimeoutError:
                pass

    def next(self) -> Hit | None:
        if not self.pending:
            return None
        provider_id, to, state = self.pending.popleft()
        self.messages.add(provider_id)
        return self.signer.status(provider_id, to, state)


# -- one rate ------------------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str
    status: int | str  # HTTP status, or the exception's name
    planned: float  # planned start, from t0
    latency: float  # planned start → end of the response
    done: float  # end of the response, from t0
    lag: float  # how late the generator started the request

    @property
    def ok(self) -> bool:
        return isinstance(self.status, int) and 200 <= self.status < 300


@dataclass
class LoadRun:
    backend: str
    provider: str
    rate: float
    seconds: float  # measured
    preroll: float  # unmeasured, before
    people: int = 0
    offered: int = 0
    samples: list[Sample] = field(default_factory=list)
    unfinished: int = 0
    requests: int = 0  # pre-roll included
    app_cpu: float = 0.0  # net of the idle app's own CPU over the same time
    generator_cpu: float = 0.0
    load: tuple[float | None, float | None] = (None, None)
    sends: int = 0
    throttled: int = 0
    status_messages: int = 0
    outbox_rows: int = 0
    outbox_left: int = 0
    drained_in: float | None = None
    settled_in: float | None = 0.0  # for requests given up on: None when still running

    @property
    def measured(self) -> list[Sample]:
        """The requests planned in the measured window."""
        return [s for s in self.samples if s.planned >= self.preroll - 1e-9]

    @property
    def accepted(self) -> list[Sample]:
        return [s for s in self.measured if s.ok]

    @property
    def errors(self) -> Counter[str]:
        found = Counter(str(s.status) for s in self.measured if not s.ok)
        if self.unfinished:
            found["unfinished"] += self.unfinished
        return found

    @property
    def steady_rate(self) -> float:
        """2xx responses completed during the measured window, per second (pre-roll ones
        included): the offered rate when the app keeps up, less when a backlog grows."""
        end = self.preroll + self.seconds
        return sum(1 for s in self.samples if s.ok and self.preroll <= s.done < end) / (
            self.seconds)

    def latency(self, q: float, kind: str | None = None) -> float:
        chosen = [s.latency for s in self.accepted if kind is None or (s.kind == "status")
                  == (kind == "status")]
        return percentile(chosen, q)

    @property
    def kept_up(self) -> bool:
        return not self.errors and self.steady_rate >= KEEP_UP * self.rate


async def fire(http: aiohttp.ClientSession, url: str, hit: Hit, target: float, t0: float,
               samples: list[Sample]) -> None:
    loop = asyncio.get_running_loop()
    lag = loop.time() - target
    status: int | str
    try:
        async with http.post(url + hit.path, data=hit.body, headers=hit.headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        status = type(exc).__name__
    done = loop.time()
    samples.append(Sample(hit.kind, status, target - t0, done - target, done - t0, lag))


async def open_loop(http: aiohttp.ClientSession, url: str, inbound: Iterator[Hit],
                    feed: StatusFeed | None, status_every: int, rate: float, count: int
                    ) -> tuple[list[Sample], int]:
    """Request i at t0 + i / rate, never waiting for an answer; then at most DRAIN_CAP s for
    the last answers. Returns the samples and how many requests never finished."""
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    t0 = loop.time() + 0.05
    for index in range(count):
        target = t0 + index / rate
        delay = target - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        hit = None
        if feed is not None and status_every and index % status_every == status_every - 1:
            hit = feed.next()
        if hit is None:
            hit = next(inbound)
        task = asyncio.create_task(fire(http, url, hit, target, t0, samples))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    unfinished = 0
    if tasks:
        _done, pending = await asyncio.wait(set(tasks), timeout=DRAIN_CAP)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        unfinished = len(pending)
    return samples, unfinished


async def outbox_active(db: BenchDB) -> int:
    async with db.sessions() as session:
        return await session.scalar(
            select(func.count()).select_from(Outbox)
            .where(Outbox.status.in_(("queued", "sending", "in_doubt")))) or 0


async def outbox_rows(db: BenchDB) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(Outbox)) or 0


async def inbound_rows(db: BenchDB) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(Message)
                                    .where(Message.direction == "in")) or 0


async def wait_until_settled(db: BenchDB, cap: float) -> float | None:
    """Requests the generator gave up on still run in the app (aiohttp does not cancel a
    handler when its client leaves): seconds until no inbound row was added for 1.5 s, or
    None after ``cap`` seconds."""
    started = time.perf_counter()
    last, still = await inbound_rows(db), 0
    while still < 3:
        if time.perf_counter() - started > cap:
            return None
        await asyncio.sleep(0.5)
        now = await inbound_rows(db)
        still = still + 1 if now == last else 0
        last = now
    return time.perf_counter() - started - 1.5


async def wait_for_outbox(db: BenchDB, cap: float) -> float | None:
    """Seconds until nothing is left to send, or None after ``cap`` seconds."""
    started = time.perf_counter()
    while True:
        if await outbox_active(db) == 0:
            return time.perf_counter() - started
        if time.perf_counter() - started > cap:
            return None
        await asyncio.sleep(0.25)


async def idle_cpu_rate(app: Child, seconds: float = 3.0) -> float:
    """The app's CPU seconds per second with no traffic (scheduler, outbox polling)."""
    before, started = await app.ask("cpu"), time.perf_counter()
    await asyncio.sleep(seconds)
    return (await app.ask("cpu") - before) / (time.perf_counter() - started)


async def load_run(db: BenchDB, app: Child, fakes: Child, http: aiohttp.ClientSession,
                   url: str, signer: Signer, result: LoadRun, status_share: float,
                   seed: int, first_person: int, idle_cpu: float) -> LoadRun:
    count = max(1, int(round(result.rate * (result.preroll + result.seconds))))
    inbound, result.people = inbound_traffic(signer, count, result.preroll + result.seconds,
                                             seed, first_person)
    feed = StatusFeed(fakes, signer) if signer.provider in STATUS_SEQUENCE else None
    status_every = round(1 / status_share) if status_share > 0 and feed is not None else 0
    if feed is not None:
        await feed.reset()
    sends_before, throttled_before = await fakes.ask(("count", signer.provider))
    rows_before = await outbox_rows(db)
    result.load = (load_average(), None)
    app_cpu = await app.ask("cpu")
    app_started = time.perf_counter()
    own_cpu = time.process_time()
    stop = asyncio.Event()
    follow = asyncio.create_task(feed.follow(stop)) if feed is not None else None
    try:
        result.samples, result.unfinished = await open_loop(
            http, url, iter(inbound), feed, status_every, result.rate, count)
    finally:
        stop.set()
        if follow is not None:
            await follow
    result.offered = sum(1 for i in range(count) if i / result.rate >= result.preroll - 1e-9)
    result.requests = count
    result.generator_cpu = time.process_time() - own_cpu
    result.load = (result.load[0], load_average())
    result.outbox_left = await outbox_active(db)
    if result.unfinished or any(s.status == "TimeoutError" for s in result.samples):
        result.settled_in = await wait_until_settled(db, SETTLE_CAP)
    result.drained_in = await wait_for_outbox(db, OUTBOX_CAP)
    # Once every request is handled and every reply sent: the whole cost of the traffic,
    # less what the app spends idle (scheduler, outbox polling) over the same time.
    result.app_cpu = (await app.ask("cpu") - app_cpu
                      - idle_cpu * (time.perf_counter() - app_started))
    result.outbox_rows = await outbox_rows(db) - rows_before
    sends, throttled = await fakes.ask(("count", signer.provider))
    result.sends, result.throttled = sends - sends_before, throttled - throttled_before
    result.status_messages = len(feed.messages) if feed is not None else 0
    return result


# -- printing ----------------------------------------------------------------------------------


def describe(result: LoadRun) -> str:
    accepted = result.accepted
    kinds = Counter(s.kind for s in result.measured)
    lags = [s.lag for s in result.samples]
    errors = result.errors
    drained = (f"sent in {result.drained_in:.1f} s more" if result.drained_in is not None
               else f"NOT sent within {OUTBOX_CAP:.0f} s")
    mix = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    slowest = max((s.latency for s in accepted), default=nan)
    lines = [
        f"{result.backend} {result.provider} at {result.rate:,.0f}/s: {result.offered:,} "
        f"requests measured after {result.requests - result.offered:,} unmeasured, from "
        f"{result.people:,} people ({mix})",
        f"    {len(accepted):,} accepted, errors: {dict(errors) or 'none'}; steady "
        f"{result.steady_rate:,.1f} accepted/s; latency p50 {ms(result.latency(50))} ms, "
        f"p99 {ms(result.latency(99))} ms, max {ms(slowest)} ms"
        + (f" (status callbacks alone: p99 {ms(result.latency(99, 'status'))} ms)"
           if kinds.get("status") else ""),
        f"    generator fired late by p99 {fmt_ms(percentile(lags, 99))} ms, max "
        f"{fmt_ms(max(lags, default=0.0))} ms; CPU per request (handling it, sending the "
        f"replies; idle use taken off): app "
        f"{1000 * result.app_cpu / max(1, result.requests):.2f} ms, generator "
        f"{1000 * result.generator_cpu / max(1, result.requests):.2f} ms; load average "
        f"{result.load[0] or 0:.1f} → {result.load[1] or 0:.1f}",
        f"    outbox: {result.outbox_rows:,} rows written, {result.sends:,} messages accepted by "
        f"the fake during the run and the drain ({result.throttled} refused over its ceiling); "
        f"{result.outbox_left:,} still to send when the schedule ended, {drained}; status "
        f"callbacks for {result.status_messages:,} messages",
    ]
    if result.settled_in != 0.0:
        lines.append("    requests given up on were still running in the app: " + (
            f"done {result.settled_in:.1f} s later" if result.settled_in is not None
            else f"NOT done within {SETTLE_CAP:.0f} s"))
    return "\n".join(lines)


def goal_cells(result: LoadRun) -> str:
    cells = []
    goal = GOAL_ACCEPTED.get(result.backend)
    if goal is not None and result.rate >= goal:
        cells.append(f"≥ {goal:.0f}/s: {'met' if result.kept_up else 'MISSED'}")
    if result.rate == GOAL_P99_AT:
        met = result.latency(99) <= GOAL_P99_S and not result.errors
        cells.append(f"p99 ≤ {1000 * GOAL_P99_S:.0f} ms: {'met' if met else 'MISSED'}")
    return "; ".join(cells)


def ms(value: float) -> str:
    return "–" if value != value else fmt_ms(value)  # NaN: no request to measure


def row(result: LoadRun) -> list[str]:
    errors = sum(result.errors.values())
    return [
        f"{result.backend} {result.rate:,.0f}/s", f"{result.offered:,}",
        f"{result.steady_rate:,.1f}", f"{errors:,}", ms(result.latency(50)),
        ms(result.latency(99)), ms(max((s.latency for s in result.accepted), default=nan)),
        ms(percentile([s.lag for s in result.samples], 99)),
        f"{1000 * result.app_cpu / max(1, result.requests):.1f}",
        f"{result.load[0] or 0:.1f}",
        f"{result.drained_in:.1f}" if result.drained_in is not None else "> cap",
    ]


def summary_line(backend: str, provider: str, seconds: float, runs: list[LoadRun]) -> str:
    parts = []
    for r in runs:
        errors = sum(r.errors.values())
        kind = f" ({r.errors.most_common(1)[0][0]})" if errors else ""
        parts.append(
            f"{r.rate:,.0f}/s → {r.steady_rate:,.0f} accepted/s, {errors} errors{kind}, p50 "
            f"{ms(r.latency(50))} / p99 {ms(r.latency(99))} / max "
            f"{ms(max((s.latency for s in r.accepted), default=nan))} ms, app CPU "
            f"{1000 * r.app_cpu / max(1, r.requests):.1f} ms/request")
    goals = "; ".join(f"{r.rate:,.0f}/s {goal_cells(r)}" for r in runs if goal_cells(r))
    return (f"webhooks {backend} ({provider}, {seconds:g} s per rate, open loop): "
            f"{'; '.join(parts)}" + (f"; goals: {goals}" if goals else ""))


def log_problems(path: str) -> list[str]:
    """The app's WARNING and ERROR lines, counted by logger and first words."""
    found: Counter[str] = Counter()
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                parts = line.split(" ", 4)
                if len(parts) == 5 and parts[2] in ("WARNING", "ERROR", "CRITICAL"):
                    found[f"{parts[2]} {parts[3]} {parts[4][:90].strip()}"] += 1
    except OSError:
        return []
    return [f"{n} × {text}" for text, n in found.most_common(5)]


# -- main --------------------------------------------------------------------------------------


async def bench_backend(db: BenchDB, args: argparse.Namespace, rates: list[float]
                        ) -> list[LoadRun]:
    print(f"{db.backend}: {db.where} ({db.backend} {db.server_version})", flush=True)
    folder = tempfile.mkdtemp(prefix="relais-bench-log-")
    log_path = os.path.join(folder, "relais.log")
    results: list[LoadRun] = []
    try:
        async with Child("fake provider", fake_providers_process,
                         {args.provider: FAKE_CEILING}) as fakes:
            port = free_port()
            settings = app_settings(args.provider, db.url, port, fakes.ready[args.provider])
            async with Child("relais app", app_process, settings, log_path,
                             args.app_log_level, args.app_profile) as app:
                url = settings["public_url"]
                idle = await idle_cpu_rate(app)
                print(f"  app on {url} (channels: {', '.join(app.ready['channels'])}), "
                      f"fake {args.provider} at {fakes.ready[args.provider]}, log at "
                      f"{args.app_log_level}; idle, the app uses {1000 * idle:.1f} ms of CPU "
                      f"per second", flush=True)
                signer = Signer(args.provider, url)
                connector = aiohttp.TCPConnector(limit=args.connections)
                timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                    for index, rate in enumerate(rates):
                        warning = busy_warning(load_average())
                        if warning:
                            print(f"  {warning}", flush=True)
                        result = LoadRun(db.backend, args.provider, rate, args.seconds,
                                         args.preroll)
                        await load_run(db, app, fakes, http, url, signer, result,
                                       args.status_share, SEED + index,
                                       (index + 1) * 1_000_000, idle)
                        print(describe(result), flush=True)
                        results.append(result)
                        await asyncio.sleep(1.0)
        fake_final = fakes.final or {}
        unexpected = fake_final.get(args.provider, {}).get("unexpected_sample", [])
        if unexpected:
            print(f"  the fake found requests malformed, e.g. {unexpected[0]}")
        problems = log_problems(log_path)
        if problems:
            print("  the app logged:\n" + "\n".join(f"    {p}" for p in problems))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def parse_rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive numbers, e.g. 100,200,320")
    return rates


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=parse_rates, default=[100.0, 200.0, 320.0],
                        help="webhooks per second, comma-separated for several runs "
                        "(100,200,320)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds per rate (10)")
    parser.add_argument("--preroll", type=float, default=5.0,
                        help="unmeasured seconds before, at the same rate (5)")
    parser.add_argument("--provider", choices=PROVIDERS, default="twilio",
                        help="whose webhooks (twilio: SMS)")
    parser.add_argument("--status-share", type=float, default=0.25,
                        help="share of the slots carrying a status callback (0.25)")
    parser.add_argument("--connections", type=int, default=128,
                        help="the generator's pool of keep-alive connections (128)")
    parser.add_argument("--app-log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="the app's log level, to a file (INFO, as relais serve)")
    parser.add_argument("--app-profile", default=None, metavar="FILE",
                        help="write the app process's cProfile stats there (with --db sqlite "
                        "or postgres: one file)")
    add_db_arguments(parser)
    args = parser.parse_args()
    if not 0 < args.seconds <= 600 or not 0 <= args.preroll <= 120:
        parser.error("--seconds must be in (0, 600], --preroll in [0, 120]")
    if not 0 <= args.status_share <= 0.5:
        parser.error("--status-share must be in [0, 0.5]")
    rates: list[float] = args.rate
    share = args.status_share if args.provider in STATUS_SEQUENCE else 0.0
    print_header("Relais webhook benchmark", [
        machine_description(),
        f"{args.provider} webhooks at {', '.join(f'{r:,.0f}' for r in rates)}/s for "
        f"{args.seconds:g} s each after {args.preroll:g} s unmeasured, open loop over "
        f"{args.connections} connections; "
        f"{100 * share:.0f} % of the slots status callbacks",
        "the app and the fake provider each in a helper process; this one generates the load",
    ])
    warning = busy_warning(load_average())
    if warning:
        print(warning + "\n", flush=True)
    lines: list[str] = []
    status = 0
    all_results: list[LoadRun] = []
    for backend in backends(args.db):
        try:
            async with temp_database(backend, args.pg_url, suffix="_webhooks") as db:
                results = await bench_backend(db, args, rates)
        except DatabaseUnavailable as exc:
            print(f"{backend}: skipped: {exc}", file=sys.stderr)
            lines.append(f"webhooks {backend}: skipped (database unavailable)")
            status = 1
            continue
        all_results += results
        lines.append(summary_line(backend, args.provider, args.seconds, results))
        print()
    if all_results:
        print_table(f"{args.provider} webhooks, open loop, {args.seconds:g} s per rate", [
            "", "requests", "accepted/s", "errors", "p50 ms", "p99 ms", "max ms", "lag p99",
            "CPU ms", "load", "drain s"], [row(r) for r in all_results])
        print("  accepted/s: 2xx completed per second in the measured window; latency (ms): "
              "planned start → response,\n  i.e. reply rows committed; lag p99: how late the "
              "generator fired; CPU ms: the app's per request;\n  drain s: seconds after the "
              "schedule until every reply had left")
        for result in all_results:
            if goal_cells(result):
                print(f"  goal {result.backend} {result.rate:,.0f}/s: {goal_cells(result)}")
        if any("MISSED" in goal_cells(r) for r in all_results):
            status = 1
    loads = [x for r in all_results for x in r.load if x is not None]
    if loads:
        lines.append(f"load average {min(loads):.1f}–{max(loads):.1f} during the runs "
                     f"({os.cpu_count()} cores)")
    print_summary(lines)
    return status


if __name__ == "__main__":
    raise SystemExit(run(main))
