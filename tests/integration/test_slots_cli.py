"""`relais slots` through the real command (typer's runner), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import select

import bot.cli.slots  # noqa: F401 - registers `relais slots`
import bot.cli.staff  # noqa: F401 - registers `relais staff`
from bot.domain import slots
from bot.storage.models import Address, Contact, Event, Outbox
from tests.helpers.cli import relais
from tests.helpers.db import in_db

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)  # Monday, 10:00 in Paris


@pytest.fixture(autouse=True)
def frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no .env
    with time_machine.travel(T0, tick=False):
        yield


def listed(db_url: str, *more: str) -> list[dict]:
    code, out, err = relais(db_url, "slots", "list", "--json", *more)
    assert (code, err) == (0, ""), err
    return json.loads(out)


def book(db_url: str, slot_id: int, address: str = "sms:+33612345678") -> None:
    channel, _, ident = address.partition(":")

    async def work(session) -> None:  # noqa: ANN001
        contact = Contact(created_at=T0, language="fr")
        session.add(contact)
        await session.flush()
        session.add(Address(contact_id=contact.id, channel=channel, external_id=ident,
                            created_at=T0, landline=False))
        assert await slots.book(session, slot_id, contact.id, "+33612345678", T0)

    in_db(db_url, work)


def test_open_without_offset_is_in_relais_timezone_and_list_json_shape(db_url):
    code, out, err = relais(db_url, "slots", "open", "2030-03-05T14:00", "--count", "3",
                            "--minutes", "20")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "opened slot 1: 2030-03-05T14:00:00+01:00 (20 min)",
        "opened slot 2: 2030-03-05T14:20:00+01:00 (20 min)",
        "opened slot 3: 2030-03-05T14:40:00+01:00 (20 min)",
    ]
    rows = listed(db_url)
    assert rows[0] == {
        "id": 1, "start": "2030-03-05T14:00:00+01:00", "minutes": 20, "status": "open",
        "mediator": None, "mediator_name": None, "person": None, "phone": None, "outcome": None,
    }
    assert [r["start"] for r in rows] == [
        "2030-03-05T14:00:00+01:00", "2030-03-05T14:20:00+01:00", "2030-03-05T14:40:00+01:00"
    ]


def test_open_with_offset_and_a_mediator(db_url):
    relais(db_url, "staff", "add", "whatsapp:+33698765432", "--name", "Awa")
    code, _out, err = relais(db_url, "slots", "open", "2030-03-05T14:00+04:00",
                             "--mediator", "sms:06 98 76 54 32")  # the same person by SMS
    assert (code, err) == (0, "")
    (row,) = listed(db_url)
    assert row["start"] == "2030-03-05T11:00:00+01:00"  # 14:00 in Réunion is 11:00 in Paris
    assert (row["mediator"], row["mediator_name"], row["minutes"]) == (
        "whatsapp:+33698765432", "Awa", 30
    )


def test_unknown_mediator_exits_1_and_bad_input_exits_2(db_url):
    code, out, err = relais(db_url, "slots", "open", "2030-03-05T14:00", "--mediator",
                            "0611111111")
    assert (code, out) == (1, "")
    assert err == ("relais: --mediator: sms:+33611111111 is not a registered staff member "
                   "(relais staff list)\n")
    assert listed(db_url) == []
    for args in (
        ("2030-03-05T14:00", "--mediator", "0611"),
        ("next tuesday",),
        ("2030-03-03T14:00",),  # in the past
        ("2030-03-05T14:00", "--count", "0"),
    ):
        code, out, _err = relais(db_url, "slots", "open", *args)
        assert (code, out) == (2, ""), args
    assert listed(db_url) == []


def test_cancel_and_done(db_url):
    relais(db_url, "slots", "open", "2030-03-05T14:00", "--count", "3")
    book(db_url, 1)
    book(db_url, 2, "telegram:4242")
    code, out, err = relais(db_url, "slots", "cancel", "3")
    assert (code, out, err) == (0, "cancelled slot 3 (nobody had booked it)\n", "")
    code, out, _err = relais(db_url, "slots", "cancel", "1")
    assert code == 0 and "told now" in out
    assert relais(db_url, "slots", "done", "2", "--outcome", "reached")[0] == 1  # not yet
    after_start = time_machine.travel(datetime(2030, 3, 5, 13, 40, tzinfo=UTC), tick=False)
    after_start.start()  # 14:40 in Paris: slot 2 (14:30) has begun
    code, out, _err = relais(db_url, "slots", "done", "2", "--outcome", "reached")
    assert (code, out) == (0, "slot 2: reached\n")
    rows = {r["id"]: r for r in listed(db_url)}
    assert [(rows[i]["status"], rows[i]["outcome"]) for i in (1, 2, 3)] == [
        ("cancelled", None), ("done", "reached"), ("cancelled", None)
    ]
    assert (rows[2]["person"], rows[2]["phone"]) == ("telegram:4242", "+33612345678")
    assert relais(db_url, "slots", "cancel", "1")[0] == 1  # already cancelled
    assert relais(db_url, "slots", "cancel", "99")[0] == 1
    assert relais(db_url, "slots", "done", "2", "--outcome", "no-answer")[0] == 1  # done
    assert relais(db_url, "slots", "done", "3", "--outcome", "maybe")[0] == 2
    after_start.stop()

    async def told(session) -> tuple[list[str], list[str]]:  # noqa: ANN001
        bodies = await session.scalars(select(Outbox.body).order_by(Outbox.id))
        kinds = await session.scalars(
            select(Event.kind).where(Event.kind.like("callback.%")).order_by(Event.id)
        )
        return list(bodies), list(kinds)

    bodies, kinds = in_db(db_url, told)
    assert bodies == [  # one SMS: the notice, then what is left (nothing free here)
        "Nous sommes désolés : nous devons annuler votre appel du mardi 5 mars à 14h00.\n\n"
        "Aucun horaire n'est libre pour un appel en ce moment. Voulez-vous laisser un message "
        "à un médiateur ?"
    ]
    assert kinds == ["callback.cancelled", "callback.reached"]


def test_list_hides_past_slots_unless_all(db_url):
    relais(db_url, "slots", "open", "2030-03-04T15:00", "--count", "2")
    with time_machine.travel(datetime(2030, 3, 6, 9, 0, tzinfo=UTC), tick=False):
        assert listed(db_url) == []
        assert [r["id"] for r in listed(db_url, "--all")] == [1, 2]
