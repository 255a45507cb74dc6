"""Every real-payload webhook fixture (``tests/channels/*/*.json``) through its adapter.

One parametrized test per fixture ("twilio/sms_two_media"…): a tiny aiohttp app mounts the
provider's ``SPEC.routes`` with a ``Hub`` whose sink only records what it is handed (no
database). The fixture's request is sent signed as the provider signs it; the test checks
the HTTP status, then that the messages and statuses the adapter handed over are exactly
``expect.events`` (in order), and that an ignored or rejected request hands nothing. The
same request is then sent again, as a provider retries: the adapter must hand the same
again (the sink decides duplicates) and the sink's ``seen`` must have said RETRY.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from telegram import Bot
from telegram.request import BaseRequest, RequestData

from bot.channels import telegram, twilio, whatsapp
from bot.core.channel import (
    PHONE_SHARED,
    AdapterSpec,
    ChannelEvent,
    Failure,
    Hub,
    Opened,
    StatusUpdate,
    Verdict,
)
from bot.core.clock import Clock
from bot.core.config import Settings, load_settings
from bot.core.types import Inbound
from bot.web.app import bad_input
from tests.fakes import whatsapp as wa
from tests.fakes.signing import (
    META_SIGNATURE_HEADER,
    TELEGRAM_SECRET_HEADER,
    TWILIO_SIGNATURE_HEADER,
    meta_signature,
    twilio_signature,
)

HERE = Path(__file__).parent
FIXTURES = sorted(HERE.glob("*/*.json"))

PUBLIC_URL = "https://relais.example.org"
TWILIO_ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"  # the account of the fixtures
TWILIO_AUTH_TOKEN = "f1e2d3c4b5a69788796a5b4c3d2e1f00"
WHATSAPP_APP_SECRET = "relais-test-app-secret"
TELEGRAM_TOKEN = "7012345678:AAF-relais-test-token_0123456789abcd"
TELEGRAM_SECRET = "relais-test-webhook_secret-0123"

SPECS: dict[str, AdapterSpec] = {
    "twilio": twilio.SPEC,
    "whatsapp": whatsapp.SPEC,
    "telegram": telegram.SPEC,
}
SIGNED = {"twilio", "whatsapp"}  # the providers whose signatures go through ``seen``

# The Failure each failed status maps onto (the fixtures do not carry it yet; an event's
# own "failure" key wins). Any other status must come with failure None.
FAILURES: dict[str, Failure] = {
    "twilio/status_failed_21610": Failure.STOPPED,
    "twilio/status_undelivered_30003": Failure.UNDELIVERABLE,
    "twilio/status_whatsapp_failed_63016": Failure.WINDOW_CLOSED,
    "whatsapp/status_failed_131026": Failure.UNDELIVERABLE,
    "whatsapp/status_failed_131047": Failure.WINDOW_CLOSED,
}


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def settings_for(provider: str) -> Settings:
    """Only the credentials of ``provider``: with a WhatsApp Cloud token set, Twilio's
    WhatsApp would be off."""
    credentials: dict[str, Any] = {
        "twilio": {
            "twilio_account_sid": TWILIO_ACCOUNT_SID,
            "twilio_auth_token": TWILIO_AUTH_TOKEN,
            "twilio_sms_from": "+33757000100",
            "twilio_whatsapp_from": "whatsapp:+33757000100",
            "twilio_api_url": "http://twilio.invalid",
        },
        "whatsapp": {
            "whatsapp_token": wa.TEST_TOKEN,
            "whatsapp_phone_number_id": wa.TEST_PHONE_NUMBER_ID,
            "whatsapp_app_secret": WHATSAPP_APP_SECRET,
            "whatsapp_verify_token": "relais-test-verify-token",
            "whatsapp_api_url": "http://graph.invalid/v21.0",
        },
        "telegram": {
            "telegram_token": TELEGRAM_TOKEN,
            "telegram_webhook_secret": TELEGRAM_SECRET,
            "telegram_api_url": "http://telegram.invalid/bot",
        },
    }[provider]
    return load_settings(env_file=None, public_url=PUBLIC_URL, **credentials)


# -- what the adapter hands over ---------------------------------------------------------


@dataclass
class Received:
    """Everything a sink was handed during one request."""

    handed: list[Inbound | StatusUpdate] = field(default_factory=list)  # in order
    outcomes: list[str] = field(default_factory=list)  # what ``message`` answered
    events: list[ChannelEvent] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    counts: list[tuple[str, str]] = field(default_factory=list)


class RecordingSink:
    """An ``InboundSink`` that records every call. ``message`` is "written" the first time
    a provider id is seen, then "duplicate"; ``seen`` is NEW for a new signature, RETRY for
    it over the same fields again, REPLAY over other fields (as ``bot.domain.replay``)."""

    def __init__(self) -> None:
        self.now = Received()
        self._ids: set[str | None] = set()
        self._signatures: dict[tuple[str, str], str] = {}

    def take(self) -> Received:
        received, self.now = self.now, Received()
        return received

    async def message(self, inbound: Inbound) -> str:
        outcome = "duplicate" if inbound.provider_id in self._ids else "written"
        self._ids.add(inbound.provider_id)
        self.now.handed.append(inbound)
        self.now.outcomes.append(outcome)
        return outcome

    async def status(self, update: StatusUpdate) -> None:
        self.now.handed.append(update)

    async def event(self, event: ChannelEvent) -> None:
        self.now.events.append(event)

    async def seen(self, provider: str, signature: str, fields: str) -> Verdict:
        known = self._signatures.get((provider, signature))
        if known is None:
            self._signatures[(provider, signature)] = fields
            verdict = Verdict.NEW
        else:
            verdict = Verdict.RETRY if known == fields else Verdict.REPLAY
        self.now.verdicts.append(verdict)
        return verdict

    def count(self, channel: str, outcome: str) -> None:
        self.now.counts.append((channel, outcome))


class RecordingRequest(BaseRequest):
    """python-telegram-bot's HTTP layer, answering every Bot API call with success and
    keeping (method, parameters): no network."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    @property
    def read_timeout(self) -> float | None:
        return None

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout: Any = None, write_timeout: Any = None,
                         connect_timeout: Any = None, pool_timeout: Any = None
                         ) -> tuple[int, bytes]:
        params = request_data.parameters if request_data is not None else {}
        self.calls.append({"method": url.rsplit("/", 1)[-1], "params": params})
        return 200, b'{"ok": true, "result": true}'


def as_fixture_event(handed: Inbound | StatusUpdate, expected: dict[str, Any]) -> dict[str, Any]:
    """What the adapter handed, in the fixture's event shape (optional keys where the
    adapter set them; ``profile_name`` where the fixture has it)."""
    if isinstance(handed, StatusUpdate):
        return {"kind": "status", "provider_id": handed.provider_id, "status": handed.status,
                "error_code": handed.error_code}
    event: dict[str, Any] = {
        "kind": "message", "address": handed.address, "text": handed.text or None,
        "provider_id": handed.provider_id, "choice_id": handed.choice_id,
        "media": [{"content_type": m.content_type, "ref": m.ref} for m in handed.media],
    }
    for key in ("location", "shared_phone", "start_payload"):
        if key in handed.extra:
            event[key] = handed.extra[key]
    if "profile_name" in expected:
        event["profile_name"] = handed.profile_name
    return event


# -- the request, signed ---------------------------------------------------------------------


def signed_request(provider: str, request: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    """(path, body bytes, headers) as the provider would POST the fixture's request."""
    body = request["body"]
    headers = {"Content-Type": request["content_type"]}
    if provider == "twilio":
        path = twilio.STATUS_PATH if "MessageStatus" in body else twilio.INBOUND_PATH
        headers[TWILIO_SIGNATURE_HEADER] = twilio_signature(
            TWILIO_AUTH_TOKEN, PUBLIC_URL + path, body)
        return path, urlencode(body).encode("ascii"), headers
    if provider == "whatsapp":
        raw = wa.encode(body)
        headers[META_SIGNATURE_HEADER] = meta_signature(WHATSAPP_APP_SECRET, raw)
        return whatsapp.WEBHOOK_PATH, raw, headers
    assert provider == "telegram"
    headers[TELEGRAM_SECRET_HEADER] = TELEGRAM_SECRET
    return telegram.WEBHOOK_PATH, json.dumps(body).encode("utf-8"), headers


def mounted(spec: AdapterSpec, hub: Hub) -> web.Application:
    """The adapter's routes, each given ``hub``, behind the server's bad-input middleware."""
    app = web.Application(middlewares=[bad_input])
    for route in spec.routes:
        async def handler(request: web.Request, route: Any = route) -> web.StreamResponse:
            return await route.handler(request, hub)

        app.router.add_route(route.method, route.path, handler)
    return app


def status_channel(provider: str, body: dict[str, Any]) -> str:
    """The channel a status update is for: Twilio says WhatsApp with a ``whatsapp:`` To."""
    if provider == "twilio":
        whatsapp_to = str(body.get("To", "")).startswith("whatsapp:")
        return "whatsapp" if whatsapp_to or body.get("ChannelPrefix") == "whatsapp" else "sms"
    return provider


# -- the runner ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
async def test_adapter_hands_over_what_the_fixture_expects(path: Path) -> None:
    provider, name = path.parent.name, fixture_id(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    request, expect = data["request"], data["expect"]
    outcome, expected = expect["outcome"], expect["events"]
    spec = SPECS[provider]

    sink = RecordingSink()
    bot_requests = RecordingRequest()
    opened = None
    if provider == "telegram":  # the webhook answers button presses with the channel's bot
        bot = Bot(TELEGRAM_TOKEN, base_url="http://telegram.invalid/bot", request=bot_requests)
        opened = Opened(state=telegram.TelegramChannel(bot=bot, token=TELEGRAM_TOKEN))
    elif expect.get("provider_requests"):
        pytest.fail(f"{name}: provider_requests are only checked for telegram")
    hub = Hub(settings_for(provider), Clock(), sink, opened)

    url_path, body, headers = signed_request(provider, request)
    assert ("POST", url_path) in {(r.method, r.path) for r in spec.routes}, \
        f"{provider} serves no POST {url_path}"

    async with TestClient(TestServer(mounted(spec, hub))) as client:
        sends = []
        for _ in range(2):  # the provider's request, then its retry
            response = await client.post(url_path, data=body, headers=headers)
            text = await response.text()
            sends.append((response.status, text, sink.take(), list(bot_requests.calls)))
            bot_requests.calls.clear()

    for attempt, (status, text, received, calls) in enumerate(sends):
        where = f"{name}, {'first request' if attempt == 0 else 'retry'}"
        if outcome == "rejected":
            assert 400 <= status < 500, f"{where}: HTTP {status} {text[:200]}"
            assert received.handed == [] and received.events == [], where
            continue
        assert status == 200, f"{where}: HTTP {status} {text[:200]}"
        if provider == "twilio":
            assert "<Response" in text, f"{where}: Twilio expects TwiML, got {text[:200]!r}"

        got = [as_fixture_event(h, e) for h, e in zip(received.handed, expected, strict=False)]
        got += [as_fixture_event(h, {}) for h in received.handed[len(expected):]]
        assert got == expected, where

        for handed in received.handed:
            if isinstance(handed, Inbound):
                assert handed.channel == handed.address.partition(":")[0], where
            else:
                assert handed.channel == status_channel(provider, request["body"]), where
        failures = [h.failure for h in received.handed if isinstance(h, StatusUpdate)]
        assert failures == [
            Failure(e["failure"]) if e.get("failure") else FAILURES.get(name)
            for e in expected if e["kind"] == "status"
        ], f"{where}: the failure a status maps onto"

        shared = [ChannelEvent(provider, e["address"], PHONE_SHARED, e["shared_phone"])
                  for e in expected if e["kind"] == "message" and "shared_phone" in e]
        assert received.events == shared, where
        assert calls == expect.get("provider_requests", []), f"{where}: Bot API calls"

        counted = [outcome for _, outcome in received.counts]
        assert "replay" not in counted, where
        if outcome == "ignored":
            assert counted and set(counted) == {"ignored"}, f"{where}: counted {counted}"
        else:
            assert "ignored" not in counted, f"{where}: counted {counted}"
        if attempt == 1:
            assert set(received.outcomes) <= {"duplicate"}, where
        elif outcome == "duplicate":
            assert "duplicate" in received.outcomes, where
        else:
            assert set(received.outcomes) <= {"written"}, where

    if outcome == "rejected":
        return
    first, retry = sends[0][2], sends[1][2]
    assert retry.handed == first.handed, f"{name}: the retry hands something else"
    if provider in SIGNED:
        assert first.verdicts == [Verdict.NEW], f"{name}: signature of the first request"
        assert retry.verdicts == [Verdict.RETRY], f"{name}: signature of the retry"
    else:
        assert first.verdicts == retry.verdicts == [], name
