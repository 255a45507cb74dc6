"""The durable inbox: a webhook is stored (masked, deduplicated) and answered before any flow
work; inbox workers process one person's events in order; a failing step is retried, then
parked and shown, and danger words in it still alert the mediators."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import time_machine
from sqlalchemy import select

from bot.app import Services, Sink
from bot.core import masking
from bot.core.text import clean_text
from bot.core.types import Inbound
from bot.delivery.inbox import InboxWorker
from bot.flows import privacy
from bot.storage import inbox
from bot.storage.models import InboxItem, Message, Outbox, Ticket
from tests.helpers.factories import MONDAY_10, add, rows
from tests.helpers.serving import TWILIO_SMS, count, post, query, serving

PERSON = "+33612345678"
PASSWORD_TEXT = "mon mot de passe ameli c'est Soleil2024"


def sms(number: str, text: str, sid: str) -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": TWILIO_SMS["twilio_account_sid"],
            "From": number, "To": TWILIO_SMS["twilio_sms_from"], "Body": text,
            "NumMedia": "0"}


async def test_a_webhook_is_stored_masked_and_answered_before_any_flow_work(db_url):
    async with serving(db_url, workers=False, inbox="off", **TWILIO_SMS) as running:
        assert (await post(running, sms(PERSON, PASSWORD_TEXT, "SM" + "1" * 32)))[0] == 200
        assert (await post(running, sms(PERSON, PASSWORD_TEXT, "SM" + "1" * 32)))[0] == 200
        [item] = await query(running, select(InboxItem))
        assert item.state == "pending" and item.address == f"sms:{PERSON}"
        assert item.payload["text"] == masking.mask(clean_text(PASSWORD_TEXT)).text
        assert "Soleil2024" not in str(item.payload)  # never in clear, not even here
        assert await count(running, Message) == 0  # no flow work before the answer
        assert await count(running, Outbox) == 0
        async with running.http.get(running.url + "/metrics") as response:
            assert 'relais_inbox_depth{state="pending"} 1.0' in await response.text()

        assert await running.services.drain_inbox() == 1
        [message] = await query(running, select(Message))
        assert message.body == item.payload["text"] and message.handled_at is not None
        assert await count(running, Outbox) >= 1  # the welcome is queued
        [done] = await query(running, select(InboxItem))
        assert (done.state, done.payload, done.address, done.sender) == \
            ("done", None, None, None)  # emptied: only the dedupe key stays
        assert done.dedupe == f"message:sms:SM{'1' * 32}" and done.message_id == message.id

        # a redelivery after processing: acknowledged, stored nowhere
        assert (await post(running, sms(PERSON, PASSWORD_TEXT, "SM" + "1" * 32)))[0] == 200
        assert await count(running, InboxItem) == 1
        assert await running.services.drain_inbox() == 0
        assert await count(running, Message) == 1
        async with running.http.get(running.url + "/metrics") as response:
            text = await response.text()
        assert 'relais_inbox_depth{state="pending"} 0.0' in text
        assert 'relais_inbound_total{channel="sms",outcome="duplicate"} 2.0' in text


async def test_status_callbacks_go_through_the_inbox_too(db_url):
    async with serving(db_url, workers=False, inbox="off", **TWILIO_SMS) as running:
        services = running.services
        await Sink(services).message(Inbound("sms", f"sms:{PERSON}", "Bonjour",
                                             provider_id="SM-first"))
        await services.drain_inbox()
        async with services.sessions() as session, session.begin():
            [row] = (await session.scalars(select(Outbox))).all()
            row.status, row.provider_id = "sent", "SM" + "2" * 32
        params = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "delivered",
                  "AccountSid": TWILIO_SMS["twilio_account_sid"]}
        assert (await post(running, params, "/webhooks/twilio/status"))[0] == 200
        [row] = await query(running, select(Outbox))
        assert row.status == "sent"  # stored, not yet applied
        assert await services.drain_inbox() == 1
        [row] = await query(running, select(Outbox))
        assert row.status == "delivered"


async def test_one_persons_events_in_order_and_people_in_parallel(services: Services):
    sink = Sink(services)
    people = [f"+3361000000{i}" for i in range(5)]
    for step in range(4):  # interleaved, as they arrive
        for number in people:
            await sink.message(Inbound("sms", f"sms:{number}", f"message {step}",
                                       provider_id=f"SM-{number}-{step}"))
    async with services.sessions() as session:
        first = await inbox.claim(session, services.clock.now(), 100, lock=False)
    assert sorted(i.sender for i in first) == people  # one row per person at a time
    assert all(i.payload["text"] == "message 0" for i in first)

    worker = InboxWorker(services.sessions, services.clock, services.handle_item,
                         concurrency=4)
    task = asyncio.create_task(worker.run())
    for _ in range(400):
        if await count_pending(services) == 0:
            break
        await asyncio.sleep(0.05)
    worker.stop()
    await task
    assert await count_pending(services) == 0
    for number in people:
        stored = await rows(services, Message, Message.direction == "in",
                            Message.provider_id.like(f"SM-{number}-%"))
        assert [m.body for m in sorted(stored, key=lambda m: m.id)] == \
            [f"message {step}" for step in range(4)]


async def count_pending(services: Services) -> int:
    async with services.sessions() as session:
        pending, _parked, _lag = await inbox.depth(session, services.clock.now())
    return pending


async def test_a_failing_step_is_retried_then_parked_and_danger_words_still_alert(
        services: Services, monkeypatch):
    def broken(_ctx):
        raise RuntimeError("the warning step is broken")

    monkeypatch.setattr(privacy, "warn_about_private_data", broken)
    sink = Sink(services)
    with time_machine.travel(MONDAY_10, tick=False) as traveller:
        await add(services, "sms:+33699000001", "Alice")
        await sink.message(Inbound("sms", f"sms:{PERSON}", "mon mari me frappe, j'ai peur",
                                   provider_id="SM-danger"))
        await services.drain_inbox()
        [ticket] = await rows(services, Ticket)
        assert ticket.priority == "urgent"  # alerted in a savepoint before the step
        alerts = await rows(services, Outbox, Outbox.to == "+33699000001")
        assert len(alerts) == 1 and "URGENT" in alerts[0].body
        [item] = await rows(services, InboxItem)
        assert (item.state, item.attempts) == ("pending", 1)
        assert item.error == "RuntimeError: the warning step is broken"
        assert item.payload["alerted"] is True and item.message_id is not None

        # the same person writes again: held behind the failing event, then let through
        await sink.message(Inbound("sms", f"sms:{PERSON}", "MENU", provider_id="SM-menu"))
        traveller.shift(timedelta(seconds=2))
        await services.drain_inbox()
        later = await rows(services, InboxItem, InboxItem.dedupe == "message:sms:SM-menu")
        assert later[0].state == "pending"  # waits while the first is retried

        for _ in range(inbox.MAX_ATTEMPTS):
            traveller.shift(timedelta(minutes=20))
            await services.drain_inbox()
        [first] = await rows(services, InboxItem, InboxItem.dedupe == "message:sms:SM-danger")
        assert (first.state, first.attempts) == ("parked", inbox.MAX_ATTEMPTS)
        assert first.error == "RuntimeError: the warning step is broken"
        later = await rows(services, InboxItem, InboxItem.dedupe == "message:sms:SM-menu")
        assert later[0].state == "done"  # went on after the hold
        # retries never alerted again
        assert len(await rows(services, Outbox, Outbox.to == "+33699000001")) == 1

        # visible: metrics, and back to pending once fixed
        failures = services.metrics.inbox_failures.labels("message", "parked")._value.get()
        assert failures == 1
        monkeypatch.undo()
        async with services.sessions() as session, session.begin():
            assert await inbox.retry_parked(session, services.clock.now()) == 1
        await services.drain_inbox()
        [first] = await rows(services, InboxItem, InboxItem.dedupe == "message:sms:SM-danger")
        assert first.state == "done"


async def test_healthz_says_degraded_when_the_inbox_lags(db_url):
    with time_machine.travel(MONDAY_10, tick=False) as traveller:
        async with serving(db_url, workers=False, inbox="off", **TWILIO_SMS,
                           inbox_lag_degraded="30s") as running:
            async with running.http.get(running.url + "/healthz") as response:
                assert (response.status, await response.json()) == (200, {"status": "ok"})
            assert (await post(running, sms(PERSON, "Bonjour", "SM" + "3" * 32)))[0] == 200
            traveller.shift(timedelta(seconds=31))
            async with running.http.get(running.url + "/healthz") as response:
                body = await response.json()
                assert response.status == 200
            assert body["status"] == "degraded" and body["inbox_pending"] == 1
            await running.services.drain_inbox()
            async with running.http.get(running.url + "/healthz") as response:
                assert (await response.json()) == {"status": "ok"}


async def test_erasure_takes_the_inbox_rows_of_the_person(services: Services):
    from bot.domain.rights import forget, lock_contact

    sink = Sink(services)
    await sink.message(Inbound("sms", f"sms:{PERSON}", "Bonjour", provider_id="SM-a"))
    await services.drain_inbox()
    await sink.message(Inbound("whatsapp", f"whatsapp:{PERSON}", "il est la ?",
                               provider_id="wamid.b"))  # not processed yet
    await sink.message(Inbound("sms", "sms:+33611111111", "Bonjour", provider_id="SM-c"))
    [message] = await rows(services, Message, Message.provider_id == "SM-a")
    async with services.sessions() as session, session.begin():
        contact = await lock_contact(session, message.contact_id)
        assert contact is not None
        await forget(session, contact, services.clock.now(), source="test")
    left = await rows(services, InboxItem)
    assert [i.dedupe for i in left] == ["message:sms:SM-c"]
