"""Crash recovery, on the wall clock: ``relais serve`` killed (SIGKILL) inside a provider call,
started again, and the seconds until the cut message is resent.

    .venv/bin/python bench/crash.py [--hold 5] [--runs 1] [--db sqlite|postgres|both]
                                    [--pg-url URL]

The real ``relais serve`` (``python -m bot serve``, from an empty folder, so no ``.env``) runs
against a fake Twilio (``tests/fakes/twilio.py``, in this process on 127.0.0.1) that holds
every send request open ``--hold`` seconds before it answers. One SMS is written into the
outbox (``bot.delivery.writer.enqueue``); as soon as the fake holds its call, the app is
killed with SIGKILL (the row is ``sending`` with ``call_started_at`` set: Relais cannot know
whether Twilio sent it) and started again at once. Measured, from the moment the new process
is spawned (and from the moment it listens): the seconds until the resend reaches the fake.
Checked: the row ends ``sent`` and counted in doubt (``was_in_doubt``, one ``outbox.in_doubt``
event), and the fake received exactly two send requests in all (the cut call and the one
resend), none more in the next seconds.

Each run prints ``crash-resend-delay-s <float>`` (seconds from the restart), for other
scripts. Goal: ≤ 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import bench.*, bot.* and tests.* from here
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from aiohttp import web
from sqlalchemy import func, select, update

from bench.common import (
    BenchDB,
    DatabaseUnavailable,
    add_db_arguments,
    backends,
    machine_description,
    print_header,
    print_summary,
    relais_env,
    run,
    temp_database,
)
from bot.core.types import Reply
from bot.delivery.writer import enqueue
from bot.storage.models import Address, Contact, Event, Outbox, WorkerBeat
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio

ROOT = str(Path(__file__).resolve().parent.parent)
RELAIS_NUMBER = "+33757000100"
CITIZEN = "+33612345678"
GOAL_S = 10.0
START_TIMEOUT = 60.0  # seconds for ``relais serve`` to import, migrate nothing and listen
RESEND_TIMEOUT = 180.0  # the old rule (lease expiry) took ~80 s: give it room to show


class HoldingTwilio(FakeTwilio):
    """The fake Twilio, holding every send request open ``hold`` seconds before it answers;
    ``arrivals``: when each send request came in (``time.perf_counter()`` of this process)."""

    def __init__(self, hold: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hold = hold
        self.arrivals: list[float] = []

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.perf_counter())
        await self.sleep(self.hold)  # cancelled when the client's process dies
        return await super()._create_message(request)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SCENARIOS = {
    "restart": "restarted on the same machine (the dead pid is seen at once)",
    "elsewhere": "taken over as if by another machine (only the stopped beat tells)",
}


@dataclass
class Outcome:
    backend: str
    scenario: str
    delay_from_kill: float  # seconds from the SIGKILL to the resend's arrival
    delay_from_spawn: float  # seconds from spawning the new process to the resend's arrival
    delay_from_listening: float  # ... from the moment it listened
    start_seconds: float  # spawn to listening
    status: str
    was_in_doubt: bool
    in_doubt_events: int
    requests: int  # send requests the fake received in all
    accepted: int  # of which it answered (sent)

    @property
    def ok(self) -> bool:
        return (self.status == "sent" and self.was_in_doubt and self.in_doubt_events == 1
                and self.requests == 2 and self.accepted == 1)


async def start_serve(env: dict[str, str], folder: str, log_path: str
                      ) -> asyncio.subprocess.Process:
    """``relais serve``, returned once it says it listens."""
    with open(log_path, "ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--log-level", "INFO", cwd=folder, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=log)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"relais serve did not start in {START_TIMEOUT:.0f} s "
                           f"(log {log_path})") from None
    if b"serving" not in line:
        process.kill()
        raise RuntimeError(f"relais serve did not start (said {line!r}; log {log_path})")
    return process


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 30.0)
    except TimeoutError:
        process.kill()
        await process.wait()


async def until(condition: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise RuntimeError(f"{what}: not seen in {timeout:.0f} s")
        await asyncio.sleep(0.02)


async def enqueue_one(db: BenchDB) -> int:
    now = datetime.now(UTC)
    async with db.sessions() as session, session.begin():
        contact = Contact(name="Awa", language="fr", created_at=now, last_inbound_at=now)
        session.add(contact)
        await session.flush()
        address = Address(contact_id=contact.id, channel="sms", external_id=CITIZEN,
                          created_at=now, landline=False)
        session.add(address)
        await session.flush()
        row = enqueue(session, contact, address,
                      Reply("Votre rappel est confirmé pour jeudi à 14 h."), now=now)
    return row.id


async def the_row(db: BenchDB, row_id: int) -> Outbox:
    async with db.sessions() as session:
        row = await session.get(Outbox, row_id)
        assert row is not None
        return row


async def as_if_elsewhere(db: BenchDB, owner: str) -> None:
    """Rename the dead worker as if it had run on another machine: its pid then means
    nothing here, and only its heartbeat, no longer beating, tells that it is dead."""
    _host, _, rest = owner.partition(":")
    other = f"another-machine:{rest}"
    async with db.sessions() as session, session.begin():
        await session.execute(update(WorkerBeat).where(WorkerBeat.id == owner)
                              .values(id=other))
        await session.execute(update(Outbox).where(Outbox.lease_owner == owner)
                              .values(lease_owner=other))


async def one_run(backend: str, pg_url: str, hold: float, index: int, scenario: str
                  ) -> Outcome:
    folder = tempfile.mkdtemp(prefix="relais-bench-crash-")
    log_path = os.path.join(folder, "serve.log")
    failed = False
    try:
        async with temp_database(backend, pg_url, suffix=f"_crash{index}_{scenario}") as db, \
                HoldingTwilio(hold) as fake:
            port = free_port()
            env = relais_env({
                "database_url": db.url, "host": "127.0.0.1", "port": port,
                "public_url": f"http://127.0.0.1:{port}",
                "twilio_account_sid": TEST_ACCOUNT_SID, "twilio_auth_token": TEST_AUTH_TOKEN,
                "twilio_sms_from": RELAIS_NUMBER, "twilio_api_url": fake.url,
                "quiet_hours": "00:00-00:01",  # the same run whatever the hour
            })
            env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
            first = await start_serve(env, folder, log_path)
            try:
                row_id = await enqueue_one(db)

                async def first_call() -> bool:
                    return len(fake.arrivals) >= 1

                await until(first_call, 30.0, "the first send request")

                async def call_started() -> bool:
                    row = await the_row(db, row_id)
                    return row.status == "sending" and row.call_started_at is not None

                await until(call_started, 5.0, "the row marked as inside its call")
                killed = time.perf_counter()
                first.kill()  # SIGKILL, inside the provider call
                await first.wait()
            finally:
                if first.returncode is None:
                    first.kill()
                    await first.wait()
            cut = await the_row(db, row_id)
            assert cut.status == "sending" and cut.call_started_at is not None, cut.status
            assert cut.lease_owner is not None
            if scenario == "elsewhere":
                await as_if_elsewhere(db, cut.lease_owner)

            spawned = time.perf_counter()
            second = await start_serve(env, folder, log_path)
            listening = time.perf_counter()
            try:
                async def resent() -> bool:
                    return len(fake.arrivals) >= 2

                await until(resent, RESEND_TIMEOUT, "the resend")
                resend_at = fake.arrivals[1]

                async def done() -> bool:
                    return (await the_row(db, row_id)).status not in ("sending", "in_doubt")

                await until(done, hold + 30.0, "the resend's answer")
                await asyncio.sleep(2.0)  # a third send would come now: there must be none
                row = await the_row(db, row_id)
                async with db.sessions() as session:
                    events = await session.scalar(
                        select(func.count()).select_from(Event)
                        .where(Event.kind == "outbox.in_doubt")
                    ) or 0
            finally:
                await stop(second)
            return Outcome(backend, scenario, resend_at - killed, resend_at - spawned,
                           resend_at - listening, listening - spawned, row.status,
                           row.was_in_doubt, events, len(fake.arrivals), len(fake.sent))
    except BaseException:
        failed = True
        print(f"  (relais serve's log, kept: {log_path})", file=sys.stderr)
        raise
    finally:
        if not failed:
            shutil.rmtree(folder, ignore_errors=True)


def describe(outcome: Outcome) -> str:
    verdict = "ok" if outcome.ok else "WRONG"
    return (f"{outcome.backend}, {outcome.scenario}: resend {outcome.delay_from_spawn:.2f} s "
            f"after the restart ({outcome.delay_from_kill:.2f} s after the kill, "
            f"{outcome.delay_from_listening:.2f} s after it listened; start-up "
            f"{outcome.start_seconds:.2f} s); row {outcome.status}, in doubt "
            f"{'yes' if outcome.was_in_doubt else 'no'} ({outcome.in_doubt_events} "
            f"outbox.in_doubt event), {outcome.requests} send requests in all "
            f"({outcome.accepted} answered): {verdict}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_db_arguments(parser)
    parser.add_argument("--hold", type=float, default=5.0,
                        help="seconds the fake Twilio holds each send request (default 5)")
    parser.add_argument("--runs", type=int, default=1, help="runs per database (default 1)")
    parser.add_argument("--scenario", choices=(*SCENARIOS, "both"), default="both",
                        help="restart: the same machine restarts relais (the default way "
                        "back); elsewhere: as if another machine took over (default: both)")
    args = parser.parse_args()
    scenarios = list(SCENARIOS) if args.scenario == "both" else [args.scenario]
    print_header("Crash inside a provider call: kill -9, restart, resend", [
        machine_description(),
        f"fake Twilio holds each send {args.hold:g} s; relais serve killed with SIGKILL "
        f"inside the call, started again at once; goal ≤ {GOAL_S:g} s",
        *(f"{name}: {text}" for name, text in SCENARIOS.items() if name in scenarios),
    ])
    outcomes: list[Outcome] = []
    status = 0
    for backend in backends(args.db):
        try:
            for scenario in scenarios:
                for index in range(args.runs):
                    outcome = await one_run(backend, args.pg_url, args.hold, index, scenario)
                    outcomes.append(outcome)
                    print(describe(outcome))
                    print(f"crash-resend-delay-s {outcome.delay_from_spawn:.3f}", flush=True)
                    if not outcome.ok or outcome.delay_from_spawn > GOAL_S:
                        status = 1
        except DatabaseUnavailable as exc:
            print(f"{backend}: skipped ({exc})")
            status = 1
    lines = []
    for backend in backends(args.db):
        for scenario in scenarios:
            mine = [o for o in outcomes if o.backend == backend and o.scenario == scenario]
            if not mine:
                continue
            delays = [o.delay_from_spawn for o in mine]
            starts = [o.start_seconds for o in mine]
            from_kill = [o.delay_from_kill for o in mine]
            correct = sum(o.ok for o in mine)
            lines.append(
                f"crash {backend}, {scenario} (SIGKILL inside a {args.hold:g} s Twilio call, "
                f"{len(mine)} run{'s' if len(mine) > 1 else ''}): resend "
                f"{statistics.median(delays):.2f} s after the restart (max {max(delays):.2f} "
                f"s; start-up {statistics.median(starts):.2f} s; "
                f"{statistics.median(from_kill):.2f} s after the kill); counted in doubt and "
                f"sent exactly twice in {correct}/{len(mine)}; goal ≤ {GOAL_S:g} s: "
                f"{'met' if max(delays) <= GOAL_S else 'MISSED'}")
    print_summary(lines)
    return status


if __name__ == "__main__":
    sys.exit(run(main))
