"""`relais channels` and `relais channels setup` as a user runs them: the real command in a
subprocess, Telegram's API played by the fake (served by this test's event loop)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.telegram import TEST_TOKEN, FakeTelegram

RELAIS = str(Path(sys.executable).parent / "relais")
PUBLIC = "https://relais.example.org"
SECRET = "relais-Webhook_secret-0123456789"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env.update(extra)
    return env


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELAIS, "channels", *args], env=clean_env(**env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server
        assert server.unexpected == []


async def run_async(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """The command in a subprocess while this loop keeps serving the fake."""
    process = await asyncio.create_subprocess_exec(
        RELAIS, "channels", *args, env=clean_env(**env), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_json_lists_every_channel_with_its_state_and_webhook_url(tmp_path: Path) -> None:
    result = run(tmp_path, "--json", RELAIS_PUBLIC_URL=PUBLIC,
                 RELAIS_TELEGRAM_TOKEN=TEST_TOKEN, RELAIS_TELEGRAM_WEBHOOK_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)  # one JSON array and nothing else on stdout
    assert isinstance(rows, list)
    assert {row["channel"] for row in rows} == {"sms", "whatsapp", "telegram"}
    for row in rows:
        assert {"channel", "provider", "enabled", "reason", "webhook_url"} <= row.keys()
        assert all(key == key.lower() and " " not in key for key in row)
        assert row["webhook_url"].startswith(f"{PUBLIC}/webhooks/")
    [telegram] = [row for row in rows if row["channel"] == "telegram"]
    assert telegram == {"channel": "telegram", "provider": "telegram", "enabled": True,
                        "reason": None, "webhook_url": f"{PUBLIC}/webhooks/telegram"}
    for row in rows:
        if row["channel"] != "telegram":  # no Twilio or Meta credentials given
            assert row["enabled"] is False and row["reason"]
    assert TEST_TOKEN not in result.stdout + result.stderr


def test_plain_output_says_why_a_channel_is_disabled(tmp_path: Path) -> None:
    result = run(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    [telegram] = [line for line in lines if line.startswith("telegram")]
    assert "disabled" in telegram and "RELAIS_TELEGRAM_TOKEN not set" in telegram
    assert "http://127.0.0.1:8080/webhooks/telegram" in telegram
    assert {line.split()[0] for line in lines} == {"sms", "whatsapp", "telegram"}
    assert "RELAIS_PUBLIC_URL is not set" in result.stderr


async def test_setup_registers_the_webhook_with_the_secret(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    code, out, err = await run_async(
        tmp_path, "setup", RELAIS_PUBLIC_URL=PUBLIC, RELAIS_TELEGRAM_TOKEN=TEST_TOKEN,
        RELAIS_TELEGRAM_WEBHOOK_SECRET=SECRET, RELAIS_TELEGRAM_API_URL=f"{fake.url}/bot",
    )
    assert code == 0, err
    assert fake.webhook is not None
    assert fake.webhook["url"] == f"{PUBLIC}/webhooks/telegram"
    assert fake.webhook["secret_token"] == SECRET
    assert fake.webhook["allowed_updates"] == ["message", "callback_query"]
    assert fake.webhook["drop_pending_updates"] is False
    assert f"{PUBLIC}/webhooks/telegram" in out and "@relais_test_bot" in out
    assert TEST_TOKEN not in out + err


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RELAIS_PUBLIC_URL": "http://example.org"}, "https://"),
        ({"RELAIS_PUBLIC_URL": "https://example.org:8080"}, "port 8080"),
        ({"RELAIS_PUBLIC_URL": ""}, "RELAIS_PUBLIC_URL is not set"),
        ({"RELAIS_TELEGRAM_TOKEN": ""}, "RELAIS_TELEGRAM_TOKEN"),
        ({"RELAIS_TELEGRAM_WEBHOOK_SECRET": ""}, "RELAIS_TELEGRAM_WEBHOOK_SECRET"),
        ({"RELAIS_TELEGRAM_WEBHOOK_SECRET": "pas de secret!"}, "RELAIS_TELEGRAM_WEBHOOK_SECRET"),
    ],
    ids=["http", "port-8080", "no-public-url", "no-token", "no-secret", "bad-secret"],
)
async def test_setup_refuses_what_telegram_would_refuse(
    tmp_path: Path, fake: FakeTelegram, env: dict[str, str], expected: str
) -> None:
    values = {"RELAIS_PUBLIC_URL": PUBLIC, "RELAIS_TELEGRAM_TOKEN": TEST_TOKEN,
              "RELAIS_TELEGRAM_WEBHOOK_SECRET": SECRET,
              "RELAIS_TELEGRAM_API_URL": f"{fake.url}/bot"}
    values.update(env)
    values = {k: v for k, v in values.items() if v}
    code, out, err = await run_async(tmp_path, "setup", **values)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err
    assert fake.webhook is None and fake.requests_to("setWebhook") == []


async def test_setup_with_a_token_telegram_refuses_says_so(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    token = "654321:ZYX-wrong0token0for0this0bot00001"
    code, out, err = await run_async(
        tmp_path, "setup", RELAIS_PUBLIC_URL=PUBLIC, RELAIS_TELEGRAM_TOKEN=token,
        RELAIS_TELEGRAM_WEBHOOK_SECRET=SECRET, RELAIS_TELEGRAM_API_URL=f"{fake.url}/bot",
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "refused RELAIS_TELEGRAM_TOKEN" in err
    assert token not in out + err
    assert fake.webhook is None
