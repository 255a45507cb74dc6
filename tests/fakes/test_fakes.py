"""The fakes speak the real protocols: the real SDKs (twilio-python, python-telegram-bot)
and plain aiohttp work against them unchanged, and their failures surface as the SDKs'
real exceptions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiohttp
import pytest
import telegram
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.request import HTTPXRequest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.fakes import whatsapp as wa
from tests.fakes.signing import meta_signature, twilio_body_sha256, twilio_signature
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram, text_update
from tests.fakes.twilio import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    FakeTwilio,
    inbound_params,
    sms_segments,
)
from tests.fakes.whatsapp import TEST_PHONE_NUMBER_ID, FakeWhatsApp

TO = "+33612345678"
REUNION = "+262692123456"
SENDER = "+33757000100"


@pytest.fixture
async def twilio_fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as fake:
        yield fake
        assert fake.unexpected == []


@pytest.fixture
async def telegram_fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake
        assert fake.unexpected == []


@pytest.fixture
async def whatsapp_fake() -> AsyncIterator[FakeWhatsApp]:
    async with FakeWhatsApp() as fake:
        yield fake
        assert fake.unexpected == []


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def twilio_client(fake: FakeTwilio, **kwargs: object) -> Client:
    client = Client(fake.account_sid, fake.auth_token, **kwargs)  # type: ignore[arg-type]
    client.api.base_url = fake.url
    return client


def make_bot(fake: FakeTelegram, token: str = TEST_TOKEN, **request_kwargs: float) -> Bot:
    return Bot(
        token,
        base_url=f"{fake.url}/bot",
        base_file_url=f"{fake.url}/file/bot",
        request=HTTPXRequest(**request_kwargs) if request_kwargs else None,
    )


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# ---------------------------------------------------------------------- base behaviour


async def test_unknown_route_is_404_and_unexpected(http: aiohttp.ClientSession) -> None:
    async with FakeTwilio() as fake:
        async with http.get(f"{fake.url}/nope?x=1") as response:
            assert response.status == 404
        assert [r.path for r in fake.unexpected] == ["/nope"]
        assert fake.requests[0].query == {"x": "1"}
        assert fake.requests[0].status == 404


async def test_unknown_failure_kind_is_refused() -> None:
    fake = FakeTwilio()
    with pytest.raises(ValueError, match="blocked"):
        fake.fail_next("blocked")
    with pytest.raises(RuntimeError):
        _ = fake.url


async def test_failures_consumed_in_order_and_by_recipient(
    twilio_fake: FakeTwilio, http: aiohttp.ClientSession
) -> None:
    twilio_fake.fail_next("landline", to=REUNION)
    twilio_fake.fail_next("500", count=2)
    url = f"{twilio_fake.url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    headers = basic_auth(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    statuses = []
    for to in (TO, REUNION, TO, TO):
        form = {"To": to, "From": SENDER, "Body": "Bonjour"}
        async with http.post(url, data=form, headers=headers) as response:
            statuses.append((response.status, (await response.json()).get("code")))
    assert statuses == [(500, 20500), (400, 21614), (500, 20500), (201, None)]
    assert twilio_fake.pending_failures == []
    assert [m["to"] for m in twilio_fake.sent] == [TO]


# ---------------------------------------------------------------------- Twilio


async def test_twilio_sync_client_creates_message(twilio_fake: FakeTwilio) -> None:
    client = twilio_client(twilio_fake)
    message = await asyncio.to_thread(
        client.messages.create,
        to=TO,
        from_=SENDER,
        body="Votre rendez-vous est confirmé pour mardi à 10 h.",
        status_callback="https://relais.example.fr/webhooks/twilio/status",
    )
    assert message.sid is not None and message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert message.num_segments == "1"
    assert message.to == TO and message.from_ == SENDER
    assert isinstance(message.date_created, datetime)
    assert message.error_code is None
    [sent] = twilio_fake.sent
    assert sent["id"] == message.sid
    assert sent["text"] == "Votre rendez-vous est confirmé pour mardi à 10 h."
    assert sent["raw"]["StatusCallback"] == "https://relais.example.fr/webhooks/twilio/status"
    [request] = twilio_fake.requests_to("messages.create")
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_twilio_unsubscribed_raises_rest_exception(twilio_fake: FakeTwilio) -> None:
    twilio_fake.fail_next("unsubscribed")
    client = twilio_client(twilio_fake)
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.messages.create, to=TO, from_=SENDER, body="Bonjour")
    assert caught.value.code == 21610
    assert caught.value.status == 400
    assert "unsubscribed recipient" in caught.value.msg
    assert twilio_fake.sent == []


async def test_twilio_wrong_token_is_20003(twilio_fake: FakeTwilio) -> None:
    client = Client(TEST_ACCOUNT_SID, "wrong-token")
    client.api.base_url = twilio_fake.url
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.messages.create, to=TO, from_=SENDER, body="Bonjour")
    assert (caught.value.status, caught.value.code) == (401, 20003)


@pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")
async def test_twilio_async_client_and_messaging_service(twilio_fake: FakeTwilio) -> None:
    http_client = AsyncTwilioHttpClient(timeout=5)
    try:
        client = twilio_client(twilio_fake, http_client=http_client)
        message = await client.messages.create_async(
            to=f"whatsapp:{TO}",
            messaging_service_sid="MG" + "1" * 32,
            body="Bonjour ! Voici les pièces à apporter.",
            media_url=["https://relais.example.fr/media/liste.pdf"],
        )
        assert message.status == "accepted"
        assert message.from_ is None
        assert message.sid is not None and message.sid.startswith("MM")
        twilio_fake.fail_next("window")
        with pytest.raises(TwilioRestException) as caught:
            await client.messages.create_async(
                to=f"whatsapp:{TO}", from_=f"whatsapp:{SENDER}", body="Relance"
            )
        assert caught.value.code == 63016
        fetched = await client.messages(message.sid).fetch_async()
        assert fetched.sid == message.sid
    finally:
        await http_client.close()
    assert twilio_fake.sent[0]["media"] == ["https://relais.example.fr/media/liste.pdf"]


async def test_twilio_malformed_send_is_unexpected(http: aiohttp.ClientSession) -> None:
    async with FakeTwilio() as fake:
        url = f"{fake.url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
        headers = basic_auth(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        cases = [
            ({"From": SENDER, "Body": "x"}, 21604),
            ({"To": TO, "Body": "x"}, 21603),
            ({"To": TO, "From": SENDER}, 21602),
            ({"To": TO, "From": SENDER, "Body": "x" * 1601}, 21617),
            ({"To": TO, "From": f"whatsapp:{SENDER}", "Body": "x"}, 21910),
        ]
        for form, code in cases:
            async with http.post(url, data=form, headers=headers) as response:
                assert response.status == 400
                assert (await response.json())["code"] == code
        assert len(fake.unexpected) == len(cases)


async def test_twilio_segments() -> None:
    assert sms_segments("Bonjour, à demain !") == 1
    assert sms_segments("a" * 160) == 1
    assert sms_segments("a" * 161) == 2
    assert sms_segments("€" * 80) == 1  # extension characters count 2
    assert sms_segments("€" * 81) == 2
    assert sms_segments("Reçu") == 1  # ç is not GSM-7: UCS-2
    assert sms_segments("ç" * 71) == 2
    assert sms_segments("😀" * 35) == 1  # 70 UTF-16 units


async def test_twilio_timeout_reset_and_delivered_anyway(
    twilio_fake: FakeTwilio, http: aiohttp.ClientSession
) -> None:
    url = f"{twilio_fake.url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    headers = basic_auth(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    form = {"To": TO, "From": SENDER, "Body": "Bonjour"}
    short = aiohttp.ClientTimeout(total=0.3)
    twilio_fake.fail_next("timeout", delay=5)
    with pytest.raises(TimeoutError):
        async with http.post(url, data=form, headers=headers, timeout=short):
            pass
    twilio_fake.fail_next("reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.post(url, data=form, headers=headers):
            pass
    assert twilio_fake.sent == []
    twilio_fake.fail_next("timeout", delay=5, deliver=True)
    with pytest.raises(TimeoutError):
        async with http.post(url, data=form, headers=headers, timeout=short):
            pass
    twilio_fake.fail_next("reset", deliver=True)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.post(url, data=form, headers=headers):
            pass
    assert len(twilio_fake.sent) == 2  # the provider sent both: a blind retry duplicates


async def test_twilio_slow_answer_reaches_a_patient_client(
    twilio_fake: FakeTwilio, http: aiohttp.ClientSession
) -> None:
    url = f"{twilio_fake.url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    headers = basic_auth(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    twilio_fake.fail_next("timeout", delay=0.2, deliver=True)
    form = {"To": TO, "From": SENDER, "Body": "Bonjour"}
    async with http.post(url, data=form, headers=headers) as response:
        assert response.status == 201
        assert (await response.json())["sid"] == twilio_fake.sent[0]["id"]


async def test_rate_ceiling_counts_sends_only(http: aiohttp.ClientSession) -> None:
    async with FakeWhatsApp(rate_limit=1) as fake:
        media_id = fake.add_media(b"x", "image/png")
        for _ in range(3):
            async with http.get(f"{fake.url}/v21.0/{media_id}", headers=bearer()) as r:
                assert r.status == 200
        async with http.post(wa_url(fake), json=text_payload(), headers=bearer()) as r:
            assert r.status == 200
        assert fake.throttled == 0


async def test_twilio_rate_ceiling(http: aiohttp.ClientSession) -> None:
    async with FakeTwilio(rate_limit=2) as fake:
        url = f"{fake.url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
        headers = basic_auth(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        answers = []
        for index in range(5):
            form = {"To": TO, "From": SENDER, "Body": f"Message {index}"}
            async with http.post(url, data=form, headers=headers) as response:
                answers.append((response.status, (await response.json()).get("code")))
        assert answers == [(201, None)] * 2 + [(429, 20429)] * 3
        assert fake.throttled == 3
        assert len(fake.sent) == 2


async def test_twilio_429_and_retry_after(
    twilio_fake: FakeTwilio, http: aiohttp.ClientSession
) -> None:
    url = f"{twilio_fake.url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    headers = basic_auth(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    twilio_fake.fail_next("429", retry_after=3)
    twilio_fake.fail_next("429")
    for expected in ("3", None):
        form = {"To": TO, "From": SENDER, "Body": "Bonjour"}
        async with http.post(url, data=form, headers=headers) as response:
            assert response.status == 429
            assert response.headers.get("Retry-After") == expected
            assert (await response.json())["code"] == 20429


async def test_twilio_media_requires_auth_and_can_redirect(http: aiohttp.ClientSession) -> None:
    for redirect in (False, True):
        async with FakeTwilio(redirect_media=redirect) as fake:
            url = fake.add_media(b"\xff\xd8jpeg", "image/jpeg")
            async with http.get(url) as response:
                assert response.status == 401
                assert (await response.json())["code"] == 20003
            auth = basic_auth(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
            async with http.get(url, headers=auth) as response:
                assert response.status == 200
                assert response.content_type == "image/jpeg"
                assert await response.read() == b"\xff\xd8jpeg"
                assert len(response.history) == (1 if redirect else 0)
            async with http.get(f"{url}.json", headers=auth) as response:
                assert (await response.json())["content_type"] == "image/jpeg"
            assert fake.unexpected == []


async def test_twilio_status_callback_params_and_post(twilio_fake: FakeTwilio) -> None:
    received: list[dict[str, str]] = []

    async def status_hook(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = str(request.url)
        validator = RequestValidator(TEST_AUTH_TOKEN)
        assert validator.validate(url, form, request.headers["X-Twilio-Signature"])
        received.append(form)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/status", status_hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/status"
    try:
        twilio_fake.fail_next("error", code=30003, deferred=True)
        client = twilio_client(twilio_fake)
        message = await asyncio.to_thread(
            client.messages.create, to=TO, from_=SENDER, body="Bonjour", status_callback=hook_url
        )
        assert message.status == "queued"  # deferred: the failure comes later
        params = twilio_fake.status_callback_params(message.sid, "undelivered")
        assert params["ErrorCode"] == "30003"
        assert params["MessageStatus"] == params["SmsStatus"] == "undelivered"
        assert params["MessageSid"] == message.sid and params["To"] == TO
        assert await twilio_fake.send_status_callback(message.sid, "delivered") == 204
    finally:
        await runner.cleanup()
    assert received[0]["MessageStatus"] == "delivered"
    assert "ErrorCode" not in received[0]


def test_twilio_inbound_params_shape() -> None:
    params = inbound_params(f"whatsapp:{TO}", "Bonjour", to=f"whatsapp:{SENDER}")
    assert params["WaId"] == "33612345678"
    assert params["SmsStatus"] == "received"
    assert params["MessageSid"] == params["SmsSid"] and params["MessageSid"].startswith("SM")


# ---------------------------------------------------------------------- Telegram


async def test_telegram_initialize_and_send_inline_keyboard(telegram_fake: FakeTelegram) -> None:
    keyboard = InlineKeyboardMarkup(
        [
            [InlineKeyboardButton("Prendre rendez-vous", callback_data="rdv")],
            [InlineKeyboardButton("Parler à un conseiller", callback_data="conseiller")],
        ]
    )
    async with make_bot(telegram_fake) as bot:
        assert bot.username == "relais_test_bot"
        message = await bot.send_message(
            chat_id=612345678, text="Que souhaitez-vous faire ?", reply_markup=keyboard
        )
    assert message.chat.id == 612345678
    assert message.text == "Que souhaitez-vous faire ?"
    assert message.reply_markup == keyboard
    [sent] = telegram_fake.sent
    assert sent["to"] == "612345678" and sent["id"] == str(message.message_id)
    assert sent["choices"] == [
        {"id": "rdv", "title": "Prendre rendez-vous"},
        {"id": "conseiller", "title": "Parler à un conseiller"},
    ]
    assert sent["raw"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "rdv"
    assert [r.route for r in telegram_fake.requests] == ["getMe", "sendMessage"]


async def test_telegram_blocked_deactivated_chat_not_found(telegram_fake: FakeTelegram) -> None:
    telegram_fake.fail_next("blocked", to="111")
    telegram_fake.fail_next("deactivated")
    telegram_fake.fail_next("chat_not_found")
    async with make_bot(telegram_fake) as bot:
        with pytest.raises(telegram.error.Forbidden, match="bot was blocked by the user"):
            await bot.send_message(chat_id=111, text="Bonjour")
        with pytest.raises(telegram.error.Forbidden, match="user is deactivated"):
            await bot.send_message(chat_id=222, text="Bonjour")
        with pytest.raises(telegram.error.BadRequest, match="(?i)chat not found"):
            await bot.send_message(chat_id=333, text="Bonjour")
    assert telegram_fake.sent == []


async def test_telegram_429_raises_retry_after(
    telegram_fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    telegram_fake.fail_next("429", retry_after=7)
    async with make_bot(telegram_fake) as bot:
        with pytest.raises(telegram.error.RetryAfter) as caught:
            await bot.send_message(chat_id=612345678, text="Bonjour")
    assert caught.value.retry_after == timedelta(seconds=7)
    [request] = telegram_fake.requests_to("sendMessage")
    assert request.status == 429


async def test_telegram_500_timeout_reset(telegram_fake: FakeTelegram) -> None:
    telegram_fake.fail_next("500")
    telegram_fake.fail_next("timeout", delay=5)
    telegram_fake.fail_next("reset")
    async with make_bot(telegram_fake, read_timeout=0.3) as bot:
        with pytest.raises(telegram.error.NetworkError, match="Internal Server Error"):
            await bot.send_message(chat_id=1, text="a")
        with pytest.raises(telegram.error.TimedOut):
            await bot.send_message(chat_id=1, text="b")
        with pytest.raises(telegram.error.NetworkError):
            await bot.send_message(chat_id=1, text="c")
        await bot.send_message(chat_id=1, text="d")
    assert [m["text"] for m in telegram_fake.sent] == ["d"]


async def test_telegram_wrong_and_malformed_token(http: aiohttp.ClientSession) -> None:
    async with FakeTelegram() as fake:
        bot = make_bot(fake, token="123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew99")
        try:
            with pytest.raises(telegram.error.InvalidToken):
                await bot.initialize()
        finally:
            await bot.shutdown()  # initialize() opened the HTTP clients before failing
        assert fake.unexpected == []
        async with http.post(f"{fake.url}/botnot-a-token/getMe") as response:
            assert response.status == 404
            assert await response.json() == {
                "ok": False,
                "error_code": 404,
                "description": "Not Found",
            }
        assert len(fake.unexpected) == 1


async def test_telegram_webhook_lifecycle_and_push(telegram_fake: FakeTelegram) -> None:
    received: list[tuple[str | None, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
        received.append((secret, await request.json()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/tg", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/tg"
    update = text_update(612345678, "Bonjour", update_id=telegram_fake.next_update_id())
    try:
        async with make_bot(telegram_fake) as bot:
            assert await bot.set_webhook(
                hook_url, secret_token="s3cr3t_Token-1", allowed_updates=["message"]
            )
            info = await bot.get_webhook_info()
            assert info.url == hook_url and info.allowed_updates == ("message",)
            assert telegram_fake.webhook is not None
            assert telegram_fake.webhook["secret_token"] == "s3cr3t_Token-1"
            assert await telegram_fake.push_update(update) == 200
            callback = {"update_id": 2, "callback_query": {"id": "1"}}
            assert await telegram_fake.push_update(callback) is None  # not allowed
            with pytest.raises(telegram.error.Conflict):
                await bot.get_updates()
            assert await bot.delete_webhook()
            assert (await bot.get_webhook_info()).url == ""
    finally:
        await runner.cleanup()
    assert received == [("s3cr3t_Token-1", update)]


async def test_telegram_get_file_and_download(telegram_fake: FakeTelegram) -> None:
    file_id = telegram_fake.add_file(b"OggS voice", file_path="voice/file_3.oga")
    async with make_bot(telegram_fake) as bot:
        tg_file = await bot.get_file(file_id)
        assert tg_file.file_path == f"{telegram_fake.url}/file/bot{TEST_TOKEN}/voice/file_3.oga"
        assert bytes(await tg_file.download_as_bytearray()) == b"OggS voice"
        with pytest.raises(telegram.error.BadRequest, match="(?i)invalid file_id"):
            await bot.get_file("unknown")


async def test_telegram_send_media_by_upload_and_url(
    telegram_fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    async with make_bot(telegram_fake) as bot:
        photo = await bot.send_photo(
            chat_id=612345678, photo=b"\x89PNG fake", caption="Votre attestation"
        )
        document = await bot.send_document(
            chat_id=612345678, document="https://relais.example.fr/media/liste.pdf"
        )
        voice = await bot.send_voice(chat_id=612345678, voice=b"OggS", duration=3)
    assert photo.caption == "Votre attestation" and photo.photo
    assert document.document is not None and document.document.file_name == "liste.pdf"
    assert voice.voice is not None and voice.voice.duration == timedelta(seconds=3)
    kinds = [(m["kind"], m["media"][0].split(":")[0]) for m in telegram_fake.sent]
    assert kinds == [("photo", "upload"), ("document", "https"), ("voice", "upload")]
    assert telegram_fake.sent[0]["raw"]["photo"]["size"] == len(b"\x89PNG fake")


async def test_telegram_answer_callback_and_chat_action(telegram_fake: FakeTelegram) -> None:
    async with make_bot(telegram_fake) as bot:
        assert await bot.answer_callback_query("4382bfdwdsb323b2d9", text="C'est noté")
        assert await bot.send_chat_action(chat_id=612345678, action="typing")
    assert telegram_fake.callback_answers[0]["callback_query_id"] == "4382bfdwdsb323b2d9"
    assert telegram_fake.chat_actions[0]["action"] == "typing"


async def test_telegram_bad_requests_are_unexpected(http: aiohttp.ClientSession) -> None:
    async with FakeTelegram() as fake:
        bot = make_bot(fake)
        async with bot:
            with pytest.raises(telegram.error.BadRequest, match="(?i)button_data_invalid"):
                keyboard = InlineKeyboardMarkup(
                    [[InlineKeyboardButton("x", callback_data="d" * 65)]]
                )
                await bot.send_message(chat_id=1, text="x", reply_markup=keyboard)
            with pytest.raises(telegram.error.BadRequest, match="(?i)message is too long"):
                await bot.send_message(chat_id=1, text="x" * 4097)
        async with http.post(f"{fake.url}/bot{TEST_TOKEN}/sendMessage", json={"chat_id": 1}) as r:
            assert r.status == 400
        async with http.post(f"{fake.url}/bot{TEST_TOKEN}/sendPigeon", json={}) as r:
            assert r.status == 404
        assert len(fake.unexpected) == 4


async def test_telegram_rate_ceiling(http: aiohttp.ClientSession) -> None:
    async with FakeTelegram(rate_limit=1) as fake:
        answers = []
        for index in range(3):
            body = {"chat_id": 5, "text": f"n°{index}"}
            async with http.post(f"{fake.url}/bot{TEST_TOKEN}/sendMessage", json=body) as r:
                answers.append((r.status, (await r.json()).get("parameters")))
        assert answers == [(200, None), (429, {"retry_after": 1}), (429, {"retry_after": 1})]
        assert fake.throttled == 2


# ---------------------------------------------------------------------- WhatsApp


def wa_url(fake: FakeWhatsApp, phone_number_id: str = TEST_PHONE_NUMBER_ID) -> str:
    return f"{fake.url}/v21.0/{phone_number_id}/messages"


def bearer(token: str = wa.TEST_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def text_payload(to: str = "33612345678", body: str = "Bonjour") -> dict:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body, "preview_url": False},
    }


def buttons_payload(*titles: str) -> dict:
    buttons = [
        {"type": "reply", "reply": {"id": f"b{i}", "title": title}}
        for i, title in enumerate(titles)
    ]
    return {
        "messaging_product": "whatsapp",
        "to": "33612345678",
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Que souhaitez-vous faire ?"},
            "action": {"buttons": buttons},
        },
    }


def list_payload(rows: int, *, title: str = "Ligne", description: str = "Détail") -> dict:
    return {
        "messaging_product": "whatsapp",
        "to": "262692123456",
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": "Choisissez une démarche"},
            "action": {
                "button": "Voir les choix",
                "sections": [
                    {
                        "title": "Démarches",
                        "rows": [
                            {"id": f"r{i}", "title": f"{title} {i}", "description": description}
                            for i in range(rows)
                        ],
                    }
                ],
            },
        },
    }


async def test_whatsapp_send_text_success(
    whatsapp_fake: FakeWhatsApp, http: aiohttp.ClientSession
) -> None:
    async with http.post(wa_url(whatsapp_fake), json=text_payload(), headers=bearer()) as r:
        assert r.status == 200
        body = await r.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "33612345678", "wa_id": "33612345678"}]
    assert body["messages"][0]["id"].startswith("wamid.")
    [sent] = whatsapp_fake.sent
    assert (sent["id"], sent["to"], sent["kind"], sent["text"]) == (
        body["messages"][0]["id"],
        "33612345678",
        "text",
        "Bonjour",
    )


async def test_whatsapp_errors_in_meta_shape(
    whatsapp_fake: FakeWhatsApp, http: aiohttp.ClientSession
) -> None:
    expected = {
        "window": (400, 131047),
        "undeliverable": (400, 131026),
        "pair_rate": (400, 131056),
        "throughput": (400, 130429),
        "500": (500, 131000),
        "auth": (401, 190),
        "429": (429, 4),
    }
    for kind in expected:
        whatsapp_fake.fail_next(kind)
    for kind, (status, code) in expected.items():
        async with http.post(wa_url(whatsapp_fake), json=text_payload(), headers=bearer()) as r:
            error = (await r.json())["error"]
            assert (r.status, error["code"]) == (status, code), kind
            assert error["type"] == "OAuthException" and error["fbtrace_id"]
    whatsapp_fake.fail_next("window")
    async with http.post(wa_url(whatsapp_fake), json=text_payload(), headers=bearer()) as r:
        error = (await r.json())["error"]
    assert error["message"] == "(#131047) Re-engagement message"
    assert "24 hours" in error["error_data"]["details"]
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert whatsapp_fake.sent == []


async def test_whatsapp_deferred_window_becomes_failed_status(
    whatsapp_fake: FakeWhatsApp, http: aiohttp.ClientSession
) -> None:
    whatsapp_fake.fail_next("window", deferred=True)
    async with http.post(wa_url(whatsapp_fake), json=text_payload(), headers=bearer()) as r:
        assert r.status == 200
        wamid = (await r.json())["messages"][0]["id"]
    sent = whatsapp_fake.sent[0]
    assert sent["error"] is not None and sent["error"]["code"] == 131047
    webhook = wa.status(wamid, "failed", errors=[sent["error"]])
    entry = webhook["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert entry["status"] == "failed" and entry["errors"][0]["code"] == 131047


async def test_whatsapp_auth_and_unknown_number(http: aiohttp.ClientSession) -> None:
    async with FakeWhatsApp() as fake:
        async with http.post(wa_url(fake), json=text_payload(), headers=bearer("bad")) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == 190
        async with http.post(wa_url(fake), json=text_payload()) as r:
            assert r.status == 401
        assert fake.unexpected == []
        async with http.post(wa_url(fake, "999"), json=text_payload(), headers=bearer()) as r:
            assert r.status == 400
            assert (await r.json())["error"]["type"] == "GraphMethodException"
        assert len(fake.unexpected) == 1


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (buttons_payload("Oui", "Non", "Peut-être", "Jamais"), "Buttons count"),
        (buttons_payload("Prendre un rendez-vous vite"), "Button title length"),
        (buttons_payload("Oui", "Oui"), "not unique"),
        (list_payload(11), "Total row count"),
        (list_payload(3, title="Une démarche bien trop longue"), "Row title length"),
        (list_payload(2, description="d" * 73), "Row description length"),
        ({**text_payload(), "messaging_product": "sms"}, "messaging_product"),
        ({**text_payload(), "text": {"body": ""}}, "Text body length"),
        (
            {
                "messaging_product": "whatsapp",
                "to": "33612345678",
                "type": "image",
                "image": {"id": "1", "link": "https://x"},
            },
            "exactly one of id or link",
        ),
        (
            {
                "messaging_product": "whatsapp",
                "to": "33612345678",
                "type": "template",
                "template": {"name": "rappel_rdv"},
            },
            "language",
        ),
    ],
)
async def test_whatsapp_invalid_payloads_are_400_code_100_and_unexpected(
    http: aiohttp.ClientSession, payload: dict, detail: str
) -> None:
    async with FakeWhatsApp() as fake:
        async with http.post(wa_url(fake), json=payload, headers=bearer()) as r:
            assert r.status == 400
            error = (await r.json())["error"]
        assert error["code"] == 100
        assert detail in error["error_data"]["details"]
        assert len(fake.unexpected) == 1 and fake.sent == []


async def test_whatsapp_valid_interactive_template_media(
    whatsapp_fake: FakeWhatsApp, http: aiohttp.ClientSession
) -> None:
    template = {
        "messaging_product": "whatsapp",
        "to": "33612345678",
        "type": "template",
        "template": {"name": "rappel_rdv", "language": {"code": "fr"}, "components": []},
    }
    image = {
        "messaging_product": "whatsapp",
        "to": "33612345678",
        "type": "image",
        "image": {"link": "https://relais.example.fr/media/plan.jpg", "caption": "Le plan"},
    }
    for payload in (buttons_payload("Oui", "Non", "Plus tard"), list_payload(10), template, image):
        async with http.post(wa_url(whatsapp_fake), json=payload, headers=bearer()) as r:
            assert r.status == 200, await r.text()
    kinds = [(m["kind"], len(m["choices"])) for m in whatsapp_fake.sent]
    assert kinds == [("interactive", 3), ("interactive", 10), ("template", 0), ("image", 0)]
    assert whatsapp_fake.sent[3]["media"] == ["https://relais.example.fr/media/plan.jpg"]


async def test_whatsapp_media_download_and_read_receipt(
    whatsapp_fake: FakeWhatsApp, http: aiohttp.ClientSession
) -> None:
    media_id = whatsapp_fake.add_media(b"%PDF-1.4", "application/pdf")
    async with http.get(f"{whatsapp_fake.url}/v21.0/{media_id}", headers=bearer()) as r:
        info = await r.json()
    assert info["url"] == f"{whatsapp_fake.url}/media-download/{media_id}"
    assert info["mime_type"] == "application/pdf" and info["file_size"] == 8
    async with http.get(info["url"]) as r:
        assert r.status == 401
    async with http.get(info["url"], headers=bearer()) as r:
        assert await r.read() == b"%PDF-1.4"
    receipt = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}
    async with http.post(wa_url(whatsapp_fake), json=receipt, headers=bearer()) as r:
        assert await r.json() == {"success": True}
    assert whatsapp_fake.read_receipts == [receipt]


async def test_whatsapp_media_upload(
    whatsapp_fake: FakeWhatsApp, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", "image/png")
    form.add_field("file", b"\x89PNG", filename="plan.png", content_type="image/png")
    url = f"{whatsapp_fake.url}/v21.0/{TEST_PHONE_NUMBER_ID}/media"
    async with http.post(url, data=form, headers=bearer()) as r:
        media_id = (await r.json())["id"]
    assert whatsapp_fake.media[media_id] == (b"\x89PNG", "image/png")


async def test_whatsapp_rate_ceiling_is_130429(http: aiohttp.ClientSession) -> None:
    async with FakeWhatsApp(rate_limit=3) as fake:
        statuses = []
        for _ in range(5):
            async with http.post(wa_url(fake), json=text_payload(), headers=bearer()) as r:
                body = await r.json()
                statuses.append((r.status, body.get("error", {}).get("code")))
        assert statuses == [(200, None)] * 3 + [(400, 130429)] * 2
        assert fake.throttled == 2


async def test_whatsapp_post_webhook_signed_on_raw_bytes() -> None:
    received: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-Hub-Signature-256"]))
        return web.Response()

    app = web.Application()
    app.router.add_post("/wa", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    payload = wa.inbound_text(REUNION, "Bonjour, j'ai reçu un SMS étrange", id="wamid.A")
    try:
        async with FakeWhatsApp() as fake:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/wa"
            assert await fake.post_webhook(url, payload, "app-secret") == 200
    finally:
        await runner.cleanup()
    [(raw, signature)] = received
    assert b"\\u00e7" in raw and b"\xc3" not in raw  # escaped like Meta, lowercase hex
    assert signature == meta_signature("app-secret", raw) == wa.sign(raw, "app-secret")
    assert json.loads(raw) == payload
    reencoded = json.dumps(json.loads(raw), ensure_ascii=False).encode()
    assert meta_signature("app-secret", reencoded) != signature


def test_whatsapp_webhook_builders() -> None:
    text = wa.inbound_text("+33612345678", "Bonjour", id="wamid.1", timestamp=1749416383)
    value = text["entry"][0]["changes"][0]["value"]
    assert value["messages"][0] == {
        "from": "33612345678",
        "id": "wamid.1",
        "timestamp": "1749416383",
        "type": "text",
        "text": {"body": "Bonjour"},
    }
    assert value["contacts"][0]["wa_id"] == "33612345678"
    reply = wa.inbound_button_reply("33612345678", "oui", "Oui", context_id="wamid.0")
    message = reply["entry"][0]["changes"][0]["value"]["messages"][0]
    assert message["interactive"]["button_reply"] == {"id": "oui", "title": "Oui"}
    assert message["context"]["id"] == "wamid.0"
    row = wa.inbound_list_reply("33612345678", "caf", "CAF", "Allocations")
    message = row["entry"][0]["changes"][0]["value"]["messages"][0]
    assert message["interactive"]["list_reply"]["description"] == "Allocations"
    image = wa.inbound_image("33612345678", "1234", caption="Mon courrier")
    assert image["entry"][0]["changes"][0]["value"]["messages"][0]["image"]["id"] == "1234"


# ---------------------------------------------------------------------- signing


def test_twilio_signature_matches_request_validator() -> None:
    url = "https://relais.example.fr/webhooks/twilio/sms?channel=sms"
    params = inbound_params(TO, "Bonjour, c'est Hélène : ça marche ?")
    validator = RequestValidator(TEST_AUTH_TOKEN)
    signature = twilio_signature(TEST_AUTH_TOKEN, url, params)
    assert signature == validator.compute_signature(url, params)
    assert validator.validate(url, params, signature)
    assert not validator.validate(url, {**params, "Body": "Bonjour"}, signature)
    # Twilio signs with or without the default port; the validator accepts both.
    with_port = "https://relais.example.fr:443/webhooks/twilio/sms?channel=sms"
    assert validator.validate(url, params, twilio_signature(TEST_AUTH_TOKEN, with_port, params))


def test_twilio_signature_repeated_params_and_json_body() -> None:
    url = "https://relais.example.fr/hook"
    pairs = [("MediaUrl", "https://b"), ("Body", "x"), ("MediaUrl", "https://a")]
    mapping = {"Body": "x", "MediaUrl": ["https://a", "https://b"]}
    assert twilio_signature("t", url, pairs) == twilio_signature("t", url, mapping)
    body = b'{"MessageSid":"SM1"}'
    signed_url = f"{url}?bodySHA256={twilio_body_sha256(body)}"
    validator = RequestValidator("t")
    assert validator.validate(signed_url, body.decode(), twilio_signature("t", signed_url))


def test_twilio_sha256_signature_when_supported() -> None:
    validator = RequestValidator(TEST_AUTH_TOKEN)
    url = "https://relais.example.fr/hook"
    params = {"Body": "Bonjour"}
    try:
        expected = validator.compute_signature(url, params, "HMAC_SHA256")
    except TypeError:
        pytest.skip("this twilio-python has no HMAC_SHA256 webhook signatures")
    assert twilio_signature(TEST_AUTH_TOKEN, url, params, algorithm="HMAC_SHA256") == expected


def test_meta_signature() -> None:
    body = wa.encode(wa.inbound_text(TO, "Ça marche", id="wamid.1", timestamp=1))
    expected = hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    assert meta_signature("app-secret", body) == f"sha256={expected}"
