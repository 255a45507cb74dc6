"""The Telegram adapter against the fake Bot API, through the real ``relais serve`` app:
webhook fixtures in, replies out with inline keyboards, provider errors, media links."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import select
from telegram import Update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from bot.channels.telegram import (
    TelegramChannel,
    make_bot,
    parse_update,
    send_error,
    split_text,
)
from bot.core.addresses import parse_address, timezone_for
from bot.core.channel import Failure, SendError
from bot.core.config import load_settings
from bot.core.i18n import Translator, languages
from bot.core.types import Choice, Outbound
from bot.delivery.outbox import OutboxWorker
from bot.domain.media_links import media_link
from bot.flows import MENU as MENU_ITEMS
from bot.storage.models import Address, Contact, MediaItem, Message, Outbox, Ticket
from tests.fakes.signing import TELEGRAM_SECRET_HEADER
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram, callback_update, text_update, user
from tests.helpers.serving import Running, serving

FIXTURES = sorted((Path(__file__).parent / "telegram").glob("*.json"))
SECRET = "relais-Webhook_secret-0123456789"
CHAT = 5829174630


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server
        assert server.unexpected == [], [(r.method, r.path, r.body) for r in server.unexpected]


def telegram(db_url: str, fake: FakeTelegram, **overrides: Any
             ) -> AbstractAsyncContextManager[Running]:
    values: dict[str, Any] = {
        "telegram_token": TEST_TOKEN,
        "telegram_webhook_secret": SECRET,
        "telegram_api_url": f"{fake.url}/bot",
    }
    values.update(overrides)
    return serving(db_url, **values)


async def post(running: Running, body: dict[str, Any] | bytes,
               headers: dict[str, str] | None = None) -> int:
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    sent_headers = {"Content-Type": "application/json", TELEGRAM_SECRET_HEADER: SECRET}
    if headers is not None:
        sent_headers = {"Content-Type": "application/json", **headers}
    async with running.http.post(f"{running.url}/webhooks/telegram", data=raw,
                                 headers=sent_headers) as response:
        await response.read()
        return response.status


async def inbound(running: Running) -> list[dict[str, Any]]:
    """Inbound messages as stored, with their address."""
    async with running.services.sessions() as session:
        rows = await session.execute(
            select(Message, Address).join(Address, Message.address_id == Address.id)
            .where(Message.direction == "in").order_by(Message.id)
        )
        return [
            {"address": address.address, "text": message.body,
             "provider_id": message.provider_id, "choice_id": message.choice_id,
             "media": message.media or [], "contact_id": message.contact_id}
            for message, address in rows.all()
        ]


async def all_rows(running: Running, model: type) -> list[Any]:
    async with running.services.sessions() as session:
        return list((await session.scalars(select(model).order_by(model.id))).all())


async def address(running: Running, external_id: str, channel: str = "telegram") -> Address:
    async with running.services.sessions() as session:
        found = await session.scalar(
            select(Address).where(Address.channel == channel,
                                  Address.external_id == external_id)
        )
    assert found is not None
    return found


# -- the fixtures, one real update per scenario ------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_fixture_is_stored_once_as_expected(db_url: str, fake: FakeTelegram,
                                                  path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    body, expect = case["request"]["body"], case["expect"]
    async with telegram(db_url, fake, workers=False) as running:
        assert await post(running, body) == 200
        stored = await inbound(running)
        outbox = len(await all_rows(running, Outbox))
        assert await post(running, body) == 200  # Telegram resends: a duplicate
        assert await inbound(running) == stored
        assert len(await all_rows(running, Outbox)) == outbox
        contacts = await all_rows(running, Contact)
        addresses = await all_rows(running, Address)

    events = [e for e in expect["events"] if e["kind"] == "message"]
    if expect["outcome"] == "ignored":
        assert stored == [] and contacts == [] and outbox == 0
    else:
        assert expect["outcome"] == "written"
        assert [{k: m[k] for k in ("address", "text", "provider_id", "choice_id", "media")}
                for m in stored] == [
            {**{k: e[k] for k in ("address", "provider_id", "choice_id", "media")},
             "text": e["text"] or ""}
            for e in events
        ]
        assert outbox >= 1  # the person got an answer
        [contact] = contacts
        sender = (body.get("message") or body.get("callback_query"))["from"]
        assert contact.name == sender["first_name"]
        assert contact.language == sender["language_code"]
        phones = [a.address for a in addresses if a.channel == "sms"]
        assert phones == [f"sms:{e['shared_phone']}" for e in events if "shared_phone" in e]
        assert all(a.contact_id == contact.id for a in addresses)
        region = parse_address(phones[0]) if phones else None
        assert contact.timezone == timezone_for(None, region, "Europe/Paris")
    parsed = parse_update(Update.de_json(body, None))
    payloads = [e.get("start_payload") for e in events] or [None]
    assert (parsed.inbound.extra.get("start_payload") if parsed.inbound else None) == payloads[0]
    for call in expect.get("provider_requests", []):
        made = [r.form for r in fake.requests_to(call["method"])]
        assert made, f"{call['method']} was not called"
        assert all(
            {k: str(v) for k, v in call["params"].items()}.items() <= dict(m).items()
            for m in made
        )


# -- webhook authentication and malformed bodies -----------------------------------------


@pytest.mark.parametrize("headers", [{}, {TELEGRAM_SECRET_HEADER: "wrong-secret"},
                                     {TELEGRAM_SECRET_HEADER: SECRET + "x"}],
                         ids=["missing", "wrong", "longer"])
async def test_update_without_the_secret_is_refused_and_changes_nothing(
    db_url: str, fake: FakeTelegram, headers: dict[str, str]
) -> None:
    async with telegram(db_url, fake, workers=False) as running:
        status = await post(running, text_update(CHAT, "bonjour"), headers=headers)
        assert status == 403
        assert await inbound(running) == []
        assert await all_rows(running, Contact) == []


@pytest.mark.parametrize("missing", ["telegram_webhook_secret", "telegram_token"])
async def test_update_is_refused_when_telegram_is_not_configured(
    db_url: str, fake: FakeTelegram, missing: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with telegram(db_url, fake, workers=False, **{missing: None}) as running:
        with caplog.at_level(logging.INFO, logger="relais.channels.telegram"):
            assert await post(running, text_update(CHAT, "bonjour")) == 404
        assert await inbound(running) == []
    refused = [r for r in caplog.records if "telegram update refused" in r.getMessage()]
    assert len(refused) == 1 and f"RELAIS_{missing.upper()}" in refused[0].getMessage()


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"text"', json.dumps({"message": {"text": "x"}}).encode(),
     json.dumps({"update_id": "12", "message": {}}).encode(),
     json.dumps({"update_id": 12, "message": "bonjour"}).encode()],
    ids=["not-json", "array", "string", "no-update-id", "update-id-text", "message-text"],
)
async def test_malformed_update_gets_400(db_url: str, fake: FakeTelegram, body: bytes) -> None:
    async with telegram(db_url, fake, workers=False) as running:
        assert await post(running, body) == 400
        assert await inbound(running) == []


async def test_update_over_one_mebibyte_gets_413(db_url: str, fake: FakeTelegram) -> None:
    big = text_update(CHAT, "x" * (1024 * 1024))
    async with telegram(db_url, fake, workers=False) as running:
        assert await post(running, big) == 413
        assert await inbound(running) == []


# -- end to end: onboarding by /start, a button press, a ticket --------------------------


async def test_start_then_menu_then_a_button_press_opens_a_ticket(
    db_url: str, fake: FakeTelegram
) -> None:
    fr = Translator("fr")
    async with telegram(db_url, fake) as running:
        start = text_update(CHAT, "/start", update_id=9001, from_=user(CHAT, "Aïcha"))
        assert await post(running, start) == 200
        await running.wait_for(lambda: len(fake.sent) >= 1)
        [asked] = await all_rows(running, Outbox)  # welcome and first question: one message
        welcome = fake.sent[0]
        assert welcome["to"] == str(CHAT) and welcome["text"] == asked.body
        assert welcome["choices"] == [{"id": c["id"], "title": c["label"]}
                                      for c in asked.choices or []]
        assert welcome["choices"], "onboarding asks its first question with buttons"

        assert await post(running, text_update(CHAT, "menu", update_id=9002,
                                               message_id=2)) == 200
        await running.wait_for(lambda: len(fake.sent) >= 2)
        menu = fake.sent[1]
        assert [c["id"] for c in menu["choices"]] == [item.id for item in MENU_ITEMS]
        assert [c["title"] for c in menu["choices"]] == [fr(i.label) for i in MENU_ITEMS]
        rows = menu["raw"]["reply_markup"]["inline_keyboard"]
        assert all(len(row) == 1 for row in rows)  # one button per row

        under = {"message_id": int(menu["id"]), "from": fake.bot_user,
                 "chat": {"id": CHAT, "first_name": "Aïcha", "type": "private"},
                 "date": 1749416420, "text": menu["text"],
                 "reply_markup": menu["raw"]["reply_markup"]}
        press = callback_update(CHAT, "human", update_id=9003, query_id="4410001",
                                message=under, from_=user(CHAT, "Aïcha"))
        assert await post(running, press) == 200
        assert [a["callback_query_id"] for a in fake.callback_answers] == ["4410001"]
        [ticket] = await all_rows(running, Ticket)
        assert (ticket.state, ticket.channel, ticket.source) == ("open", "telegram", "menu")
        await running.wait_for(lambda: len(fake.sent) >= 3)
        stored = await inbound(running)

    assert len(fake.sent) == 3  # one message per step
    assert fake.sent[2]["text"] == fr("Thank you. A person from {org} will answer you here.",
                                      org="Relais")
    assert [(m["text"], m["choice_id"], m["provider_id"]) for m in stored] == [
        ("/start", None, "9001"), ("menu", None, "9002"),
        (fr("Talk to a person"), "human", "9003"),
    ]


# -- provider errors at send -------------------------------------------------------------


async def _two_rows_then_drain(running: Running, fake: FakeTelegram) -> OutboxWorker:
    """The person writes twice before anything is sent: two replies wait, in order."""
    assert await post(running, text_update(CHAT, "bonjour", update_id=1, message_id=1)) == 200
    assert await post(running, text_update(CHAT, "AIDE", update_id=2, message_id=2)) == 200
    assert [r.status for r in await all_rows(running, Outbox)] == ["queued", "queued"]
    return running.services.outbox_worker()


@pytest.mark.parametrize("kind", ["blocked", "deactivated"])
async def test_blocked_by_the_person_stops_sending_until_they_write_again(
    db_url: str, fake: FakeTelegram, kind: str
) -> None:
    async with telegram(db_url, fake, workers=False) as running:
        worker = await _two_rows_then_drain(running, fake)
        fake.fail_next(kind, to=str(CHAT))
        assert await worker.drain_once() == 1
        blocked = await address(running, str(CHAT))
        assert blocked.blocked_at is not None and "Forbidden" in (blocked.blocked_reason or "")
        rows = await all_rows(running, Outbox)
        assert [(r.status, r.error_code) for r in rows] == [("failed", "403"), ("cancelled", None)]
        assert await worker.drain_once() == 0  # nothing more is attempted
        assert len(fake.requests_to("sendMessage")) == 1 and fake.sent == []

        again = text_update(CHAT, "menu", update_id=3, message_id=3)
        assert await post(running, again) == 200
        assert (await address(running, str(CHAT))).blocked_at is None
        assert await worker.drain_once() == 1
    assert [m["to"] for m in fake.sent] == [str(CHAT)]


async def test_retry_after_pauses_the_channel_then_sends_once(
    db_url: str, fake: FakeTelegram
) -> None:
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        async with telegram(db_url, fake, workers=False) as running:
            assert await post(running, text_update(CHAT, "bonjour")) == 200
            worker = running.services.outbox_worker()
            fake.fail_next("429", retry_after=2)
            assert await worker.drain_once() == 1
            [row] = await all_rows(running, Outbox)
            assert row.status == "queued" and row.attempts == 0
            assert row.next_attempt_at == datetime.now(UTC) + timedelta(seconds=2)
            clock.shift(timedelta(seconds=1.9))
            assert await worker.drain_once() == 0  # still paused: nothing sent
            assert len(fake.requests_to("sendMessage")) == 1
            clock.shift(timedelta(seconds=0.2))
            assert await worker.drain_once() == 1
            [row] = await all_rows(running, Outbox)
    assert row.status == "sent" and row.provider_id == fake.sent[0]["id"]
    assert len(fake.sent) == 1 and len(fake.requests_to("sendMessage")) == 2


async def test_chat_not_found_is_undeliverable(db_url: str, fake: FakeTelegram) -> None:
    async with telegram(db_url, fake, workers=False) as running:
        assert await post(running, text_update(CHAT, "bonjour")) == 200
        fake.fail_next("chat_not_found")
        assert await running.services.outbox_worker().drain_once() == 1
        [row] = await all_rows(running, Outbox)
        gone = await address(running, str(CHAT))
    assert (row.status, row.error_code) == ("failed", "400")
    assert "chat not found" in (row.error_reason or "").lower()
    assert gone.blocked_at is not None


async def test_server_error_is_retried_then_delivered(db_url: str, fake: FakeTelegram) -> None:
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        async with telegram(db_url, fake, workers=False) as running:
            assert await post(running, text_update(CHAT, "bonjour")) == 200
            worker = running.services.outbox_worker()
            fake.fail_next("500")
            assert await worker.drain_once() == 1
            [row] = await all_rows(running, Outbox)
            assert row.status == "queued" and row.attempts == 1
            clock.shift(timedelta(seconds=3))  # past the first backoff (at most 2 s)
            assert await worker.drain_once() == 1
            [row] = await all_rows(running, Outbox)
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(fake.sent) == 1


async def test_token_refused_at_send_disables_the_channel_and_keeps_the_row(
    db_url: str, fake: FakeTelegram
) -> None:
    async with telegram(db_url, fake, workers=False) as running:
        assert await post(running, text_update(CHAT, "bonjour")) == 200
        assert "telegram" in running.services.registry
        fake.fail_next("auth")
        assert await running.services.outbox_worker().drain_once() == 1
        assert "telegram" not in running.services.registry
        [row] = await all_rows(running, Outbox)
    assert (row.status, row.attempts) == ("queued", 0)
    assert fake.sent == []


@pytest.mark.parametrize("api", ["wrong-token", "unreachable"])
async def test_a_token_refused_at_startup_leaves_telegram_disabled(
    db_url: str, fake: FakeTelegram, api: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = TEST_TOKEN if api == "unreachable" else "654321:ZYX-wrong0token0for0this0bot00001"
    url = "http://127.0.0.1:9/bot" if api == "unreachable" else f"{fake.url}/bot"
    with caplog.at_level(logging.INFO, logger="relais.channels.telegram"):
        async with telegram(db_url, fake, workers=False, telegram_token=token,
                            telegram_api_url=url) as running:
            assert "telegram" not in running.services.registry
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "telegram disabled" in errors[0].getMessage()
    assert token not in caplog.text


# -- media: a citizen's photo, for staff, through a signed link --------------------------


def photo_update(file_id: str, update_id: int = 77) -> dict[str, Any]:
    update = text_update(CHAT, "x", update_id=update_id)
    message = update["message"]
    del message["text"]
    message["photo"] = [
        {"file_id": "AgACAgQAAxkBAAsmall", "file_unique_id": "s1", "width": 90, "height": 67},
        {"file_id": file_id, "file_unique_id": "l1", "width": 1280, "height": 960},
    ]
    message["caption"] = "Le courrier de la CAF"
    return update


async def test_photo_is_served_to_staff_through_a_signed_link(
    db_url: str, fake: FakeTelegram
) -> None:
    content = b"\xff\xd8\xff\xe0JFIF" + bytes(range(256)) * 8
    file_id = fake.add_file(content, file_path="photos/file_12.jpg")
    async with telegram(db_url, fake, workers=False) as running:
        assert await post(running, photo_update(file_id)) == 200
        await running.services.scheduler().run_due()  # the fetch job (bot.domain.media_store)
        [item] = await all_rows(running, MediaItem)
        assert (item.ref, item.content_type) == (file_id, "image/jpeg")
        now = running.services.clock.now()
        async with running.services.sessions() as session, session.begin():
            link = await media_link(session, running.url, item.id, now)
            old = await media_link(session, running.url, item.id, now - timedelta(days=8))
        async with running.http.get(link) as response:
            assert response.status == 200
            assert response.content_type == "image/jpeg"
            assert await response.read() == content
            assert TEST_TOKEN not in str(response.headers)
        forged = link[: link.rindex("sig=") + 4] + "0" * 32
        async with running.http.get(forged) as response:
            assert response.status == 403
        async with running.http.get(old) as response:
            assert response.status == 410
    assert [r.form.get("file_id") for r in fake.requests_to("getFile")] == [file_id]


async def test_a_file_telegram_no_longer_has_is_404_without_the_token(
    db_url: str, fake: FakeTelegram
) -> None:
    async with telegram(db_url, fake, workers=False) as running:
        assert await post(running, photo_update("AgACAgQAAxkBAAgone")) == 200
        await running.services.scheduler().run_due()  # the fetch job (bot.domain.media_store)
        [item] = await all_rows(running, MediaItem)
        async with running.services.sessions() as session, session.begin():
            link = await media_link(session, running.url, item.id,
                                    running.services.clock.now())
        async with running.http.get(link) as response:
            body = await response.text()
            assert response.status == 404
    assert TEST_TOKEN not in body and "plus disponible" in body


# -- sending, without a database ---------------------------------------------------------


def channel_for(fake: FakeTelegram) -> TelegramChannel:
    settings = load_settings(env_file=None, telegram_token=TEST_TOKEN,
                             telegram_api_url=f"{fake.url}/bot")
    return TelegramChannel(bot=make_bot(settings), token=TEST_TOKEN)


async def test_long_text_is_split_with_the_keyboard_on_the_last_part(
    fake: FakeTelegram
) -> None:
    paragraph = "Pour votre dossier CAF, préparez votre avis d'imposition. " * 20
    text = "\n\n".join([paragraph.strip()] * 8)  # about 9,300 characters
    choices = (Choice("yes", "Oui"), Choice("no", "Non"))
    channel = channel_for(fake)
    try:
        result = await channel.send(Outbound(1, "telegram", str(CHAT), text, choices))
    finally:
        await channel.close()
    assert len(fake.sent) == 3 and result.provider_id == fake.sent[0]["id"]
    assert all(len(m["text"] or "") <= 4096 for m in fake.sent)
    assert [m["choices"] for m in fake.sent] == [[], [], [
        {"id": "yes", "title": "Oui"}, {"id": "no", "title": "Non"}]]
    assert "\n\n".join(m["text"] or "" for m in fake.sent) == text


async def test_a_choice_id_over_64_bytes_fails_the_row_without_a_call(
    fake: FakeTelegram
) -> None:
    channel = channel_for(fake)
    try:
        with pytest.raises(SendError) as caught:
            await channel.send(Outbound(1, "telegram", str(CHAT), "Choisissez",
                                        (Choice("é" * 33, "Trop long"),)))
    finally:
        await channel.close()
    assert caught.value.failure is Failure.FAILED
    assert fake.requests_to("sendMessage") == []


def test_every_choice_id_fits_telegram_callback_data() -> None:
    ids = [item.id for item in MENU_ITEMS] + list(languages()) + ["yes", "no"]
    assert all(1 <= len(choice_id.encode("utf-8")) <= 64 for choice_id in ids)


def test_split_counts_emoji_as_two_units() -> None:
    text = " ".join(["🙂🙂🙂"] * 1000)  # 3,999 characters, 6,999 UTF-16 units
    parts = split_text(text)
    assert len(parts) == 2
    assert all(len(p.encode("utf-16-le")) // 2 <= 4096 for p in parts)
    assert " ".join(parts) == text


@pytest.mark.parametrize(
    ("error", "failure", "retry_after"),
    [
        (Forbidden("Forbidden: bot was blocked by the user"), Failure.STOPPED, None),
        (Forbidden("Forbidden: user is deactivated"), Failure.STOPPED, None),
        (RetryAfter(timedelta(seconds=2)), Failure.THROTTLED, 2.0),
        (RetryAfter(7), Failure.THROTTLED, 7.0),
        (BadRequest("Chat not found"), Failure.UNDELIVERABLE, None),
        (BadRequest("Bad Request: message text is empty"), Failure.FAILED, None),
        (ChatMigrated(-1001234), Failure.UNDELIVERABLE, None),
        (InvalidToken("The token `123456:ABC` was rejected"), Failure.AUTH, None),
        (TimedOut(), Failure.RETRYABLE, None),
        (NetworkError("httpx.ConnectError: All connection attempts failed"),
         Failure.RETRYABLE, None),
        (TelegramError("something new"), Failure.FAILED, None),
    ],
)
def test_every_ptb_error_maps_onto_the_closed_set(
    error: TelegramError, failure: Failure, retry_after: float | None
) -> None:
    mapped = send_error(error, token="123456:ABC")
    assert (mapped.failure, mapped.retry_after) == (failure, retry_after)
    assert mapped.scope == "channel"
    assert "123456:ABC" not in mapped.reason
