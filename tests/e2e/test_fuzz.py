"""Never a 500 for bad input: every endpoint of the real ``relais serve`` app, fed random
forms, JSON, headers and sizes, with *valid* signatures over random bodies (Twilio, Meta,
Telegram secret) and without; the staff-command parser through a chat; the contacts CSV
reader with random bytes. Each answer is below 500, carries no traceback, and nothing is
logged at ERROR.

The HTTP fuzz runs on SQLite (a bounded profile: ``FUZZ_EXAMPLES``); a fixed list of known
poison inputs (NUL, lone surrogates, 300-character names, nested JSON, a 0xff byte in the
Telegram secret, a non-ASCII ``sig=``) runs on SQLite and PostgreSQL. ``bench/fuzz.py`` runs
the same strategies much longer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import string
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from bot.storage.db import make_engine
from bot.web.app import SERVICES, create_app, make_runner
from tests.fakes.signing import meta_signature, twilio_signature
from tests.fakes.telegram import TEST_TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram import FakeTelegram
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from tests.fakes.whatsapp import TEST_PHONE_NUMBER_ID, FakeWhatsApp
from tests.fakes.whatsapp import TEST_TOKEN as WHATSAPP_TOKEN
from tests.helpers.db import make_settings
from tests.helpers.serving import drain_after_webhooks

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
TELEGRAM_SECRET = "fuzz-Secret_0123456789"
APP_SECRET = "fuzz-app-secret"
VERIFY_TOKEN = "fuzz-verify-token"
SMS_FROM = "+33757000100"
ACCOUNT = ("AccountSid", TEST_ACCOUNT_SID)
SETTINGS: dict[str, Any] = {
    "twilio_account_sid": TEST_ACCOUNT_SID,
    "twilio_auth_token": TEST_AUTH_TOKEN,
    "twilio_sms_from": SMS_FROM,
    "twilio_api_url": "http://127.0.0.1:9",  # never called: no workers
    "telegram_token": TELEGRAM_TOKEN,
    "telegram_webhook_secret": TELEGRAM_SECRET,
    "whatsapp_token": WHATSAPP_TOKEN,
    "whatsapp_phone_number_id": TEST_PHONE_NUMBER_ID,
    "whatsapp_app_secret": APP_SECRET,
    "whatsapp_verify_token": VERIFY_TOKEN,
}


# -- a raw HTTP client: any bytes in the request line, headers and body ------------------------


@dataclass
class Answer:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def raw_request(port: int, method: str, target: bytes, headers: dict[bytes, bytes],
                      body: bytes = b"", timeout: float = 30.0) -> Answer:
    """Send one HTTP/1.1 request exactly as given and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1",
                b"Connection: close", b"Content-Length: " + str(len(body)).encode()]
        head += [name + b": " + value for name, value in headers.items()]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with_errors = (ConnectionError, OSError)
        try:
            await writer.wait_closed()
        except with_errors:
            pass
    status_line, _, rest = data.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    parts = status_line.split(b" ")
    return Answer(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, payload)


@dataclass
class Stack:
    """``relais serve`` with every channel configured (provider fakes behind it)."""

    port: int
    base_url: str
    services: Any = None
    answers: list[tuple[str, Answer]] = field(default_factory=list)

    async def send(self, method: str, path: str, body: bytes = b"",
                   headers: dict[bytes, bytes] | None = None,
                   query: bytes = b"") -> Answer:
        target = path.encode() + (b"?" + query if query else b"")
        answer = await raw_request(self.port, method, target, headers or {}, body)
        self.answers.append((f"{method} {path}", answer))
        return answer

    # signed requests, as each provider signs them
    async def twilio(self, path: str, params: list[tuple[str, str]]) -> Answer:
        body = urlencode(params).encode()
        signature = twilio_signature(TEST_AUTH_TOKEN, self.base_url + path, params)
        return await self.send("POST", path, body, {
            b"Content-Type": b"application/x-www-form-urlencoded",
            b"X-Twilio-Signature": signature.encode()})

    async def whatsapp(self, body: bytes) -> Answer:
        return await self.send("POST", "/webhooks/whatsapp", body, {
            b"Content-Type": b"application/json",
            b"X-Hub-Signature-256": meta_signature(APP_SECRET, body).encode()})

    async def telegram(self, body: bytes, secret: bytes = TELEGRAM_SECRET.encode()) -> Answer:
        return await self.send("POST", "/webhooks/telegram", body, {
            b"Content-Type": b"application/json", b"X-Telegram-Bot-Api-Secret-Token": secret})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def stack(db_url: str, **overrides: Any) -> AsyncIterator[Stack]:
    from aiohttp import web

    async with FakeTelegram() as telegram, FakeWhatsApp() as whatsapp:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        values = {**SETTINGS, "telegram_api_url": f"{telegram.url}/bot",
                  "whatsapp_api_url": f"{whatsapp.url}/v21.0", "public_url": base,
                  **overrides}
        app = create_app(make_settings(db_url, port=port, **values), workers=False)
        app.middlewares.append(drain_after_webhooks)  # the engine is fuzzed too
        runner = make_runner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            yield Stack(port=port, base_url=base, services=app[SERVICES])
        finally:
            await runner.cleanup()


def check(answers: list[tuple[str, Answer]], caplog: pytest.LogCaptureFixture) -> None:
    """What every fuzz example asserts."""
    bad = [(where, answer.status, answer.text[:300]) for where, answer in answers
           if not 0 < answer.status < 500 or "Traceback" in answer.text]
    errors = [(r.name, r.getMessage()[:300], r.exc_info and repr(r.exc_info[1])[:300])
              for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad and not errors, (bad, errors)
    answers.clear()
    caplog.clear()


# -- strategies ----------------------------------------------------------------------------

# Any code point, lone surrogates and NUL included.
any_char = st.characters(codec=None, exclude_categories=())
any_text = st.one_of(st.text(any_char, max_size=40), st.text(any_char, min_size=200,
                                                             max_size=400))
utf8_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      any_text, st.integers(min_value=10**19, max_value=10**40))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
digits = st.text(string.digits, min_size=1, max_size=80)


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def dumps(value: Any) -> bytes:
    """JSON as a provider would send it: lone surrogates written as ``\\udXXX`` escapes."""
    return json.dumps(value, ensure_ascii=True).encode()


def mostly(value: st.SearchStrategy[Any], other: st.SearchStrategy[Any],
           odds: int = 8) -> st.SearchStrategy[Any]:
    """``value``, and one time in ``odds`` ``other`` instead."""
    return st.sampled_from([True] * (odds - 1) + [False]).flatmap(
        lambda keep: value if keep else other)


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field of the right type, or now and then any JSON value (a wrongly typed field)."""
    return mostly(value, json_value, odds=20)


@st.composite
def telegram_update(draw: Callable[..., Any]) -> dict[str, Any]:
    user = {"id": draw(maybe(st.integers(min_value=1, max_value=10**12))),
            "is_bot": draw(maybe(st.booleans())), "first_name": draw(maybe(any_text)),
            "language_code": draw(maybe(any_text))}
    chat = {"id": draw(maybe(st.one_of(st.integers(), st.integers(min_value=10**30)))),
            "type": draw(maybe(st.sampled_from(["private", "group"])))}
    message = {"message_id": draw(maybe(st.integers())), "from": user, "chat": chat,
               "date": draw(maybe(st.integers(min_value=0, max_value=2**31)))}
    kind = draw(st.sampled_from(["text", "photo", "voice", "contact", "location", "caption"]))
    if kind == "text":
        message["text"] = draw(maybe(st.one_of(any_text, st.just("/start " + "x" * 300))))
    elif kind == "photo":
        message["photo"] = draw(maybe(st.lists(st.fixed_dictionaries({
            "file_id": maybe(any_text), "file_unique_id": any_text,
            "width": maybe(st.integers()), "height": maybe(st.integers())}), max_size=2)))
    elif kind == "voice":
        message["voice"] = {"file_id": draw(maybe(any_text)), "file_unique_id": "u",
                            "duration": draw(maybe(st.integers())),
                            "mime_type": draw(maybe(any_text))}
    elif kind == "contact":
        message["contact"] = {"phone_number": draw(maybe(any_text)),
                              "first_name": draw(maybe(any_text)),
                              "user_id": draw(maybe(st.integers()))}
    elif kind == "location":
        message["location"] = {"latitude": draw(maybe(st.floats())),
                               "longitude": draw(maybe(st.floats()))}
    else:
        message["caption"] = draw(maybe(any_text))
    update: dict[str, Any] = {"update_id": draw(st.integers(min_value=0, max_value=2**40))}
    if draw(st.booleans()):
        update["message"] = message
    else:
        update["callback_query"] = {"id": draw(maybe(any_text)), "from": user,
                                    "chat_instance": "c", "data": draw(maybe(any_text)),
                                    "message": draw(st.one_of(st.just(message), json_value))}
    return update


@st.composite
def whatsapp_payload(draw: Callable[..., Any]) -> dict[str, Any]:
    wa_id = draw(maybe(st.one_of(st.just("33612345678"), digits)))
    kind = draw(maybe(st.sampled_from(["text", "interactive", "button", "image", "voice",
                                       "location", "reaction"])))
    content = draw(st.fixed_dictionaries({
        "body": maybe(any_text), "id": maybe(any_text), "mime_type": maybe(any_text),
        "caption": maybe(any_text), "filename": maybe(any_text), "payload": maybe(any_text),
        "text": maybe(any_text), "latitude": maybe(st.floats()), "longitude": maybe(st.floats()),
        "type": maybe(st.sampled_from(["button_reply", "list_reply"])),
        "button_reply": maybe(st.fixed_dictionaries({"id": maybe(any_text),
                                                     "title": maybe(any_text)})),
    }))
    message = {"from": wa_id, "id": draw(maybe(any_text)), "timestamp": "1749416383",
               "type": kind, (kind if isinstance(kind, str) else "x"): content}
    status = {"id": draw(maybe(any_text)), "recipient_id": wa_id,
              "status": draw(maybe(st.sampled_from(["sent", "delivered", "read", "failed"]))),
              "timestamp": draw(maybe(st.text(max_size=12))),
              "errors": draw(maybe(st.lists(st.fixed_dictionaries({
                  "code": maybe(st.integers()), "title": maybe(any_text),
                  "error_data": maybe(st.fixed_dictionaries({"details": maybe(any_text)}))}),
                  max_size=2)))}
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "33757000100",
                          "phone_number_id": TEST_PHONE_NUMBER_ID},
             "contacts": [{"profile": {"name": draw(maybe(any_text))}, "wa_id": wa_id}],
             "messages": draw(st.sampled_from([[message], [], json_value])),
             "statuses": draw(st.sampled_from([[], [status]]))}
    if not isinstance(value["messages"], list):
        value["messages"] = [message]
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}


TWILIO_NAMES = ["From", "To", "Body", "MessageSid", "SmsSid", "AccountSid", "ProfileName",
                "ButtonPayload", "ButtonText", "NumMedia", "MediaUrl0", "MediaContentType0",
                "MessageStatus", "ErrorCode", "WaId", "Latitude"]
twilio_value = st.one_of(
    utf8_text, st.text(st.characters(exclude_categories=("Cs",)), min_size=200, max_size=400),
    st.sampled_from(["+33612345678", "whatsapp:+33612345678", "SM" + "a" * 32, "a\x00b",
                     "0612345678", "telegram:12", "+" + "9" * 70, "\x00", "failed", "30003"]),
)
twilio_sid = mostly(st.text("0123456789abcdef", min_size=32, max_size=32).map(
    lambda h: "SM" + h), twilio_value)
twilio_params = st.builds(
    lambda sid, sender, status, rest: [ACCOUNT, ("MessageSid", sid), ("From", sender),
                                       ("MessageStatus", status), *rest],
    twilio_sid, mostly(st.sampled_from(["+33612345678", "0612345678", "+262692123456"]),
                       twilio_value),
    mostly(st.sampled_from(["queued", "sent", "delivered", "failed", "undelivered"]),
           twilio_value),
    st.lists(st.tuples(st.one_of(st.sampled_from(TWILIO_NAMES), utf8_text), twilio_value),
             max_size=8))
header_bytes = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
query_bytes = st.one_of(
    st.binary(max_size=60).map(lambda b: quote(b, safe="").encode()),
    header_bytes.map(lambda b: b.replace(b" ", b"").replace(b"#", b"")),
)


# -- the HTTP fuzz (SQLite) ----------------------------------------------------------------


def run_fuzz(db_url: str, caplog: pytest.LogCaptureFixture, strategy: st.SearchStrategy[Any],
             act: Callable[[Stack, Any], Any], examples: int = FUZZ_EXAMPLES
             ) -> Counter[int]:
    """Run ``act(stack, example)`` for examples of ``strategy`` against one running app."""
    caplog.set_level(logging.INFO)
    loop = asyncio.new_event_loop()
    manager = stack(db_url)
    running = loop.run_until_complete(manager.__aenter__())
    caplog.clear()

    statuses: Counter[int] = Counter()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(strategy)
    def one(example: Any) -> None:
        loop.run_until_complete(act(running, example))
        statuses.update(answer.status for _, answer in running.answers)
        if os.environ.get("FUZZ_SHOW"):
            print([(a.status, a.text[:70]) for _, a in running.answers])
        check(running.answers, caplog)

    try:
        one()
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()
    print("statuses:", dict(sorted(statuses.items())))
    return statuses


async def _twilio(running: Stack, example: tuple[str, list[tuple[str, str]]]) -> None:
    path, params = example
    await running.twilio(path, params)


def test_twilio_webhooks_with_random_signed_forms(sqlite_url: str, caplog) -> None:
    run_fuzz(sqlite_url, caplog, st.tuples(
        st.sampled_from(["/webhooks/twilio", "/webhooks/twilio/status"]), twilio_params),
        _twilio)


async def _telegram(running: Stack, example: tuple[int, Any]) -> None:
    form, value = example
    if form == 0:
        await running.telegram(dumps(value))
    elif form == 1:
        await running.telegram(value if isinstance(value, bytes) else dumps(value))
    else:  # anyone: a random secret header and body
        await running.telegram(dumps(value), secret=b"\xff" + str(value).encode()[:50])


def test_telegram_webhook_with_random_updates(sqlite_url: str, caplog) -> None:
    run_fuzz(sqlite_url, caplog, mostly(st.tuples(st.just(0), telegram_update()), st.one_of(
        st.tuples(st.just(1), st.one_of(json_value, st.binary(max_size=200))),
        st.tuples(st.just(2), json_value)), odds=3), _telegram)


async def _whatsapp(running: Stack, example: tuple[int, Any]) -> None:
    form, value = example
    if form == 0:
        await running.whatsapp(dumps(value))
    elif form == 1:
        await running.whatsapp(value if isinstance(value, bytes) else dumps(value))
    else:
        await running.send("GET", "/webhooks/whatsapp", query=value)


def test_whatsapp_webhook_with_random_payloads(sqlite_url: str, caplog) -> None:
    run_fuzz(sqlite_url, caplog, mostly(st.tuples(st.just(0), whatsapp_payload()), st.one_of(
        st.tuples(st.just(1), st.one_of(json_value, st.binary(max_size=200))),
        st.tuples(st.just(2), query_bytes)), odds=3), _whatsapp)


async def _anything(running: Stack, example: tuple[str, str, bytes, dict[bytes, bytes],
                                                    bytes]) -> None:
    method, path, query, headers, body = example
    await running.send(method, path, body, headers, query)


PATHS = ["/healthz", "/metrics", "/media/1", "/media/99999999999999999999999", "/media/x",
         "/webhooks/twilio", "/webhooks/twilio/status", "/webhooks/telegram",
         "/webhooks/whatsapp", "/nowhere", "/console/"]


def test_any_endpoint_with_random_queries_headers_and_bodies(sqlite_url: str, caplog) -> None:
    headers = st.dictionaries(
        st.sampled_from([b"Content-Type", b"X-Twilio-Signature", b"X-Hub-Signature-256",
                         b"X-Telegram-Bot-Api-Secret-Token", b"Cookie", b"Accept",
                         b"X-Forwarded-For", b"X-Twilio-Webhooks-Signature-Settings"]),
        st.one_of(header_bytes, st.sampled_from([b"application/json",
                                                 b"application/x-www-form-urlencoded",
                                                 b"multipart/form-data; boundary=x"])),
        max_size=4)
    run_fuzz(sqlite_url, caplog, st.tuples(
        st.sampled_from(["GET", "POST", "PUT", "HEAD"]), st.sampled_from(PATHS), query_bytes,
        headers, st.one_of(st.binary(max_size=300), st.just(nested(10_000)))), _anything)


# -- known poison inputs, on SQLite and PostgreSQL -------------------------------------------

LONG_NAME = "N" * 300
SURROGATE = "\ud800"


def poison_requests() -> Iterator[tuple[str, Callable[[Stack], Any]]]:
    """Each known poison input with the request that carries it."""
    person = "+33612345678"

    def sid(label: str) -> str:  # a well-formed MessageSid: SM and 32 hex digits
        return "SM" + hashlib.md5(label.encode()).hexdigest()
    for label, body in [("nul", "bonjour\x00toi"), ("surrogate", f"salut {SURROGATE}"),
                        ("long", LONG_NAME * 40)]:
        yield f"twilio {label}", lambda s, body=body, label=label: s.twilio(
            "/webhooks/twilio", [("From", person), ("To", SMS_FROM), ACCOUNT,
                                 ("Body", body.replace(SURROGATE, "?")),
                                 ("MessageSid", sid(label)),
                                 ("ProfileName", "a\x00b" + LONG_NAME)])
    yield "twilio long sid", lambda s: s.twilio("/webhooks/twilio", [
        ACCOUNT, ("From", person), ("Body", "x"), ("MessageSid", "SM" + "9" * 300)])
    yield "twilio nul sid", lambda s: s.twilio("/webhooks/twilio", [
        ACCOUNT, ("From", person), ("Body", "x"), ("MessageSid", "SM\x00x")])
    yield "twilio nul payload", lambda s: s.twilio("/webhooks/twilio", [
        ACCOUNT, ("From", person), ("Body", "x"), ("MessageSid", sid("payload")),
        ("ButtonPayload", "a\x00" * 50), ("MediaUrl0", "http://x/\x00" + "u" * 2000),
        ("MediaContentType0", "image/\x00" + "j" * 300)])
    yield "twilio status nul", lambda s: s.twilio("/webhooks/twilio/status", [ACCOUNT,
        ("MessageSid", "SM\x00" + "x" * 300), ("MessageStatus", "failed\x00"),
        ("ErrorCode", "3\x00" * 40)])
    yield "twilio bad utf-8", lambda s: s.send(
        "POST", "/webhooks/twilio", b"Body=%ff%fe&From=%2B33612345678",
        {b"Content-Type": b"application/x-www-form-urlencoded", b"X-Twilio-Signature": b"x"})

    def tg(**message: Any) -> dict[str, Any]:
        base = {"message_id": 1, "date": 1749416383, "chat": {"id": 5829174630,
                "type": "private"}, "from": {"id": 5829174630, "is_bot": False,
                                             "first_name": "Ana"}}
        return {"update_id": abs(hash(json.dumps(message))) % 10**9, "message": {**base,
                                                                               **message}}

    yield "telegram nul", lambda s: s.telegram(dumps(tg(text="hello\x00there")))
    yield "telegram surrogate", lambda s: s.telegram(dumps(tg(text=f"hi {SURROGATE}")))
    yield "telegram long name", lambda s: s.telegram(dumps(tg(
        text="hi", **{"from": {"id": 7, "is_bot": False, "first_name": LONG_NAME + SURROGATE,
                               "language_code": "x\x00" * 20}})))
    yield "telegram huge chat id", lambda s: s.telegram(dumps(tg(
        text="hi", chat={"id": 10**70, "type": "private"})))
    yield "telegram wrong types", lambda s: s.telegram(dumps(tg(
        text=["not", "text"], chat={"id": "abc", "type": 5})))
    yield "telegram text object", lambda s: s.telegram(dumps(tg(text={"a": 1})))
    yield "telegram photo wrong", lambda s: s.telegram(dumps(tg(photo="x")))
    yield "telegram start payload", lambda s: s.telegram(dumps(tg(
        text="/start " + "p\x00" * 300)))
    yield "telegram callback data", lambda s: s.telegram(dumps({
        "update_id": 424242, "callback_query": {
            "id": "q" * 300, "chat_instance": "c", "data": "d\x00" * 100 + SURROGATE,
            "from": {"id": 5829174630, "is_bot": False, "first_name": "Ana"}}}))
    yield "telegram huge duration", lambda s: s.telegram(dumps(tg(voice={
        "file_id": "v", "file_unique_id": "u", "duration": 10**30})))
    yield "telegram huge date", lambda s: s.telegram(dumps(tg(text="hi", date=10**30)))
    yield "telegram nested", lambda s: s.telegram(nested(100_000))
    yield "telegram 0xff secret", lambda s: s.telegram(b"{}", secret=b"\xff\xfe")
    yield "telegram bad utf-8 body", lambda s: s.telegram(b'{"update_id": 1, "x": "\xff"}')

    def wa(message: dict[str, Any], name: Any = "Ana") -> bytes:
        return dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"phone_number_id": TEST_PHONE_NUMBER_ID},
                "contacts": [{"profile": {"name": name}, "wa_id": "33612345678"}],
                "messages": [{"from": "33612345678", "timestamp": "1", **message}]}}]}]})

    yield "whatsapp nul", lambda s: s.whatsapp(wa({"id": "wamid.nul", "type": "text",
                                                    "text": {"body": "a\x00b"}}))
    yield "whatsapp surrogate", lambda s: s.whatsapp(wa(
        {"id": "wamid.sur", "type": "text", "text": {"body": SURROGATE}},
        name=LONG_NAME + SURROGATE + "\x00"))
    yield "whatsapp long id", lambda s: s.whatsapp(wa({"id": "w" * 300, "type": "text",
                                                        "text": {"body": "x"}}))
    yield "whatsapp nul id", lambda s: s.whatsapp(wa({"id": "wamid.\x00", "type": "text",
                                                       "text": {"body": "x"}}))
    yield "whatsapp button", lambda s: s.whatsapp(wa({
        "id": "wamid.btn", "type": "interactive", "interactive": {
            "type": "button_reply", "button_reply": {"id": "b\x00" * 100,
                                                     "title": SURROGATE}}}))
    yield "whatsapp media", lambda s: s.whatsapp(wa({
        "id": "wamid.img", "type": "image", "image": {"id": "m\x00" * 600,
                                                      "mime_type": "i\x00" * 100,
                                                      "caption": SURROGATE,
                                                      "filename": "f\x00" + SURROGATE}}))
    yield "whatsapp location", lambda s: s.whatsapp(wa({
        "id": "wamid.loc", "type": "location", "location": {
            "latitude": "a\x00", "longitude": [1], "name": SURROGATE, "address": "\x00"}}))
    yield "whatsapp status", lambda s: s.whatsapp(dumps({
        "object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {"statuses": [{
                "id": "s\x00" * 200, "status": "failed\x00", "recipient_id": SURROGATE,
                "timestamp": "x\x00", "errors": [{"code": "1\x00", "message": SURROGATE,
                                                  "error_data": "notadict"}]}]}}]}]}))
    yield "whatsapp status surrogate id", lambda s: s.whatsapp(dumps({
        "object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {"statuses": [{
                "id": "wamid." + SURROGATE, "status": "read", "recipient_id": "33612345678",
                "timestamp": "1749416383"}]}}]}]}))
    yield "whatsapp nested", lambda s: s.whatsapp(nested(100_000))
    yield "whatsapp verify bytes", lambda s: s.send(
        "GET", "/webhooks/whatsapp", query=b"hub.mode=subscribe&hub.verify_token=%ff\xff"
        b"&hub.challenge=%00")
    yield "media non-ascii sig", lambda s: s.send("GET", "/media/1",
                                                  query=b"exp=99999999999&sig=%C3%A9t%C3%A9")
    yield "media raw 0xff sig", lambda s: s.send("GET", "/media/1", query=b"exp=1&sig=\xff")
    yield "media huge id", lambda s: s.send("GET", "/media/" + "9" * 40,
                                            query=b"exp=99999999999999999999999&sig=00")
    yield "media nul", lambda s: s.send("GET", "/media/1%00", query=b"exp=%00&sig=%00")
    yield "metrics", lambda s: s.send("GET", "/metrics", headers={b"Accept": b"\xff"})
    yield "healthz", lambda s: s.send("GET", "/healthz", query=b"%ff=%00")


async def test_known_poison_inputs_never_give_a_500(db_url: str, caplog) -> None:
    caplog.set_level(logging.INFO)
    async with stack(db_url) as running:
        caplog.clear()
        for label, request in poison_requests():
            answer = await request(running)
            running.answers[-1] = (label, answer)
        check(running.answers, caplog)
        # The server still answers and the database is whole.
        assert (await running.send("GET", "/healthz")).status == 200


async def test_poison_text_is_stored_clean(db_url: str) -> None:
    """NUL and lone surrogates never reach the database; long names are cut to the column."""
    async with stack(db_url) as running:
        for _label, request in poison_requests():
            await request(running)
        engine = make_engine(db_url)
        try:
            async with engine.connect() as conn:
                bodies = (await conn.execute(text("SELECT body FROM messages"))).scalars().all()
                names = (await conn.execute(text("SELECT name FROM contacts"))).scalars().all()
        finally:
            await engine.dispose()
    stored = [b for b in bodies if b] + [n for n in names if n]
    assert any("bonjour" in b for b in stored)
    for value in stored:
        assert "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    assert all(len(n) <= 200 for n in names if n)


# -- slow clients and read-only endpoints ---------------------------------------------------


async def test_a_client_that_never_finishes_its_headers_is_closed(sqlite_url: str) -> None:
    """Twenty connections each send half a request head and stall: the server closes every
    one after ``header_timeout`` (the wait below is that bound, not a speed check)."""
    from aiohttp import web

    timeout = 1.0
    port = _free_port()
    app = create_app(make_settings(sqlite_url, port=port), workers=False)
    runner = make_runner(app, header_timeout=timeout)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _reader, writer in streams:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            await writer.drain()
        for reader, writer in streams:
            assert await asyncio.wait_for(reader.read(), timeout + 10) == b""  # closed
            writer.close()
        # and the server still serves everyone else
        answer = await raw_request(port, "GET", b"/healthz", {})
        assert answer.status == 200
    finally:
        await runner.cleanup()


async def test_a_body_that_never_arrives_gets_408(sqlite_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.web.app as web_app

    monkeypatch.setattr(web_app, "BODY_TIMEOUT", 1.0)
    async with stack(sqlite_url) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(b"POST /webhooks/telegram HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"upd")
        await writer.drain()
        data = await asyncio.wait_for(reader.readline(), 15)  # the status line
        writer.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:100]


async def test_health_and_metrics_answer_while_a_writer_holds_the_sqlite_lock(
        sqlite_url: str) -> None:
    """/healthz and /metrics only read: another process holding the write lock (a long
    import, a busy worker) neither delays them nor is delayed by them."""
    import sqlite3

    path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
    async with stack(sqlite_url) as running:
        writer = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            writer.execute("BEGIN IMMEDIATE")  # the write lock, held for the whole test
            health = await asyncio.wait_for(running.send("GET", "/healthz"), 10)
            metrics = await asyncio.wait_for(running.send("GET", "/metrics"), 10)
            again = await asyncio.wait_for(running.send("GET", "/healthz"), 10)
        finally:
            writer.rollback()
            writer.close()
    assert health.status == 200 and again.status == 200, (health.text, again.text)
    assert metrics.status == 200
    assert 'relais_outbox_depth{status="queued"} 0.0' in metrics.text


# -- the staff-command parser through a chat, and the contacts CSV reader ------------------


def test_random_staff_commands_in_a_chat_never_break_a_step(sqlite_url: str, caplog) -> None:
    """A mediator types anything after any command name: every message is handled (no
    failed step, nothing at ERROR), whatever the numbers and addresses in it."""
    from sqlalchemy import select

    from bot.app import open_services
    from bot.domain.staff import add_staff
    from bot.flows.staff import ALIASES
    from bot.storage.models import Message
    from tests.helpers.dialog import Dialog

    caplog.set_level(logging.INFO)
    loop = asyncio.new_event_loop()
    services = loop.run_until_complete(open_services(make_settings(sqlite_url),
                                                     migrate=False))

    async def setup() -> tuple[Dialog, Dialog]:
        async with services.sessions() as session, session.begin():
            await add_staff(session, "terminal:mediator", name="Mia", role="mediator",
                            now=services.clock.now(), default_timezone="Europe/Paris")
        citizen = Dialog(services, who="citizen")
        await citizen.send("aide")  # an open ticket to act on
        return Dialog(services, who="mediator"), citizen

    mediator, _citizen = loop.run_until_complete(setup())
    argument = st.one_of(st.sampled_from(["1", "#1", "0", "-1", "99999999999999999999",
                                          "telegram:1", "sms:+33612345678", "oui", "absent"]),
                         any_text)
    command = st.tuples(st.sampled_from(["/", "", "#"]), st.sampled_from(sorted(ALIASES)),
                        st.lists(argument, max_size=3)).map(
        lambda c: c[0] + c[1] + " " + " ".join(c[2]))
    caplog.clear()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(st.one_of(command, any_text))
    def one(line: str) -> None:
        async def go() -> None:
            await mediator.send(line)
            async with services.sessions() as session:
                last = await session.scalar(select(Message).where(Message.direction == "in")
                                            .order_by(Message.id.desc()).limit(1))
            assert last is not None and last.step_error is None, (line, last.step_error)

        loop.run_until_complete(go())
        check([], caplog)

    try:
        one()
    finally:
        loop.run_until_complete(services.close())
        loop.close()


def test_random_bytes_as_a_contacts_file_are_refused_or_imported(sqlite_url: str,
                                                                 caplog) -> None:
    """Any bytes: the reader refuses the file with one ValueError or reports bad rows by
    line; what it accepts imports (on a real database) without an exception."""
    from bot.app import open_services
    from bot.domain.contacts import import_contacts, read_contacts

    caplog.set_level(logging.INFO)
    loop = asyncio.new_event_loop()
    services = loop.run_until_complete(open_services(make_settings(sqlite_url),
                                                     migrate=False))
    header = st.sampled_from([b"", b"phone,name,language,postcode,tags,consent\n",
                              b"\xef\xbb\xbft\xc3\xa9l\xc3\xa9phone;nom;langue;cp\n",
                              b"address,name\n"])
    row = st.one_of(st.binary(max_size=80), st.lists(
        st.one_of(st.sampled_from([b"06 12 34 56 78", b"+33612345678", b"telegram:42",
                                   b"fr", b"97400", b"oui", b"a\x00b", b'"x', b"\xff"]),
                  st.text(any_char, max_size=20).map(
                      lambda t: t.encode("utf-8", "surrogatepass"))),
        max_size=6).map(lambda cells: b",".join(cells)))
    data = st.tuples(header, st.lists(row, max_size=6)).map(
        lambda parts: parts[0] + b"\n".join(parts[1]))

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(data)
    def one(raw: bytes) -> None:
        try:
            parsed = read_contacts(raw)
        except ValueError:
            return  # refused as a whole, with a line number
        loop.run_until_complete(import_contacts(
            services.sessions, parsed, now=services.clock.now(),
            default_timezone="Europe/Paris", source="fuzz.csv"))
        check([], caplog)

    try:
        one()
    finally:
        loop.run_until_complete(services.close())
        loop.close()


async def test_poison_in_a_failed_status_of_a_sent_message(db_url: str, caplog) -> None:
    """A signed "failed" status for a message Relais did send, with NUL, a lone surrogate
    and a code longer than its column: answered, the row keeps a clean reason."""
    from sqlalchemy import select

    from bot.core.types import Reply
    from bot.delivery.writer import enqueue
    from bot.storage.models import Address, Contact, Outbox

    caplog.set_level(logging.INFO)
    sms_sid = "SM" + "ab" * 16
    async with stack(db_url) as running:
        services = running.services
        now = services.clock.now()
        async with services.sessions() as session, session.begin():
            for channel, number, provider_id in (("sms", "+33612345678", sms_sid),
                                                 ("whatsapp", "+33612345679", "wamid.sent")):
                contact = Contact(created_at=now, language="fr", timezone="Europe/Paris")
                session.add(contact)
                await session.flush()
                address = Address(contact_id=contact.id, channel=channel,
                                  external_id=number, created_at=now, landline=False)
                session.add(address)
                await session.flush()
                row = enqueue(session, contact, address, Reply("Bonjour"), now=now)
                row.status, row.provider_id, row.sent_at = "sent", provider_id, now
        caplog.clear()
        await running.twilio("/webhooks/twilio/status", [
            ACCOUNT, ("MessageSid", sms_sid), ("MessageStatus", "failed"),
            ("ErrorCode", "3\x00" * 40), ("To", "+33612345678")])
        await running.whatsapp(dumps({
            "object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
                "field": "messages", "value": {
                    "metadata": {"phone_number_id": TEST_PHONE_NUMBER_ID},
                    "statuses": [{"id": "wamid.sent", "status": "failed",
                                  "recipient_id": "33612345679", "timestamp": "1749416383",
                                  "errors": [{"code": 10**40, "title": "x\x00" + SURROGATE,
                                              "message": "m\x00" * 400,
                                              "error_data": {"details": SURROGATE}}]}]}}]}]}))
        check(running.answers, caplog)
        async with services.sessions() as session:
            rows = (await session.scalars(select(Outbox))).all()
    for row in rows:
        for value in (row.error_code, row.error_reason):
            assert value is None or ("\x00" not in value
                                     and not any(0xD800 <= ord(c) <= 0xDFFF for c in value))
        assert row.error_code is None or len(row.error_code) <= 32
