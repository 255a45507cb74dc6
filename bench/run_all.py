"""Every benchmark in one run, each figure beside its aim and beside a ceiling measured in the
same run; one table at the end.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME,…] [--skip NAME,…]
                                      [--pg-url URL] [--keep DIR] [--json FILE]

Each bench runs as a subprocess with ``--json`` (its whole output goes to a log file in the
work folder, kept with ``--keep``; its summary block is echoed here): ``engine``
(bench/engine.py), ``outbox``, ``webhooks-sqlite``, ``webhooks-pg`` (one process),
``webhooks-pg2`` (``relais serve`` + one ``relais worker``), each webhook run also finding
the processing capacity and offering twice it (``--overload``), ``bare`` (the same
generator against a bare aiohttp handler: the ceiling of any handler here), ``sending``
(the outbox at the providers' configured rates), ``broadcast`` (a 100,000-contact
broadcast enqueued by another process while replies flow at 50/s), ``crash``
(bench/crash.py, when present) and ``idle`` (``relais serve`` with every channel
configured against the fakes: seconds to ``/healthz`` 200, RSS once idle, and what each
big library costs alone in a fresh interpreter).

Ceilings: the database's one-row transaction rate (bench/engine.py's INSERT ceiling), a bare
aiohttp handler's accepted rate under the same generator, the configured provider rates.
The load generator runs on the same cores as the app: on 2 cores it takes its share.

``--quick``: short durations and smaller sizes (a smoke run, about 3 minutes); the default
full run takes about 15 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import bench.*, bot.* and tests.* from here
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import (
    DEFAULT_PG_URL,
    Child,
    fake_providers_process,
    machine_description,
    print_header,
    print_table,
    process_rss_mb,
    relais_env,
    run,
    write_json,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
AIM_IDLE_RSS_MB = 150.0
AIM_CRASH_S = 10.0  # bench/crash.py's goal
AIM_START_S = 2.0
AIM_ENQUEUE_S = 5.0
AIM_E2E_MS = 300.0
AIM_P99_MS = 50.0
AIM_OVERLOAD_MS = 100.0
AIM_ACCEPTED = {"sqlite": 1000.0, "postgres": 1500.0}
AIM_PROCESSED = {"sqlite": 320.0, "postgres": 600.0}
BARE_RATE = 4000.0  # offered to the bare handler: above what the generator can fire
STEPS = ("engine", "outbox", "bare", "webhooks-sqlite", "webhooks-pg", "webhooks-pg2",
         "sending", "broadcast", "crash", "idle")


@dataclass
class Step:
    name: str
    argv: list[str]
    timeout: float  # seconds
    json_path: str
    log_path: str
    seconds: float = 0.0
    status: int | None = None  # exit status; None: not run or killed
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    stdout: str = ""


def plan(args: argparse.Namespace, work: str) -> list[Step]:
    quick = args.quick
    py = [sys.executable]
    pg = ["--pg-url", args.pg_url]
    secs = "3" if quick else "10"
    pre = "1" if quick else "3"

    def step(name: str, script: str, extra: list[str], timeout: float) -> Step:
        out = os.path.join(work, f"{name}.json")
        return Step(name, [*py, str(BENCH / script), *extra, "--json", out], timeout, out,
                    os.path.join(work, f"{name}.log"))

    webhooks = ["--seconds", secs, "--preroll", pre, "--overload-seconds", secs]
    steps = [
        step("engine", "engine.py", ["--events", "300" if quick else "2000", *pg],
             240 if quick else 400),
        step("outbox", "outbox.py", ["--rows", "1000" if quick else "5000", *pg],
             240 if quick else 400),
        step("bare", "webhooks.py", ["--bare", f"{BARE_RATE:.0f}", "--seconds", secs],
             90),
        step("webhooks-sqlite", "webhooks.py", [
            *webhooks, "--db", "sqlite", "--overload",
            "--rate", "100,1000" if quick else "100,200,1000"], 420 if quick else 900),
        step("webhooks-pg", "webhooks.py", [
            *webhooks, "--db", "postgres", *pg,
            "--rate", "100,1500" if quick else "100,200,1500"], 420 if quick else 900),
        step("webhooks-pg2", "webhooks.py", [
            *webhooks, "--db", "postgres", *pg, "--processes", "2", "--overload",
            "--rate", "100" if quick else "100,200,1500"], 420 if quick else 900),
        step("sending", "sending.py", [
            "--messages", "1000" if quick else "3000",
            "--real-seconds", "4" if quick else "10",
            "--db", "sqlite" if quick else "both", *pg], 300 if quick else 500),
        step("broadcast", "webhooks.py", [
            "--db", "sqlite", "--broadcast", "10000" if quick else "100000", "--rate", "50",
            "--seconds", "4" if quick else "10", "--preroll", pre], 300 if quick else 600),
    ]
    crash = BENCH / "crash.py"
    if crash.exists():
        steps.append(Step("crash", [*py, str(crash), *pg], 300, "",
                          os.path.join(work, "crash.log")))
    return steps


# -- running a bench ------------------------------------------------------------------------


async def run_step(step: Step) -> None:
    """The bench as a subprocess in its own process group (stopped whole on a timeout or an
    interrupt: SIGTERM, so that it drops its databases, then SIGKILL)."""
    started = time.perf_counter()
    shown = " ".join(Path(a).name if a.startswith("/") else a for a in step.argv[1:])
    print(f"▸ {step.name}: {shown}", flush=True)
    with open(step.log_path, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            *step.argv, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            step.status = await asyncio.wait_for(process.wait(), step.timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            step.note = "timed out" if isinstance(exc, TimeoutError) else "interrupted"
            await stop_group(process)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            step.seconds = time.perf_counter() - started
    step.stdout = Path(step.log_path).read_text(encoding="utf-8", errors="replace")
    if step.json_path and os.path.exists(step.json_path):
        try:
            step.data = json.loads(Path(step.json_path).read_text(encoding="utf-8"))
        except ValueError as exc:
            step.note = f"unreadable JSON: {exc}"
    verdict = (step.note or ("ok" if step.status == 0 else
                             f"exit {step.status} (an aim missed or a database skipped)"))
    print(f"  {step.name}: {verdict}, {step.seconds:.0f} s; log {step.log_path}")
    for line in summary_block(step.stdout):
        print(f"    {line}")
    if step.status not in (0, 1) or step.note:
        for line in step.stdout.strip().splitlines()[-8:]:
            print(f"    | {line}")
    sys.stdout.flush()


async def stop_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30.0)
    except (ProcessLookupError, TimeoutError):
        pass
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()


def summary_block(text: str) -> list[str]:
    """The lines after a bench's "summary (for the README)" heading."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("summary (for the README)"):
            return [x for x in lines[index + 2:] if x.strip() and not x.startswith("note:")]
    return []


# -- idle memory and start time ---------------------------------------------------------------

PARTS: tuple[tuple[str, str], ...] = (
    ("aiohttp", "import aiohttp.web"),
    ("SQLAlchemy + drivers", "import sqlalchemy.ext.asyncio, aiosqlite, asyncpg"),
    ("pydantic settings", "import pydantic, pydantic_settings"),
    ("twilio SDK", "import twilio.rest, twilio.request_validator"),
    ("python-telegram-bot", "import telegram, telegram.ext"),
    ("phonenumbers (+ FR metadata)",
     "import phonenumbers; phonenumbers.parse('+33612345678', None)"),
    ("babel (+ fr locale data)",
     "import babel.dates, babel.numbers; babel.dates.format_date(locale='fr')"),
    ("rich + typer", "import rich.console, rich.table, typer"),
    ("bot.core (config, i18n, masking)",
     "import bot.core.config, bot.core.i18n, bot.core.masking"),
    ("bot.storage.models", "import bot.storage.models"),
    ("bot.engine (flows, domain)", "import bot.engine"),
    ("bot.channels (all adapters)", "import bot.channels"),
    ("bot.web.app (everything serve imports)", "import bot.web.app"),
)
RSS_SNIPPET = ("import sys; sys.path.insert(0, {root!r}); {code}\n"
               "for l in open('/proc/self/status'):\n"
               "    l.startswith('VmRSS:') and print(int(l.split()[1]) / 1024)")


def import_cost(code: str) -> float:
    """RSS (MB) of a fresh interpreter after ``code``; NaN when it failed."""
    done = subprocess.run([sys.executable, "-c", RSS_SNIPPET.format(root=str(ROOT), code=code)],
                          capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def idle_measure(quick: bool) -> dict[str, Any]:
    """``relais serve`` with SMS, WhatsApp (Cloud API), Telegram and the voice line configured
    against the fakes, on a migrated SQLite file: seconds from exec to the first
    ``/healthz`` 200, RSS after it has been idle a while; then each part's import cost."""
    import aiohttp

    from tests.fakes.telegram import TEST_TOKEN as TELEGRAM_TOKEN
    from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
    from tests.fakes.whatsapp import TEST_PHONE_NUMBER_ID
    from tests.fakes.whatsapp import TEST_TOKEN as WHATSAPP_TOKEN

    folder = tempfile.mkdtemp(prefix="relais-bench-idle-")
    figures: dict[str, Any] = {}
    try:
        async with Child("fake providers", fake_providers_process,
                         {"twilio": None, "whatsapp": None, "telegram": None}) as fakes:
            port = free_port()
            settings = {
                "database_url": f"sqlite+aiosqlite:///{folder}/relais.db",
                "host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}",
                "twilio_account_sid": TEST_ACCOUNT_SID, "twilio_auth_token": TEST_AUTH_TOKEN,
                "twilio_sms_from": "+33757000100", "twilio_voice_from": "+33757000101",
                "twilio_api_url": fakes.ready["twilio"],
                "whatsapp_token": WHATSAPP_TOKEN,
                "whatsapp_phone_number_id": TEST_PHONE_NUMBER_ID,
                "whatsapp_app_secret": "0f3c9a7e5b2d4c6e8a1f3b5d7c9e2a4f",
                "whatsapp_verify_token": "relais-verify-bench",
                "whatsapp_api_url": f"{fakes.ready['whatsapp']}/v21.0",
                "telegram_token": TELEGRAM_TOKEN,
                "telegram_webhook_secret": "relais-bench-Webhook_secret-0123456789",
                "telegram_api_url": f"{fakes.ready['telegram']}/bot",
            }
            env = relais_env(settings)
            env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
            log_path = os.path.join(folder, "serve.log")
            upgrade = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "db", "upgrade", cwd=folder, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await upgrade.wait()
            with open(log_path, "wb") as log:
                started = time.perf_counter()
                serve = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot", "serve", "--log-level", "WARNING",
                    cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                figures["start_s"] = await first_health(serve, port, started)
                figures["health"] = await health_body(port)
                idle = 5.0 if quick else 15.0
                await asyncio.sleep(idle)
                figures["idle_s"] = idle
                figures["rss_mb"] = process_rss_mb(serve.pid)
                async with aiohttp.ClientSession() as http, \
                        http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    figures["metrics_ok"] = response.status == 200
            finally:
                if serve.returncode is None:
                    serve.terminate()
                    try:
                        await asyncio.wait_for(serve.wait(), 20.0)
                    except TimeoutError:
                        serve.kill()
                        await serve.wait()
            tail = Path(log_path).read_text(encoding="utf-8", errors="replace")
            figures["log_tail"] = tail.strip().splitlines()[-5:]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    loop = asyncio.get_running_loop()
    base = await loop.run_in_executor(None, import_cost, "pass")
    figures["python_mb"] = base
    figures["parts"] = {}
    for name, code in PARTS:
        cost = await loop.run_in_executor(None, import_cost, code)
        figures["parts"][name] = cost - base
    return figures


async def first_health(serve: asyncio.subprocess.Process, port: int, started: float,
                       cap: float = 60.0) -> float | None:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.perf_counter() - started < cap:
            if serve.returncode is not None:
                return None
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            await asyncio.sleep(0.02)
    return None


async def health_body(port: int) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/healthz") as response:
        return (await response.text())[:200]


# -- the table --------------------------------------------------------------------------------


def num(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:,.{digits}f}{unit}"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "MISSED")


class Table:
    def __init__(self) -> None:
        self.rows: list[list[str]] = []

    def add(self, figure: str, value: str, aim: str, ceiling: str, ok: bool | None) -> None:
        self.rows.append([figure, value, aim, ceiling, verdict(ok)])


def runs_of(steps: dict[str, Step], name: str) -> list[dict[str, Any]]:
    step = steps.get(name)
    return list(step.data.get("runs", [])) if step is not None else []


def find_run(runs: list[dict[str, Any]], rate: float | None = None, label: str = ""
             ) -> dict[str, Any] | None:
    for item in runs:
        if item.get("label", "") == label and (rate is None or item.get("rate") == rate):
            return item
    return None


def build_table(steps: dict[str, Step], idle: dict[str, Any] | None) -> Table:
    table = Table()
    engine = steps["engine"].data.get("results", {}) if "engine" in steps else {}

    def tx(backend: str) -> float | None:
        modes = engine.get(backend, {})
        rates = [m.get("insert_tx_per_s") for m in modes.values() if isinstance(m, dict)]
        rates = [r for r in rates if r]
        return max(rates) if rates else None

    def tx_text(backend: str) -> str:
        name = "SQLite" if backend == "sqlite" else "PostgreSQL"
        return f"{name} 1-row tx {num(tx(backend), '/s')}"

    bare = steps["bare"].data.get("bare", {}) if "bare" in steps else {}
    bare_rate = bare.get("accepted_per_s")
    bare_text = f"bare aiohttp {num(bare_rate, '/s')}"
    names = {"webhooks-sqlite": ("sqlite", "SQLite"), "webhooks-pg": ("postgres", "PG, 1 proc"),
             "webhooks-pg2": ("postgres", "PG, 2 procs")}
    for step_name, (backend, name) in names.items():
        runs = runs_of(steps, step_name)
        if not runs:
            continue
        top = find_run(runs, AIM_ACCEPTED[backend])
        if top is not None:
            table.add(f"webhooks accepted/s, {name}, offered {top['rate']:,.0f}/s",
                      num(top["accepted_per_s"], "/s"), f"≥ {AIM_ACCEPTED[backend]:,.0f}/s",
                      f"{bare_text}; {tx_text(backend)}", bool(top["kept_up"]))
        at200 = find_run(runs, 200.0)
        if at200 is not None:
            table.add(f"webhook p99 at 200/s, {name}", num(at200["p99_ms"], " ms", 1),
                      f"≤ {AIM_P99_MS:.0f} ms",
                      f"bare p99 {num(bare.get('p99_ms'), ' ms', 1)} at {BARE_RATE:,.0f}/s",
                      at200["p99_ms"] is not None and at200["p99_ms"] <= AIM_P99_MS
                      and not at200["errors"])
        at100 = find_run(runs, 100.0)
        if at100 is not None:
            table.add(f"end to end p99 at 100/s, {name}", num(at100["e2e_p99_ms"], " ms"),
                      f"≤ {AIM_E2E_MS:.0f} ms",
                      f"webhook p99 {num(at100['p99_ms'], ' ms', 1)}",
                      at100["e2e_p99_ms"] is not None and at100["e2e_p99_ms"] <= AIM_E2E_MS
                      and not at100["e2e_missing"])
        capacity = find_run(runs, None, "capacity")
        if capacity is not None:
            aim = AIM_PROCESSED[backend] if step_name != "webhooks-pg" else None
            saturated = bool(capacity.get("backlog_after"))
            value = capacity.get("capacity_per_s") or capacity["processed_per_s"]
            table.add(f"events processed/s, {name} (offered {capacity['rate']:,.0f}/s)",
                      num(value, "/s") + ("" if saturated else " (no backlog: more)"),
                      f"≥ {aim:,.0f}/s" if aim else "–",
                      f"{tx_text(backend)}; {num(capacity['processed_per_s'], '/s')} during "
                      f"the burst, {num(capacity['drain_per_s'], '/s')} draining",
                      None if aim is None else value >= aim)
        over = find_run(runs, None, "2× capacity")
        if over is not None:
            table.add(f"webhook p99 at 2× capacity ({over['rate']:,.0f}/s), {name}",
                      num(over["p99_ms"], " ms", 1), f"≤ {AIM_OVERLOAD_MS:.0f} ms",
                      f"{bare_text}",
                      over["p99_ms"] is not None and over["p99_ms"] <= AIM_OVERLOAD_MS
                      and not over["errors"])
            checks = over.get("checks") or {}
            lost = (checks.get("messages_missing", 0) + checks.get("outbox_not_sent", 0)
                    + checks.get("people_out_of_order", 0)) if checks else None
            table.add(f"after 2× capacity, {name}: backlog {num(over['backlog_after'])}, "
                      f"drained in", num(over["inbox_drain_s"], " s", 1),
                      "nothing lost, order kept",
                      f"{checks.get('messages_missing', '?')} lost, "
                      f"{checks.get('people_out_of_order', '?')} out of order, "
                      f"{checks.get('outbox_not_sent', '?')} unsent",
                      None if lost is None else lost == 0 and over["inbox_drain_s"] is not None)
    for backend, modes in engine.items():
        best = max((m for m in modes.values() if isinstance(m, dict)),
                   key=lambda m: m.get("events_per_s", 0), default=None)
        if best:
            table.add(f"engine alone (no HTTP), {backend}, {best.get('concurrency')} in flight",
                      num(best["events_per_s"], "/s"), f"≥ {AIM_PROCESSED[backend]:,.0f}/s",
                      tx_text(backend), best["events_per_s"] >= AIM_PROCESSED[backend])
    outbox = steps["outbox"].data if "outbox" in steps else {}
    for backend, found in outbox.get("backends", {}).items():
        goal = outbox.get("goals", {}).get(backend)
        table.add(f"outbox rows sent/s (no-op channel), {backend}",
                  num(found["best_rows_per_s"], "/s"), f"≥ {goal:,.0f}/s" if goal else "–",
                  tx_text(backend), None if goal is None else found["best_rows_per_s"] >= goal)
    sending = steps["sending"].data if "sending" in steps else {}
    share = sending.get("goal_share", 0.97)
    for item in sending.get("runs", []):
        if item["label"] != "real":
            continue
        table.add(f"sending {item['channel']} at the provider rate, {item['backend']}",
                  num(item["achieved_per_s"], "/s", 2),
                  f"≥ {100 * share:.0f} %, none refused",
                  f"configured {num(item['ceiling'], '/s')} ({100 * item['share']:.1f} %, "
                  f"{item['throttled']} refused)", bool(item["met"]))
    cast = find_run(runs_of(steps, "broadcast"), None, "broadcast")
    if cast is not None:
        during = cast.get("during_result") or {}
        rows = during.get("rows")
        table.add(f"broadcast enqueued ({num(rows)} rows) while replies flow at 50/s",
                  num(during.get("seconds"), " s", 1), f"≤ {AIM_ENQUEUE_S:.0f} s",
                  f"{tx_text('sqlite')}",
                  None if during.get("seconds") is None else during["seconds"] <= AIM_ENQUEUE_S)
        table.add("  reply webhooks p99 during the enqueue", num(cast["during_p99_ms"], " ms"),
                  f"≤ {AIM_P99_MS:.0f} ms", f"whole run {num(cast['p99_ms'], ' ms')}",
                  None if cast["during_p99_ms"] is None else cast["during_p99_ms"] <= AIM_P99_MS)
        table.add("  end to end p99 during the enqueue", num(cast["during_e2e_p99_ms"], " ms"),
                  f"≤ {AIM_E2E_MS:.0f} ms", f"whole run {num(cast['e2e_p99_ms'], ' ms')}",
                  None if cast["during_e2e_p99_ms"] is None
                  else cast["during_e2e_p99_ms"] <= AIM_E2E_MS)
    crash = steps.get("crash")
    if crash is not None:
        delays = [float(x) for x in re.findall(r"crash-resend-delay-s\s+([0-9.]+)",
                                                   crash.stdout)]
        table.add(f"crash: SIGKILL in a send, restart → resend (worst of {len(delays)})",
                  num(max(delays), " s", 1) if delays else "–", f"≤ {AIM_CRASH_S:.0f} s",
                  "–", max(delays) <= AIM_CRASH_S if delays else None)
    if idle is not None:
        start = idle.get("start_s")
        table.add("relais serve: start to /healthz 200", num(start, " s", 2),
                  f"≤ {AIM_START_S:.0f} s", f"bare Python {num(idle.get('python_mb'), ' MB')}",
                  None if start is None else start <= AIM_START_S)
        rss = idle.get("rss_mb")
        table.add("relais serve: idle RSS, every channel on", num(rss, " MB"),
                  f"≤ {AIM_IDLE_RSS_MB:.0f} MB",
                  f"bot.web.app alone {num(idle['parts'].get(PARTS[-1][0]), ' MB')}",
                  None if rss is None else rss <= AIM_IDLE_RSS_MB)
    return table


# -- main --------------------------------------------------------------------------------------


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short durations, small sizes: a smoke run (~3 min)")
    parser.add_argument("--only", default="", help=f"comma-separated among {', '.join(STEPS)}")
    parser.add_argument("--skip", default="", help="comma-separated steps to leave out")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help="PostgreSQL server for the throwaway databases (%(default)s)")
    parser.add_argument("--keep", default=None, metavar="DIR",
                        help="keep every bench's log and JSON in DIR")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write every figure (and the table) there as JSON")
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = (only | skip) - set(STEPS)
    if unknown:
        parser.error(f"unknown step(s) {', '.join(sorted(unknown))}; steps: {', '.join(STEPS)}")

    def wanted(name: str) -> bool:
        return (not only or name in only) and name not in skip

    work = args.keep or tempfile.mkdtemp(prefix="relais-bench-all-")
    os.makedirs(work, exist_ok=True)
    print_header(f"Relais benchmarks, {'quick' if args.quick else 'full'} run", [
        machine_description(),
        "the load generator, the fake providers and the app share these cores: every "
        "figure is what is left for Relais with the generator running beside it",
        f"logs and JSON in {work}" + ("" if args.keep else " (removed at the end)"),
    ])
    started = time.perf_counter()
    steps: dict[str, Step] = {}
    idle: dict[str, Any] | None = None
    try:
        for step in plan(args, work):
            if not wanted(step.name):
                continue
            await run_step(step)
            steps[step.name] = step
        if wanted("crash") and not (BENCH / "crash.py").exists():
            print("▸ crash: skipped: bench/crash.py is not there (yet)")
        if wanted("idle"):
            print("▸ idle: relais serve with every channel against the fakes", flush=True)
            try:
                idle = await idle_measure(args.quick)
            except Exception as exc:  # say it and go on to the table
                print(f"  idle: failed: {type(exc).__name__}: {exc}")
            else:
                print(f"  idle: /healthz 200 after {num(idle.get('start_s'), ' s', 2)}, "
                      f"{num(idle.get('rss_mb'), ' MB')} RSS after "
                      f"{idle.get('idle_s', 0):.0f} s idle ({idle.get('health')})")
                print(f"  alone in a fresh interpreter (Python itself "
                      f"{num(idle['python_mb'], ' MB')}; parts overlap, they do not add up):")
                for name, cost in idle["parts"].items():
                    print(f"    +{num(cost, ' MB', 1):>9}  {name}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = build_table(steps, idle)
    print()
    print_table(f"Relais benchmarks ({'quick' if args.quick else 'full'} run, "
                f"{time.perf_counter() - started:.0f} s)",
                ["figure", "measured", "aim", "ceiling (same run)", "met?"], table.rows,
                width=170)
    print("  the generator shares the 2 cores with the app, the fakes and the database server;"
          " ceilings were measured\n  in this same run: the database's one-row INSERT "
          "transactions (bench/engine.py), a bare aiohttp handler\n  under the same generator, "
          "and the configured provider rates")
    missed = [r[0] for r in table.rows if r[-1] == "MISSED"]
    failed = [s.name for s in steps.values() if s.note or s.status not in (0, 1)]
    if failed:
        print(f"  steps that did not finish: {', '.join(failed)}")
    write_json(args.json, {
        "machine": machine_description(), "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "table": [dict(zip(("figure", "measured", "aim", "ceiling", "met"), r, strict=True))
                  for r in table.rows],
        "steps": {name: {"status": s.status, "note": s.note, "seconds": s.seconds,
                         "figures": s.data} for name, s in steps.items()},
        "idle": idle})
    return 1 if missed or failed else 0


if __name__ == "__main__":
    raise SystemExit(run(main))
