"""The cross-channel story end to end through ``relais serve`` (webhooks in, outbox workers
and scheduler running) and the fake providers: a citizen on SMS, Alice on Telegram, Bob on
SMS. Escalate, notify, take (and lose the race), relay both ways with a photo, note,
transfer, close, satisfaction — and nothing of a mediator's address reaches the citizen."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from bot.domain.staff import add_staff
from bot.storage.models import Event, Ticket, TicketNote
from tests.fakes.signing import TELEGRAM_SECRET_HEADER, TWILIO_SIGNATURE_HEADER, twilio_signature
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram, text_update, user
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio, inbound_params
from tests.helpers.serving import Running, serving

RELAIS_NUMBER = "+33757000100"
MARIE = "+33612345678"
BOB = "+33622222222"
ALICE_CHAT = 5550001
SECRET = "relais-Webhook_secret-0123456789"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTwilio, FakeTelegram]]:
    async with FakeTwilio() as twilio, FakeTelegram() as telegram:
        yield twilio, telegram
        assert twilio.unexpected == [] and telegram.unexpected == []


class Story:
    def __init__(self, running: Running, twilio: FakeTwilio, telegram: FakeTelegram) -> None:
        self.running, self.twilio, self.telegram = running, twilio, telegram
        self.update_id = 1000

    async def sms(self, sender: str, body: str, media: list[tuple[str, str]] | None = None
                  ) -> None:
        params = inbound_params(sender, body, to=RELAIS_NUMBER, media=media)
        url = self.running.settings.base_url + "/webhooks/twilio"
        headers = {TWILIO_SIGNATURE_HEADER: twilio_signature(TEST_AUTH_TOKEN, url, params)}
        async with self.running.http.post(self.running.url + "/webhooks/twilio", data=params,
                                          headers=headers) as response:
            assert response.status == 200

    async def telegram_text(self, text: str) -> None:
        self.update_id += 1
        body = text_update(ALICE_CHAT, text, update_id=self.update_id,
                           message_id=self.update_id, from_=user(ALICE_CHAT, "Alice"))
        async with self.running.http.post(
            self.running.url + "/webhooks/telegram", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", TELEGRAM_SECRET_HEADER: SECRET},
        ) as response:
            assert response.status == 200

    def to_sms(self, number: str) -> list[str]:
        return [m["text"] or "" for m in self.twilio.sent if m["to"] == number]

    def to_alice(self) -> list[str]:
        return [m["text"] or "" for m in self.telegram.sent if str(m["to"]) == str(ALICE_CHAT)]

    async def next_sms(self, number: str, before: int) -> str:
        await self.running.wait_for(lambda: len(self.to_sms(number)) > before)
        return self.to_sms(number)[before]

    async def next_alice(self, before: int) -> str:
        await self.running.wait_for(lambda: len(self.to_alice()) > before)
        return self.to_alice()[before]


def settings(twilio: FakeTwilio, telegram: FakeTelegram) -> dict[str, Any]:
    return {
        "twilio_account_sid": TEST_ACCOUNT_SID, "twilio_auth_token": TEST_AUTH_TOKEN,
        "twilio_sms_from": RELAIS_NUMBER, "twilio_api_url": twilio.url,
        "telegram_token": TEST_TOKEN, "telegram_webhook_secret": SECRET,
        "telegram_api_url": f"{telegram.url}/bot",
        "opening_hours": "24/7",  # the story does not depend on the day it runs
    }


async def test_a_citizen_on_sms_and_mediators_on_telegram_and_sms(db_url, fakes):
    twilio, telegram = fakes
    async with serving(db_url, **settings(twilio, telegram)) as running:
        async with running.services.sessions() as session, session.begin():
            now = running.services.clock.now()
            for address, name in ((f"telegram:{ALICE_CHAT}", "Alice Martin"),
                                  (f"sms:{BOB}", "Bob Durand")):
                await add_staff(session, address, name=name, role="mediator", now=now,
                                default_timezone="Europe/Paris")
        story = Story(running, twilio, telegram)

        await story.sms(MARIE, "AIDE")
        assert await story.next_sms(MARIE, 0) == (
            "Merci. Une personne de Relais va vous répondre ici.")
        await story.sms(MARIE, "Je dois refaire ma demande CAF")
        notice = await story.next_alice(0)  # the scheduler's batched notice
        assert notice.startswith("Nouveau dans la file :\n#1 ")
        assert "(sms): Je dois refaire ma demande CAF" in notice
        bob_notice = await story.next_sms(BOB, 0)
        assert bob_notice.startswith("Nouveau dans la file :\n#1 ")

        await story.telegram_text("/prendre@relais_bot 1")
        assert (await story.next_alice(1)).startswith("#1 est à vous.")
        assert await story.next_sms(MARIE, 1) == (
            "Alice, de Relais, vous répond. Écrivez votre message ici.")
        await story.sms(BOB, "/take 1")  # by SMS: a one-time code opens Bob's session first
        code = re.search(r"\d{6}", await story.next_sms(BOB, 1)).group(0)  # type: ignore[union-attr]
        await story.sms(BOB, code)
        assert (await story.next_sms(BOB, 2)).startswith("Merci, c'est bien vous.")
        assert await story.next_sms(BOB, 3) == "#1 a déjà été prise par Alice Martin."

        await story.telegram_text("Bonjour, avez-vous votre numéro allocataire ?")
        assert await story.next_sms(MARIE, 2) == (
            "Alice : Bonjour, avez-vous votre numéro allocataire ?")
        photo = twilio.add_media(b"\xff\xd8 a letter from the CAF", "image/jpeg")
        await story.sms(MARIE, "Oui, voici le courrier", media=[(photo, "image/jpeg")])
        relayed = await story.next_alice(2)
        first, second = relayed.splitlines()
        assert first == "#1 ?: Oui, voici le courrier"
        assert second.startswith(f"#1 ? a envoyé une photo : {running.url}/media/")
        for _ in range(100):  # 503 with Retry-After while Relais fetches the file
            async with running.http.get(second.rsplit(" ", 1)[1]) as response:
                status, body = response.status, await response.read()
            if status != 503:
                break
            await asyncio.sleep(0.1)
        assert (status, body) == (200, b"\xff\xd8 a letter from the CAF")

        await story.telegram_text("/note 1 numéro allocataire à vérifier")
        assert await story.next_alice(3) == "Note ajoutée à #1. La personne ne la voit pas."
        await story.telegram_text(f"/transferer 1 {BOB}")
        assert await story.next_alice(4) == "#1 transmise à Bob Durand."
        handed = await story.next_sms(BOB, 4)
        assert handed.startswith("Alice Martin vous a transmis #1.")
        assert "[note] Alice Martin : numéro allocataire à vérifier" in handed
        assert await story.next_sms(MARIE, 3) == "Bob, de Relais, vous répond maintenant."

        await story.sms(BOB, "C'est fait, votre dossier est a jour.")
        assert await story.next_sms(MARIE, 4) == "Bob : C'est fait, votre dossier est a jour."
        await story.sms(MARIE, "Merci !")
        assert await story.next_sms(BOB, 5) == "#1 ?: Merci !"
        await story.sms(BOB, "/fermer 1 1 dossier CAF à jour")
        assert await story.next_sms(MARIE, 5) == (
            "Est-ce que nous vous avons aidé ?\n1. Oui\n2. Non")
        assert await story.next_sms(BOB, 6) == "#1 est fermée. Merci !"
        await story.sms(MARIE, "1")
        assert await story.next_sms(MARIE, 6) == "Merci ! Écrivez-nous quand vous voulez."

        to_marie = [m for m in twilio.sent if m["to"] == MARIE]
        assert all(m["raw"].get("From") == RELAIS_NUMBER for m in to_marie)
        said = "\n".join(m["text"] or "" for m in to_marie)
        for secret in (str(ALICE_CHAT), BOB, "06 22 22 22 22", "622222222", "Martin", "Durand",
                       "allocataire à vérifier", "/media/"):
            assert secret not in said
        assert not [m for m in telegram.sent if str(m["to"]) != str(ALICE_CHAT)]

        async with running.services.sessions() as session:
            ticket = (await session.scalars(select(Ticket))).one()
            notes = (await session.scalars(select(TicketNote.body))).all()
            answers = (await session.scalars(
                select(Event.value).where(Event.kind == "ticket.satisfaction"))).all()
        assert (ticket.state, ticket.outcome, ticket.channel) == (
            "closed", "resolved", "sms")
        assert notes == ["@@taken", "numéro allocataire à vérifier",
                         "@@transferred:Bob Durand", "dossier CAF à jour", "@@closed:resolved"]
        assert answers == [{"answer": "yes"}]
