"""`relais staff` through the real command (typer's runner), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select

import bot.cli.staff  # noqa: F401 - registers `relais staff`
from bot.domain.staff import find_staff, staff_for_contact
from bot.storage.db import make_engine, sessionmaker
from bot.storage.models import Address, Contact, Staff
from tests.helpers.cli import relais

pytestmark = pytest.mark.usefixtures("no_dotenv")  # the CLI reads no .env


def staff_json(db_url: str) -> list[dict]:
    code, out, err = relais(db_url, "staff", "list", "--json")
    assert (code, err) == (0, "")
    return json.loads(out)


def count(db_url: str, model: type) -> int:
    async def go() -> int:
        engine = make_engine(db_url)
        try:
            async with sessionmaker(engine)() as session:
                return await session.scalar(select(func.count()).select_from(model))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_add_a_bare_number_means_sms_and_list_json_shape(db_url):
    code, out, err = relais(db_url, "staff", "add", "06 12 34 56 78", "--name", "Awa",
                            "--role", "mediator")
    assert (code, err) == (0, "")
    assert out == "added mediator Awa (sms:+33612345678)\n"
    (row,) = staff_json(db_url)
    assert set(row) == {"id", "address", "addresses", "name", "role", "on_duty", "created_at"}
    assert (row["address"], row["addresses"], row["name"], row["role"], row["on_duty"]) == (
        "sms:+33612345678", ["sms:+33612345678"], "Awa", "mediator", True
    )
    assert row["created_at"].endswith("+00:00")


def test_same_number_on_whatsapp_is_the_same_person(db_url):
    relais(db_url, "staff", "add", "sms:+33612345678", "--name", "Awa")
    code, out, _err = relais(db_url, "staff", "add", "whatsapp:0612345678", "--name", "Awa D.",
                             "--role", "coordinator")
    assert code == 0 and out.startswith("updated coordinator Awa D.")
    (row,) = staff_json(db_url)
    assert row["addresses"] == ["sms:+33612345678", "whatsapp:+33612345678"]
    assert row["role"] == "coordinator"
    assert (count(db_url, Contact), count(db_url, Staff)) == (1, 1)


def test_telegram_staff_found_by_address_for_later_queue_work(db_url):
    assert relais(db_url, "staff", "add", "telegram:987654", "--name", "Léa")[0] == 0

    async def go() -> tuple[str | None, str | None, bool]:
        engine = make_engine(db_url)
        try:
            async with sessionmaker(engine)() as session:
                found = await find_staff(session, "telegram:987654")
                none = await find_staff(session, "sms:+33699999999")
                assert found is not None
                same = await staff_for_contact(session, found.contact_id)
                return found.name, None if none is None else none.name, same is not None
        finally:
            await engine.dispose()

    assert asyncio.run(go()) == ("Léa", None, True)


@pytest.mark.parametrize(
    "args",
    [
        ("staff", "add", "06 12", "--name", "X"),
        ("staff", "add", "telegram:abc", "--name", "X"),
        ("staff", "add", "fax:123", "--name", "X"),
        ("staff", "add", "0612345678", "--name", "X", "--role", "boss"),
        ("staff", "remove", "not a number"),
        ("staff", "on", "sms:"),
    ],
)
def test_bad_input_exits_2_with_one_line(db_url, args):
    code, out, err = relais(db_url, *args)
    assert code == 2 and out == ""
    assert err.startswith("relais: ") and err.count("\n") == 1


def test_remove_keeps_the_contact_and_unknown_staff_exits_1(db_url):
    relais(db_url, "staff", "add", "0612345678", "--name", "Awa")
    code, _out, err = relais(db_url, "staff", "remove", "whatsapp:+33612345678")
    assert (code, err) == (0, "")  # the same person, found by the same number on WhatsApp
    assert staff_json(db_url) == []
    assert (count(db_url, Contact), count(db_url, Address)) == (1, 1)
    code, out, err = relais(db_url, "staff", "remove", "0612345678")
    assert (code, out, err) == (1, "", "relais: no staff member at sms:+33612345678\n")
    assert relais(db_url, "staff", "off", "telegram:1")[0] == 1


def test_on_and_off_duty(db_url):
    relais(db_url, "staff", "add", "0612345678", "--name", "Awa")
    code, out, _err = relais(db_url, "staff", "off", "06 12 34 56 78")
    assert (code, out) == (0, "Awa (sms:+33612345678) is off duty\n")
    assert staff_json(db_url)[0]["on_duty"] is False
    assert relais(db_url, "staff", "on", "0612345678")[0] == 0
    assert staff_json(db_url)[0]["on_duty"] is True
    code, out, _err = relais(db_url, "staff", "list")
    assert code == 0 and "Awa" in out and "mediator" in out
