"""The inbox across real processes: a webhook acknowledged by a web process that is then
killed is processed by a worker started after; three `relais worker` processes share one
PostgreSQL inbox and keep each person's order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.storage.db import make_engine, sessionmaker
from bot.storage.models import InboxItem, Message
from tests.fakes.signing import TWILIO_SIGNATURE_HEADER, twilio_signature
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from tests.helpers.serving import free_port

RELAIS = str(Path(sys.executable).parent / "relais")
SENDER = "+33757000100"
WAIT = 60.0  # seconds a process is given to start or to finish the inbox


def env_for(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env.update(RELAIS_DATABASE_URL=db_url, RELAIS_OPENING_HOURS="24/7", **extra)
    return env


@contextmanager
def web_only(db_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`relais serve --no-workers` with Twilio SMS: stores webhooks, processes nothing."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_for(db_url, RELAIS_PORT=str(port), RELAIS_PUBLIC_URL=url,
                  RELAIS_TWILIO_ACCOUNT_SID=TEST_ACCOUNT_SID,
                  RELAIS_TWILIO_AUTH_TOKEN=TEST_AUTH_TOKEN, RELAIS_TWILIO_SMS_FROM=SENDER,
                  RELAIS_TWILIO_API_URL="http://127.0.0.1:9")  # never called: no workers
    process = subprocess.Popen([RELAIS, "serve", "--no-workers"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError("relais serve did not start") from None
                time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def post_sms(url: str, number: str, text: str, sid: str) -> int:
    params = {"MessageSid": sid, "AccountSid": TEST_ACCOUNT_SID, "From": number,
              "To": SENDER, "Body": text, "NumMedia": "0"}
    target = url + "/webhooks/twilio"
    request = urllib.request.Request(
        target, data=urllib.parse.urlencode(params).encode(), method="POST",
        headers={TWILIO_SIGNATURE_HEADER: twilio_signature(TEST_AUTH_TOKEN, target, params),
                 "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def workers(db_url: str, tmp_path: Path, n: int) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([RELAIS, "worker"], env=env_for(db_url), cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(n)]


def stop(processes: list[subprocess.Popen[str]]) -> list[str]:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    return [process.communicate(timeout=30)[1] for process in processes]


def read(db_url: str, statement):  # noqa: ANN001, ANN201 - a test's one-off query
    async def go():  # noqa: ANN202
        engine = make_engine(db_url)
        try:
            async with sessionmaker(engine)() as session:
                return list((await session.execute(statement)).all())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def pending(db_url: str) -> int:
    return read(db_url, select(func.count()).select_from(InboxItem)
                .where(InboxItem.state == "pending"))[0][0]


def wait_until_processed(db_url: str, processes: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + WAIT
    while pending(db_url):
        assert all(p.poll() is None for p in processes), stop(processes)
        assert time.monotonic() < deadline, "the inbox was not processed in time"
        time.sleep(0.2)


def test_an_acknowledged_webhook_survives_a_kill_before_processing(db_url, tmp_path):
    with web_only(db_url, tmp_path) as (process, url):
        assert post_sms(url, "+33612345678", "Bonjour, j'ai besoin d'aide", "SM" + "a" * 32) \
            == 200
        process.send_signal(signal.SIGKILL)  # acknowledged, then the process is gone
        process.wait(10)
    assert pending(db_url) == 1 and not read(db_url, select(Message.id))
    started = workers(db_url, tmp_path, 1)
    try:
        wait_until_processed(db_url, started)
    finally:
        errors = stop(started)
    [(body,)] = read(db_url, select(Message.body).where(Message.direction == "in"))
    assert body == "Bonjour, j'ai besoin d'aide"
    assert "Traceback" not in errors[0]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_three_workers_share_the_inbox_and_keep_each_persons_order(db_url, tmp_path):
    people = [f"+336120000{i:02d}" for i in range(12)]
    texts = ["Bonjour", "1", "MENU", "2", "merci"]
    with web_only(db_url, tmp_path) as (_process, url):
        for step, text in enumerate(texts):  # interleaved, as they arrive
            for number in people:
                assert post_sms(url, number, text, f"SM{number[1:]}{step:021d}") == 200
    assert pending(db_url) == len(people) * len(texts)
    started = workers(db_url, tmp_path, 3)
    try:
        wait_until_processed(db_url, started)
    finally:
        errors = stop(started)
    assert all("Traceback" not in err for err in errors), errors
    rows = read(db_url, select(Message.provider_id, Message.body)
                .where(Message.direction == "in").order_by(Message.id))
    assert len(rows) == len(people) * len(texts)  # each exactly once
    for number in people:
        mine = [body for provider_id, body in rows if provider_id.startswith(f"SM{number[1:]}")]
        assert mine == texts  # in the order they were sent
    parked = read(db_url, select(func.count()).select_from(InboxItem)
                  .where(InboxItem.state != "done"))[0][0]
    assert parked == 0
