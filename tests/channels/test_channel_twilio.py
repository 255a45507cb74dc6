"""The Twilio adapter (SMS and WhatsApp over Twilio) against the real app and FakeTwilio.

Webhooks are signed like Twilio signs them (``tests.fakes.signing``) for the public URL and
posted form-encoded to the real ``relais serve`` app; sending goes through twilio-python's
async client to ``FakeTwilio``. Database tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from bot.channels import twilio as tw
from bot.core.addresses import parse_address
from bot.core.channel import Failure, SendError
from bot.core.config import load_settings
from bot.core.render import choices_from_json, numbered
from bot.core.sms import normalise
from bot.core.types import Outbound, Reply
from bot.delivery.writer import enqueue
from bot.domain.media_links import media_link
from bot.storage.models import Address, Contact, Event, MediaItem, Message, Outbox
from tests.fakes.base import RecordedRequest
from tests.fakes.signing import TWILIO_SIGNATURE_HEADER, twilio_signature
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio, inbound_params
from tests.helpers.serving import (
    TWILIO_SENDER,
    TWILIO_SMS,
    Running,
    count,
    post,
    query,
    serving,
    sign,
    twilio_app,
)
from tests.helpers.waiting import eventually

T = TypeVar("T")

FIXTURES = sorted((Path(__file__).parent / "twilio").glob("*.json"))
SENDER = TWILIO_SENDER
PERSON = "+33612345678"
TEMPLATE_SID = "HX" + "b1" * 16
SMS_SETTINGS: dict[str, Any] = TWILIO_SMS
WA_SETTINGS: dict[str, Any] = {**SMS_SETTINGS, "twilio_whatsapp_from": SENDER}
# A "timeout" failure makes the fake stall; long enough that a normal answer on a loaded
# machine never hits it, short enough to keep the tests quick.
SHORT_TIMEOUT = 2.0


# -- helpers --------------------------------------------------------------------------------


def sends(fake: FakeTwilio) -> list[RecordedRequest]:
    return fake.requests_to("messages.create")


def form(request: RecordedRequest) -> dict[str, Any]:
    return request.form


async def outbox_of(running: Running, number: str, channel: str | None = None
                    ) -> list[Outbox]:
    where = [Outbox.to == number]
    if channel is not None:
        where.append(Outbox.channel == channel)
    return await query(running, select(Outbox).where(*where).order_by(Outbox.id))


async def address_row(running: Running, address: str) -> Address | None:
    target = parse_address(address)
    found = await query(running, select(Address).where(
        Address.channel == target.channel, Address.external_id == target.id))
    return found[0] if found else None


def rendered(row: Outbox, channel: str = "sms") -> str:
    text = numbered(row.body or "", choices_from_json(row.choices))
    return normalise(text) if channel == "sms" else text


async def seed_row(running: Running, address: str, *, provider_id: str | None = None,
                   body: str = "Bonjour, voici votre rendez-vous.",
                   status: str = "sent") -> int:
    """A person with one outbox row (already sent with ``provider_id``, or queued)."""
    services = running.services
    now = services.clock.now()
    target = parse_address(address)
    async with services.sessions() as session, session.begin():
        existing = await session.scalar(select(Address).where(
            Address.channel == target.channel, Address.external_id == target.id))
        if existing is None:
            contact = Contact(created_at=now, language="fr", timezone="Europe/Paris")
            session.add(contact)
            await session.flush()
            existing = Address(contact_id=contact.id, channel=target.channel,
                               external_id=target.id, created_at=now, landline=False)
            session.add(existing)
            await session.flush()
        contact = await session.get(Contact, existing.contact_id)
        assert contact is not None
        row = enqueue(session, contact, existing, Reply(body), now=now)
        row.status = status
        row.provider_id = provider_id
        if status == "sent":
            row.sent_at = now
        await session.flush()
        row_id = row.id
    services.wake_workers()
    return row_id


def load_fixture(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# -- the fixture table ----------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_fixture_is_stored_as_expected_and_a_replay_is_a_duplicate(
    db_url: str, path: Path
) -> None:
    data = load_fixture(path)
    params: dict[str, str] = data["request"]["body"]
    expect = data["expect"]
    statuses = [e for e in expect["events"] if e["kind"] == "status"]
    messages = [e for e in expect["events"] if e["kind"] == "message"]
    route = tw.STATUS_PATH if statuses else tw.INBOUND_PATH
    async with twilio_app(db_url, workers=False, **WA_SETTINGS) as running:
        seeded = {}
        for event in statuses:  # the status is about a message Relais sent before
            channel = "whatsapp" if params["To"].startswith("whatsapp:") else "sms"
            address = f"{channel}:{params['To'].removeprefix('whatsapp:')}"
            seeded[event["provider_id"]] = await seed_row(
                running, address, provider_id=event["provider_id"])

        assert await post(running, params, route) == (200, tw.EMPTY_TWIML)
        assert await post(running, params, route) == (200, tw.EMPTY_TWIML)  # provider retry

        assert expect["outcome"] == "written"
        for event in messages:
            stored = await query(running, select(Message).where(
                Message.provider_id == event["provider_id"]))
            assert len(stored) == 1  # the replay was a duplicate
            [message] = stored
            assert message.direction == "in"
            assert f"{message.channel}:" in event["address"]
            assert message.body == (event["text"] or "")
            assert message.choice_id == event["choice_id"]
            assert (message.media or []) == event["media"]
            items = await query(running, select(MediaItem).where(
                MediaItem.message_id == message.id).order_by(MediaItem.id))
            assert [{"content_type": i.content_type, "ref": i.ref} for i in items] == (
                event["media"])
            address = await address_row(running, event["address"])
            assert address is not None and address.id == message.address_id
            contact = await query(running, select(Contact).where(
                Contact.id == message.contact_id))
            if "profile_name" in event:
                assert contact[0].name == event["profile_name"]
        for event in statuses:
            [row] = await query(running, select(Outbox).where(
                Outbox.id == seeded[event["provider_id"]]))
            assert row.status == event["status"]
            assert row.error_code == event["error_code"]
            changes = await count(running, Event, Event.kind == f"outbox.{event['status']}")
            assert changes == 1  # the replayed callback changed nothing


async def test_sms_status_codes_block_or_flag_the_address(db_url: str) -> None:
    stop = load_fixture(Path(__file__).parent / "twilio/status_failed_21610.json")
    unreachable = load_fixture(
        Path(__file__).parent / "twilio/status_undelivered_30003.json")
    async with twilio_app(db_url, workers=False) as running:
        for data in (stop, unreachable):
            params = data["request"]["body"]
            await seed_row(running, f"sms:{params['To']}", provider_id=params["MessageSid"])
            queued = await seed_row(running, f"sms:{params['To']}", status="queued")
            assert (await post(running, params, tw.STATUS_PATH))[0] == 200
            address = await address_row(running, f"sms:{params['To']}")
            assert address is not None and address.blocked_at is not None
            assert params["ErrorCode"] in (address.blocked_reason or "")
            assert not address.landline
            [later] = await query(running, select(Outbox).where(Outbox.id == queued))
            assert later.status == "cancelled"  # not attempted on a blocked address

        params = {**unreachable["request"]["body"], "ErrorCode": "30006",
                  "MessageSid": "SM" + "3" * 32, "SmsSid": "SM" + "3" * 32,
                  "To": "+33611111111"}
        await seed_row(running, "sms:+33611111111", provider_id=params["MessageSid"])
        assert (await post(running, params, tw.STATUS_PATH))[0] == 200
        landline = await address_row(running, "sms:+33611111111")
        assert landline is not None and landline.landline and landline.blocked_at is not None


# -- signatures and malformed requests ------------------------------------------------------


async def test_signatures_are_checked_and_rejected_requests_write_nothing(db_url: str) -> None:
    async with twilio_app(db_url, workers=False) as running:
        params = inbound_params(PERSON, "Bonjour")
        url = running.settings.base_url + tw.INBOUND_PATH
        assert (await post(running, params, headers={}))[0] == 403
        assert (await post(running, params, headers={TWILIO_SIGNATURE_HEADER: "bm9wZQ=="}))[0] \
            == 403
        wrong_token = sign(params, url, token="0" * 32)
        assert (await post(running, params, headers=wrong_token))[0] == 403
        other_url = sign(params, url.replace("/webhooks/twilio", "/webhooks/other"))
        assert (await post(running, params, headers=other_url))[0] == 403
        signed = sign(params, url)
        changed = {**params, "Body": "Bonjour, donnez-moi accès"}
        assert (await post(running, changed, headers=signed))[0] == 403
        extra = {**params, "ProfileName": "Mallory"}
        assert (await post(running, extra, headers=signed))[0] == 403
        missing = {k: v for k, v in params.items() if k != "ToZip"}
        assert (await post(running, missing, headers=signed))[0] == 403
        assert await count(running, Message) == 0
        assert await count(running, Contact) == 0
        status = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered",
                  "AccountSid": TEST_ACCOUNT_SID, "To": PERSON, "From": SENDER}
        assert (await post(running, status, tw.STATUS_PATH, headers={}))[0] == 403
        assert (await post(running, status, tw.STATUS_PATH, headers=signed))[0] == 403

        assert (await post(running, params, headers=signed))[0] == 200
        assert await count(running, Message) == 1


async def test_signature_with_or_without_the_default_port_is_accepted(db_url: str) -> None:
    async with twilio_app(db_url, workers=False,
                          public_url="https://relais.example.org") as running:
        with_port = inbound_params(PERSON, "Bonjour")
        headers = sign(with_port, "https://relais.example.org:443/webhooks/twilio")
        assert (await post(running, with_port, headers=headers))[0] == 200
        without_port = inbound_params(PERSON, "Re-bonjour")
        headers = sign(without_port, "https://relais.example.org/webhooks/twilio")
        assert (await post(running, without_port, headers=headers))[0] == 200
        # the URL the request really reached (behind the proxy) is not what is verified
        direct = inbound_params(PERSON, "Direct")
        headers = sign(direct, running.url + tw.INBOUND_PATH)
        proxied = {**headers, "X-Forwarded-Proto": "http", "X-Forwarded-Host":
                   running.url.removeprefix("http://")}
        assert (await post(running, direct, headers=proxied))[0] == 403
        assert await count(running, Message) == 2


async def test_query_string_is_part_of_the_signed_url(db_url: str) -> None:
    async with twilio_app(db_url, workers=False) as running:
        params = inbound_params(PERSON, "Bonjour")
        path = tw.INBOUND_PATH + "?site=nord&x=1"
        headers = sign(params, running.settings.base_url + path)
        assert (await post(running, params, path, headers=headers))[0] == 200
        bare = sign(params, running.settings.base_url + tw.INBOUND_PATH)
        again = inbound_params(PERSON, "Bonjour")
        assert (await post(running, again, path, headers=bare))[0] == 403


async def test_oversized_and_malformed_bodies(db_url: str) -> None:
    async with twilio_app(db_url, workers=False) as running:
        huge = inbound_params(PERSON, "x" * (1024 * 1024 + 10))
        assert (await post(running, huge))[0] == 413
        no_from = {k: v for k, v in inbound_params(PERSON, "Bonjour").items() if k != "From"}
        assert (await post(running, no_from))[0] == 400
        no_sid = {k: v for k, v in inbound_params(PERSON, "Bonjour").items()
                  if k not in ("MessageSid", "SmsSid", "SmsMessageSid")}
        assert (await post(running, no_sid))[0] == 400
        bad_number = inbound_params("+1", "Bonjour")
        assert (await post(running, bad_number))[0] == 400
        url = running.url + tw.INBOUND_PATH
        payload = json.dumps(inbound_params(PERSON, "Bonjour"))
        headers = {TWILIO_SIGNATURE_HEADER: twilio_signature(TEST_AUTH_TOKEN, url),
                   "Content-Type": "application/json"}
        async with running.http.post(url, data=payload, headers=headers) as response:
            assert response.status == 400
        no_status = {"MessageSid": "SM" + "2" * 32, "AccountSid": TEST_ACCOUNT_SID}
        assert (await post(running, no_status, tw.STATUS_PATH))[0] == 400
        assert await count(running, Message) == 0


async def test_unconfigured_twilio_answers_404(db_url: str) -> None:
    async with serving(db_url, workers=False) as running:  # no Twilio credentials
        params = inbound_params(PERSON, "Bonjour")
        assert (await post(running, params))[0] == 404
        assert (await post(running, params, tw.STATUS_PATH))[0] == 404
        assert await count(running, Message) == 0
        assert running.services.registry.get("sms") is None


async def test_whatsapp_on_twilio_only_when_it_is_the_active_provider(db_url: str) -> None:
    wa = inbound_params("whatsapp:" + PERSON, "Bonjour", to="whatsapp:" + SENDER)
    # SMS configured, no RELAIS_TWILIO_WHATSAPP_FROM: WhatsApp over Twilio is off
    async with twilio_app(db_url, workers=False) as running:
        assert (await post(running, wa))[0] == 404
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 200
        assert not isinstance(running.services.registry.get("whatsapp"), tw.TwilioChannel)
    # the Cloud API takes precedence when RELAIS_WHATSAPP_TOKEN is set
    async with twilio_app(db_url, workers=False, twilio_whatsapp_from=SENDER,
                          whatsapp_token="EAAG-test") as running:
        assert (await post(running, wa))[0] == 404
        assert not isinstance(running.services.registry.get("whatsapp"), tw.TwilioChannel)
        assert await count(running, Message, Message.channel == "whatsapp") == 0
    # WhatsApp over Twilio only: inbound SMS is refused
    async with twilio_app(db_url, workers=False, twilio_sms_from=None,
                          twilio_whatsapp_from=SENDER) as running:
        assert (await post(running, wa))[0] == 200
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 404
        assert await count(running, Message, Message.channel == "whatsapp") == 1
        assert await count(running, Message, Message.channel == "sms") == 1  # the first one


# -- end to end over SMS --------------------------------------------------------------------


async def test_new_person_gets_the_welcome_then_the_menu_by_sms(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 200
        [welcome] = await sent_rows(running, PERSON, 1)
        [request] = sends(fake)
        body = form(request)
        assert body["To"] == PERSON and body["From"] == SENDER
        assert body["StatusCallback"] == running.url + tw.STATUS_PATH
        # sms.normalise folds "ç" (not GSM-7) so the whole text stays GSM-7: 1 segment in 2
        assert "\n1. Francais\n2. English" in body["Body"]
        assert body["Body"] == rendered(welcome)
        assert welcome.provider_id == fake.sent[0]["id"]

        assert (await post(running, inbound_params(PERSON, "1")))[0] == 200
        [_, menu] = await sent_rows(running, PERSON, 2)
        assert menu.choices and len(menu.choices) >= 2
        assert len(sends(fake)) == 2
        assert form(sends(fake)[1])["Body"] == rendered(menu)
        assert "\n1. " in form(sends(fake)[1])["Body"]
        [contact] = await query(running, select(Contact))
        assert contact.language == "fr"

        # a late "sent" never moves a delivered row back
        assert await fake.send_status_callback(fake.sent[0], "delivered") == 200
        assert await fake.send_status_callback(fake.sent[0], "sent") == 200
        [welcome] = await query(running, select(Outbox).where(Outbox.id == welcome.id))
        assert welcome.status == "delivered"
        assert fake.unexpected == []
        assert len(sends(fake)) == 2


async def sent_rows(running: Running, number: str, n: int) -> list[Outbox]:
    """Wait until ``n`` rows to ``number`` are recorded as sent (or further); return them."""

    async def check() -> list[Outbox]:
        rows = await outbox_of(running, number)
        done = [r for r in rows if r.status in ("sent", "delivered", "read")]
        return rows if len(rows) == n and len(done) == n else []

    return await eventually(check)


async def test_messaging_service_sid_is_sent_as_such(db_url: str) -> None:
    service = "MG" + "4" * 32
    async with FakeTwilio() as fake, twilio_app(db_url, fake, twilio_sms_from=service) as running:
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 200
        await running.wait_for(lambda: len(fake.sent) == 1)
        body = form(sends(fake)[0])
        assert body["MessagingServiceSid"] == service and "From" not in body
        assert fake.unexpected == []


async def test_stop_is_confirmed_once_and_then_nothing_is_sent(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 200
        await running.wait_for(lambda: len(fake.sent) == 1)
        assert (await post(running, inbound_params(PERSON, "STOP")))[0] == 200
        await running.wait_for(lambda: len(fake.sent) == 2)
        assert (await post(running, inbound_params(PERSON, "Stop.")))[0] == 200
        assert (await post(running, inbound_params(PERSON, "Bonjour ?")))[0] == 200
        assert (await post(running, inbound_params(PERSON, "1")))[0] == 200
        # the webhook answers once the step is committed: no row was written for these
        rows = await outbox_of(running, PERSON)
        assert [r.kind for r in rows] == ["reply", "optout"]
        assert await count(running, Message, Message.direction == "in") == 5
        assert len(sends(fake)) == 2


async def test_21610_on_send_blocks_the_address_until_the_person_writes(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake, workers=False) as running:
        worker = running.services.outbox_worker()
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 200
        later = await seed_row(running, f"sms:{PERSON}", status="queued",
                               body="Votre rappel est demain à 10 h.")
        fake.fail_next("unsubscribed")
        while await worker.drain_once():
            pass
        address = await address_row(running, f"sms:{PERSON}")
        assert address is not None and address.blocked_at is not None
        rows = await outbox_of(running, PERSON)
        assert [(r.status, r.error_code) for r in rows] == [
            ("failed", "21610"), ("cancelled", None)]
        assert rows[1].id == later
        assert len(sends(fake)) == 1 and fake.sent == []  # the later one never attempted

        assert (await post(running, inbound_params(PERSON, "MENU")))[0] == 200
        address = await address_row(running, f"sms:{PERSON}")
        assert address is not None and address.blocked_at is None
        while await worker.drain_once():
            pass
        assert len(fake.sent) == 1 and fake.sent[0]["to"] == PERSON
        assert fake.unexpected == []


async def test_21610_in_a_status_callback_blocks_the_address(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake, workers=False) as running:
        worker = running.services.outbox_worker()
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 200
        fake.fail_next("unsubscribed", deferred=True)  # accepted now, refused later
        while await worker.drain_once():
            pass
        later = await seed_row(running, f"sms:{PERSON}", status="queued")
        assert await fake.send_status_callback(fake.sent[0], "failed") == 200
        address = await address_row(running, f"sms:{PERSON}")
        assert address is not None and address.blocked_at is not None
        rows = await outbox_of(running, PERSON)
        assert rows[0].status == "failed" and rows[0].error_code == "21610"
        assert [r.status for r in rows if r.id == later] == ["cancelled"]
        while await worker.drain_once():
            pass
        assert len(sends(fake)) == 1


# -- provider failures ----------------------------------------------------------------------


async def test_429_storm_waits_out_every_retry_after(db_url: str) -> None:
    people = ["+33611000001", "+33611000002", "+33611000003"]
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        fake.fail_next("429", 2, retry_after=2)
        for number in people:
            assert (await post(running, inbound_params(number, "Bonjour")))[0] == 200
        await running.wait_for(lambda: len(fake.sent) == len(people), timeout=30)
        assert sorted(m["to"] for m in fake.sent) == people  # each delivered exactly once
        for number in people:
            [row] = await sent_rows(running, number, 1)
            assert row.provider_id == next(m["id"] for m in fake.sent if m["to"] == number)
        requests = sends(fake)
        refused = [r for r in requests if r.status == 429]
        assert len(refused) == 2
        # Nothing reached Twilio while a Retry-After ran. Requests already in flight when the
        # 429 came back (sent in the same instant, arriving just after it) are not "during".
        in_flight = 0.3
        for pause in refused:
            assert all(not (pause.time + in_flight < r.time < pause.time + 2.0)
                       for r in requests)
        assert fake.unexpected == []


async def test_500_then_success_sends_once(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        fake.fail_next("500")
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 200
        await running.wait_for(lambda: len(fake.sent) == 1)
        [row] = await outbox_of(running, PERSON)
        row = await eventually(lambda: _sent(running, row.id))
        assert row.attempts == 2 and row.provider_id == fake.sent[0]["id"]
        assert [r.status for r in sends(fake)] == [500, 201]


async def _sent(running: Running, row_id: int) -> Outbox | None:
    [row] = await query(running, select(Outbox).where(Outbox.id == row_id))
    return row if row.status == "sent" else None


@pytest.mark.parametrize("kind", ["timeout", "reset"])
async def test_timeouts_and_resets_are_retried(db_url: str, kind: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        channel = running.services.registry.get("sms")
        assert isinstance(channel, tw.TwilioChannel)
        channel.client.http.request_timeout = SHORT_TIMEOUT  # the fake stalls for 30 s
        fake.fail_next(kind)
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 200
        await running.wait_for(lambda: len(fake.sent) == 1)
        [row] = await outbox_of(running, PERSON)
        row = await eventually(lambda: _sent(running, row.id))
        assert row.attempts == 2 and row.provider_id == fake.sent[0]["id"]
        assert len(sends(fake)) == 2


@pytest.mark.parametrize("kind", ["timeout", "reset"])
async def test_a_lost_answer_after_twilio_sent_is_the_known_duplicate(
    db_url: str, kind: str
) -> None:
    # Twilio did send the message but its answer was lost. Twilio's Messages API has no
    # idempotency key, so the retry sends it again: the person gets it twice, while Relais
    # has one row, sent once, carrying the second sid. This is the documented duplicate risk.
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        channel = running.services.registry.get("sms")
        assert isinstance(channel, tw.TwilioChannel)
        channel.client.http.request_timeout = SHORT_TIMEOUT  # the fake stalls for 30 s
        fake.fail_next(kind, deliver=True)
        assert (await post(running, inbound_params(PERSON, "Bonjour")))[0] == 200
        await running.wait_for(lambda: len(fake.sent) == 2)
        [row] = await outbox_of(running, PERSON)
        row = await eventually(lambda: _sent(running, row.id))
        assert row.provider_id == fake.sent[1]["id"]
        assert fake.sent[0]["text"] == fake.sent[1]["text"]


async def test_long_sms_is_split_at_word_boundaries_and_sent_in_order(db_url: str) -> None:
    words = [f"démarche{n}" for n in range(400)]  # about 4,400 characters, one line
    text = " ".join(words)
    async with FakeTwilio() as fake, twilio_app(db_url, fake, workers=False) as running:
        worker = running.services.outbox_worker()
        row_id = await seed_row(running, f"sms:{PERSON}", status="queued", body=text)
        while await worker.drain_once():
            pass
        bodies = [form(r)["Body"] for r in sends(fake)]
        assert len(bodies) == 3
        assert all(len(b) <= 1600 for b in bodies)
        assert " ".join(bodies) == normalise(text)  # in order, nothing lost or cut
        vocabulary = {normalise(w) for w in words}
        assert all(set(b.split(" ")) <= vocabulary for b in bodies)
        [row] = await query(running, select(Outbox).where(Outbox.id == row_id))
        assert row.status == "sent" and row.provider_id == fake.sent[0]["id"]
        assert row.segments == sum(int(fake.messages[m["id"]]["num_segments"])
                                   for m in fake.sent)
        assert fake.unexpected == []


# -- WhatsApp over Twilio -------------------------------------------------------------------


def wa_params(body: str, **extra: str) -> dict[str, str]:
    return inbound_params("whatsapp:" + PERSON, body, to="whatsapp:" + SENDER,
                          extra={"ProfileName": "Camille", **extra})


async def test_whatsapp_numbered_text_and_button_payload(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake, **WA_SETTINGS) as running:
        assert (await post(running, wa_params("Bonjour")))[0] == 200
        await running.wait_for(lambda: len(fake.sent) == 1)
        body = form(sends(fake)[0])
        assert body["To"] == "whatsapp:" + PERSON and body["From"] == "whatsapp:" + SENDER
        assert "\n1. Français" in body["Body"]
        [welcome] = await outbox_of(running, PERSON, "whatsapp")
        assert body["Body"] == rendered(welcome, "whatsapp")
        assert body["StatusCallback"] == running.url + tw.STATUS_PATH

        english = next(c for c in welcome.choices or [] if c["id"] == "en")
        press = wa_params(english["label"], ButtonPayload="en", ButtonText=english["label"],
                          MessageType="button")
        assert (await post(running, press))[0] == 200
        [contact] = await query(running, select(Contact))
        assert contact.language == "en" and contact.name == "Camille"
        await running.wait_for(lambda: len(fake.sent) == 2)
        menu = (await outbox_of(running, PERSON, "whatsapp"))[-1]
        assert menu.language == "en"
        assert form(sends(fake)[1])["Body"] == rendered(menu, "whatsapp")
        assert fake.unexpected == []


async def _whatsapp_person_refused(running: Running, fake: FakeTwilio, *, deferred: bool
                                   ) -> Outbox:
    """A WhatsApp person whose first reply Twilio refuses with 63016; returns that row."""
    worker = running.services.outbox_worker()
    fake.fail_next("window", deferred=deferred)
    assert (await post(running, wa_params("Bonjour")))[0] == 200
    while await worker.drain_once():
        pass
    first = (await outbox_of(running, PERSON, "whatsapp"))[0]
    if deferred:
        assert first.status == "sent"
        assert await fake.send_status_callback(fake.sent[0], "failed") == 200
        [first] = await query(running, select(Outbox).where(Outbox.id == first.id))
    assert first.status == "failed" and first.error_code == "63016"
    while await worker.drain_once():
        pass
    return first


@pytest.mark.parametrize("deferred", [False, True], ids=["on-send", "in-status"])
async def test_whatsapp_window_closed_sends_the_template_then_the_held_message(
    db_url: str, deferred: bool
) -> None:
    async with FakeTwilio() as fake, twilio_app(
        db_url, fake, workers=False, whatsapp_template=TEMPLATE_SID, **WA_SETTINGS
    ) as running:
        first = await _whatsapp_person_refused(running, fake, deferred=deferred)
        template = sends(fake)[-1]
        assert form(template)["ContentSid"] == TEMPLATE_SID and "Body" not in form(template)
        assert form(template)["To"] == "whatsapp:" + PERSON
        rows = await outbox_of(running, PERSON)
        assert [(r.channel, r.kind, r.fallback_of) for r in rows] == [
            ("whatsapp", "reply", None), ("whatsapp", "template", first.id)]
        assert rows[0].held

        worker = running.services.outbox_worker()
        assert (await post(running, wa_params("Oui ?")))[0] == 200  # a new 24 h window
        while await worker.drain_once():
            pass
        bodies = [form(r).get("Body") for r in sends(fake)[-2:]]
        assert rendered(first, "whatsapp") in bodies  # the held message went
        assert all(form(r)["To"] == "whatsapp:" + PERSON for r in sends(fake))
        assert fake.unexpected == []


@pytest.mark.parametrize("deferred", [False, True], ids=["on-send", "in-status"])
async def test_whatsapp_window_closed_without_template_falls_back_to_sms(
    db_url: str, deferred: bool
) -> None:
    async with FakeTwilio() as fake, twilio_app(
        db_url, fake, workers=False, **WA_SETTINGS
    ) as running:
        first = await _whatsapp_person_refused(running, fake, deferred=deferred)
        rows = await outbox_of(running, PERSON)
        assert [(r.channel, r.fallback_of) for r in rows] == [
            ("whatsapp", None), ("sms", first.id)]
        by_sms = sends(fake)[-1]
        assert form(by_sms)["To"] == PERSON and form(by_sms)["From"] == SENDER
        assert form(by_sms)["Body"] == rendered(first, "sms")
        assert rows[1].status == "sent"
        assert fake.unexpected == []


# -- media ----------------------------------------------------------------------------------


@pytest.mark.parametrize("redirect", [False, True], ids=["direct", "cdn-redirect"])
async def test_media_is_fetched_with_basic_auth_for_staff_links(
    db_url: str, redirect: bool
) -> None:
    photo = b"\xff\xd8\xff\xe0 a scanned letter"
    async with FakeTwilio(redirect_media=redirect) as fake, twilio_app(
        db_url, fake, workers=False
    ) as running:
        url = fake.add_media(photo, "image/jpeg")
        params = inbound_params(PERSON, "", media=[(url, "image/jpeg")])
        assert (await post(running, params))[0] == 200
        await running.services.scheduler().run_due()  # the fetch job (bot.domain.media_store)
        [item] = await query(running, select(MediaItem))
        assert item.ref == url and item.content_type == "image/jpeg"
        async with running.services.sessions() as session, session.begin():
            link = await media_link(session, running.url, item.id,
                                    running.services.clock.now())
        async with running.http.get(link) as response:
            assert response.status == 200
            assert await response.read() == photo
            assert response.content_type == "image/jpeg"
        authorized = [r for r in fake.requests if r.route == "media.fetch"]
        assert authorized and all(r.headers.get("Authorization", "").startswith("Basic ")
                                  for r in authorized)
        channel = running.services.registry.get("sms")
        assert isinstance(channel, tw.TwilioChannel)
        with pytest.raises(Exception) as refused:
            await channel.fetch_media("https://attacker.example/steal")
        assert getattr(refused.value, "status", None) == 404
        assert fake.unexpected == []


# -- error mapping, without a database ------------------------------------------------------


def adapter_settings(fake: FakeTwilio, **overrides: Any) -> Any:
    return load_settings(env_file=None, twilio_api_url=fake.url,
                         public_url="https://relais.example.org",
                         **{**WA_SETTINGS, **overrides})


@pytest.mark.parametrize(
    ("kind", "opts", "failure", "code", "retry_after"),
    [
        ("unsubscribed", {}, Failure.STOPPED, "21610", None),
        ("invalid_to", {}, Failure.UNDELIVERABLE, "21211", None),
        ("landline", {}, Failure.UNDELIVERABLE, "21614", None),
        ("window", {}, Failure.WINDOW_CLOSED, "63016", None),
        ("429", {"retry_after": 7}, Failure.THROTTLED, "20429", 7.0),
        ("429", {}, Failure.THROTTLED, "20429", 1.0),
        ("500", {}, Failure.RETRYABLE, "20500", None),
        ("auth", {}, Failure.AUTH, "20003", None),
        ("error", {"code": 63018}, Failure.THROTTLED, "63018", 1.0),
        ("error", {"code": 63038, "status": 429}, Failure.THROTTLED, "63038", 3600.0),
        ("error", {"code": 21612}, Failure.UNDELIVERABLE, "21612", None),
        ("error", {"code": 30007, "message": "Carrier filtered"}, Failure.FAILED, "30007",
         None),
        ("timeout", {}, Failure.RETRYABLE, None, None),
        ("reset", {}, Failure.RETRYABLE, None, None),
    ],
)
async def test_every_twilio_error_maps_onto_the_closed_set(
    kind: str, opts: dict[str, Any], failure: Failure, code: str | None,
    retry_after: float | None,
) -> None:
    async with FakeTwilio() as fake:
        client = tw.TwilioClient(adapter_settings(fake))
        if kind == "timeout":
            client.http.request_timeout = SHORT_TIMEOUT
        try:
            channel = tw.TwilioChannel("sms", client, adapter_settings(fake))
            fake.fail_next(kind, **opts)
            with pytest.raises(SendError) as raised:
                await channel.send(Outbound(id=1, channel="sms", to=PERSON, text="Bonjour"))
        finally:
            await client.close()
    error = raised.value
    assert error.failure is failure
    assert error.code == code
    assert error.retry_after == retry_after
    assert error.scope == "channel"
    assert TEST_AUTH_TOKEN not in error.reason


async def test_whatsapp_template_needs_a_content_sid() -> None:
    async with FakeTwilio() as fake:
        settings = adapter_settings(fake)
        client = tw.TwilioClient(settings)
        try:
            channel = tw.TwilioChannel("whatsapp", client, settings)
            with pytest.raises(SendError) as raised:
                await channel.send(Outbound(id=1, channel="whatsapp", to=PERSON, text="x",
                                            kind="template"))
            assert raised.value.failure is Failure.FAILED
            templated = tw.TwilioChannel(
                "whatsapp", client, adapter_settings(fake, whatsapp_template=TEMPLATE_SID))
            result = await templated.send(Outbound(id=2, channel="whatsapp", to=PERSON,
                                                   text="x", kind="template"))
        finally:
            await client.close()
    [request] = sends(fake)
    assert form(request)["ContentSid"] == TEMPLATE_SID and "Body" not in form(request)
    assert result.provider_id == fake.sent[0]["id"] and result.segments is None


def test_retry_after_header_forms() -> None:
    assert tw.parse_retry_after("2") == 2.0
    assert tw.parse_retry_after(None) is None
    assert tw.parse_retry_after("soon") is None
    from datetime import UTC, datetime

    now = datetime(2025, 6, 10, 8, 0, 0, tzinfo=UTC)
    assert tw.parse_retry_after("Tue, 10 Jun 2025 08:00:30 GMT", now) == 30.0


# -- relais channels ------------------------------------------------------------------------


def test_status_for_relais_channels() -> None:
    base = {"public_url": "https://relais.example.org"}
    nothing = load_settings(env_file=None, **base)
    [sms_row, wa_row] = tw.status(nothing)
    assert sms_row == {
        "channel": "sms", "provider": "twilio", "enabled": False,
        "reason": "RELAIS_TWILIO_ACCOUNT_SID, RELAIS_TWILIO_AUTH_TOKEN, "
                  "RELAIS_TWILIO_SMS_FROM not set",
        "webhook_url": "https://relais.example.org/webhooks/twilio",
    }
    assert wa_row["channel"] == "whatsapp" and not wa_row["enabled"]
    both = load_settings(env_file=None, **base, **WA_SETTINGS)
    assert [r["enabled"] for r in tw.status(both)] == [True, True]
    assert all(r["reason"] is None for r in tw.status(both))
    cloud = load_settings(env_file=None, **base, **WA_SETTINGS, whatsapp_token="EAAG-test")
    [sms_row, wa_row] = tw.status(cloud)
    assert sms_row["enabled"] and not wa_row["enabled"]
    assert "RELAIS_WHATSAPP_TOKEN" in wa_row["reason"]
