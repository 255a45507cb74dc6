"""A sender cannot hurt others (``RELAIS_SENDER_LIMIT``, ``bot/sender_limit.py``).

Through the real app with signed Twilio SMS webhooks and FakeTwilio: a flood of 60 messages
in one minute gets the replies up to the limit and ONE "we have your messages", all 60 are
stored on one ticket, another sender interleaved is answered every time, ``/metrics``
counts, and after the window the sender is answered again. Through the engine (the outbox
drained into recording channels): danger words, AIDE, STOP and OUBLIER pass the limit,
staff are not limited, the notice is not repeated before a full recovery, erasure takes the
rate row. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select

from bot.app import Services, open_services
from bot.core.config import ConfigError, Rate, load_settings, parse_rate
from bot.delivery import rates
from bot.delivery.outbox import OPTOUT_KIND
from bot.domain import rights
from bot.storage.models import Address, Contact, Message, Outbox, RateLimit, Ticket
from tests.fakes.twilio import FakeTwilio, inbound_params
from tests.helpers.db import make_settings
from tests.helpers.factories import MONDAY_10, Room, add, rows
from tests.helpers.serving import post, twilio_app

FLOODER = "+33612345678"
OTHER = "+33698765432"
NOTICE_FR = "Nous avons bien vos messages. Une personne va les lire."
MENU_FR = "De quoi avez-vous besoin ? Envoyez le numéro."


def texts_to(fake: FakeTwilio, number: str) -> list[str]:
    return [m["text"] or "" for m in fake.sent if m["to"] == number]


async def flood(room: Room, who: str, count: int, text: str = "MENU") -> list[str]:
    """``count`` messages from ``who`` by SMS; what ``who`` received back."""
    received: list[str] = []
    for _ in range(count):
        received += (await room.send(who, text, channel="sms")).get(who, [])
    return received


async def contact_of(services: Services, number: str) -> Contact:
    (address,) = await rows(services, Address, Address.external_id == number)
    (contact,) = await rows(services, Contact, Contact.id == address.contact_id)
    return contact


# -- through the running app -----------------------------------------------------------------


async def test_a_flood_gets_the_replies_up_to_the_limit_and_one_notice(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake, workers=False) as running:
        worker = running.services.outbox_worker()
        start = datetime.now(UTC)
        with time_machine.travel(start, tick=False):  # 60 messages within the same minute
            for i in range(60):
                params = inbound_params(FLOODER, "Bonjour" if i == 0 else "MENU")
                assert (await post(running, params))[0] == 200
                if i % 5 == 0:  # someone else writes meanwhile
                    other = inbound_params(OTHER, "Bonjour" if i == 0 else "MENU")
                    assert (await post(running, other))[0] == 200
        while await worker.drain_once():
            pass
        flooder = texts_to(fake, FLOODER)
        # the default 20/min: a burst of 20 answered, then one notice, then nothing
        assert len(flooder) == 21
        assert flooder[0].startswith("Bonjour ! Ici Relais.")
        assert all(t.startswith(MENU_FR) for t in flooder[1:20])
        assert flooder[20] == NOTICE_FR
        other = texts_to(fake, OTHER)
        assert len(other) == 12 and all(t.startswith(MENU_FR) for t in other[1:])

        async with running.services.sessions() as session:
            contact_id = (await session.scalars(
                select(Message.contact_id).where(Message.body == "Bonjour",
                                                 Message.channel == "sms")
                .order_by(Message.id).limit(1))).one()
            stored = list((await session.scalars(
                select(Message).where(Message.contact_id == contact_id,
                                      Message.direction == "in").order_by(Message.id))).all())
            tickets = list((await session.scalars(select(Ticket))).all())
        assert len(stored) == 60  # nothing lost
        (ticket,) = tickets  # one ticket, the flooder's; the other sender has none
        assert (ticket.contact_id, ticket.state, ticket.source) == (contact_id, "open",
                                                                    "sender_limit")
        assert [m.ticket_id for m in stored[20:]] == [ticket.id] * 40  # on the ticket

        metrics = await (await running.http.get(running.url + "/metrics")).text()
        assert 'relais_inbound_limited_total{channel="sms"} 40.0' in metrics

        # after the window the flooder is answered normally again
        with time_machine.travel(start + timedelta(seconds=61), tick=True):
            assert (await post(running, inbound_params(FLOODER, "MENU")))[0] == 200
            while await worker.drain_once():
                pass
        flooder = texts_to(fake, FLOODER)
        assert len(flooder) == 22 and flooder[21].startswith(MENU_FR)
        assert fake.unexpected == []


# -- through the engine ----------------------------------------------------------------------


async def test_danger_words_over_the_limit_still_get_the_numbers_and_an_urgent_ticket(
    services: Services,
) -> None:
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        got = await flood(room, FLOODER, 25)
        assert len(got) == 21 and got[-1] == NOTICE_FR
        got = await room.send(FLOODER, "je dors dehors ce soir", channel="sms")
        assert "115" in got[FLOODER][0]  # the emergency numbers
        assert got["alice"][0].startswith("URGENT")  # every on-duty mediator, at once
    (ticket,) = await rows(services, Ticket)
    assert (ticket.priority, ticket.state) == ("urgent", "open")


async def test_stop_aide_and_oublier_pass_the_limit(services: Services) -> None:
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        got = await flood(room, FLOODER, 30)
        assert len(got) == 21  # over the limit: silence
        assert await flood(room, FLOODER, 1, "bonjour ?") == []
        got = await room.send(FLOODER, "AIDE", channel="sms")
        assert len(got[FLOODER]) == 1  # AIDE is answered
        got = await room.send(FLOODER, "OUBLIER", channel="sms")
        assert "effac" in got[FLOODER][0].lower()  # the erasure question
        got = await room.send(FLOODER, "STOP", channel="sms")
        assert len(got[FLOODER]) == 1  # the STOP confirmation
        contact = await contact_of(services, FLOODER)
        assert contact.opted_out_at is not None
        kinds = [r.kind for r in await rows(services, Outbox, Outbox.contact_id == contact.id)]
        assert kinds[-1] == OPTOUT_KIND
        assert await flood(room, FLOODER, 3) == []  # STOP holds


async def test_the_notice_is_not_repeated_before_the_rate_recovers(services: Services) -> None:
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        got = await flood(room, FLOODER, 22)
        assert got.count(NOTICE_FR) == 1 and len(got) == 21
        clock.shift(timedelta(seconds=3))  # room for one more message at 20/min
        got = await flood(room, FLOODER, 3)
        assert len(got) == 1 and got[0].startswith(MENU_FR)  # answered; no second notice
        clock.shift(timedelta(minutes=2))  # fully recovered: a new burst, a new notice
        got = await flood(room, FLOODER, 21)
        assert len(got) == 21 and got[-1] == NOTICE_FR
        assert got.count(NOTICE_FR) == 1


async def test_staff_are_not_limited(services: Services) -> None:
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        for _ in range(30):
            got = await room.send("alice", "/queue")
            assert len(got["alice"]) == 1
    assert await rows(services, RateLimit, RateLimit.key.startswith("sender:")) == []


async def test_a_lower_limit_and_off(db_url: str) -> None:
    for limit, answered, who in (("3/hour", 4, FLOODER), ("off", 10, OTHER)):
        svc = await open_services(make_settings(db_url, sender_limit=limit), migrate=False)
        try:
            with time_machine.travel(MONDAY_10, tick=False):
                room = Room(svc)
                got = await flood(room, who, 10)
            assert len(got) == answered, limit  # 3 and the notice; or all 10
        finally:
            await svc.close()


async def test_erasure_takes_the_rate_row(services: Services) -> None:
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await flood(room, FLOODER, 3)
        contact = await contact_of(services, FLOODER)
        key = rates.sender_key(contact.id)
        assert [r.key for r in await rows(services, RateLimit, RateLimit.key == key)] == [key]
        async with services.sessions() as session, session.begin():
            found = await session.get(Contact, contact.id)
            assert found is not None
            await rights.forget(session, found, services.clock.now(), source="cli")
    assert await rows(services, RateLimit, RateLimit.key == key) == []


# -- the setting -----------------------------------------------------------------------------


def test_the_setting_is_parsed_and_a_bad_value_names_the_variable() -> None:
    assert parse_rate("20/min") == Rate(20, 60.0)
    assert parse_rate("100 / hour") == Rate(100, 3600.0)
    assert parse_rate("5/10s") == Rate(5, 10.0)
    assert parse_rate("off") is None
    assert load_settings(env_file=None).sender_rate == Rate(20, 60.0)
    for bad in ("20", "vingt/min", "20/week"):
        with pytest.raises(ConfigError, match="^RELAIS_SENDER_LIMIT: "):
            load_settings(env_file=None, sender_limit=bad)


def test_gcra_allows_a_burst_then_the_steady_rate() -> None:
    rate = Rate(20, 60.0)
    now = MONDAY_10
    tat = now
    for _ in range(20):
        nxt = rates.gcra(tat, now, rate)
        assert nxt is not None
        tat = nxt
    assert rates.gcra(tat, now, rate) is None
    assert rates.gcra(tat, now + timedelta(seconds=3), rate) is not None
