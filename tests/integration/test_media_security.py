"""Media that cannot run, through the real ``relais serve`` app and the fake providers.

A citizen's file is fetched once, when it arrives, and kept by Relais (the provider's link
may expire: the mediator's link still works); it is served as a download unless it is an
allow-listed image or audio type, always with ``nosniff``, ``CSP: sandbox`` and
``no-store``; a file over ``RELAIS_MEDIA_MAX_MB`` is not kept and the mediator is told; an
erasure removes the bytes; a malformed link is 403; ``/media`` never waits for SQLite's
write lock; the access log never holds a link's signature or the WhatsApp verify token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bot.domain import rights
from bot.domain.media_links import media_link
from bot.domain.staff import add_staff, find_contact
from bot.storage.models import MediaChunk, MediaItem
from bot.web.app import SERVICES, create_app, make_runner
from tests.fakes import whatsapp as wa
from tests.fakes.signing import (
    META_SIGNATURE_HEADER,
    TELEGRAM_SECRET_HEADER,
    TWILIO_SIGNATURE_HEADER,
    meta_signature,
    twilio_signature,
)
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram, text_update, user
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio, inbound_params
from tests.helpers.db import make_settings
from tests.helpers.serving import Running, free_port, serving

SECRET = "relais-Webhook_secret-0123456789"
CHAT = 5829174630
MEDIATOR_CHAT = 5550001
APP_SECRET = "0f3c9a7e5b2d4c6e8a1f3b5d7c9e2a4f"
VERIFY_TOKEN = "relais-verify-7Qx2-never-logged"
CAMILLE = "+33612345678"
SCRIPT = b"<html><body><script>fetch('/console/steal')</script>MKSCRIPT</body></html>"
SVG = (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script>'
       b"</svg>")
JPEG = b"\xff\xd8\xff\xe0JFIF" + bytes(range(256)) * 4 + b"MKPHOTOBYTES"
SAFE = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Cache-Control": "private, no-store",
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server
        assert server.unexpected == [], [(r.method, r.path, r.body) for r in server.unexpected]


def telegram(db_url: str, fake: FakeTelegram, **overrides: Any
             ) -> AbstractAsyncContextManager[Running]:
    return serving(db_url, telegram_token=TEST_TOKEN, telegram_webhook_secret=SECRET,
                   telegram_api_url=f"{fake.url}/bot", opening_hours="24/7", **overrides)


class Updates:
    update_id = 500

    @classmethod
    def next(cls) -> int:
        cls.update_id += 1
        return cls.update_id


async def post_update(running: Running, body: dict[str, Any]) -> None:
    async with running.http.post(
        f"{running.url}/webhooks/telegram", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", TELEGRAM_SECRET_HEADER: SECRET},
    ) as response:
        assert response.status == 200


def document_update(file_id: str, file_name: str, mime_type: str, chat: int = CHAT
                    ) -> dict[str, Any]:
    number = Updates.next()
    update = text_update(chat, "x", update_id=number, message_id=number)
    message = update["message"]
    del message["text"]
    message["document"] = {"file_id": file_id, "file_unique_id": f"u{number}",
                           "file_name": file_name, "mime_type": mime_type, "file_size": 10}
    return update


def photo_update(file_id: str, chat: int = CHAT) -> dict[str, Any]:
    number = Updates.next()
    update = text_update(chat, "x", update_id=number, message_id=number)
    message = update["message"]
    del message["text"]
    message["photo"] = [{"file_id": file_id, "file_unique_id": f"p{number}", "width": 1280,
                         "height": 960}]
    return update


async def media_rows(running: Running) -> list[MediaItem]:
    async with running.services.sessions() as session:
        return list((await session.scalars(select(MediaItem).order_by(MediaItem.id))).all())


async def stored(running: Running, count: int) -> list[MediaItem]:
    """Wait until ``count`` media rows are no longer pending (the fetch job ran)."""
    rows: list[MediaItem] = []

    async def poll() -> None:
        nonlocal rows
        for _ in range(500):
            rows = await media_rows(running)
            if len(rows) >= count and all(r.state != "pending" for r in rows):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"media not fetched: {[(r.id, r.state) for r in rows]}")

    await poll()
    return rows


async def link_for(running: Running, media_id: int) -> str:
    async with running.services.sessions() as session, session.begin():
        return await media_link(session, running.url, media_id, running.services.clock.now())


def assert_safe(headers: Any) -> None:
    for name, value in SAFE.items():
        assert headers.get(name) == value, (name, headers.get(name))


# -- served as a download unless it is an allow-listed image or audio type ------------------


async def test_telegram_html_and_svg_come_back_as_downloads_and_a_jpeg_inline(
    db_url: str, fake: FakeTelegram
) -> None:
    page = fake.add_file(SCRIPT, file_path="documents/file_1.html")
    drawing = fake.add_file(SVG, file_path="documents/file_2.svg")
    photo = fake.add_file(JPEG, file_path="photos/file_3.jpg")
    async with telegram(db_url, fake) as running:
        await post_update(running, document_update(page, "facture.html", "text/html"))
        await post_update(running, document_update(drawing, "plan.svg", "image/svg+xml"))
        await post_update(running, photo_update(photo))
        html_item, svg_item, jpeg_item = await stored(running, 3)
        assert [i.state for i in (html_item, svg_item, jpeg_item)] == ["stored"] * 3

        for item, content, extension in ((html_item, SCRIPT, ".html"), (svg_item, SVG, ".svg")):
            async with running.http.get(await link_for(running, item.id)) as response:
                assert response.status == 200
                assert await response.read() == content
                assert_safe(response.headers)
                assert response.content_type == "application/octet-stream"
                assert response.headers["Content-Disposition"] == (
                    f'attachment; filename="relais-media-{item.id}{extension}"')
        async with running.http.get(await link_for(running, jpeg_item.id)) as response:
            assert response.status == 200
            assert await response.read() == JPEG
            assert_safe(response.headers)
            assert response.content_type == "image/jpeg"
            assert response.headers["Content-Disposition"].startswith("inline;")


async def test_a_whatsapp_text_html_file_is_a_download(db_url: str) -> None:
    async with wa.FakeWhatsApp() as fake:
        media_id = fake.add_media(SCRIPT, "text/html")
        settings = {
            "whatsapp_token": wa.TEST_TOKEN, "whatsapp_phone_number_id": wa.TEST_PHONE_NUMBER_ID,
            "whatsapp_app_secret": APP_SECRET, "whatsapp_verify_token": VERIFY_TOKEN,
            "whatsapp_api_url": f"{fake.url}/v21.0",
        }
        async with serving(db_url, **settings) as running:
            payload = wa.inbound_image(CAMILLE, media_id, mime_type="text/html")
            message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
            message["type"] = "document"
            message["document"] = {**message.pop("image"), "filename": "avis.html"}
            body = wa.encode(payload)
            async with running.http.post(
                f"{running.url}/webhooks/whatsapp", data=body,
                headers={"Content-Type": "application/json",
                         META_SIGNATURE_HEADER: meta_signature(APP_SECRET, body)},
            ) as response:
                assert response.status == 200
            [item] = await stored(running, 1)
            assert (item.state, item.content_type) == ("stored", "text/html")
            async with running.http.get(await link_for(running, item.id)) as response:
                assert response.status == 200
                assert await response.read() == SCRIPT
                assert_safe(response.headers)
                assert response.content_type == "application/octet-stream"
                assert response.headers["Content-Disposition"].startswith("attachment;")


# -- fetched when it arrives, kept by Relais ------------------------------------------------


async def test_the_file_is_fetched_at_arrival_and_the_link_outlives_the_provider(
    db_url: str, fake: FakeTelegram
) -> None:
    photo = fake.add_file(JPEG, file_path="photos/file_9.jpg")
    async with telegram(db_url, fake) as running:
        await post_update(running, photo_update(photo))
        [item] = await stored(running, 1)  # nobody opened a link yet
        assert len(fake.requests_to("getFile")) == 1
        fake.files.clear()  # the provider's link expired
        link = await link_for(running, item.id)
        for _ in range(3):
            async with running.http.get(link) as response:
                assert response.status == 200
                assert await response.read() == JPEG
        assert len(fake.requests_to("getFile")) == 1  # never fetched again


async def test_a_file_still_being_fetched_is_a_clear_503(db_url: str, fake: FakeTelegram
                                                         ) -> None:
    photo = fake.add_file(JPEG, file_path="photos/file_4.jpg")
    async with telegram(db_url, fake, workers=False) as running:
        await post_update(running, photo_update(photo))
        [item] = await media_rows(running)
        assert item.state == "pending"
        async with running.http.get(await link_for(running, item.id)) as response:
            assert response.status == 503
            assert response.headers["Retry-After"].isdigit()
            assert "en train de" in await response.text()  # French by default
            assert_safe(response.headers)


async def test_a_large_file_size_chunked_comes_back_whole(db_url: str, fake: FakeTelegram
                                                          ) -> None:
    big = bytes(range(256)) * (3 * 1024 + 7)  # ~786 KB: several chunks
    file_id = fake.add_file(big, file_path="documents/file_5.pdf")
    async with telegram(db_url, fake) as running:
        await post_update(running, document_update(file_id, "lettre.pdf", "application/pdf"))
        [item] = await stored(running, 1)
        assert item.chunks > 1
        async with running.http.get(await link_for(running, item.id)) as response:
            assert response.status == 200
            assert int(response.headers["Content-Length"]) == len(big)
            assert await response.read() == big
            assert response.headers["Content-Disposition"].startswith("attachment;")


async def test_twilio_media_is_deleted_at_twilio_once_kept(db_url: str) -> None:
    async with FakeTwilio() as twilio:
        settings = {"twilio_account_sid": TEST_ACCOUNT_SID, "twilio_auth_token": TEST_AUTH_TOKEN,
                    "twilio_sms_from": "+33757000100", "twilio_api_url": twilio.url}
        async with serving(db_url, **settings) as running:
            url = twilio.add_media(JPEG, "image/jpeg")
            params = inbound_params(CAMILLE, "", media=[(url, "image/jpeg")])
            target = running.settings.base_url + "/webhooks/twilio"
            headers = {TWILIO_SIGNATURE_HEADER: twilio_signature(TEST_AUTH_TOKEN, target,
                                                                  params)}
            async with running.http.post(target, data=params, headers=headers) as response:
                assert response.status == 200
            [item] = await stored(running, 1)

            async def deleted() -> bool:
                rows = await media_rows(running)
                return rows[0].provider_deleted_at is not None

            for _ in range(200):
                if await deleted():
                    break
                await asyncio.sleep(0.05)
            assert await deleted()
            assert twilio.media == {}  # gone at Twilio
            assert [r.method for r in twilio.requests if r.route == "media.delete"] == ["DELETE"]
            async with running.http.get(await link_for(running, item.id)) as response:
                assert response.status == 200 and await response.read() == JPEG
        assert twilio.unexpected == []


# -- too large: not kept, the mediator is told ----------------------------------------------


async def test_a_file_over_the_limit_is_not_kept_and_the_mediator_is_told(
    db_url: str, fake: FakeTelegram
) -> None:
    big = b"%PDF-1.4 " + b"x" * 300_000
    file_id = fake.add_file(big, file_path="documents/file_6.pdf")
    async with telegram(db_url, fake, media_max_mb=0.25) as running:
        async with running.services.sessions() as session, session.begin():
            await add_staff(session, f"telegram:{MEDIATOR_CHAT}", name="Alice Martin",
                            role="mediator", now=running.services.clock.now(),
                            default_timezone="Europe/Paris")

        def to_mediator() -> list[str]:
            return [m["text"] or "" for m in fake.sent if str(m["to"]) == str(MEDIATOR_CHAT)]

        async def mediator_says(text: str) -> None:
            number = Updates.next()
            await post_update(running, text_update(
                MEDIATOR_CHAT, text, update_id=number, message_id=number,
                from_=user(MEDIATOR_CHAT, "Alice")))

        await post_update(running, text_update(CHAT, "AIDE", update_id=Updates.next()))
        await running.wait_for(lambda: len(to_mediator()) >= 1)
        await mediator_says("/prendre 1")
        await running.wait_for(lambda: any("est à vous" in t for t in to_mediator()))
        await post_update(running, document_update(file_id, "dossier.pdf", "application/pdf"))
        [item] = await stored(running, 1)
        assert (item.state, item.size, item.chunks) == ("too_large", len(big), 0)
        await running.wait_for(lambda: any("trop lourd" in t for t in to_mediator()))
        told = next(t for t in to_mediator() if "trop lourd" in t)
        assert told.startswith("#1 ")
        assert "apporter" in told
        async with running.services.sessions() as session:
            chunks = await session.scalar(select(func.count()).select_from(MediaChunk))
        assert chunks == 0
        async with running.http.get(await link_for(running, item.id)) as response:
            assert response.status == 404
            assert "apporter" in await response.text()


# -- erasure removes the bytes --------------------------------------------------------------


async def test_erasure_removes_the_stored_bytes(db_url: str, fake: FakeTelegram) -> None:
    photo = fake.add_file(JPEG, file_path="photos/file_7.jpg")
    async with telegram(db_url, fake) as running:
        await post_update(running, photo_update(photo))
        [item] = await stored(running, 1)
        async with running.services.sessions() as session:
            chunks = (await session.scalars(select(MediaChunk.data))).all()
        assert b"".join(chunks) == JPEG
        link = await link_for(running, item.id)
        async with running.services.sessions() as session, session.begin():
            contact = await find_contact(session, f"telegram:{CHAT}")
            assert contact is not None
            await rights.forget(session, contact, running.services.clock.now(), source="cli")
        async with running.services.sessions() as session:
            left = await session.scalar(select(func.count()).select_from(MediaChunk))
            items = await session.scalar(select(func.count()).select_from(MediaItem))
        assert (left, items) == (0, 0)
        async with running.http.get(link) as response:
            assert response.status == 404
        from bot.storage.db import checkpoint

        await checkpoint(running.services.db)
    if make_url(db_url).get_backend_name() == "sqlite":
        path = Path(make_url(db_url).database or "")
        wal = Path(f"{path}-wal")
        raw = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        assert b"MKPHOTOBYTES" not in raw


# -- malformed links, the write lock --------------------------------------------------------


async def test_a_malformed_link_is_403_never_500(db_url: str, fake: FakeTelegram) -> None:
    photo = fake.add_file(JPEG, file_path="photos/file_8.jpg")
    async with telegram(db_url, fake) as running:
        await post_update(running, photo_update(photo))
        [item] = await stored(running, 1)
        good = await link_for(running, item.id)
        exp = good.split("exp=")[1].split("&")[0]
        for query in ("exp=1&sig=é", f"exp={exp}&sig=%C3%A9", f"exp={exp}&sig=" + "\u0661" * 32,
                      "exp=\u0661\u0662&sig=" + "0" * 32, "exp=abc&sig=zz", "sig=", "",
                      f"exp={exp}&sig=" + "g" * 32, f"exp={'9' * 400}&sig=" + "0" * 32):
            async with running.http.get(f"{running.url}/media/{item.id}?{query}") as response:
                assert response.status == 403, query
                assert_safe(response.headers)
        for path in ("\u0661", "-1", "+1", "1.0", "9" * 40):
            async with running.http.get(f"{running.url}/media/{path}?exp={exp}&sig=" + "0" * 32
                                        ) as response:
                assert response.status == 403, path


async def test_media_answers_without_waiting_for_the_write_lock(
    sqlite_url: str, fake: FakeTelegram
) -> None:
    """Another process holds the write lock (a long import): /media answers anyway, well
    before SQLite's 30-second busy timeout would let a writer through."""
    photo = fake.add_file(JPEG, file_path="photos/file_11.jpg")
    async with telegram(sqlite_url, fake) as running:
        await post_update(running, photo_update(photo))
        [item] = await stored(running, 1)
        link = await link_for(running, item.id)
        writer = sqlite3.connect(make_url(sqlite_url).database or "", timeout=1,
                                 isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")

            async def fetch() -> int:
                async with running.http.get(link) as response:
                    await response.read()
                    return response.status

            assert await asyncio.wait_for(fetch(), 10) == 200
        finally:
            writer.execute("ROLLBACK")
            writer.close()


# -- the access log -------------------------------------------------------------------------


@asynccontextmanager
async def served_like_relais_serve(db_url: str, **overrides: Any
                                   ) -> AsyncIterator[tuple[str, Any]]:
    """The app on the runner ``relais serve`` uses (``make_runner``), on a real port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(db_url, port=port, public_url=base, **overrides),
                     workers=False)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield base, app[SERVICES]
    finally:
        await runner.cleanup()


async def test_the_access_log_holds_no_signature_and_no_verify_token(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = {"whatsapp_token": wa.TEST_TOKEN,
                "whatsapp_phone_number_id": wa.TEST_PHONE_NUMBER_ID,
                "whatsapp_app_secret": APP_SECRET, "whatsapp_verify_token": VERIFY_TOKEN}
    async with served_like_relais_serve(db_url, **settings) as (base, services), \
            ClientSession() as http:
        async with services.sessions() as session, session.begin():
            link = await media_link(session, base, 1, services.clock.now())
        sig = link.split("sig=")[1]
        async with http.get(link) as response:
            assert response.status == 404  # no such media: the log line is what matters
        challenge = "1158201444"
        async with http.get(f"{base}/webhooks/whatsapp", params={
            "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": challenge,
        }) as response:
            assert response.status == 200 and await response.text() == challenge
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    media_lines = [line for line in access if "/media/1" in line]
    assert media_lines, access  # the request is logged...
    assert "/media/1?exp&sig" in media_lines[0]  # ...without the values
    assert any("/webhooks/whatsapp?hub.mode&hub.verify_token&hub.challenge" in line
               for line in access), access
    everything = caplog.text + "\n".join(access)
    assert "sig=" not in everything
    assert sig not in everything
    assert VERIFY_TOKEN not in everything
