"""Staff are their exact addresses, and by SMS (whose sender id can be forged) staff powers
need a working session opened by a one-time code sent back to the number.

The forged-SMS tests post correctly signed Twilio webhooks to the running app (a forger
who knows a mediator's number can make Twilio deliver an SMS "from" it, but never reads
what is sent back to that number); the rest talk to the engine with recording channels.
Database tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import select

from bot.app import Services, open_services
from bot.storage.models import (
    Message,
    Outbox,
    StaffAddress,
    StaffSmsSession,
    Ticket,
)
from tests.fakes.twilio import FakeTwilio, inbound_params
from tests.helpers.db import make_settings
from tests.helpers.dialog import RecordingChannel
from tests.helpers.factories import MONDAY_10, Room, add, rows
from tests.helpers.serving import post, query, twilio_app
from tests.helpers.waiting import eventually

LEA = "+33611111111"
MARIE = "+33612345678"
CODE = re.compile(r"\b(\d{6})\b")


def code_in(texts: list[str]) -> str:
    [found] = [m.group(1) for t in texts if (m := CODE.search(t))]
    return found


# -- forged SMS through the real app ----------------------------------------------------------


async def test_forged_sms_from_a_mediator_number_reaches_no_citizen_and_changes_no_ticket(
    db_url: str,
) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        services = running.services
        await add(services, f"sms:{LEA}", "Léa Martin")
        assert (await post(running, inbound_params(MARIE, "AIDE")))[0] == 200
        await eventually(lambda: query(running, select(Ticket)))
        to_marie = len(await query(running, select(Outbox).where(Outbox.to == MARIE)))

        # The forger writes "from" Léa's number: take the ticket, then write to Marie.
        for text in ("/prendre 1", "/repondre 1 Bonjour Marie, envoyez votre code Ameli",
                     "Marie, rappelez-moi au 0700000000", "/fermer 1 1"):
            assert (await post(running, inbound_params(LEA, text)))[0] == 200

        [ticket] = await query(running, select(Ticket))
        assert (ticket.state, ticket.mediator_id) == ("open", None)
        assert len(await query(running, select(Outbox).where(Outbox.to == MARIE))) == to_marie
        # What went back went to Léa's real phone: one-time codes the forger never sees.
        codes = await eventually(lambda: query(running, select(Outbox).where(
            Outbox.to == LEA, Outbox.kind == "staff.code", Outbox.status == "sent")))
        assert codes and all(row.body == "[code]" for row in codes)  # not kept once sent


async def test_the_real_mediator_confirms_the_code_and_her_command_runs(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        services = running.services
        await add(services, f"sms:{LEA}", "Léa Martin")
        await post(running, inbound_params(MARIE, "AIDE"))
        await eventually(lambda: query(running, select(Ticket)))
        await post(running, inbound_params(LEA, "/prendre 1"))

        def texts_to_lea() -> list[str]:
            return [r.form.get("Body", "") for r in fake.requests_to("messages.create")
                    if r.form.get("To") == LEA]

        async def got_code() -> list[str]:
            return [t for t in texts_to_lea() if CODE.search(t)]

        [sms] = await eventually(got_code)
        assert sms.startswith("Pour vérifier que c'est vous, renvoyez ce code")
        code = CODE.search(sms).group(1)  # type: ignore[union-attr]
        assert (await post(running, inbound_params(LEA, code)))[0] == 200

        async def taken() -> list[Ticket]:
            return await query(running, select(Ticket).where(Ticket.state == "taken"))

        [ticket] = await eventually(taken)  # the command that asked for the code ran
        assert ticket.mediator_id is not None
        stored = await query(running, select(Message.body).where(Message.direction == "in"))
        assert code not in " ".join(b or "" for b in stored)  # the code is never stored
        assert "[code]" in stored
        # Within the session, a plain message is relayed to Marie at once, no new code.
        await post(running, inbound_params(LEA, "Bonjour Marie, je vous appelle a 14h"))

        async def relayed() -> list[str]:
            return [r.form.get("Body", "") for r in fake.requests_to("messages.create")
                    if r.form.get("To") == MARIE and "14h" in r.form.get("Body", "")]

        assert await eventually(relayed)
        assert len([t for t in texts_to_lea() if CODE.search(t)]) == 1


# -- exact addresses ------------------------------------------------------------------------


async def test_a_coordinator_known_only_on_whatsapp_has_no_powers_by_sms(
    services: Services,
) -> None:
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "whatsapp:+33699999999", "Nadia", role="coordinator")
        await room.send("marie", "AIDE")
        got = await room.send("+33699999999", "/file", channel="sms")
        assert got == {"+33699999999": [
            "Cette adresse n'a pas les droits d'équipe. Sur le serveur, lancez : relais staff"
            " add sms:+33699999999 --name NOM --role ROLE"]}
        got = await room.send("+33699999999", "/prendre 1", channel="sms")
        assert "relais staff add sms:+33699999999" in got["+33699999999"][0]
        [ticket] = await rows(services, Ticket)
        assert ticket.state == "open"
        # Plain words from that address are a citizen's, never relayed as staff.
        got = await room.send("+33699999999", "bonjour", channel="sms")
        assert "relais staff add" not in "\n".join(got["+33699999999"])
        assert set(got) == {"+33699999999"}


async def test_notices_go_to_a_staff_address_not_where_she_wrote_as_a_citizen(
    services: Services,
) -> None:
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        whatsapp = RecordingChannel(name="whatsapp")
        services.registry.add(whatsapp)
        room.recorders.append(whatsapp)
        await add(services, "whatsapp:+33699999999", "Nadia", role="coordinator")
        await room.send("+33699999999", "bonjour", channel="sms")  # as a citizen, by SMS
        await room.send("marie", "AIDE")
        await room.jobs()
        assert any(m.text.startswith("Nouveau dans la file") for m in whatsapp.sent)
        sms = next(r for r in room.recorders if r.name == "sms")
        assert not any("file" in m.text for m in sms.sent if m.to == "+33699999999")


async def test_staff_add_on_the_second_channel_gives_powers_there_too(
    services: Services,
) -> None:
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        first = await add(services, "whatsapp:+33699999999", "Nadia", role="coordinator")
        second = await add(services, "sms:06 99 99 99 99", "Nadia", role="coordinator")
        assert first == second  # one person, one staff member
        assert sorted(a.address for a in await rows(services, StaffAddress)) == [
            "sms:+33699999999", "whatsapp:+33699999999"]
        got = await room.send("+33699999999", "/file", channel="sms")
        assert CODE.search(got["+33699999999"][0])  # staff now, asked for the SMS code


# -- the SMS session ---------------------------------------------------------------------------


async def test_wrong_codes_expiry_and_the_end_of_the_session(services: Services) -> None:
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        await add(services, f"sms:{LEA}", "Léa")
        got = await room.send(LEA, "/file", channel="sms")
        code = code_in(got[LEA])
        wrong = "000000" if code != "000000" else "111111"
        got = await room.send(LEA, wrong, channel="sms")
        assert got[LEA] == ["Code faux ou trop ancien. Renvoyez votre message pour avoir un"
                            " nouveau code."]
        for _ in range(4):  # five wrong answers void the code
            await room.send(LEA, wrong, channel="sms")
        got = await room.send(LEA, code, channel="sms")
        assert "La file" not in "\n".join(got[LEA])
        # A fresh code, too late: expired after 10 minutes.
        code = code_in((await room.send(LEA, "/file", channel="sms"))[LEA])
        clock.shift(timedelta(minutes=11))
        got = await room.send(LEA, code, channel="sms")
        assert got[LEA][0].startswith("Code faux")
        # A fresh code in time: the session opens and the waiting /file runs.
        code = code_in((await room.send(LEA, "/file", channel="sms"))[LEA])
        got = await room.send(LEA, code, channel="sms")
        assert got[LEA][0].startswith("Merci, c'est bien vous.")
        assert got[LEA][1].startswith("Personne n'attend.")
        clock.shift(timedelta(hours=7))
        got = await room.send(LEA, "/file", channel="sms")
        assert got[LEA][0].startswith("Personne n'attend.")  # still in the session
        clock.shift(timedelta(hours=1, minutes=1))
        got = await room.send(LEA, "/file", channel="sms")
        assert CODE.search(got[LEA][0])  # 8 hours later: a new code
        [session_row] = await rows(services, StaffSmsSession)
        assert session_row.code_hash is not None and code not in session_row.code_hash


async def test_staff_sms_off_refuses_staff_powers_by_sms(db_url: str) -> None:
    services = await open_services(make_settings(db_url, staff_sms="off"), migrate=False)
    try:
        with time_machine.travel(MONDAY_10, tick=False):
            room = Room(services)
            await add(services, f"sms:{LEA}", "Léa")
            await room.send("marie", "AIDE")
            got = await room.send(LEA, "/prendre 1", channel="sms")
            assert got == {LEA: ["Les commandes d'équipe ne marchent pas par SMS ici."
                                 " Utilisez WhatsApp, Telegram ou la console."]}
            [ticket] = await rows(services, Ticket)
            assert ticket.state == "open"
    finally:
        await services.close()


# -- OUBLIER by SMS ---------------------------------------------------------------------------


async def test_oublier_by_sms_is_confirmed_by_a_code_not_by_1(services: Services) -> None:
    from bot.conversation import keywords as kw
    from bot.flows import forget
    from bot.flows.global_keywords import ACTIONS

    ACTIONS[kw.FORGET] = forget.on_forget
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await room.send(MARIE, "Bonjour", channel="sms", name="Marie")
        got = await room.send(MARIE, "OUBLIER", channel="sms")
        [question] = got[MARIE]
        code = re.search(r"répondez (\d{4})", question).group(1)  # type: ignore[union-attr]
        for guess in ("1", "OUI", "oui", "2" if code != "2" else "3"):
            await room.send(MARIE, guess, channel="sms")
            assert await rows(services, Message, Message.body == "Bonjour")  # kept
        got = await room.send(MARIE, "OUBLIER", channel="sms")
        code = re.search(r"répondez (\d{4})", got[MARIE][0]).group(1)  # type: ignore[union-attr]
        got = await room.send(MARIE, code, channel="sms")
        assert got[MARIE][0].startswith("C'est fait")
        assert not await rows(services, Message, Message.body == "Bonjour")


# -- the migration ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_migration_gives_each_staff_phone_its_two_addresses(
    backend: str, tmp_path: Path
) -> None:
    """Nobody loses access the day exact addresses land: a staff phone becomes its sms: and
    whatsapp: addresses, a Telegram id stays itself."""
    from sqlalchemy import text

    from bot.storage.db import make_engine
    from bot.storage.migrate import upgrade
    from tests.conftest import _admin, _async_url, _pg_dsn

    name = f"relais_mig0005_{os.getpid()}"
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    else:
        await _admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
        url = _async_url(_pg_dsn(name))
    engine = make_engine(url)
    try:
        await upgrade(engine, "0004")
        async with engine.begin() as conn:
            for cid, (channel, external_id) in enumerate(
                [("sms", "+33611111111"), ("telegram", "4242")], start=1
            ):
                await conn.execute(text(
                    "INSERT INTO contacts (id, created_at) VALUES (:id, '2030-01-01')"
                ), {"id": cid})
                await conn.execute(text(
                    "INSERT INTO addresses (contact_id, channel, external_id, created_at,"
                    " landline) VALUES (:id, :channel, :ext, '2030-01-01', false)"
                ), {"id": cid, "channel": channel, "ext": external_id})
                await conn.execute(text(
                    "INSERT INTO staff (contact_id, name, role, on_duty, created_at)"
                    " VALUES (:id, :name, 'mediator', true, '2030-01-01')"
                ), {"id": cid, "name": f"staff{cid}"})
        await upgrade(engine)
        async with engine.connect() as conn:
            got = (await conn.execute(text(
                "SELECT staff.name, staff_addresses.channel, staff_addresses.external_id"
                " FROM staff_addresses JOIN staff ON staff.id = staff_addresses.staff_id"
                " ORDER BY 1, 2"
            ))).all()
        assert [tuple(row) for row in got] == [
            ("staff1", "sms", "+33611111111"), ("staff1", "whatsapp", "+33611111111"),
            ("staff2", "telegram", "4242"),
        ]
    finally:
        await engine.dispose()
        if backend == "postgres":
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_code_that_could_not_be_sent_is_not_kept_either(db_url: str) -> None:
    async with FakeTwilio() as fake, twilio_app(db_url, fake) as running:
        await add(running.services, f"sms:{LEA}", "Léa Martin")
        fake.fail_next("unsubscribed", to=LEA)  # 21610: refused for good
        assert (await post(running, inbound_params(LEA, "/file")))[0] == 200
        [row] = await eventually(lambda: query(running, select(Outbox).where(
            Outbox.to == LEA, Outbox.kind == "staff.code", Outbox.status == "failed")))
        assert row.body == "[code]"
