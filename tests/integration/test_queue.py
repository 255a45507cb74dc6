"""The queue's rules on SQLite and PostgreSQL: notices (batched, urgent, reminders), a silent
mediator, opening hours, the question after a close, the take race between two processes,
and ``relais queue`` through the real command."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import select

from bot.app import open_services
from bot.core import hours
from bot.core.config import load_settings
from bot.core.i18n import Translator
from bot.core.types import Inbound, Media
from bot.domain import slots
from bot.storage.models import Conversation, Event, Outbox, Staff, Ticket, TicketNote
from tests.helpers.cli import relais
from tests.helpers.db import make_settings
from tests.helpers.factories import MONDAY_10, Room, add, rows

SATURDAY_15 = datetime(2030, 3, 9, 14, 0, tzinfo=UTC)  # 15:00 in Paris, closed


# -- notices ------------------------------------------------------------------------------------


async def test_notices_are_batched_urgent_at_once_and_waiting_ones_announced_again(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await room.send("marie", "AIDE", name="Marie")
        got = await room.jobs()
        assert got["alice"] == ["Nouveau dans la file :\n#1 0 min - Marie (terminal): "
                                "[demande une personne]\nPour répondre : /prendre N"]
        clock.shift(timedelta(minutes=1))
        await room.send("paul", "AIDE", name="Paul")
        clock.shift(timedelta(minutes=1))
        await room.send("lea", "AIDE", name="Lea")
        assert await room.jobs() == {}  # not twice within 5 minutes
        clock.shift(timedelta(minutes=3))  # 10:05
        got = await room.jobs()
        lines = got["alice"][0].splitlines()
        assert lines[0] == "Nouveau dans la file :"
        assert [line.split()[0] for line in lines[1:-1]] == ["#2", "#3"]

        clock.shift(timedelta(minutes=1))  # 10:06: urgent goes at once, batch or not
        got = await room.send("zoe", "je dors dehors depuis hier", name="Zoe")
        assert got["alice"] == ["URGENT : une personne est peut-être en danger.\n"
                                "#4 URGENT 0 min - Zoe (terminal): je dors dehors depuis hier\n"
                                "Pour répondre : /prendre 4"]

        clock.shift(timedelta(minutes=24))  # 10:30: #1 has waited 30 minutes
        got = await room.jobs()
        assert got["alice"] == ["En attente depuis plus de 30 min : #1\n"
                                "Pour répondre : /prendre N"]
        for number in (1, 2, 3, 4):
            await room.send("alice", f"/prendre {number}")
        clock.shift(timedelta(minutes=40))
        got = await room.jobs()
        assert "alice" not in got  # nothing waits any more
        await add(services, "terminal:bob", "Bob")
        await room.send("alice", "/liberer 2")
        got = await room.jobs()
        assert set(got) == {"bob"}  # not the one who let it go
        assert got["bob"][0].startswith("Nouveau dans la file :\n#2 1 h 09 - Paul")


async def test_a_silent_mediator_gives_the_ticket_back_after_two_hours(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await add(services, "terminal:bob", "Bob")
        await room.send("marie", "AIDE", name="Marie")
        await room.send("alice", "/prendre 1")
        await room.jobs()
        clock.shift(timedelta(minutes=119))
        assert await room.jobs() == {}
        clock.shift(timedelta(minutes=2))
        got = await room.jobs()
        assert got["alice"] == ["#1 est revenue dans la file : pas de réponse de votre part "
                                "depuis 2 heures."]
        assert got["bob"][0].startswith("Nouveau dans la file :\n#1 2 h 01 - Marie")
        assert "marie" not in got

        await room.send("bob", "/prendre 1")
        await room.send("bob", "Bonjour Marie")
        clock.shift(timedelta(hours=3))
        assert await room.jobs() == {}  # Bob answered: it is Marie's turn
        await room.send("marie", "Je suis là")
        clock.shift(timedelta(hours=2, minutes=1))
        got = await room.jobs()
        assert got["bob"] == ["#1 est revenue dans la file : pas de réponse de votre part "
                              "depuis 2 heures."]
    notes = [n.body for n in await rows(services, TicketNote)]
    assert notes == ["@@taken", "@@returned", "@@taken", "@@returned"]


# -- opening hours ------------------------------------------------------------------------------


def test_opening_hours_in_plain_words():
    settings = load_settings(env_file=None, opening_hours="Mo-Fr 09:00-17:00; PH off")
    fr, en = Translator("fr"), Translator("en")
    paris, reunion = "Europe/Paris", "Indian/Reunion"

    def words(moment: datetime, tz: str = paris, tr: Translator = fr) -> str | None:
        return hours.when_open_words(tr, settings, moment, tz)

    assert hours.is_open(settings, MONDAY_10)
    assert not hours.is_open(settings, SATURDAY_15)
    assert words(SATURDAY_15) == "lundi à 9h"
    assert words(SATURDAY_15, tr=en) == "Monday at 9:00"
    assert words(SATURDAY_15, reunion) == "lundi à 12h"  # 9h in Paris, their own clock
    assert words(datetime(2030, 3, 4, 6, 0, tzinfo=UTC)) == "aujourd'hui à 9h"
    assert words(datetime(2030, 3, 4, 17, 30, tzinfo=UTC)) == "demain à 9h"
    # 1 May is a public holiday: closed all Wednesday
    assert words(datetime(2030, 4, 30, 17, 0, tzinfo=UTC)) == "jeudi à 9h"
    assert words(datetime(2030, 3, 1, 17, 0, tzinfo=UTC), tr=en) == "Monday at 9:00"
    never = load_settings(env_file=None, opening_hours="off")
    assert hours.when_open_words(fr, never, MONDAY_10, paris) is None
    always = load_settings(env_file=None, opening_hours="24/7")
    assert hours.is_open(always, SATURDAY_15)


async def test_out_of_hours_the_person_is_told_when_and_offered_a_call(services):
    with time_machine.travel(SATURDAY_15, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")  # on duty on a Saturday
        got = await room.send("lea", "AIDE", name="Lea")  # no free slot: no offer
        assert got == {"lea": ["Merci. Notre équipe est absente pour le moment. Une personne "
                               "lira votre message lundi à 9h."]}
        async with services.sessions() as session, session.begin():
            await slots.open_slots(session, datetime(2030, 3, 11, 13, 0, tzinfo=UTC),
                                   count=2, minutes=30, now=services.clock.now())
        got = await room.send("marie", "AIDE", name="Marie")
        assert got == {"marie": [
            "Merci. Notre équipe est absente pour le moment. Une personne lira votre message "
            "lundi à 9h.\n\nVoulez-vous plutôt que l'on vous appelle au téléphone ?\n"
            "1. Oui\n2. Non"
        ]}
        got = await room.send("marie", "2")
        assert got == {"marie": ["D'accord. Vous pouvez écrire votre message ici."]}
        assert await room.send("marie", "C'est pour mon dossier CAF") == {}

        got = await room.send("paul", "HELP", name="Paul", language="en")
        assert got["paul"][0].startswith(
            "Thank you. Our team is away now. A person will read your message Monday at 9:00.")
        got = await room.send("paul", "1")  # yes: the callback flow takes over
        assert got["paul"][0].startswith("When can we call you? Choose a time.\n1. Monday 11")
        got = await room.send("+262692123456", "AIDE", channel="sms")
        assert "lundi à 12h" in got["+262692123456"][0]  # Réunion: Paris 9h is 12h there

        got = await room.send("zoe", "il me frappe", name="Zoe")  # urgent: staff told now
        assert got["alice"][0].startswith("URGENT : une personne est peut-être en danger.")
        assert "Voulez-vous" not in "\n".join(got["zoe"])
    flows = {c.contact_id: c.flow for c in await rows(services, Conversation)}
    assert flows[3] == "ticket" and flows[4] == "callbacks"  # Marie waits, Paul books


async def test_two_misunderstood_messages_offer_a_person(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await room.send("marie", "bonjour")
        await room.send("marie", "blabla")
        got = await room.send("marie", "blabla")
        assert got["marie"][-1] == "Voulez-vous parler à une personne ?\n1. Oui\n2. Non"
        assert await rows(services, Ticket) == []
        got = await room.send("marie", "oui")
        assert got == {"marie": ["Merci. Une personne de Relais va vous répondre ici."]}
    assert [t.source for t in await rows(services, Ticket)] == ["misunderstood"]


async def test_the_question_after_a_late_close_waits_for_the_morning(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await room.send("marie", "AIDE", name="Marie")
        await room.send("alice", "/prendre 1")
        await room.send("alice", "Je vous rappelle ce soir")
        clock.move_to(datetime(2030, 3, 4, 20, 30, tzinfo=UTC))  # 21:30 in Paris
        got = await room.send("alice", "/fermer 1 rappel fait")
        assert got == {"alice": ["#1 est fermée. Merci !"]}  # nothing at night for her
        clock.move_to(datetime(2030, 3, 5, 8, 0, tzinfo=UTC))  # 9:00
        got = await room.jobs()
        assert got["marie"] == ["Est-ce que nous vous avons aidé ?\n1. Oui\n2. Non"]
        got = await room.send("marie", "non")
        assert got["marie"] == ["Merci de nous l'avoir dit. Écrivez AIDE pour parler de "
                                "nouveau à une personne."]
    events = await rows(services, Event, Event.kind == "ticket.satisfaction")
    assert [e.value for e in events] == [{"answer": "no"}]


# -- the take race ------------------------------------------------------------------------------


async def test_two_mediators_taking_at_once_from_two_processes_one_wins(db_url):
    settings = make_settings(db_url, opening_hours="24/7")
    first = await open_services(settings, migrate=False)
    second = await open_services(settings, migrate=False)
    try:
        room = Room(first)
        await add(first, "terminal:alice", "Alice Martin")
        await add(first, "terminal:bob", "Bob Durand")
        for round_ in range(1, 4):
            await room.send(f"p{round_}", "AIDE", name=f"P{round_}")
            results = await asyncio.gather(
                first.engine.handle(Inbound("terminal", "terminal:alice", f"/take {round_}",
                                            provider_id=f"race-a-{round_}")),
                second.engine.handle(Inbound("terminal", "terminal:bob", f"/prendre {round_}",
                                             provider_id=f"race-b-{round_}")),
            )
            assert all(not result.step_failed for result in results)
            got = await room.received()
            (ticket,) = await rows(first, Ticket, Ticket.id == round_)
            winner = "alice" if ticket.mediator_id == 1 else "bob"
            loser = "bob" if winner == "alice" else "alice"
            assert got[winner][0].startswith(f"#{round_} est à vous.")
            assert got[loser] == [f"#{round_} a déjà été prise par "
                                  f"{'Alice Martin' if winner == 'alice' else 'Bob Durand'}."]
            assert len(got[f"p{round_}"]) == 1  # one "… vous répond", not two
            takes = await rows(first, TicketNote, TicketNote.ticket_id == round_,
                               TicketNote.body == "@@taken")
            assert len(takes) == 1
    finally:
        await first.close()
        await second.close()


# -- relais queue -------------------------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    yield


def test_relais_queue_reads_and_acts_for_staff(db_url, in_tmp):
    async def setup() -> None:
        services = await open_services(make_settings(db_url), migrate=False)
        try:
            await add(services, "sms:+33611111111", "Alice Martin")
            await add(services, "telegram:4242", "Bob Durand")
            engine = services.engine
            await engine.handle(Inbound("terminal", "terminal:marie", "AIDE", provider_id="c1",
                                        profile_name="Marie Dupont"))
            photo = (Media("image/png", "provider-ref-photo"),)
            await engine.handle(Inbound("terminal", "terminal:marie", "Ma carte vitale",
                                        provider_id="c2", media=photo))
        finally:
            await services.close()

    asyncio.run(setup())
    code, out, err = relais(db_url, "queue", "list", "--json")
    assert (code, err) == (0, "")
    (row,) = json.loads(out)
    assert set(row) == {
        "id", "state", "priority", "source", "topic", "person", "first_name", "language",
        "channel", "level", "created_at", "taken_at", "closed_at", "waiting_minutes",
        "mediator", "mediator_name", "outcome", "first_words"}
    assert (row["id"], row["state"], row["person"], row["first_name"], row["first_words"]) == (
        1, "open", "terminal:marie", "Marie", "Ma carte vitale")
    assert datetime.fromisoformat(row["created_at"]).utcoffset() is not None

    assert relais(db_url, "queue", "take", "1", "--as", "06 11 11 11 11") == (
        0, "took #1 as Alice Martin\n", "")
    assert relais(db_url, "queue", "take", "1", "--as", "sms:+33611111111")[1] == (
        "already held #1 as Alice Martin\n")
    code, out, err = relais(db_url, "queue", "take", "1", "--as", "telegram:4242")
    assert (code, out) == (1, "")
    assert err == "relais: ticket 1 was already taken by Alice Martin\n"
    assert relais(db_url, "queue", "reply", "1", "Bonjour Marie", "--as",
                  "sms:+33611111111") == (0, "reply to #1 queued\n", "")
    assert relais(db_url, "queue", "note", "1", "carte perdue", "--as",
                  "sms:+33611111111") == (0, "note added to #1\n", "")

    code, out, err = relais(db_url, "queue", "show", "1", "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert (shown["state"], shown["mediator"], shown["mediator_name"]) == (
        "taken", "sms:+33611111111", "Alice Martin")
    assert [m["kind"] for m in shown["messages"]] == ["in", "in", "out"]
    assert shown["messages"][-1]["text"] == "Alice : Bonjour Marie"
    assert [n["text"] for n in shown["notes"]] == ["carte perdue"]
    (media,) = shown["media"]
    assert media["content_type"] == "image/png"
    assert "/media/" in media["url"] and "sig=" in media["url"]
    assert "provider-ref" not in media["url"]
    code, out, _err = relais(db_url, "queue", "show", "1")
    assert code == 0 and "photos and voice notes:" in out and "image/png" in out

    assert relais(db_url, "queue", "transfer", "1", "telegram:4242", "--as",
                  "sms:+33611111111") == (0, "#1 passed to Bob Durand\n", "")
    assert relais(db_url, "queue", "release", "1", "--as", "telegram:4242") == (
        0, "#1 is back in the queue\n", "")
    code, out, err = relais(db_url, "queue", "close", "1", "--outcome", "carte commandée",
                            "--as", "telegram:4242")
    assert (code, out) == (2, "")
    assert "--outcome: unknown outcome 'carte commandée'; one of 1 resolved" in err
    assert relais(db_url, "queue", "close", "1", "--as", "telegram:4242")[0] == 2
    assert relais(db_url, "queue", "close", "1", "--outcome", "Résolu", "--note",
                  "carte commandée", "--as", "telegram:4242") == (0, "closed #1\n", "")
    code, out, _err = relais(db_url, "queue", "history", "1", "--json")
    history = json.loads(out)
    assert [(h["kind"], h["text"]) for h in history if h["kind"] == "system"] == [
        ("system", "took the ticket"), ("system", "passed the ticket to Bob Durand"),
        ("system", "put the ticket back in the queue"),
        ("system", "closed the ticket: resolved")]
    assert [h["text"] for h in history if h["kind"] == "note"][-1] == "carte commandée"

    assert relais(db_url, "queue", "list", "--json")[1] == "[]\n"
    assert [r["outcome"] for r in json.loads(relais(db_url, "queue", "list", "--all",
                                                    "--json")[1])] == ["resolved"]
    code, out, err = relais(db_url, "queue", "take", "1", "--as", "sms:+33699999999")
    assert (code, out) == (2, "")
    assert "sms:+33699999999 is not a registered staff member" in err
    assert relais(db_url, "queue", "show", "42")[0] == 1
    assert relais(db_url, "queue", "reply", "1", " ", "--as", "telegram:4242")[0] == 2

    async def sent_to_marie() -> list[str]:
        services = await open_services(make_settings(db_url), migrate=False)
        try:
            async with services.sessions() as session:
                return [r.body or "" for r in (await session.scalars(
                    select(Outbox).where(Outbox.to == "marie").order_by(Outbox.id))).all()]
        finally:
            await services.close()

    texts = asyncio.run(sent_to_marie())
    assert "Alice, de Relais, vous répond. Écrivez votre message ici." in texts
    assert "Alice : Bonjour Marie" in texts
    assert not any("Martin" in t or "+33611111111" in t or "carte perdue" in t for t in texts)


async def test_a_ticket_held_by_someone_removed_from_staff_can_be_taken(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        alice = await add(services, "terminal:alice", "Alice")
        await add(services, "terminal:bob", "Bob")
        await room.send("marie", "AIDE", name="Marie")
        await room.send("alice", "/prendre 1")
        async with services.sessions() as session, session.begin():  # relais staff remove
            await session.delete(await session.get(Staff, alice))
        got = await room.send("bob", "/file")
        assert got["bob"][0].startswith("En attente : 1\n#1 ")
        got = await room.send("bob", "/prendre 1")
        assert got["bob"][0].startswith("#1 est à vous.")
        assert got["marie"] == ["Bob, de Relais, vous répond. Écrivez votre message ici."]
