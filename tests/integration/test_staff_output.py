"""Staff output is safe: what citizens wrote reaches a mediator's terminal as text, never as
Rich markup or terminal escape sequences; CSV exports never run as spreadsheet formulas;
``/fait`` and ``relais slots done`` are for the call's own mediator (or a coordinator), once
the call has begun; a broken contacts CSV loses only its broken rows.

Real engine and outbox (terminal channel), the real ``relais`` command through typer's
runner, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import unicodedata
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from sqlalchemy import insert, select

import bot.cli.contacts  # noqa: F401 - registers `relais contacts`
import bot.cli.queue  # noqa: F401 - registers `relais queue`
import bot.cli.report  # noqa: F401 - registers `relais report`
import bot.cli.slots  # noqa: F401 - registers `relais slots`
import bot.cli.staff  # noqa: F401 - registers `relais staff`
from bot.app import Services
from bot.cli.common import plain, safe
from bot.core import csv_cells
from bot.domain import contacts
from bot.storage import counters as cn
from bot.storage.db import make_engine, sessionmaker
from bot.storage.models import Contact, ReportCounter, Slot
from tests.helpers.cli import relais
from tests.helpers.factories import MONDAY_10, Room, add, rows

pytestmark = pytest.mark.usefixtures("no_dotenv")  # the CLI reads no .env

BRACKETS = "[/]"
LINK = "[link=https://evil.example]x[/link]"
ESCAPED = "\x1b[31mred"
WIDE = {"COLUMNS": "300"}  # Rich tables at full width: names are not wrapped


async def cli(services: Services, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(relais, services.settings.database_url, *args, env=WIDE)


def has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" and c != "\n" for c in text)


# -- citizen text in the terminal ---------------------------------------------------------


async def test_names_and_messages_are_shown_literally_without_escapes(services):
    with time_machine.travel(MONDAY_10, tick=False):
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await room.send("p1", "AIDE", name=BRACKETS)
        await room.send("p1", "[/] mon dossier")
        await room.send("p2", "AIDE", name=LINK)
        await room.send("p2", "[link=https://evil.example]cliquez[/link]")
        await room.send("p3", "AIDE", name=ESCAPED)
        await room.send("p3", "\x1b]8;;https://evil.example\x1b\\ici\x1b]8;;\x1b\\ \x1b[2J fin")
        await room.send("alice", "/prendre 1")
        await room.send("alice", "/note 1 [bold]note\x07")

        code, out, err = await cli(services, "contacts", "list")
        assert (code, err) == (0, ""), err
        for shown in (BRACKETS, LINK, "[31mred"):
            assert shown in out
        assert "\x1b" not in out and "\x07" not in out

        code, out, err = await cli(services, "contacts", "list", "--json")
        names = {row["name"] for row in json.loads(out)}
        assert {BRACKETS, LINK, ESCAPED} <= names  # JSON stays exact

        code, out, err = await cli(services, "queue", "list")
        assert (code, err) == (0, ""), err
        assert BRACKETS in out and LINK in out and "[31mred" in out
        assert "[/] mon dossier" in out and "[link=https://evil.example]cliquez[/link" in out
        assert not has_control(out)

        for ticket in ("1", "2", "3"):
            for command in ("show", "history"):
                code, out, err = await cli(services, "queue", command, ticket)
                assert (code, err) == (0, ""), err
                assert not has_control(out), (command, ticket, out)
        code, out, _err = await cli(services, "queue", "show", "1")
        assert "[/] mon dossier" in out and "[bold]note" in out
        code, out, _err = await cli(services, "queue", "show", "3")
        assert "ici" in out and "fin" in out and "\x1b" not in out

        code, out, _err = await cli(services, "queue", "show", "3", "--json")
        assert ESCAPED in json.loads(out)["first_name"]

        code, out, err = await cli(services, "contacts", "show", "terminal:p2")
        assert (code, err) == (0, "") and LINK in out


def test_safe_keeps_printable_unicode_and_drops_controls():
    assert plain("Zoé\tالعربية 🙂\r\nfin") == "Zoé العربية 🙂 fin"
    assert plain("a\x1b[31mb\x9bc\u202ed\x00") == "a[31mbcd"
    assert plain(None) == ""
    for text in (BRACKETS, LINK, "x\\", "\\[bold]y", "[bold]z\\"):
        assert rendered(safe(text)) == text


def rendered(markup: str) -> str:
    out = io.StringIO()
    Console(file=out, width=500, emoji=False, highlight=False, soft_wrap=True).print(markup)
    return out.getvalue().removesuffix("\n")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_safe_never_leaks_a_control_character_nor_breaks_rich(text: str) -> None:
    shown = safe(text)
    assert not any(unicodedata.category(c) == "Cc" for c in shown)
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", shown)
    assert rendered(shown) == plain(text)  # printed as written: no markup obeyed


# -- CSV exports ----------------------------------------------------------------------------


def test_formula_cells_are_neutralised_numbers_stay_numbers():
    assert [csv_cells.cell(v) for v in ("=1+1", "+33612", "-x", "@SUM(A1)", "\tx", "\rx")] \
        == ["'=1+1", "'+33612", "'-x", "'@SUM(A1)", "'\tx", "'\rx"]
    assert csv_cells.row(["ok", None, 3, -2, 0.5, "Zoé"]) == ["ok", "", 3, -2, 0.5, "Zoé"]


def test_report_csv_writes_a_typed_outcome_as_text(db_url, tmp_path):
    async def seed() -> None:
        engine = make_engine(db_url)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                await session.execute(insert(ReportCounter), [  # an old free-text outcome
                    {"day": date(2030, 3, 3), "name": cn.CLOSED,
                     "key": '=HYPERLINK("http://x")', "count": 2, "total": 0},
                    {"day": date(2030, 3, 3), "name": cn.CLOSED, "key": "resolved",
                     "count": 5, "total": 0},
                ])
        finally:
            await engine.dispose()

    asyncio.run(seed())
    with time_machine.travel(datetime(2030, 3, 10, 9, 0, tzinfo=UTC), tick=False):
        code, _out, err = relais(db_url, "report", "--since", "2030-03-01", "--until",
                                 "2030-03-05", "--csv", str(tmp_path / "out"), env=WIDE)
    assert code == 0, err
    with (tmp_path / "out" / "ticket_outcomes.csv").open(encoding="utf-8-sig") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["outcome", "count"]
    assert sorted(table[1:]) == [["'=HYPERLINK(\"http://x\")", "2"], ["resolved", "5"]]
    for path in (tmp_path / "out").glob("*.csv"):
        for line in csv.reader(path.open(encoding="utf-8-sig")):
            assert not any(c[:1] in ("=", "+", "@", "\t", "\r") for c in line), path


# -- who may say how a call went ------------------------------------------------------------


async def _booked_slots(services: Services, mediator: int, *people: str) -> list[int]:
    """A slot of ``mediator`` at 11:00 and 11:30 Paris for each person (by contact name)."""
    ids = []
    async with services.sessions() as session, session.begin():
        for n, name in enumerate(people):
            person = (await session.scalars(select(Contact).where(Contact.name == name))).one()
            slot = Slot(start_at=MONDAY_10 + timedelta(hours=1, minutes=30 * n), minutes=30,
                        mediator_id=mediator, status="booked", contact_id=person.id,
                        phone="+33612345678", booked_at=MONDAY_10, created_at=MONDAY_10)
            session.add(slot)
            await session.flush()
            ids.append(slot.id)
    return ids


async def test_done_in_chat_only_by_the_calls_mediator_or_a_coordinator_after_start(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        alice = await add(services, "terminal:alice", "Alice")
        await add(services, "terminal:bob", "Bob")
        await add(services, "terminal:chloe", "Chloé", role="coordinator")
        await room.send("marie", "AIDE", name="Marie")
        await room.send("paul", "AIDE", name="Paul")
        first, second = await _booked_slots(services, alice, "Marie", "Paul")
        await room.jobs()
        await room.received()

        got = await room.send("alice", f"/fait {first} joint")
        assert got == {"alice": [f"L'appel {first} n'a pas encore commencé : notez-le après "
                                 "l'appel."]}
        clock.move_to(MONDAY_10 + timedelta(hours=1, minutes=40))  # both calls have begun
        got = await room.send("bob", f"/fait {first} joint")
        assert got == {"bob": [f"L'appel {first} est confié à Alice : seule cette personne "
                               "ou un coordinateur peut le noter."]}
        slots = {s.id: (s.status, s.outcome) for s in await rows(services, Slot)}
        assert slots == {first: ("booked", None), second: ("booked", None)}

        got = await room.send("alice", f"/fait {first} joint")
        assert got == {"alice": [f"Appel {first} : joint. Merci !"]}
        got = await room.send("chloe", f"/done {second} no-answer")
        assert got["chloe"] == [f"Appel {second} : pas de réponse. On propose un autre "
                                "horaire à la personne."]
    slots = {s.id: (s.status, s.outcome) for s in await rows(services, Slot)}
    assert slots == {first: ("done", "reached"), second: ("done", "no-answer")}


async def test_slots_done_on_the_command_line_follows_the_same_rule(services):
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        alice = await add(services, "terminal:alice", "Alice")
        await add(services, "terminal:bob", "Bob")
        await add(services, "terminal:chloe", "Chloé", role="coordinator")
        await room.send("marie", "AIDE", name="Marie")
        await room.send("paul", "AIDE", name="Paul")
        await room.send("zoe", "AIDE", name="Zoé")
        first, second, third = await _booked_slots(services, alice, "Marie", "Paul", "Zoé")

        code, out, err = await cli(services, "slots", "done", str(first), "--outcome",
                                   "reached", "--as", "terminal:alice")
        assert (code, out) == (1, "")
        assert err == f"relais: slot {first} has not started yet: record how the call went " \
                      "after it\n"
        code, out, err = await cli(services, "slots", "done", str(first), "--outcome",
                                   "reached")  # the operator, without --as: the time still
        assert code == 1 and "not started" in err
        clock.move_to(MONDAY_10 + timedelta(hours=2, minutes=10))  # all three have begun
        code, out, err = await cli(services, "slots", "done", str(first), "--outcome",
                                   "reached", "--as", "terminal:bob")
        assert (code, out) == (1, "")
        assert err == f"relais: slot {first} is Alice's call: only they or a coordinator " \
                      "can record how it went\n"
        assert {s.id: s.status for s in await rows(services, Slot)} == {
            first: "booked", second: "booked", third: "booked"}
        code, out, err = await cli(services, "slots", "done", str(first), "--outcome",
                                   "reached", "--as", "terminal:alice")
        assert (code, out, err) == (0, f"slot {first}: reached\n", "")
        code, out, err = await cli(services, "slots", "done", str(second), "--outcome",
                                   "reached", "--as", "terminal:chloe")
        assert (code, out, err) == (0, f"slot {second}: reached\n", "")
        code, out, err = await cli(services, "slots", "done", str(third), "--outcome",
                                   "reached")
        assert (code, out, err) == (0, f"slot {third}: reached\n", "")
        code, _out, err = await cli(services, "slots", "done", str(third), "--outcome",
                                    "reached", "--as", "terminal:nobody")
        assert code == 2 and "is not a registered staff member" in err
    assert {s.id: (s.status, s.outcome) for s in await rows(services, Slot)} == {
        first: ("done", "reached"), second: ("done", "reached"), third: ("done", "reached")}


# -- contacts import ------------------------------------------------------------------------


def _import(db_url: str, tmp_path: Path, data: bytes) -> tuple[int, str, str, dict[str, Any]]:
    path = tmp_path / "contacts.csv"
    path.write_bytes(data)
    code, out, err = relais(db_url, "contacts", "import", str(path), env=WIDE)
    listed = json.loads(relais(db_url, "contacts", "list", "--json", env=WIDE)[1])
    return code, out, err, {row["address"]: row["name"] for row in listed}


def test_an_unterminated_quote_loses_only_its_own_line(db_url, tmp_path):
    code, _out, err, names = _import(db_url, tmp_path, (
        'phone,name\n'
        '06 12 34 56 78,"Marie Dupont\n'
        '06 98 76 54 32,Jean Martin\n'
        '06 11 22 33 44,"Zoé\nAkou"\n'  # a line break typed in a cell: one record
        '06 55 66 77 88,Léa\n'
    ).encode())
    assert code == 1
    assert err == "relais: contacts.csv line 2: unterminated quote: row rejected\n"
    assert names == {"sms:+33698765432": "Jean Martin", "sms:+33611223344": "Zoé Akou",
                     "sms:+33655667788": "Léa"}


def test_a_bad_byte_loses_one_line_and_keeps_the_accents_of_the_others(db_url, tmp_path):
    lines = ["téléphone;nom", "06 12 34 56 78;Hélène", "06 98 76 54 32;Jérôme",
             "06 11 22 33 44;Zoé", "06 55 66 77 88;Gaëlle", "06 44 55 66 77;Noël"]
    data = ("\n".join(lines).encode() + b"\n06 33 44 55 66;Fran\xe7ois\n"
            + "06 22 33 44 55;Anaïs\n".encode())  # line 7: one Windows-1252 byte
    code, _out, err, names = _import(db_url, tmp_path, data)
    assert code == 1
    assert err == "relais: contacts.csv line 7: not UTF-8 text: row rejected\n"
    assert names == {"sms:+33612345678": "Hélène", "sms:+33698765432": "Jérôme",
                     "sms:+33611223344": "Zoé", "sms:+33655667788": "Gaëlle",
                     "sms:+33644556677": "Noël", "sms:+33622334455": "Anaïs"}


def test_a_windows_1252_file_still_imports_whole(db_url, tmp_path):
    data = "téléphone;nom\n06 12 34 56 78;Hélène\n06 98 76 54 32;François\n".encode("cp1252")
    code, _out, err, names = _import(db_url, tmp_path, data)
    assert code == 0
    assert "read as Windows-1252" in err
    assert names == {"sms:+33612345678": "Hélène", "sms:+33698765432": "François"}


CSV_TEXT = st.lists(
    st.lists(st.sampled_from(['"', ",", ";", "06 12 34 56 78", "Zoé", "\n", "\r", " ", "x",
                              "oui", "\x1b", "é".encode().decode("latin-1")]),
             max_size=12).map("".join),
    max_size=8,
).map(lambda rows: "phone,name,tags\n" + "\n".join(rows))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300),
                 CSV_TEXT.map(str.encode),
                 st.tuples(CSV_TEXT, st.binary(max_size=4)).map(
                     lambda t: t[0].encode() + t[1] + b"\n06 98 76 54 32,Jean\n")))
def test_the_importer_never_raises(data: bytes) -> None:
    parsed = contacts.read_contacts(data)
    for problem in [*parsed.rejected, *parsed.warnings]:
        assert problem.line >= 1
    lines = data.count(b"\n") + 1
    assert all(1 <= p.line <= lines for p in parsed.people)
