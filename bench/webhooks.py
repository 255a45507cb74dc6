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
import contextlib
import json
import logging
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    process_cpu_seconds,
    relais_env,
    run,
    serve_parent,
    temp_database,
    write_json,
)
from bench.engine import FIRST, Person, _script
from bot.storage.models import InboxItem, Message, Outbox
from tests.fakes.signing import (
    META_SIGNATURE_HEADER,
    TELEGRAM_SECRET_HEADER,
    meta_signature,
    twilio_signature,
)

GOAL_ACCEPTED = {"sqlite": 1000.0, "postgres": 1500.0}  # accepted/s at an offered rate ≥ it
GOAL_P99_S = 0.050
GOAL_P99_AT = 200.0
GOAL_E2E_P99_S = 0.300  # webhook → reply accepted by the fake, at GOAL_E2E_AT
GOAL_E2E_AT = 100.0
GOAL_OVERLOAD_P99_S = 0.100  # webhook p99 at twice the processing capacity
GOAL_PROCESSED = {"sqlite": 320.0, "postgres": 600.0}  # inbox rows done/s (PG: 2 processes)
CAPACITY_RATE = {"sqlite": 800.0, "postgres": 1500.0}  # offered to find the capacity
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
INBOX_CAP = 180.0  # seconds to wait for the inbox backlog to be processed
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
    ident: str = ""  # an inbound message's provider id (the stored message's provider_id)
    sender: str = ""  # who sent it (a phone number or a chat id)


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

        sid = new_sid("SM")
        params = inbound_params(number, text, to=RELAIS_NUMBER, message_sid=sid)
        hit = self._twilio_form("/webhooks/twilio", params, kind)
        return Hit(hit.path, hit.body, hit.headers, kind, sid, number)

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
        wamid = new_wamid(wa_id)
        if choice_id:
            payload = inbound_button_reply(wa_id, choice_id, text or choice_id,
                                           id=wamid, name=name)
        else:
            payload = inbound_text(wa_id, text, id=wamid, name=name)
        hit = self._meta(payload, kind)
        return Hit(hit.path, hit.body, hit.headers, kind, wamid, number)

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
        return Hit("/webhooks/telegram", body, headers, kind, str(update_id), chat)

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
            hits.append(Hit(original.path, original.body, original.headers, "redelivery",
                            original.ident, original.sender))
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
    ident: str = ""  # an inbound message's provider id
    sender: str = ""
    at: float = 0.0  # the planned start, on time.monotonic() (the fakes' clock too)

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
    processes: int = 1  # app processes processing the inbox (``--processes``)
    label: str = ""  # what the run is for (overload phases, broadcast)
    # after the inbox: what became of the stored webhooks
    e2e: list[float] = field(default_factory=list)  # webhook planned → reply accepted, s
    e2e_missing: int = 0  # measured inbound messages whose reply the fake never accepted
    processed: int = 0  # inbox rows done in the measured window
    backlog_after: int | None = None  # inbox rows pending when the schedule ended
    lag_after: float | None = None  # relais_inbox_lag_seconds then
    inbox_drained_in: float | None = None  # seconds until no inbox row was pending
    drain_processed: int = 0  # rows done after the schedule ended, until the inbox was empty
    during: tuple[float, float] | None = None  # (start, end) of the broadcast enqueue, from t0
    during_result: Any = None
    e2e_during: list[float] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=dict)  # losses and order (overload)

    @property
    def processed_rate(self) -> float:
        """Inbox rows done per second in the measured window (``inbox.done_at``)."""
        return self.processed / self.seconds

    @property
    def drain_rate(self) -> float:
        """Inbox rows done per second while the backlog drained after the schedule."""
        if not self.inbox_drained_in or self.drain_processed < 20:
            return nan
        return self.drain_processed / self.inbox_drained_in

    @property
    def capacity(self) -> float:
        """Events processed per second with a backlog to work on: the better of the window
        (webhooks arriving too) and the drain after it (the inbox workers alone)."""
        drain = self.drain_rate
        return max(self.processed_rate, drain if drain == drain else 0.0)

    def e2e_latency(self, q: float) -> float:
        return percentile(self.e2e, q)

    def latency_during(self, q: float) -> float:
        """Webhook latency of the requests planned while the broadcast was enqueued."""
        if self.during is None:
            return nan
        start, end = self.during
        return percentile([s.latency for s in self.accepted if start <= s.planned <= end], q)

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
    samples.append(Sample(hit.kind, status, target - t0, done - target, done - t0, lag,
                          hit.ident, hit.sender, target))


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


async def inbox_pending(db: BenchDB) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(InboxItem)
                                    .where(InboxItem.state == "pending")) or 0


async def last_ids(db: BenchDB) -> tuple[int, int, int]:
    """The highest inbox, message and outbox ids: what a run adds comes after them."""
    async with db.sessions() as session:
        return (await session.scalar(select(func.max(InboxItem.id))) or 0,
                await session.scalar(select(func.max(Message.id))) or 0,
                await session.scalar(select(func.max(Outbox.id))) or 0)


async def scrape_metrics(http: aiohttp.ClientSession, url: str) -> tuple[int, float] | None:
    """(``relais_inbox_depth{state="pending"}``, ``relais_inbox_lag_seconds``) from
    ``/metrics``, or None when it does not say."""
    try:
        async with http.get(url + "/metrics") as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    depth = re.search(r'^relais_inbox_depth\{[^}]*"pending"[^}]*\}\s+(\S+)', text, re.M)
    lag = re.search(r"^relais_inbox_lag_seconds(?:\{[^}]*\})?\s+(\S+)", text, re.M)
    if depth is None or lag is None:
        return None
    return int(float(depth.group(1))), float(lag.group(1))


async def wait_for_inbox(db: BenchDB, cap: float) -> float | None:
    """Seconds until no inbox row is pending, or None after ``cap`` seconds."""
    started = time.perf_counter()
    while True:
        if await inbox_pending(db) == 0:
            return time.perf_counter() - started
        if time.perf_counter() - started > cap:
            return None
        await asyncio.sleep(0.1)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def done_times(db: BenchDB, after_id: int) -> list[float]:
    """When each inbox row after ``after_id`` was done (epoch seconds, the app's clock)."""
    async with db.sessions() as session:
        rows = await session.scalars(select(InboxItem.done_at).where(
            InboxItem.id > after_id, InboxItem.done_at.is_not(None)))
        return [_aware(moment).timestamp() for moment in rows]


async def reply_times(db: BenchDB, fakes: Child, provider: str, since: int, after_message: int,
                      after_outbox: int) -> dict[str, float]:
    """Inbound provider id → when the fake accepted the first reply to it. An outbox row
    answers the person's latest inbound message stored at or before it (the engine writes
    both with the same ``created_at`` in one transaction, and one person's events are
    processed one at a time); the row's ``provider_id`` is the fake's id."""
    accepted = {ident: moment for ident, _to, moment
                in await fakes.ask(("sent_times", provider, since), timeout=60.0)}
    inbound: dict[int, list[tuple[datetime, int, str]]] = {}
    first: dict[str, float] = {}
    async with db.sessions() as session:
        for ident, contact, created, number in await session.execute(
                select(Message.provider_id, Message.contact_id, Message.created_at, Message.id)
                .where(Message.direction == "in", Message.id > after_message)):
            inbound.setdefault(contact, []).append((_aware(created), number, ident))
        replies = await session.execute(
            select(Outbox.contact_id, Outbox.created_at, Outbox.id, Outbox.provider_id)
            .where(Outbox.id > after_outbox, Outbox.provider_id.is_not(None),
                   Outbox.broadcast_id.is_(None)))
        rows = list(replies)
    for messages in inbound.values():
        messages.sort()
    for contact, created, _id, sent_id in rows:
        moment = accepted.get(str(sent_id))
        messages = inbound.get(contact)
        if moment is None or not messages:
            continue
        written = _aware(created)
        answered = None
        for message in messages:  # a few per person, in the order they were stored
            if message[0] <= written:
                answered = message[2]
        if answered is not None and (answered not in first or moment < first[answered]):
            first[answered] = moment
    return first


async def delivery_checks(db: BenchDB, samples: list[Sample], after_message: int,
                          after_outbox: int) -> dict[str, int]:
    """Nothing lost, nothing out of order: every accepted inbound webhook is a stored
    message, every outbox row written has left, and each person's stored messages are in
    the order that person sent them."""
    sent: dict[str, list[str]] = {}
    for sample in sorted(samples, key=lambda s: s.planned):
        if sample.ok and sample.ident and sample.kind not in ("status", "redelivery"):
            sent.setdefault(sample.sender, [])
            if sample.ident not in sent[sample.sender]:
                sent[sample.sender].append(sample.ident)
    stored: dict[int, list[str]] = {}
    contact_of: dict[str, int] = {}
    async with db.sessions() as session:
        rows = await session.execute(
            select(Message.provider_id, Message.contact_id)
            .where(Message.direction == "in", Message.id > after_message)
            .order_by(Message.id))
        for ident, contact in rows:
            stored.setdefault(contact, []).append(ident)
            contact_of[ident] = contact
        unsent = await session.scalar(
            select(func.count()).select_from(Outbox).where(
                Outbox.id > after_outbox,
                Outbox.status.not_in(("sent", "delivered", "read")))) or 0
    missing = out_of_order = 0
    for idents in sent.values():
        missing += sum(1 for ident in idents if ident not in contact_of)
        contacts = {contact_of[ident] for ident in idents if ident in contact_of}
        if len(contacts) != 1:
            continue
        known = set(idents)
        order = [ident for ident in stored[contacts.pop()] if ident in known]
        if order != [ident for ident in idents if ident in contact_of]:
            out_of_order += 1
    return {"messages_sent": sum(len(v) for v in sent.values()),
            "messages_missing": missing, "people": len(sent),
            "people_out_of_order": out_of_order, "outbox_not_sent": unsent}


async def load_run(db: BenchDB, app: Child, fakes: Child, http: aiohttp.ClientSession,
                   url: str, signer: Signer, result: LoadRun, status_share: float,
                   seed: int, first_person: int, idle_cpu: float,
                   others: tuple[int, ...] = (), during: Any = None,
                   check: bool = False) -> LoadRun:
    """One rate. ``others``: pids of extra app processes (``relais worker``), their CPU
    counted with the app's; ``during``: a coroutine function started once the measured
    window begins (the broadcast), its result and time span kept; ``check``: the loss and
    order checks (``delivery_checks``)."""
    count = max(1, int(round(result.rate * (result.preroll + result.seconds))))
    inbound, result.people = inbound_traffic(signer, count, result.preroll + result.seconds,
                                             seed, first_person)
    feed = StatusFeed(fakes, signer) if signer.provider in STATUS_SEQUENCE else None
    status_every = round(1 / status_share) if status_share > 0 and feed is not None else 0
    if feed is not None:
        await feed.reset()
    sends_before, throttled_before = await fakes.ask(("count", signer.provider))
    rows_before = await outbox_rows(db)
    inbox_before, message_before, outbox_before = await last_ids(db)
    result.load = (load_average(), None)
    app_cpu = await app.ask("cpu") + sum(process_cpu_seconds(pid) for pid in others)
    app_started = time.perf_counter()
    own_cpu = time.process_time()
    wall_offset = time.time() - time.monotonic()
    start = time.monotonic() + 0.05  # open_loop's t0, near enough for the windows below
    stop = asyncio.Event()
    follow = asyncio.create_task(feed.follow(stop)) if feed is not None else None
    side: asyncio.Task[Any] | None = None
    if during is not None:
        async def timed() -> Any:
            await asyncio.sleep(max(0.0, start + result.preroll + 0.5 - time.monotonic()))
            began = time.monotonic()
            outcome = await during()
            result.during = (began - start, time.monotonic() - start)
            return outcome
        side = asyncio.create_task(timed())
    try:
        result.samples, result.unfinished = await open_loop(
            http, url, iter(inbound), feed, status_every, result.rate, count)
    finally:
        stop.set()
        if follow is not None:
            await follow
    if result.samples:  # the exact t0, from the samples
        first = min(result.samples, key=lambda s: s.planned)
        start = first.at - first.planned
    result.offered = sum(1 for i in range(count) if i / result.rate >= result.preroll - 1e-9)
    result.requests = count
    result.generator_cpu = time.process_time() - own_cpu
    result.load = (result.load[0], load_average())
    scraped = await scrape_metrics(http, url)
    if scraped is not None:
        result.backlog_after, result.lag_after = scraped
    else:
        result.backlog_after = await inbox_pending(db)
    result.outbox_left = await outbox_active(db)
    if result.unfinished or any(s.status == "TimeoutError" for s in result.samples):
        result.settled_in = await wait_until_settled(db, SETTLE_CAP)
    schedule_end = time.time()
    result.inbox_drained_in = await wait_for_inbox(db, INBOX_CAP)
    if side is not None:
        result.during_result = await side
    outbox_in = await wait_for_outbox(db, OUTBOX_CAP)
    result.drained_in = (None if outbox_in is None or result.inbox_drained_in is None
                         else result.inbox_drained_in + outbox_in)
    # Once every request is handled and every reply sent: the whole cost of the traffic,
    # less what the app spends idle (scheduler, outbox polling) over the same time.
    result.app_cpu = (await app.ask("cpu") + sum(process_cpu_seconds(pid) for pid in others)
                      - app_cpu - idle_cpu * (1 + len(others))
                      * (time.perf_counter() - app_started))
    result.outbox_rows = await outbox_rows(db) - rows_before
    sends, throttled = await fakes.ask(("count", signer.provider))
    result.sends, result.throttled = sends - sends_before, throttled - throttled_before
    result.status_messages = len(feed.messages) if feed is not None else 0
    # what the inbox did: rows done in the measured window, and while the backlog drained
    window = (wall_offset + start + result.preroll,
              wall_offset + start + result.preroll + result.seconds)
    done = await done_times(db, inbox_before)
    result.processed = sum(1 for moment in done if window[0] <= moment < window[1])
    result.drain_processed = sum(1 for moment in done if moment >= schedule_end)
    # end to end: the webhook's planned start → the fake accepted the first reply to it
    replies = await reply_times(db, fakes, signer.provider, sends_before, message_before,
                               outbox_before)
    for sample in result.accepted:
        if not sample.ident or sample.kind in ("status", "redelivery"):
            continue
        moment = replies.get(sample.ident)
        if moment is None:
            result.e2e_missing += 1
            continue
        result.e2e.append(moment - sample.at)
        if result.during is not None and result.during[0] <= sample.planned <= result.during[1]:
            result.e2e_during.append(moment - sample.at)
    if check:
        result.checks = await delivery_checks(db, result.samples, message_before, outbox_before)
    return result


def figures(result: LoadRun) -> dict[str, Any]:
    """One run for ``--json``."""
    return {
        "label": result.label, "backend": result.backend, "provider": result.provider,
        "processes": result.processes, "rate": result.rate, "seconds": result.seconds,
        "offered": result.offered, "accepted_per_s": result.steady_rate,
        "kept_up": result.kept_up, "errors": dict(result.errors),
        "p50_ms": 1000 * result.latency(50), "p99_ms": 1000 * result.latency(99),
        "max_ms": 1000 * max((s.latency for s in result.accepted), default=nan),
        "e2e_p50_ms": 1000 * result.e2e_latency(50), "e2e_p99_ms": 1000 * result.e2e_latency(99),
        "e2e_count": len(result.e2e), "e2e_missing": result.e2e_missing,
        "processed_per_s": result.processed_rate, "drain_per_s": result.drain_rate,
        "capacity_per_s": result.capacity,
        "backlog_after": result.backlog_after, "lag_after_s": result.lag_after,
        "inbox_drain_s": result.inbox_drained_in, "drain_s": result.drained_in,
        "app_cpu_ms_per_request": 1000 * result.app_cpu / max(1, result.requests),
        "generator_lag_p99_ms": 1000 * percentile([s.lag for s in result.samples], 99),
        "load": list(result.load), "outbox_rows": result.outbox_rows, "sends": result.sends,
        "throttled": result.throttled, "checks": result.checks,
        "during": list(result.during) if result.during else None,
        "during_p99_ms": 1000 * result.latency_during(99),
        "during_e2e_p99_ms": 1000 * percentile(result.e2e_during, 99),
        "during_result": result.during_result,
    }


# -- printing ----------------------------------------------------------------------------------


def describe(result: LoadRun) -> str:
    accepted = result.accepted
    kinds = Counter(s.kind for s in result.measured)
    lags = [s.lag for s in result.samples]
    errors = result.errors
    drained = (f"sent in {result.drained_in:.1f} s more" if result.drained_in is not None
               else f"NOT sent within {INBOX_CAP + OUTBOX_CAP:.0f} s")
    mix = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    slowest = max((s.latency for s in accepted), default=nan)
    label = f" [{result.label}]" if result.label else ""
    procs = f", {result.processes} processes" if result.processes > 1 else ""
    lines = [
        f"{result.backend} {result.provider}{procs} at {result.rate:,.0f}/s{label}: "
        f"{result.offered:,} requests measured after {result.requests - result.offered:,} "
        f"unmeasured, from {result.people:,} people ({mix})",
        f"    {len(accepted):,} accepted, errors: {dict(errors) or 'none'}; steady "
        f"{result.steady_rate:,.1f} accepted/s; latency p50 {ms(result.latency(50))} ms, "
        f"p99 {ms(result.latency(99))} ms, max {ms(slowest)} ms"
        + (f" (status callbacks alone: p99 {ms(result.latency(99, 'status'))} ms)"
           if kinds.get("status") else ""),
        f"    end to end (planned webhook → reply accepted by the fake): p50 "
        f"{ms(result.e2e_latency(50))} ms, p99 {ms(result.e2e_latency(99))} ms over "
        f"{len(result.e2e):,} messages ({result.e2e_missing:,} got no reply)",
        f"    inbox: {result.processed_rate:,.1f} events processed/s in the window; "
        f"{result.backlog_after if result.backlog_after is not None else '?'} pending when "
        f"the schedule ended (lag "
        f"{result.lag_after if result.lag_after is not None else float('nan'):.1f} s), "
        + (f"processed {result.inbox_drained_in:.1f} s later"
           + (f" at {result.drain_rate:,.0f}/s" if result.drain_rate == result.drain_rate
              else "")
           if result.inbox_drained_in is not None else f"NOT processed in {INBOX_CAP:.0f} s"),
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
    if result.during is not None:
        lines.append(
            f"    during the broadcast enqueue ({result.during[1] - result.during[0]:.1f} s, "
            f"{result.during_result}): webhook p99 {ms(result.latency_during(99))} ms, end to "
            f"end p99 {ms(percentile(result.e2e_during, 99))} ms")
    if result.checks:
        c = result.checks
        lines.append(
            f"    checks: {c['messages_sent']:,} messages from {c['people']:,} people, "
            f"{c['messages_missing']} not stored, {c['people_out_of_order']} people with "
            f"messages out of order, {c['outbox_not_sent']} outbox rows not sent")
    if result.settled_in != 0.0:
        lines.append("    requests given up on were still running in the app: " + (
            f"done {result.settled_in:.1f} s later" if result.settled_in is not None
            else f"NOT done within {SETTLE_CAP:.0f} s"))
    return "\n".join(lines)


def goal_cells(result: LoadRun) -> str:
    cells = []
    if result.label:
        return ""
    goal = GOAL_ACCEPTED.get(result.backend)
    if goal is not None and result.rate >= goal:
        cells.append(f"≥ {goal:.0f}/s: {'met' if result.kept_up else 'MISSED'}")
    if result.rate == GOAL_P99_AT:
        met = result.latency(99) <= GOAL_P99_S and not result.errors
        cells.append(f"p99 ≤ {1000 * GOAL_P99_S:.0f} ms: {'met' if met else 'MISSED'}")
    if result.rate == GOAL_E2E_AT:
        met = result.e2e_latency(99) <= GOAL_E2E_P99_S and not result.e2e_missing
        cells.append(f"end to end p99 ≤ {1000 * GOAL_E2E_P99_S:.0f} ms: "
                     f"{'met' if met else 'MISSED'}")
    return "; ".join(cells)


def ms(value: float) -> str:
    return "–" if value != value else fmt_ms(value)  # NaN: no request to measure


def row(result: LoadRun) -> list[str]:
    errors = sum(result.errors.values())
    name = f"{result.backend}{' ×' + str(result.processes) if result.processes > 1 else ''}"
    label = f" {result.label}" if result.label else ""
    return [
        f"{name} {result.rate:,.0f}/s{label}", f"{result.offered:,}",
        f"{result.steady_rate:,.1f}", f"{errors:,}", ms(result.latency(50)),
        ms(result.latency(99)), ms(result.e2e_latency(99)), f"{result.processed_rate:,.0f}",
        f"{result.backlog_after if result.backlog_after is not None else '?'}",
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
            f"{r.rate:,.0f}/s{' ' + r.label if r.label else ''} → {r.steady_rate:,.0f} "
            f"accepted/s, {errors} errors{kind}, p50 {ms(r.latency(50))} / p99 "
            f"{ms(r.latency(99))} ms, end to end p99 {ms(r.e2e_latency(99))} ms, "
            f"{r.processed_rate:,.0f} processed/s, app CPU "
            f"{1000 * r.app_cpu / max(1, r.requests):.1f} ms/request")
    goals = "; ".join(f"{r.rate:,.0f}/s {goal_cells(r)}" for r in runs if goal_cells(r))
    procs = f", {runs[0].processes} processes" if runs and runs[0].processes > 1 else ""
    return (f"webhooks {backend} ({provider}{procs}, {seconds:g} s per rate, open loop): "
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


# -- more processes: ``relais worker``, the broadcast, a bare handler ----------------------------


@asynccontextmanager
async def worker_process(settings: dict[str, Any], log_path: str) -> AsyncIterator[int]:
    """``relais worker`` (inbox workers, outbox worker, scheduler) on the same database and
    fake; its pid. Run from an empty folder, so that no ``.env`` is read."""
    folder = tempfile.mkdtemp(prefix="relais-bench-worker-")
    root = str(Path(__file__).resolve().parent.parent)
    env = relais_env({k: v for k, v in settings.items() if k not in ("port", "host")})
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with open(log_path, "ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "worker", "--log-level", "WARNING", cwd=folder,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=log)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60.0)
        if b"running" not in line:
            raise RuntimeError(f"relais worker did not start (said {line!r}; log {log_path})")
        yield process.pid
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def broadcast_process(conn: Any, url: str) -> None:
    """A ``Child`` target: ``relais broadcast send`` to every contact, on request: "send" →
    (seconds to create and enqueue it, rows); "cancel" → rows cancelled."""
    asyncio.run(_broadcast(conn, url))


async def _broadcast(conn: Any, url: str) -> None:
    from bench.broadcast import TEXTS
    from bot.core.clock import Clock
    from bot.core.config import load_settings
    from bot.domain import broadcasts as bc
    from bot.storage.db import make_engine, sessionmaker

    engine = make_engine(url)
    sessions = sessionmaker(engine)
    settings = load_settings(env_file=None, database_url=url, quiet_hours="00:00-00:01")
    clock = Clock()
    made: list[int] = []

    async def handle(request: Any) -> Any:
        if request == "send":
            started = time.perf_counter()
            async with sessions() as session, session.begin():
                broadcast = await bc.create(session, bc.Segment(), TEXTS, clock.now())
            rows = await bc.enqueue_all(sessions, broadcast.id, settings, clock)
            made.append(broadcast.id)
            return {"seconds": time.perf_counter() - started, "rows": rows}
        if request == "cancel":
            cancelled = 0
            for broadcast_id in made:
                async with sessions() as session, session.begin():
                    try:
                        cancelled += await bc.cancel(session, broadcast_id, clock.now())
                    except bc.BroadcastError:
                        pass
            return cancelled
        raise ValueError(f"unknown request {request!r}")

    try:
        conn.send("ready")
        await serve_parent(conn, handle)
    finally:
        await engine.dispose()
    conn.send(None)


def bare_process(conn: Any, port: int) -> None:
    """A ``Child`` target: an aiohttp app whose only handler reads the body and answers 200
    (the ceiling of any webhook handler under this generator)."""
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def go() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", hook)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        conn.send("ready")

        async def handle(request: Any) -> Any:
            return time.process_time()

        try:
            await serve_parent(conn, handle)
        finally:
            await runner.cleanup()
        conn.send(time.process_time())

    asyncio.run(go())


async def bare_ceiling(args: argparse.Namespace, rate: float) -> LoadRun:
    """The same generator and traffic against ``bare_process``: accepted/s and latency."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    result = LoadRun("bare", args.provider, rate, args.seconds, min(args.preroll, 1.0),
                     label="bare aiohttp handler")
    async with Child("bare handler", bare_process, port):
        signer = Signer(args.provider, url)
        count = max(1, int(round(rate * (result.preroll + result.seconds))))
        inbound, result.people = inbound_traffic(signer, count, result.preroll
                                                 + result.seconds, SEED, 1)
        connector = aiohttp.TCPConnector(limit=args.connections)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            result.load = (load_average(), None)
            result.samples, result.unfinished = await open_loop(
                http, url, iter(inbound), None, 0, rate, count)
            result.load = (result.load[0], load_average())
    result.offered = sum(1 for i in range(count) if i / rate >= result.preroll - 1e-9)
    result.requests = count
    return result


# -- main --------------------------------------------------------------------------------------


async def bench_backend(db: BenchDB, args: argparse.Namespace, rates: list[float]
                        ) -> list[LoadRun]:
    print(f"{db.backend}: {db.where} ({db.backend} {db.server_version})", flush=True)
    folder = tempfile.mkdtemp(prefix="relais-bench-log-")
    log_path = os.path.join(folder, "relais.log")
    worker_log = os.path.join(folder, "worker.log")
    results: list[LoadRun] = []
    try:
        if args.broadcast:
            from bench.broadcast import import_contacts

            seconds, summary, _rss = await import_contacts(db, args.broadcast)
            print(f"  {args.broadcast:,} contacts imported in {seconds:.1f} s ({summary})",
                  flush=True)
        async with Child("fake provider", fake_providers_process,
                         {args.provider: FAKE_CEILING}) as fakes:
            port = free_port()
            settings = app_settings(args.provider, db.url, port, fakes.ready[args.provider])
            if args.broadcast:  # bulk may go out now, at a provider's realistic rate
                settings["quiet_hours"] = "00:00-00:01"
                settings[f"{args.provider}_rate"] = (
                    args.broadcast_rate)
            async with contextlib.AsyncExitStack() as stack:
                app = await stack.enter_async_context(
                    Child("relais app", app_process, settings, log_path, args.app_log_level,
                          args.app_profile))
                others: tuple[int, ...] = ()
                for _ in range(args.processes - 1):
                    pid = await stack.enter_async_context(worker_process(settings, worker_log))
                    others += (pid,)
                caster = (await stack.enter_async_context(
                    Child("broadcast", broadcast_process, db.url)) if args.broadcast else None)
                url = settings["public_url"]
                idle = await idle_cpu_rate(app)
                print(f"  app on {url} (channels: {', '.join(app.ready['channels'])})"
                      + (f" and {len(others)} relais worker process(es)" if others else "")
                      + f", fake {args.provider} at {fakes.ready[args.provider]}, log at "
                      f"{args.app_log_level}; idle, the app uses {1000 * idle:.1f} ms of CPU "
                      f"per second", flush=True)
                signer = Signer(args.provider, url)
                connector = aiohttp.TCPConnector(limit=args.connections)
                timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                    index = 0

                    async def one(rate: float, seconds: float, preroll: float, label: str = "",
                                  during: Any = None, check: bool = False) -> LoadRun:
                        nonlocal index
                        warning = busy_warning(load_average())
                        if warning:
                            print(f"  {warning}", flush=True)
                        result = LoadRun(db.backend, args.provider, rate, seconds, preroll,
                                         processes=args.processes, label=label)
                        await load_run(db, app, fakes, http, url, signer, result,
                                       args.status_share, SEED + index,
                                       (index + 1) * 1_000_000, idle, others, during, check)
                        index += 1
                        print(describe(result), flush=True)
                        results.append(result)
                        await asyncio.sleep(1.0)
                        return result

                    if args.overload:
                        offered = args.capacity_rate or CAPACITY_RATE[db.backend]
                        found = await one(offered, args.seconds, min(args.preroll, 2.0),
                                          "capacity")
                        capacity = found.capacity
                        print(f"  processing capacity: {capacity:,.0f} events/s "
                              f"({found.processed_rate:,.0f}/s while webhooks arrived, "
                              f"{found.drain_rate:,.0f}/s draining the backlog after)",
                              flush=True)
                        if not found.backlog_after:
                            print(f"  no backlog at {offered:,.0f}/s: the capacity is above "
                                  f"{capacity:,.0f} events/s (offer more: --capacity-rate)")
                        await one(round(2 * capacity), args.overload_seconds, 0.0,
                                  "2× capacity", check=True)
                    for rate in rates:
                        during = None
                        if caster is not None:
                            async def during() -> Any:
                                assert caster is not None
                                return await caster.ask("send", timeout=300.0)
                        await one(rate, args.seconds, args.preroll,
                                  "broadcast" if caster is not None else "", during,
                                  check=caster is not None)
                        if caster is not None:
                            await caster.ask("cancel", timeout=120.0)
                            await wait_for_outbox(db, OUTBOX_CAP)
        fake_final = fakes.final or {}
        unexpected = fake_final.get(args.provider, {}).get("unexpected_sample", [])
        if unexpected:
            print(f"  the fake found requests malformed, e.g. {unexpected[0]}")
        for path in (log_path, worker_log):
            problems = log_problems(path)
            if problems:
                print(f"  {'the app' if path == log_path else 'relais worker'} logged:\n"
                      + "\n".join(f"    {p}" for p in problems))
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
    parser.add_argument("--rate", type=parse_rates, default=None,
                        help="webhooks per second, comma-separated for several runs "
                        "(100,200 then the accepted goal: 1000 on SQLite, 1500 on PostgreSQL;"
                        " none with --overload)")
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
    parser.add_argument("--processes", type=int, default=1, choices=(1, 2, 3, 4),
                        help="app processes: relais serve, plus N-1 relais worker "
                        "(PostgreSQL only; 1)")
    parser.add_argument("--overload", action="store_true",
                        help="find the processing capacity (events done/s at "
                        "--capacity-rate), then offer twice it for --overload-seconds: "
                        "webhook p99, the backlog's drain, nothing lost, order kept")
    parser.add_argument("--capacity-rate", type=float, default=None,
                        help="offered rate to find the capacity (800 SQLite, 1500 PostgreSQL)")
    parser.add_argument("--overload-seconds", type=float, default=10.0,
                        help="seconds at twice the capacity (10)")
    parser.add_argument("--broadcast", type=int, default=0, metavar="CONTACTS",
                        help="import CONTACTS contacts first; in each rate's measured window, "
                        "a broadcast to all of them is enqueued (by another process)")
    parser.add_argument("--broadcast-rate", type=float, default=100.0,
                        help="the channel's send rate with --broadcast (100/s)")
    parser.add_argument("--bare", type=float, default=None, metavar="RATE",
                        help="no Relais: the same generator against a bare aiohttp handler "
                        "at RATE/s (the ceiling of any handler here)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write the figures there as JSON")
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
    if args.processes > 1 and args.db != "postgres":
        parser.error("--processes > 1 needs --db postgres (SQLite has one writer)")
    share = args.status_share if args.provider in STATUS_SEQUENCE else 0.0
    if args.bare:
        print_header("Bare aiohttp handler under the webhook generator", [
            machine_description(), "the handler and this generator share the cores"])
        result = await bare_ceiling(args, args.bare)
        print(f"bare handler at {args.bare:,.0f}/s offered: {result.steady_rate:,.0f} "
              f"accepted/s, errors {dict(result.errors) or 'none'}, p50 "
              f"{ms(result.latency(50))} ms, p99 {ms(result.latency(99))} ms; generator late "
              f"by p99 {fmt_ms(percentile([s.lag for s in result.samples], 99))} ms")
        write_json(args.json, {"bare": figures(result), "machine": machine_description()})
        return 0
    print_header("Relais webhook benchmark", [
        machine_description(),
        f"{args.provider} webhooks, {args.seconds:g} s per rate after {args.preroll:g} s "
        f"unmeasured, open loop over {args.connections} connections; "
        f"{100 * share:.0f} % of the slots status callbacks; {args.processes} app process(es)"
        + ("; overload" if args.overload else "")
        + (f"; a broadcast to {args.broadcast:,} contacts in each run" if args.broadcast
           else ""),
        "the app, the fake provider (and relais worker) each in a helper process; this one "
        "generates the load, on the same cores",
    ])
    warning = busy_warning(load_average())
    if warning:
        print(warning + "\n", flush=True)
    lines: list[str] = []
    status = 0
    all_results: list[LoadRun] = []
    for backend in backends(args.db):
        if args.rate is not None:
            rates: list[float] = args.rate
        elif args.overload or args.broadcast:
            rates = [50.0] if args.broadcast else []
        else:
            rates = [100.0, 200.0, GOAL_ACCEPTED[backend]]
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
        print_table(f"{args.provider} webhooks, open loop", [
            "", "requests", "accepted/s", "errors", "p50 ms", "p99 ms", "e2e p99",
            "processed/s", "backlog", "lag p99", "CPU ms", "load", "drain s"],
            [row(r) for r in all_results], width=170)
        print("  accepted/s: 2xx completed per second in the measured window; latency (ms): "
              "planned start → response,\n  i.e. the webhook stored in the inbox; e2e p99: "
              "planned start → the fake provider accepted the reply;\n  processed/s: inbox "
              "rows done per second in the window; backlog: inbox rows pending when the "
              "schedule\n  ended; lag p99: how late the generator fired; CPU ms: the app's "
              "per request;\n  drain s: seconds after the schedule until every event was "
              "processed and every reply had left")
        for result in all_results:
            if goal_cells(result):
                print(f"  goal {result.backend} {result.rate:,.0f}/s: {goal_cells(result)}")
        for result in all_results:
            if result.label == "2× capacity":
                met = result.latency(99) <= GOAL_OVERLOAD_P99_S
                print(f"  goal {result.backend} at twice the capacity: p99 ≤ "
                      f"{1000 * GOAL_OVERLOAD_P99_S:.0f} ms: {'met' if met else 'MISSED'}")
        if any("MISSED" in goal_cells(r) for r in all_results):
            status = 1
    loads = [x for r in all_results for x in r.load if x is not None]
    if loads:
        lines.append(f"load average {min(loads):.1f}–{max(loads):.1f} during the runs "
                     f"({os.cpu_count()} cores)")
    print_summary(lines)
    write_json(args.json, {"machine": machine_description(),
                           "runs": [figures(r) for r in all_results]})
    return status


if __name__ == "__main__":
    raise SystemExit(run(main))
