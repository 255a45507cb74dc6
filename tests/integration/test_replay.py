"""Replays refused (issue 11, part 3), through the running app with correctly signed webhooks.

Twilio signs ``URL + name + value + name + value…`` with no separator, so a captured request
can be reshaped and keep its signature: ``MessageSid=<sid>NumMedia0`` with no ``NumMedia``.
Such a request must be refused and change nothing; a genuine provider retry (the very same
request) gets 200 and changes nothing either. Seen signatures live in the database, so a
second process on the same database refuses the replay too; they are purged after 48 h.
WhatsApp Cloud and Telegram: malformed bodies 400, shapes we do not handle 200 and nothing
stored. ``relais serve`` warns once when the public URL is plain http.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import select

from bot.channels import twilio as tw
from bot.domain import replay
from bot.storage.models import Contact, Message, Outbox, SeenSignature
from tests.conftest import START
from tests.fakes import whatsapp as wa
from tests.fakes.signing import (
    META_SIGNATURE_HEADER,
    TELEGRAM_SECRET_HEADER,
    TWILIO_SIGNATURE_HEADER,
    meta_signature,
    twilio_signature,
)
from tests.fakes.telegram import TEST_TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram import FakeTelegram, text_update
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio, inbound_params
from tests.fakes.whatsapp import TEST_PHONE_NUMBER_ID, TEST_TOKEN, FakeWhatsApp
from tests.helpers.serving import Running, count, serving, twilio_app

PERSON = "+33612345678"
SENDER = "+33757000100"
TWILIO = {"twilio_account_sid": TEST_ACCOUNT_SID, "twilio_auth_token": TEST_AUTH_TOKEN,
          "twilio_sms_from": SENDER}
APP_SECRET = "0f3c9a7e5b2d4c6e8a1f3b5d7c9e2a4f"
TELEGRAM_SECRET = "relais-Webhook_secret-0123456789"
FIXTURES = Path(__file__).parents[1] / "channels"


# -- helpers --------------------------------------------------------------------------------


def signature_for(running: Running, params: dict[str, str], path: str = tw.INBOUND_PATH
                  ) -> str:
    return twilio_signature(TEST_AUTH_TOKEN, running.settings.base_url + path, params)


async def post_form(running: Running, params: dict[str, str], signature: str,
                    path: str = tw.INBOUND_PATH) -> int:
    async with running.http.post(running.url + path, data=params,
                                 headers={TWILIO_SIGNATURE_HEADER: signature}) as response:
        await response.read()
        return response.status


async def post_signed(running: Running, params: dict[str, str],
                      path: str = tw.INBOUND_PATH) -> int:
    return await post_form(running, params, signature_for(running, params, path), path)


async def inbound_count(running: Running) -> int:
    return await count(running, Message, Message.direction == "in")


def reshaped(params: dict[str, str]) -> dict[str, str]:
    """The replay of the finding: ``NumMedia`` folded into ``MessageSid``."""
    shaped = {name: value for name, value in params.items() if name != "NumMedia"}
    shaped["MessageSid"] = params["MessageSid"] + "NumMedia" + params["NumMedia"]
    return shaped


def reshaped_keeping_the_sid(params: dict[str, str]) -> dict[str, str]:
    """Another reshaping with a well-formed sid: ``FromCountry`` folded into ``FromCity``."""
    shaped = {name: value for name, value in params.items() if name != "FromCountry"}
    shaped["FromCity"] = params["FromCity"] + "FromCountry" + params["FromCountry"]
    return shaped


async def settle(running: Running, fake: FakeTwilio, sent: int) -> None:
    """Wait until the fake got ``sent`` messages, then give the workers time for more."""
    await running.wait_for(lambda: len(fake.sent) >= sent)
    await asyncio.sleep(0.5)


# -- Twilio: the finding --------------------------------------------------------------------


async def test_the_nummedia_replay_is_refused_and_sends_nothing(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        params = inbound_params(PERSON, "Bonjour")
        signature = signature_for(running, params)
        replayed = reshaped(params)
        assert signature_for(running, replayed) == signature  # the signature still holds

        assert await post_form(running, params, signature) == 200
        await settle(running, fake, 1)
        rows = await count(running, Outbox)

        assert await post_form(running, replayed, signature) == 400  # not a message sid
        other = reshaped_keeping_the_sid(params)
        assert signature_for(running, other) == signature
        assert await post_form(running, other, signature) == 403  # the signature was used
        await asyncio.sleep(0.5)

        assert await inbound_count(running) == 1
        assert await count(running, Outbox) == rows
        assert len(fake.sent) == 1  # one reply, to the real message only
        assert fake.unexpected == []


async def test_a_genuine_retry_gets_200_and_one_message_one_reply(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        params = inbound_params(PERSON, "Bonjour")
        assert await post_signed(running, params) == 200
        assert await post_signed(running, params) == 200  # Twilio retries the same request
        await settle(running, fake, 1)
        assert await post_signed(running, params) == 200  # even once answered
        await asyncio.sleep(0.5)
        assert await inbound_count(running) == 1
        assert len(fake.sent) == 1
        assert await count(running, SeenSignature) == 2  # signature + request digests


async def test_bad_sids_and_other_accounts_are_refused_and_store_nothing(db_url: str) -> None:
    async with twilio_app(db_url, workers=False) as running:
        good = inbound_params(PERSON, "Bonjour")
        sid = good["MessageSid"]
        bad_sids = [
            {**good, "MessageSid": "SM123", "SmsSid": "SM123", "SmsMessageSid": "SM123"},
            {**good, "MessageSid": "XX" + sid[2:]},
            {**good, "MessageSid": sid + "0"},
            {**good, "SmsSid": "SM" + "0" * 32},  # two different sids in one request
            {name: value for name, value in good.items() if name != "AccountSid"},
            {**good, "AccountSid": "AC123"},
        ]
        for params in bad_sids:
            assert await post_signed(running, params) == 400, params
        other_account = {**good, "AccountSid": "AC" + "f" * 32}
        assert await post_signed(running, other_account) == 403

        status = {"MessageSid": sid + "MessageStatusdelivered", "SmsSid": sid,
                  "SmsStatus": "delivered", "AccountSid": TEST_ACCOUNT_SID, "To": PERSON,
                  "From": SENDER}
        assert await post_signed(running, status, tw.STATUS_PATH) == 400
        status = {**status, "MessageSid": sid, "MessageStatus": "delivered",
                  "AccountSid": "AC" + "e" * 32}
        assert await post_signed(running, status, tw.STATUS_PATH) == 403

        assert await count(running, Message) == 0
        assert await count(running, Contact) == 0
        assert await count(running, SeenSignature) == 0
        assert await post_signed(running, good) == 200  # the real one still goes through
        assert await inbound_count(running) == 1


async def test_a_status_callback_replayed_in_another_shape_is_refused(db_url: str) -> None:
    async with twilio_app(db_url, workers=False) as running:
        sid = "SM" + "4d" * 16
        status = {"SmsSid": sid, "SmsStatus": "undelivered", "MessageStatus": "undelivered",
                  "To": PERSON, "MessageSid": sid, "AccountSid": TEST_ACCOUNT_SID,
                  "From": SENDER, "ApiVersion": "2010-04-01", "ErrorCode": "30003"}
        signature = signature_for(running, status, tw.STATUS_PATH)
        assert await post_form(running, status, signature, tw.STATUS_PATH) == 200
        assert await post_form(running, status, signature, tw.STATUS_PATH) == 200  # retry
        # "ApiVersion" + "2010-04-01" + "ErrorCode" + "30003" read as one ApiVersion value
        shaped = {k: v for k, v in status.items() if k != "ErrorCode"}
        shaped["ApiVersion"] = "2010-04-01ErrorCode30003"
        assert signature_for(running, shaped, tw.STATUS_PATH) == signature
        assert await post_form(running, shaped, signature, tw.STATUS_PATH) == 403


async def test_a_second_process_on_the_same_database_refuses_the_replay(db_url: str) -> None:
    public = "https://relais.example.org"  # both processes behind one public URL
    async with twilio_app(db_url, workers=False, public_url=public) as first, \
            twilio_app(db_url, workers=False, public_url=public) as second:
        assert first.services is not second.services
        params = inbound_params(PERSON, "Bonjour")
        signature = signature_for(first, params)
        assert await post_form(first, params, signature) == 200
        other = reshaped_keeping_the_sid(params)
        assert await post_form(second, other, signature_for(second, other)) == 403
        assert await post_form(second, params, signature_for(second, params)) == 200  # retry
        assert await inbound_count(second) == 1


async def test_retries_arriving_together_at_two_processes_are_all_accepted(
        db_url: str) -> None:
    public = "https://relais.example.org"
    async with twilio_app(db_url, workers=False, public_url=public) as first, \
            twilio_app(db_url, workers=False, public_url=public) as second:
        params = inbound_params(PERSON, "Bonjour")
        signature = signature_for(first, params)
        answers = await asyncio.gather(*(
            post_form(app, params, signature) for app in (first, second) * 3))
        assert answers == [200] * 6  # never mistaken for a replay
        assert await inbound_count(first) == 1


async def test_seen_signatures_are_purged_after_48_hours(db_url: str) -> None:
    async with twilio_app(db_url, workers=False) as running:
        first = inbound_params(PERSON, "Bonjour")
        assert await post_signed(running, first) == 200
        first_key = replay.signature_digest(tw.PROVIDER, signature_for(running, first))

        async def keys() -> set[str]:
            async with running.services.sessions() as session:
                return set((await session.scalars(select(SeenSignature.digest))).all())

        with time_machine.travel(START + timedelta(hours=47), tick=False):
            assert await post_signed(running, inbound_params(PERSON, "Encore")) == 200
            assert first_key in await keys()  # 47 hours: still kept
            assert len(await keys()) == 4
        with time_machine.travel(START + timedelta(hours=49), tick=False):
            third = inbound_params(PERSON, "Toujours")
            assert await post_signed(running, third) == 200
            left = await keys()
        assert first_key not in left and len(left) == 4  # the second and third requests
        assert replay.signature_digest(tw.PROVIDER, signature_for(running, third)) in left


# -- WhatsApp Cloud -------------------------------------------------------------------------


@asynccontextmanager
async def cloud(db_url: str) -> AsyncIterator[Running]:
    async with FakeWhatsApp() as fake, serving(
        db_url, workers=False, whatsapp_token=TEST_TOKEN,
        whatsapp_phone_number_id=TEST_PHONE_NUMBER_ID, whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token="verify", whatsapp_api_url=f"{fake.url}/v21.0",
    ) as running:
        yield running


async def post_meta(running: Running, payload: Any) -> int:
    body = payload if isinstance(payload, bytes) else wa.encode(payload)
    headers = {"Content-Type": "application/json",
               META_SIGNATURE_HEADER: meta_signature(APP_SECRET, body)}
    async with running.http.post(f"{running.url}/webhooks/whatsapp", data=body,
                                 headers=headers) as response:
        await response.read()
        return response.status


def _message(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["entry"][0]["changes"][0]["value"]["messages"][0]


async def test_whatsapp_malformed_is_400_and_unhandled_is_200_storing_nothing(
        db_url: str) -> None:
    def text(**changes: Any) -> dict[str, Any]:
        payload = wa.inbound_text(PERSON, "Bonjour")
        message = _message(payload)
        for key, value in changes.items():
            if value is None:
                message.pop(key)
            else:
                message[key] = value
        return payload

    statuses = wa.status("wamid.x", "delivered")
    del statuses["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
    malformed = [
        b"{not json", b"[]",
        text(id=None), text(**{"from": None}), text(type=None), text(id=12),
        text(text={"body": 12}), text(text="Bonjour"),
        wa.inbound_image(PERSON, ""), statuses,
    ]
    reaction = json.loads((FIXTURES / "whatsapp" / "reaction.json").read_text())
    unknown_status = wa.status("wamid.y", "deleted")
    async with cloud(db_url) as running:
        for payload in malformed:
            assert await post_meta(running, payload) == 400, payload
        assert await count(running, SeenSignature) == 0
        assert await post_meta(running, reaction["request"]["body"]) == 200
        assert await post_meta(running, unknown_status) == 200
        assert await count(running, Message) == 0
        assert await count(running, Contact) == 0
        ignored = running.services.metrics.inbound.labels("whatsapp", "ignored")._value.get()
        assert ignored == 2

        good = wa.inbound_text(PERSON, "Bonjour")
        assert await post_meta(running, good) == 200
        assert await post_meta(running, good) == 200  # Meta's retry: same bytes
        assert await inbound_count(running) == 1
        assert await count(running, SeenSignature) == 2 * 3  # reaction, status, message


# -- Telegram -------------------------------------------------------------------------------


@asynccontextmanager
async def telegram(db_url: str) -> AsyncIterator[Running]:
    async with FakeTelegram() as fake, serving(
        db_url, workers=False, telegram_token=TELEGRAM_TOKEN,
        telegram_webhook_secret=TELEGRAM_SECRET, telegram_api_url=f"{fake.url}/bot",
    ) as running:
        yield running


async def post_telegram(running: Running, body: Any) -> int:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", TELEGRAM_SECRET_HEADER: TELEGRAM_SECRET}
    async with running.http.post(f"{running.url}/webhooks/telegram", data=raw,
                                 headers=headers) as response:
        await response.read()
        return response.status


async def test_telegram_malformed_is_400_and_unhandled_is_200_storing_nothing(
        db_url: str) -> None:
    chat = 5829174630

    def update(**changes: Any) -> dict[str, Any]:
        data = text_update(chat, "Bonjour", update_id=41)
        data["message"].update(changes)
        return {**data, "message": {k: v for k, v in data["message"].items()
                                    if v is not None}}

    malformed = [
        b"{not json", {"update_id": True, "message": {}}, {"update_id": 4.5},
        update(text=12), update(chat=None), update(chat={"id": "x", "type": "private"}),
        update(date=None), update(**{"from": "bob"}), update(photo=[{"width": 1}]),
        update(location={"latitude": "north", "longitude": 2}),
        {"update_id": 42, "callback_query": {"id": "1", "from": {"id": chat}}},
    ]
    edited = json.loads((FIXTURES / "telegram" / "edited_message.json").read_text())
    reaction = {"update_id": 43, "message_reaction": {
        "chat": {"id": chat, "type": "private"}, "message_id": 3, "date": 1749416383,
        "user": {"id": chat, "is_bot": False, "first_name": "Aicha"},
        "old_reaction": [], "new_reaction": [{"type": "emoji", "emoji": "👍"}]}}
    unknown = {"update_id": 44, "something_new": {"id": 1}}
    async with telegram(db_url) as running:
        for body in malformed:
            assert await post_telegram(running, body) == 400, body
        for body in (edited["request"]["body"], reaction, unknown):
            assert await post_telegram(running, body) == 200, body
        assert await count(running, Message) == 0
        assert await count(running, Contact) == 0
        ignored = running.services.metrics.inbound.labels("telegram", "ignored")._value.get()
        assert ignored == 3

        good = text_update(chat, "Bonjour", update_id=45)
        assert await post_telegram(running, good) == 200
        assert await post_telegram(running, good) == 200  # deduplicated on update_id
        assert await inbound_count(running) == 1
        assert await count(running, SeenSignature) == 0  # a constant secret, not a signature


# -- relais serve over plain http -----------------------------------------------------------

RELAIS = str(Path(sys.executable).parent / "relais")
WARNING = "signatures are checked against"


def _serve_stderr(tmp_path: Path, public_url: str) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RELAIS_")}
    env.update(RELAIS_DATABASE_URL=f"sqlite:///{tmp_path}/serve.db", RELAIS_PORT=str(port),
               RELAIS_PUBLIC_URL=public_url)
    process = subprocess.Popen([RELAIS, "serve", "--no-workers"], env=env, cwd=str(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        up = False
        while time.monotonic() < deadline and not up:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz"):
                    up = True
            except OSError:
                time.sleep(0.2)
        assert up
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    return err


@pytest.mark.parametrize("public_url", ["http://relais.example.org", "https://relais.example.org"])
def test_serve_warns_once_when_the_public_url_is_plain_http(tmp_path: Path,
                                                            public_url: str) -> None:
    err = _serve_stderr(tmp_path, public_url)
    if public_url.startswith("https"):
        assert WARNING not in err
    else:
        assert err.count(WARNING) == 1
        assert f"{WARNING} http://relais.example.org; use https in production" in err
        assert "WARNING relais.serve" in err  # the log line, on stderr
