"""A broadcast to 5,000 contacts through the real ``relais serve`` app and the fake Twilio
and Telegram servers with rate ceilings, on SQLite and PostgreSQL: each person gets it
exactly once, nobody who said STOP or gave no consent gets it, a person who writes in
meanwhile is answered before the broadcast ends, delivery receipts and replies show in the
status. (Quiet hours are tested on the enqueue timing in ``test_broadcasts.py``.)"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import time_machine
from sqlalchemy import func, select

from bot.domain import broadcasts as bc
from bot.storage.models import Outbox
from tests.fakes.signing import TWILIO_SIGNATURE_HEADER, twilio_signature
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio, inbound_params
from tests.helpers.factories import Person, seed
from tests.helpers.serving import Running, serving

DAYTIME = datetime(2030, 3, 5, 10, 0, tzinfo=UTC)  # 11:00 in Paris: not quiet
RATE = 500  # sends per second: the fakes' ceiling and Relais's setting
SMS_PEOPLE = 2500
TELEGRAM_PEOPLE = 2500
SENDER = "+33757000100"
TEXTS = {"fr": "Distribution alimentaire samedi 10h, salle des fêtes.",
         "en": "Food distribution on Saturday at 10am, village hall."}


def is_broadcast(text: str | None) -> bool:
    return text is not None and text.endswith(("STOP pour ne plus recevoir",
                                               "STOP to stop receiving"))


def sms_number(index: int) -> str:
    return f"+336{index:08d}"


def people() -> list[Person]:
    reached = [Person(f"sms:{sms_number(i)}", language="en" if i % 5 == 0 else "fr")
               for i in range(SMS_PEOPLE)]
    reached += [Person(f"telegram:{700000000 + i}", language="fr")
                for i in range(TELEGRAM_PEOPLE)]
    stopped = [Person(f"sms:{sms_number(50_000 + i)}", opted_out=True) for i in range(30)]
    silent = [Person(f"telegram:{800000000 + i}", consents=()) for i in range(30)]
    return reached + stopped + silent


async def post_sms(running: Running, from_: str, body: str) -> int:
    params = inbound_params(from_, body, to=SENDER)
    url = running.settings.base_url + "/webhooks/twilio"
    headers = {TWILIO_SIGNATURE_HEADER: twilio_signature(TEST_AUTH_TOKEN, url, params)}
    async with running.http.post(running.url + "/webhooks/twilio", data=params,
                                 headers=headers) as response:
        return response.status


async def test_broadcast_to_5000_contacts_through_the_fake_providers(db_url: str) -> None:
    with time_machine.travel(DAYTIME, tick=True):
        async with FakeTwilio(rate_limit=RATE) as twilio, \
                FakeTelegram(rate_limit=RATE) as telegram:
            settings = {
                "twilio_account_sid": TEST_ACCOUNT_SID, "twilio_auth_token": TEST_AUTH_TOKEN,
                "twilio_sms_from": SENDER, "twilio_api_url": twilio.url,
                "telegram_token": TEST_TOKEN, "telegram_webhook_secret": "s" * 32,
                "telegram_api_url": f"{telegram.url}/bot",
                "twilio_rate": RATE, "telegram_rate": RATE,
            }
            async with serving(db_url, **settings) as running:
                services = running.services
                async with services.sessions() as session, session.begin():
                    await seed(session, people())
                    broadcast = await bc.create(session, bc.Segment(), TEXTS,
                                                services.clock.now())
                broadcast_id = broadcast.id
                # The scheduler's job for this broadcast may write some batches meanwhile.
                await bc.enqueue_all(services.sessions, broadcast_id, running.settings,
                                     services.clock)
                services.wake_workers()

                # Someone writes in while the broadcast is going out: answered first.
                await running.wait_for(lambda: len(twilio.sent) >= 100, timeout=60)
                assert await post_sms(running, "+33699000001", "Bonjour") == 200
                await running.wait_for(
                    lambda: any(m["to"] == "+33699000001" for m in twilio.sent), timeout=30)
                async with services.sessions() as session:
                    left = await session.scalar(
                        select(func.count()).select_from(Outbox).where(
                            Outbox.broadcast_id == broadcast_id, Outbox.status == "queued"))
                assert left > 0  # the reply did not wait for the end of the broadcast

                total = SMS_PEOPLE + TELEGRAM_PEOPLE
                await running.wait_for(
                    lambda: len(twilio.sent) + len(telegram.sent) >= total + 1, timeout=180)

                # Receipts for some SMS, and one person answers the news.
                for message in twilio.sent[:20]:
                    if message["to"] != "+33699000001":
                        await twilio.send_status_callback(message, "delivered")
                assert await post_sms(running, sms_number(7), "Merci !") == 200
                async with services.sessions() as session:
                    status = await bc.describe(session, await bc.get(session, broadcast_id),
                                               services.clock.now())

    broadcast_sms = Counter(m["to"] for m in twilio.sent if is_broadcast(m["text"]))
    broadcast_tg = Counter(m["to"] for m in telegram.sent)
    assert broadcast_sms == Counter({sms_number(i): 1 for i in range(SMS_PEOPLE)})
    assert broadcast_tg == Counter({str(700000000 + i): 1 for i in range(TELEGRAM_PEOPLE)})
    english = next(m for m in twilio.sent if m["to"] == sms_number(5))
    assert english["text"] == TEXTS["en"] + "\n\nSTOP to stop receiving"
    french = next(m for m in telegram.sent if m["to"] == "700000001")
    assert french["text"] == TEXTS["fr"] + "\n\nSTOP pour ne plus recevoir"
    french_sms = next(m for m in twilio.sent if m["to"] == sms_number(1))  # GSM-7: no "ê"
    assert french_sms["text"] == ("Distribution alimentaire samedi 10h, salle des fetes."
                                  "\n\nSTOP pour ne plus recevoir")
    assert twilio.unexpected == [] and telegram.unexpected == []
    assert status["recipients"] == SMS_PEOPLE + TELEGRAM_PEOPLE
    assert status["excluded"]["stop"] == 30 and status["excluded"]["no_consent"] == 30
    assert (status["queued"], status["failed"]) == (0, 0)
    assert status["delivered"] == 20
    assert status["sent"] == SMS_PEOPLE + TELEGRAM_PEOPLE - 20
    assert status["replied"] == 1
