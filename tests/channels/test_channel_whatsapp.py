"""The WhatsApp Cloud API adapter against the real app and a fake Graph API.

Webhooks are encoded and signed as Meta does (``tests.fakes.whatsapp.encode``: compact
JSON, non-ASCII as ``\\uXXXX``) and POSTed to ``relais serve`` on a real port; sends go
through the outbox workers to ``FakeWhatsApp``, which refuses payloads Meta would refuse
(recorded in ``unexpected``, asserted empty).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.channels import whatsapp
from bot.core.channel import AdapterSpec, Failure, Hub, SendError
from bot.core.i18n import Translator
from bot.core.types import Choice, Inbound, Outbound, Reply
from bot.delivery.writer import enqueue
from bot.domain.media_links import media_link
from bot.flows import MENU
from bot.storage.models import (
    Address,
    Contact,
    Conversation,
    MediaItem,
    Message,
    Outbox,
    RateLimit,
)
from tests.fakes import whatsapp as wa
from tests.fakes.signing import META_SIGNATURE_HEADER, meta_signature
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio
from tests.fakes.whatsapp import TEST_PHONE_NUMBER_ID, TEST_TOKEN, FakeWhatsApp
from tests.helpers.db import make_settings
from tests.helpers.serving import Running, serving
from tests.helpers.waiting import eventually

APP_SECRET = "0f3c9a7e5b2d4c6e8a1f3b5d7c9e2a4f"
VERIFY_TOKEN = "relais-verify-7Qx2"
TEMPLATE = "relais_nouveau_message"
CAMILLE = "+33612345678"
FIXTURES = sorted((Path(__file__).parent / "whatsapp").glob("*.json"))
SMS_FROM = "+33757000200"
OTHER = "+33611223344"  # the recipient of the messages the status fixtures are about


# ------------------------------------------------------------------------------ helpers


def cloud_settings(fake: FakeWhatsApp, **extra: object) -> dict[str, object]:
    return {
        "whatsapp_token": TEST_TOKEN,
        "whatsapp_phone_number_id": TEST_PHONE_NUMBER_ID,
        "whatsapp_app_secret": APP_SECRET,
        "whatsapp_verify_token": VERIFY_TOKEN,
        "whatsapp_api_url": f"{fake.url}/v21.0",
        **extra,
    }


@asynccontextmanager
async def cloud(db_url: str, fake: FakeWhatsApp, *, workers: bool = True,
                **extra: object) -> AsyncIterator[Running]:
    async with serving(db_url, workers=workers, **cloud_settings(fake, **extra)) as running:
        yield running


@pytest.fixture
async def fake() -> AsyncIterator[FakeWhatsApp]:
    async with FakeWhatsApp() as server:
        yield server
    assert server.unexpected == [], [(r.path, r.body) for r in server.unexpected]


async def post_raw(running: Running, body: bytes, signature: str | None,
                   content_type: str = "application/json") -> int:
    headers = {"Content-Type": content_type}
    if signature is not None:
        headers[META_SIGNATURE_HEADER] = signature
    async with running.http.post(f"{running.url}/webhooks/whatsapp", data=body,
                                 headers=headers) as response:
        await response.read()
        return response.status


async def post_signed(running: Running, payload: dict[str, Any]) -> int:
    body = wa.encode(payload)
    return await post_raw(running, body, meta_signature(APP_SECRET, body))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def record_inbound(running: Running) -> list[tuple[Inbound, str]]:
    """Keep every Inbound the adapter hands to the app (its inbox), with the answer
    (``stored``, or ``duplicate`` for a redelivery)."""
    services = running.services
    seen: list[tuple[Inbound, str]] = []
    real_hub = services.hub

    def hub(spec: AdapterSpec) -> Hub:
        given = real_hub(spec)
        real_message = given.sink.message

        async def message(inbound: Inbound) -> str:
            outcome = await real_message(inbound)
            seen.append((inbound, outcome))
            return outcome

        given.sink.message = message  # type: ignore[method-assign]
        return given

    services.hub = hub  # type: ignore[method-assign]
    return seen


async def count(running: Running, model: type) -> int:
    async with running.services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def seed_person(running: Running, number: str = CAMILLE, *, language: str = "fr",
                      texts: tuple[str, ...] = (), status: str = "queued",
                      provider_id: str | None = None) -> list[int]:
    """A known person on WhatsApp with outbox rows (queued, or already sent as given)."""
    now = running.services.clock.now()
    async with running.services.sessions() as session, session.begin():
        contact = await session.scalar(
            select(Contact).join(Address).where(Address.channel == "whatsapp",
                                                Address.external_id == number))
        if contact is None:
            contact = Contact(language=language, created_at=now, timezone="Europe/Paris")
            session.add(contact)
            await session.flush()
            address = Address(contact_id=contact.id, channel="whatsapp", external_id=number,
                              created_at=now, landline=False)
            session.add(address)
            await session.flush()
        else:
            address = await session.scalar(
                select(Address).where(Address.contact_id == contact.id,
                                      Address.channel == "whatsapp"))
            assert address is not None
        rows = [enqueue(session, contact, address, Reply(text), now=now) for text in texts]
        for row in rows:
            row.status = status
            row.provider_id = provider_id
        await session.flush()
        ids = [row.id for row in rows]
    running.services.wake_workers()
    return ids


async def outbox_rows(running: Running) -> list[Outbox]:
    async with running.services.sessions() as session:
        return list((await session.scalars(select(Outbox).order_by(Outbox.id))).all())


async def inbound_rows(running: Running) -> list[tuple[Message, Address, Contact]]:
    async with running.services.sessions() as session:
        result = await session.execute(
            select(Message, Address, Contact)
            .join(Address, Message.address_id == Address.id)
            .join(Contact, Message.contact_id == Contact.id)
            .where(Message.direction == "in").order_by(Message.id))
        return [tuple(row) for row in result.all()]  # type: ignore[misc]


def texts_sent(fake: FakeWhatsApp) -> list[str | None]:
    return [message["text"] for message in fake.sent]


async def settled(running: Running) -> bool:
    """No outbox row is waiting or being sent."""
    return all(row.status not in ("queued", "sending") for row in await outbox_rows(running))


def assert_rendered(sent: Any, ids: list[str], labels: list[str]) -> None:
    """Reply buttons for ≤ 3 short labels, a list for ≤ 10 choices, else numbered text."""
    assert 1 <= len(ids) <= 10, "a question with choices was expected"
    buttons = len(labels) <= 3 and all(len(label) <= 20 for label in labels)
    assert sent["raw"]["type"] == "interactive"
    assert sent["raw"]["interactive"]["type"] == ("button" if buttons else "list")
    assert [c["id"] for c in sent["choices"]] == ids
    if buttons:
        assert [c["title"] for c in sent["choices"]] == labels


# ------------------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_fixture_is_stored_as_expected(db_url: str, fake: FakeWhatsApp,
                                             path: Path) -> None:
    data = load(path)
    expect = data["expect"]
    events = expect["events"]
    async with cloud(db_url, fake, workers=False,
                     twilio_account_sid=TEST_ACCOUNT_SID, twilio_auth_token=TEST_AUTH_TOKEN,
                     twilio_sms_from=SMS_FROM) as running:
        seen = record_inbound(running)
        status_ids = list(dict.fromkeys(e["provider_id"] for e in events
                                        if e["kind"] == "status"))
        for provider_id in status_ids:  # the messages these statuses are about
            await seed_person(running, OTHER, texts=("Votre rappel est confirmé.",),
                              status="sent", provider_id=provider_id)
        waiting = await seed_person(running, OTHER, texts=("Un autre message.",)) \
            if status_ids else []
        body = wa.encode(data["request"]["body"])
        signature = meta_signature(APP_SECRET, body)

        assert await post_raw(running, body, signature) == 200
        assert await post_raw(running, body, signature) == 200  # Meta retries: no double

        messages = [e for e in events if e["kind"] == "message"]
        stored = await inbound_rows(running)
        assert [(f"{a.channel}:{a.external_id}", m.provider_id, m.body or None, m.choice_id,
                 m.media or [], c.name) for m, a, c in stored] == [
            (e["address"], e["provider_id"], e["text"], e["choice_id"], e["media"],
             e.get("profile_name")) for e in messages]
        handed = [inbound for inbound, _ in seen]
        assert [i.provider_id for i in handed] == [e["provider_id"] for e in messages] * 2
        outcomes = [outcome for _, outcome in seen]
        assert outcomes == ["stored"] * len(messages) + ["duplicate"] * len(messages)
        for inbound, event in zip(handed, messages, strict=False):
            assert inbound.extra.get("location") == event.get("location")
        if expect["outcome"] == "ignored":
            assert seen == [] and stored == []

        final = dict(expect.get("final_statuses") or {})
        for event in events:
            if event["kind"] == "status":
                final.setdefault(event["provider_id"], event["status"])
        rows = {row.provider_id: row for row in await outbox_rows(running)
                if row.provider_id in final}
        assert {pid: row.status for pid, row in rows.items()} == final
        failures = {"131047": "window_closed", "131026": "undeliverable"}
        for event in events:
            if event["kind"] == "status" and event["error_code"]:
                row = rows[event["provider_id"]]
                assert row.error_code == event["error_code"]
                # Meta's code mapped onto the closed set; a code not known: "failed"
                assert row.failure == failures.get(event["error_code"], "failed")
        codes = {e["error_code"] for e in events if e["kind"] == "status"}
        fallbacks = [row for row in await outbox_rows(running) if row.fallback_of]
        if codes & {"131047", "131026"}:  # no template set: SMS, once despite the retry
            [copy] = fallbacks
            assert copy.channel == "sms" and copy.to == OTHER
            assert copy.body == "Votre rappel est confirmé."
        else:
            assert fallbacks == []
        async with running.services.sessions() as session:
            address = await session.scalar(select(Address).where(
                Address.channel == "whatsapp", Address.external_id == OTHER))
        assert (address is not None and address.blocked_at is not None) == ("131026" in codes)
        states = {row.id: row.status for row in await outbox_rows(running)}
        expected_state = "cancelled" if "131026" in codes else "queued"
        assert [states[row_id] for row_id in waiting] == [expected_state] * len(waiting)


# ------------------------------------------------------------------------------ subscription


async def test_subscription_check_echoes_the_challenge_only_for_the_right_token(
    sqlite_url: str, fake: FakeWhatsApp
) -> None:
    async with cloud(sqlite_url, fake, workers=False) as running:
        url = f"{running.url}/webhooks/whatsapp"
        good = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                "hub.challenge": "1158201444"}
        async with running.http.get(url, params=good) as response:
            assert response.status == 200
            assert await response.text() == "1158201444"
        for wrong in ({**good, "hub.verify_token": "guess"},
                      {**good, "hub.verify_token": VERIFY_TOKEN + "x"},
                      {**good, "hub.mode": "unsubscribe"},
                      {"hub.challenge": "1158201444"}):
            async with running.http.get(url, params=wrong) as response:
                assert response.status == 403
                assert "1158201444" not in await response.text()


async def test_subscription_without_a_verify_token_is_never_accepted(
    sqlite_url: str, fake: FakeWhatsApp
) -> None:
    async with cloud(sqlite_url, fake, workers=False, whatsapp_verify_token=None) as running:
        params = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "42"}
        async with running.http.get(f"{running.url}/webhooks/whatsapp",
                                    params=params) as response:
            assert response.status == 404


# ------------------------------------------------------------------------------ signatures


async def test_signatures_are_checked_on_the_raw_bytes(db_url: str, fake: FakeWhatsApp,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    payload = wa.inbound_text(CAMILLE, "Bonjour, ça marche ? 🙂",
                              id="wamid.GAsVAgASGBQzMzYxMjM0NTY3OFNJR05FRDAxMjM0NTY3ODk=")
    body = wa.encode(payload)
    signature = meta_signature(APP_SECRET, body)
    assert b"\\u00e7" in body  # Meta's escaping: the re-encoded body below differs
    reencoded = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    altered = body.replace(b"Bonjour", b"Bonjoux")
    async with cloud(db_url, fake, workers=False) as running:
        caplog.set_level(logging.INFO, logger="relais")
        assert await post_raw(running, body, None) == 403
        assert await post_raw(running, body, "sha256=" + "0" * 64) == 403
        assert await post_raw(running, body, meta_signature("another secret", body)) == 403
        assert await post_raw(running, body, signature.removeprefix("sha256=")) == 403
        assert await post_raw(running, altered, signature) == 403
        assert await post_raw(running, reencoded, signature) == 403
        assert await count(running, Message) == 0
        assert await count(running, Contact) == 0

        assert await post_raw(running, body, signature.upper().replace("SHA256=", "sha256=")
                              ) == 200
        [(message, _address, _contact)] = await inbound_rows(running)
        assert message.body == "Bonjour, ça marche ? 🙂"
    assert "ça marche" not in caplog.text  # bodies never go to the logs


async def test_bad_bodies_are_refused_and_change_nothing(db_url: str,
                                                         fake: FakeWhatsApp) -> None:
    async with cloud(db_url, fake, workers=False) as running:
        big = wa.encode(wa.inbound_text(CAMILLE, "x" * (1024 * 1024)))
        assert await post_raw(running, big, meta_signature(APP_SECRET, big)) == 413
        for raw in (b"{not json", b'{"object":"whatsapp_business_account","entry":{}}',
                    b"[]", b"\xff\xfe{}"):
            assert await post_raw(running, raw, meta_signature(APP_SECRET, raw)) == 400
        elsewhere = wa.inbound_text(CAMILLE, "Bonjour")
        elsewhere["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
        assert await post_signed(running, elsewhere) == 200  # another number of the account
        assert await count(running, Message) == 0
        assert await count(running, Contact) == 0


async def test_a_photo_reaches_staff_through_a_signed_link(db_url: str,
                                                           fake: FakeWhatsApp) -> None:
    media_id = fake.add_media(b"\xff\xd8\xff photo of a letter", "image/jpeg")
    async with cloud(db_url, fake, workers=False) as running:
        photo = wa.inbound_image(CAMILLE, media_id, caption="Le courrier de la CAF")
        assert await post_signed(running, photo) == 200
        await running.services.scheduler().run_due()  # the fetch job (bot.domain.media_store)
        async with running.services.sessions() as session, session.begin():
            item = await session.scalar(select(MediaItem))
            assert item is not None and item.ref == media_id
            link = await media_link(session, running.url, item.id, running.services.clock.now())
        async with running.http.get(link) as response:
            assert response.status == 200
            assert await response.read() == b"\xff\xd8\xff photo of a letter"
            assert response.content_type == "image/jpeg"
    assert [r.route for r in fake.requests] == ["media.info", "media.download"]
    assert TEST_TOKEN not in link


async def test_webhook_without_an_app_secret_is_refused(db_url: str, fake: FakeWhatsApp,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    async with cloud(db_url, fake, workers=False, whatsapp_app_secret=None) as running:
        caplog.set_level(logging.INFO, logger="relais")
        body = wa.encode(wa.inbound_text(CAMILLE, "Bonjour"))
        assert await post_raw(running, body, meta_signature("", body)) == 404
        assert await post_raw(running, body, None) == 404
        assert await count(running, Message) == 0
    assert "RELAIS_WHATSAPP_APP_SECRET not set" in caplog.text


async def test_without_credentials_the_channel_is_off_and_says_why(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relais")
    async with serving(sqlite_url, workers=False, whatsapp_app_secret=APP_SECRET) as running:
        assert "whatsapp" not in running.services.registry
        body = wa.encode(wa.inbound_text(CAMILLE, "Bonjour"))
        assert await post_raw(running, body, meta_signature(APP_SECRET, body)) == 404
        assert await count(running, Message) == 0
        [row] = whatsapp.status(running.settings)
    assert ("whatsapp (Cloud API) disabled: RELAIS_WHATSAPP_TOKEN and "
            "RELAIS_WHATSAPP_PHONE_NUMBER_ID not set") in caplog.text
    assert row == {"channel": "whatsapp", "provider": "meta", "enabled": False,
                   "reason": "RELAIS_WHATSAPP_TOKEN and RELAIS_WHATSAPP_PHONE_NUMBER_ID not set",
                   "webhook_url": f"{running.url}/webhooks/whatsapp"}


def test_status_for_relais_channels() -> None:
    settings = make_settings("sqlite+aiosqlite:///unused.db", public_url="https://relais.example",
                             whatsapp_token=TEST_TOKEN,
                             whatsapp_phone_number_id=TEST_PHONE_NUMBER_ID,
                             whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY_TOKEN)
    assert whatsapp.status(settings) == [{
        "channel": "whatsapp", "provider": "meta", "enabled": True, "reason": None,
        "webhook_url": "https://relais.example/webhooks/whatsapp"}]
    unsigned = settings.model_copy(update={"whatsapp_app_secret": None})
    [row] = whatsapp.status(unsigned)
    assert row["enabled"] and "RELAIS_WHATSAPP_APP_SECRET" in row["reason"]


# ------------------------------------------------------------------------------ end to end


async def test_new_person_gets_buttons_and_a_button_press_answers_them(
    db_url: str, fake: FakeWhatsApp
) -> None:
    async with cloud(db_url, fake) as running:
        assert await post_signed(running, wa.inbound_text(CAMILLE, "Bonjour")) == 200
        await running.wait_for(lambda: len(fake.sent) == 1)
        [welcome] = fake.sent
        assert welcome["to"] == CAMILLE.lstrip("+")
        assert welcome["raw"]["type"] == "interactive"
        assert welcome["raw"]["interactive"]["type"] == "button"
        assert welcome["choices"] == [{"id": "fr", "title": "Français"},
                                      {"id": "en", "title": "English"}]
        assert "Relais" in (welcome["text"] or "")

        press = wa.inbound_button_reply(CAMILLE, "fr", "Français", context_id=welcome["id"])
        assert await post_signed(running, press) == 200
        await running.wait_for(lambda: len(fake.sent) == 2)
        async with running.services.sessions() as session:
            contact = await session.scalar(select(Contact))
            pressed = await session.scalar(select(Message).where(Message.choice_id == "fr"))
            conversation = await session.get(Conversation, contact.id if contact else 0)
        assert contact is not None and contact.language == "fr"
        assert contact.name == "Camille Martin"
        assert pressed is not None and pressed.body == "Français"
        assert conversation is not None
        asked = conversation.data["choices"]  # the question the flow asked next
        assert_rendered(fake.sent[1], [c["id"] for c in asked], [c["label"] for c in asked])

        assert await post_signed(running, wa.inbound_text(CAMILLE, "menu")) == 200
        await running.wait_for(lambda: len(fake.sent) == 3)
        labels = [Translator("fr")(item.label) for item in MENU]
        assert_rendered(fake.sent[2], [item.id for item in MENU], labels)
        await eventually(lambda: settled(running))
        rows = await outbox_rows(running)
        assert [row.provider_id for row in rows] == [m["id"] for m in fake.sent]


# ------------------------------------------------------------------------------ rendering


@pytest.fixture
async def channel(fake: FakeWhatsApp) -> AsyncIterator[whatsapp.WhatsAppCloud]:
    settings = make_settings("sqlite+aiosqlite:///unused.db", **cloud_settings(
        fake, whatsapp_template=TEMPLATE))
    cloud_channel = whatsapp.WhatsAppCloud(settings)
    try:
        yield cloud_channel
    finally:
        await cloud_channel.close()


def outbound(text: str, labels: list[str] | tuple[str, ...] = (), *, language: str = "fr",
             kind: str = "reply") -> Outbound:
    choices = tuple(Choice(f"c{n}", label) for n, label in enumerate(labels, start=1))
    return Outbound(id=1, channel="whatsapp", to=CAMILLE, text=text, choices=choices,
                    language=language, kind=kind)


async def test_up_to_three_short_choices_are_reply_buttons(
    fake: FakeWhatsApp, channel: whatsapp.WhatsAppCloud
) -> None:
    result = await channel.send(outbound("Votre rappel demain à 10 h vous convient ?",
                                         ["Oui", "Non", "Autre horaire"]))
    [sent] = fake.sent
    assert result.provider_id == sent["id"]
    assert sent["raw"]["to"] == "33612345678"
    assert sent["raw"]["interactive"]["type"] == "button"
    assert sent["choices"] == [{"id": "c1", "title": "Oui"}, {"id": "c2", "title": "Non"},
                               {"id": "c3", "title": "Autre horaire"}]
    assert sent["text"] == "Votre rappel demain à 10 h vous convient ?"


async def test_a_long_title_or_more_choices_make_a_list(
    fake: FakeWhatsApp, channel: whatsapp.WhatsAppCloud
) -> None:
    long_label = ("Déclaration trimestrielle CAF, attestation de paiement, aide au logement "
                  "et prime d'activité")
    await channel.send(outbound("De quoi avez-vous besoin ?",
                                ["Parler à une personne", "Changer de langue"]))
    await channel.send(outbound("Quelle démarche ?",
                                ["Impôts", "France Travail", "Ameli", long_label, "ANTS"],
                                language="en"))
    await channel.send(outbound("Même titre deux fois ?", ["Oui", "Oui"]))
    first, second, third = (m["raw"]["interactive"] for m in fake.sent)
    assert first["type"] == "list"
    assert first["action"]["button"] == Translator("fr")("Choose")
    assert first["action"]["sections"] == [{"rows": [
        {"id": "c1", "title": "Parler à une personne"},
        {"id": "c2", "title": "Changer de langue"}]}]
    assert second["type"] == "list"
    assert second["action"]["button"] == Translator("en")("Choose")
    rows = second["action"]["sections"][0]["rows"]
    assert [row["id"] for row in rows] == ["c1", "c2", "c3", "c4", "c5"]
    assert rows[3]["title"] == "Déclaration trimestri..."  # 24 characters
    assert rows[3]["description"].endswith("...") and len(rows[3]["description"]) <= 72
    assert rows[3]["description"].startswith("Déclaration trimestrielle CAF, attestation")
    assert "description" not in rows[0]
    assert third["type"] == "list"  # button titles must be unique


async def test_more_than_ten_choices_or_a_long_body_become_numbered_text(
    fake: FakeWhatsApp, channel: whatsapp.WhatsAppCloud
) -> None:
    labels = [f"Permanence n°{n}" for n in range(1, 12)]
    await channel.send(outbound("Choisissez une permanence :", labels))
    await channel.send(outbound("Lisez bien. " * 100, ["Oui", "Non"]))
    numbered, long_body = fake.sent
    assert numbered["kind"] == "text"
    assert numbered["text"] == "Choisissez une permanence :\n" + "\n".join(
        f"{n}. Permanence n°{n}" for n in range(1, 12))
    assert long_body["kind"] == "text"
    assert (long_body["text"] or "").endswith("\n1. Oui\n2. Non")


async def test_a_text_longer_than_whatsapp_allows_goes_in_parts_in_order(
    fake: FakeWhatsApp, channel: whatsapp.WhatsAppCloud
) -> None:
    paragraphs = [f"Paragraphe {n}. " + "Votre dossier avance bien. " * 60 for n in range(4)]
    result = await channel.send(outbound("\n\n".join(paragraphs)))
    assert len(fake.sent) == 2
    assert all(len(m["text"] or "") <= 4096 for m in fake.sent)
    assert " ".join(m["text"] or "" for m in fake.sent).split() == " ".join(
        paragraphs).split()
    assert result.provider_id == fake.sent[0]["id"]


async def test_a_template_row_sends_the_approved_template(
    fake: FakeWhatsApp, channel: whatsapp.WhatsAppCloud
) -> None:
    await channel.send(outbound("Vous avez un nouveau message.", kind="template",
                                language="en"))
    [sent] = fake.sent
    assert sent["kind"] == "template"
    assert sent["raw"]["template"] == {"name": TEMPLATE, "language": {"code": "en"}}
    settings = channel.settings.model_copy(update={"whatsapp_template_lang": "fr"})
    [payload] = whatsapp.render(outbound("x", kind="template", language="en"), settings)
    assert payload["template"]["language"] == {"code": "fr"}


async def test_media_is_fetched_with_the_bearer_token(
    fake: FakeWhatsApp, channel: whatsapp.WhatsAppCloud
) -> None:
    media_id = fake.add_media(b"\x89PNG fake bytes", "image/png")
    assert await channel.fetch_media(media_id) == (b"\x89PNG fake bytes", "image/png")
    info, download = fake.requests
    assert info.route == "media.info" and download.route == "media.download"
    assert all(r.headers["Authorization"] == f"Bearer {TEST_TOKEN}" for r in fake.requests)


# ------------------------------------------------------------------------------ errors


ERROR_CASES = [
    ("window", {}, Failure.WINDOW_CLOSED, "131047", "channel", None),
    ("undeliverable", {}, Failure.UNDELIVERABLE, "131026", "channel", None),
    ("pair_rate", {}, Failure.THROTTLED, "131056", "person", 6.0),
    ("throughput", {}, Failure.THROTTLED, "130429", "channel", 1.0),
    ("429", {}, Failure.THROTTLED, "4", "channel", 5.0),
    ("error", {"code": 80007}, Failure.THROTTLED, "80007", "channel", 5.0),
    ("500", {}, Failure.RETRYABLE, "131000", "channel", None),
    ("error", {"code": 131016, "status": 503}, Failure.RETRYABLE, "131016", "channel", None),
    ("reset", {}, Failure.RETRYABLE, None, "channel", None),
    ("auth", {}, Failure.AUTH, "190", "channel", None),
    ("error", {"code": 131050}, Failure.FAILED, "131050", "channel", None),
    ("error", {"code": 100, "details": "Param text['body'] is required"}, Failure.FAILED,
     "100", "channel", None),
    ("error", {"code": 131009}, Failure.FAILED, "131009", "channel", None),
    ("error", {"code": 132001, "title": "Template name does not exist in the translation"},
     Failure.FAILED, "132001", "channel", None),
    ("error", {"code": 131051}, Failure.FAILED, "131051", "channel", None),
]


@pytest.mark.parametrize(("kind", "opts", "failure", "code", "scope", "retry_after"),
                         ERROR_CASES, ids=[f"{c[0]}-{c[3]}" for c in ERROR_CASES])
async def test_meta_errors_map_onto_the_closed_set(
    fake: FakeWhatsApp, channel: whatsapp.WhatsAppCloud, kind: str, opts: dict[str, Any],
    failure: Failure, code: str | None, scope: str, retry_after: float | None,
) -> None:
    fake.fail_next(kind, **opts)
    with pytest.raises(SendError) as raised:
        await channel.send(outbound("Bonjour"))
    error = raised.value
    assert (error.failure, error.code, error.scope, error.retry_after) == (
        failure, code, scope, retry_after)
    if failure is Failure.FAILED:
        assert error.reason.startswith(f"(#{code})")
    assert fake.sent == []


async def test_a_provider_that_does_not_answer_in_time_is_retryable(
    fake: FakeWhatsApp
) -> None:
    settings = make_settings("sqlite+aiosqlite:///unused.db", **cloud_settings(fake))
    quick = whatsapp.WhatsAppCloud(settings, timeout=0.3)
    fake.fail_next("timeout", delay=5)
    try:
        with pytest.raises(SendError) as raised:
            await quick.send(outbound("Bonjour"))
    finally:
        await quick.close()
    assert raised.value.failure is Failure.RETRYABLE


async def test_window_closed_sends_the_template_then_the_held_message(
    db_url: str, fake: FakeWhatsApp
) -> None:
    async with cloud(db_url, fake, whatsapp_template=TEMPLATE,
                     whatsapp_template_lang="fr") as running:
        fake.fail_next("window")
        [held_id] = await seed_person(running, texts=("Votre rappel est confirmé demain.",))
        await running.wait_for(lambda: [m["kind"] for m in fake.sent] == ["template"])
        assert fake.sent[0]["raw"]["template"] == {"name": TEMPLATE, "language": {"code": "fr"}}
        rows = {row.id: row for row in await outbox_rows(running)}
        assert rows[held_id].status == "failed" and rows[held_id].error_code == "131047"

        assert await post_signed(running, wa.inbound_text(CAMILLE, "Oui ?")) == 200
        await running.wait_for(
            lambda: "Votre rappel est confirmé demain." in texts_sent(fake))
        await eventually(lambda: settled(running))
        assert texts_sent(fake).count("Votre rappel est confirmé demain.") == 1
        copy = [r for r in await outbox_rows(running)
                if r.body == "Votre rappel est confirmé demain." and r.id != held_id]
        assert [(r.fallback_of, r.channel, r.status) for r in copy] == [
            (held_id, "whatsapp", "sent")]


async def test_window_closed_without_template_goes_by_sms(db_url: str,
                                                         fake: FakeWhatsApp) -> None:
    async with FakeTwilio() as twilio:
        async with cloud(db_url, fake, twilio_account_sid=TEST_ACCOUNT_SID,
                         twilio_auth_token=TEST_AUTH_TOKEN, twilio_sms_from=SMS_FROM,
                         twilio_api_url=twilio.url) as running:
            fake.fail_next("window")
            [first_id] = await seed_person(running, texts=("Votre rappel est confirmé.",))
            await running.wait_for(lambda: len(twilio.sent) == 1)
            await eventually(lambda: settled(running))
            [sms] = twilio.sent
            assert sms["to"] == CAMILLE and sms["text"] == "Votre rappel est confirmé."
            rows = await outbox_rows(running)
            assert [(r.id, r.channel, r.fallback_of) for r in rows] == [
                (first_id, "whatsapp", None), (rows[1].id, "sms", first_id)]
            assert rows[0].status == "failed" and rows[0].error_code == "131047"
        assert fake.sent == [] and twilio.unexpected == []


async def test_a_later_failed_status_131047_falls_back_once(db_url: str,
                                                            fake: FakeWhatsApp) -> None:
    async with cloud(db_url, fake, whatsapp_template=TEMPLATE) as running:
        fake.fail_next("window", deferred=True)
        [row_id] = await seed_person(running, texts=("Votre dossier est complet.",))
        await running.wait_for(lambda: len(fake.sent) == 1)
        accepted = fake.sent[0]
        assert accepted["error"] is not None and accepted["error"]["code"] == 131047

        await eventually(lambda: settled(running))  # the outbox has recorded the wamid
        failed = wa.status(accepted["id"], "failed", [accepted["error"]])
        assert await post_signed(running, failed) == 200
        assert await post_signed(running, failed) == 200  # Meta retries: one template only
        await running.wait_for(lambda: len(fake.sent) == 2)
        await eventually(lambda: settled(running))
        assert fake.sent[1]["kind"] == "template"
        assert fake.sent[1]["raw"]["template"]["language"] == {"code": "fr"}
        rows = await outbox_rows(running)
        assert [(r.kind, r.status, r.error_code, r.fallback_of) for r in rows] == [
            ("reply", "failed", "131047", None), ("template", "sent", None, row_id)]
        assert rows[0].held

        assert await post_signed(running, wa.inbound_text(CAMILLE, "Je suis là")) == 200
        await running.wait_for(lambda: "Votre dossier est complet." in texts_sent(fake)[2:])
        assert texts_sent(fake).count("Votre dossier est complet.") == 2  # deferred + resent


async def test_pair_rate_pauses_only_that_person(db_url: str, fake: FakeWhatsApp) -> None:
    other = "+262692123456"
    async with cloud(db_url, fake) as running:
        fake.fail_next("pair_rate", to=CAMILLE.lstrip("+"))
        await seed_person(running, texts=("Pour Camille",))
        await seed_person(running, other, texts=("Pour Marie-Josée",))
        await running.wait_for(lambda: "Pour Marie-Josée" in texts_sent(fake))
        await running.wait_for(lambda: fake.pending_failures == [])
        await seed_person(running, other, texts=("Encore pour Marie-Josée",))
        await running.wait_for(lambda: "Encore pour Marie-Josée" in texts_sent(fake))
        async with running.services.sessions() as session:
            paused = await session.scalar(select(Address.paused_until).where(
                Address.external_id == CAMILLE))
            channel_pause = await session.scalar(select(RateLimit.paused_until).where(
                RateLimit.key == "whatsapp"))
        assert paused is not None
        assert channel_pause is None
        assert "Pour Camille" not in texts_sent(fake)  # still waiting out its 6 s

        await running.wait_for(lambda: "Pour Camille" in texts_sent(fake), timeout=15)
        assert sorted(texts_sent(fake)) == sorted(
            ["Pour Camille", "Pour Marie-Josée", "Encore pour Marie-Josée"])


async def test_a_throttling_storm_delivers_everything_once_and_waits(db_url: str) -> None:
    numbers = [f"+3361234560{n}" for n in range(7)]
    async with FakeWhatsApp(rate_limit=3, throttle_status=429) as fake:
        async with cloud(db_url, fake) as running:
            for n, number in enumerate(numbers):
                await seed_person(running, number, texts=(f"Message {n}",))
            await running.wait_for(lambda: len(fake.sent) == len(numbers), timeout=20)
            await eventually(lambda: settled(running))
            assert sorted(texts_sent(fake)) == sorted(f"Message {n}" for n in range(7))
            rows = await outbox_rows(running)
            assert {r.status for r in rows} == {"sent"}
        assert fake.throttled >= 1
        sends = [r for r in fake.requests if r.route == "messages"]
        throttled = [r.time for r in sends if r.status == 429]
        for moment in throttled:  # nothing new went out during the 1 s pause that followed
            assert not [r for r in sends if moment + 0.1 < r.time < moment + 0.95]
        assert fake.unexpected == []


async def test_a_refused_token_disables_the_channel_loudly(
    db_url: str, fake: FakeWhatsApp, caplog: pytest.LogCaptureFixture
) -> None:
    async with cloud(db_url, fake) as running:
        caplog.set_level(logging.INFO, logger="relais")
        fake.fail_next("auth")
        [row_id] = await seed_person(running, texts=("Bonjour",))
        await running.wait_for(lambda: "whatsapp" not in running.services.registry)
        await running.wait_for(lambda: any(r.levelno == logging.ERROR for r in caplog.records))

        async def given_back() -> bool:  # the result is committed after the log line
            return [(r.id, r.status) for r in await outbox_rows(running)] == [(row_id, "queued")]

        await eventually(given_back)
        [row] = await outbox_rows(running)
        assert row.error_code == "190" and row.attempts == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("whatsapp" in r.getMessage() for r in errors)
    assert fake.sent == []


async def test_a_server_error_is_retried_and_delivered_once(db_url: str,
                                                            fake: FakeWhatsApp) -> None:
    async with cloud(db_url, fake) as running:
        fake.fail_next("500")
        await seed_person(running, texts=("Votre attestation est prête.",))
        await running.wait_for(lambda: len(fake.sent) == 1, timeout=15)
        await eventually(lambda: settled(running))
        assert texts_sent(fake) == ["Votre attestation est prête."]
        assert len([r for r in fake.requests if r.route == "messages"]) == 2
        [row] = await outbox_rows(running)
        assert (row.status, row.attempts, row.provider_id) == ("sent", 2, fake.sent[0]["id"])

