"""The `relais` command as a newcomer meets it (issue 12, part 6): one line for a bad or
unknown `--as`, nothing on stderr when all went well, tables that keep the useful column in
80 columns, one way to show times, help texts as sentences, a refusal at once when the
channel is not configured, and `relais chat` that leaves at once and never shows a log line
inside the conversation. Real SQLite; the real command (typer's runner, or a terminal)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pexpect
import pytest
import time_machine
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from bot.app import open_services
from bot.cli.app import app
from bot.core.types import Inbound
from bot.storage.models import Outbox
from tests.helpers.cli import relais
from tests.helpers.db import make_settings

RELAIS = str(Path(sys.executable).parent / "relais")
T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)  # Monday, 10:00 in Paris
TWILIO = {"RELAIS_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "RELAIS_TWILIO_AUTH_TOKEN": "secret",
          "RELAIS_TWILIO_SMS_FROM": "+33700000000"}


@pytest.fixture(autouse=True)
def frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no .env
    with time_machine.travel(T0, tick=False):
        yield


def seed(db_url: str, *inbound: Inbound) -> None:
    """Messages people wrote, through the engine."""

    async def go() -> None:
        services = await open_services(make_settings(db_url), migrate=False)
        try:
            for message in inbound:
                await services.engine.handle(message)
        finally:
            await services.close()

    asyncio.run(go())


def count(db_url: str, model: type) -> int:
    async def go() -> int:
        services = await open_services(make_settings(db_url), migrate=False)
        try:
            async with services.sessions() as session:
                return await session.scalar(select(func.count()).select_from(model)) or 0
        finally:
            await services.close()

    return asyncio.run(go())


def one_line(err: str) -> str:
    assert err.startswith("relais: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# -- --as ----------------------------------------------------------------------------------

AS_COMMANDS = [
    ("queue", "take", "1"), ("queue", "reply", "1", "Bonjour"), ("queue", "note", "1", "vu"),
    ("queue", "release", "1"), ("queue", "transfer", "1", "telegram:4242"),
    ("queue", "close", "1", "--outcome", "1"), ("slots", "done", "1", "--outcome", "reached"),
]


@pytest.mark.parametrize("command", AS_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_malformed_as_is_one_plain_line_exit_2(sqlite_url: str, command: tuple) -> None:
    for given in ("foo:bar", "0612", "telegram:abc"):
        code, out, err = relais(sqlite_url, *command, "--as", given)
        assert (code, out) == (2, ""), err
        one_line(err)
        assert f"--as: {given!r} is not an address (sms:+33612345678" in err
        assert "did not seem" not in err and "(1)" not in err  # no phonenumbers text


@pytest.mark.parametrize("command", AS_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_an_unknown_as_names_the_address_and_the_way_to_list_staff(
    sqlite_url: str, command: tuple
) -> None:
    code, out, err = relais(sqlite_url, *command, "--as", "06 99 99 99 99")
    assert (code, out) == (2, "")
    assert one_line(err) == ("relais: --as: sms:+33699999999 is not a registered staff "
                             "member (relais staff list)\n")


# -- stderr stays empty when nothing went wrong -----------------------------------------------


def test_happy_paths_print_nothing_on_stderr(sqlite_url: str) -> None:
    public = {"RELAIS_PUBLIC_URL": "https://relais.example.org"}
    seed(sqlite_url, Inbound("terminal", "terminal:marie", "AIDE", provider_id="m1",
                             profile_name="Marie"))
    for args in (
        ("db", "upgrade"), ("channels",), ("channels", "--json"),
        ("staff", "add", "0611111111", "--name", "Alice"), ("staff", "list"),
        ("queue", "list"), ("queue", "show", "1"), ("queue", "history", "1"),
        ("queue", "take", "1", "--as", "0611111111"),
        ("slots", "open", "2030-03-05T14:00"), ("slots", "list"),
        ("contacts", "list"), ("contacts", "show", "terminal:marie"),
        ("checkins", "set", "--tag", "nord", "--every", "2w"), ("checkins", "list"),
        ("broadcast", "list"), ("broadcast", "preview", "--text", "Atelier"),
        ("resources", "list"), ("report",), ("inspect", "bonjour"),
    ):
        code, _out, err = relais(sqlite_url, *args, env=public)
        assert (code, err) == (0, ""), (args, err)


# -- tables in 80 columns ---------------------------------------------------------------------

LONG_NAME = "Marie-Bernadette Ndiaye-Fontaine de la Grange"


def test_slots_list_keeps_each_start_whole_in_80_columns(sqlite_url: str) -> None:
    assert relais(sqlite_url, "staff", "add", "whatsapp:+33698765432", "--name",
                  LONG_NAME)[0] == 0
    assert relais(sqlite_url, "slots", "open", "2030-03-05T14:00", "--count", "2",
                  "--mediator", "whatsapp:+33698765432")[0] == 0
    code, out, err = relais(sqlite_url, "slots", "list", env={"COLUMNS": "80"})
    assert (code, err) == (0, "")
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "2030-03-05T14:00:00+01:00" in out and "2030-03-05T14:30:00+01:00" in out


def test_contacts_list_keeps_each_address_whole_in_80_columns(sqlite_url: str) -> None:
    seed(sqlite_url, *(Inbound("telegram", f"telegram:{100200300400 + i}", "bonjour",
                               provider_id=f"t{i}", profile_name=LONG_NAME)
                       for i in range(2)))
    assert relais(sqlite_url, "staff", "add", "whatsapp:+33698765432", "--name",
                  LONG_NAME)[0] == 0
    code, out, err = relais(sqlite_url, "contacts", "list", env={"COLUMNS": "80"})
    assert (code, err) == (0, "")
    assert all(len(line) <= 80 for line in out.splitlines())
    for address in ("telegram:100200300400", "telegram:100200300401",
                    "whatsapp:+33698765432"):
        assert address in out


# -- times --------------------------------------------------------------------------------------


def test_broadcast_list_and_status_show_the_same_local_time_with_its_offset(
    sqlite_url: str,
) -> None:
    seed(sqlite_url, Inbound("terminal", "terminal:marie", "bonjour", provider_id="m1"))
    code, out, err = relais(sqlite_url, "broadcast", "schedule", "--at", "2030-03-06T10:00",
                            "--text", "Atelier", "--test", "06 99 99 99 99", "--yes", env=TWILIO)
    assert code == 0, err
    broadcast_id = out.strip()
    assert "scheduled for 2030-03-06T10:00:00+01:00" in err
    code, listed, _err = relais(sqlite_url, "broadcast", "list", env={"COLUMNS": "120"})
    code, status, _err = relais(sqlite_url, "broadcast", "status", broadcast_id)
    assert "2030-03-06T10:00:00+01:00" in listed  # Paris, as in status; not 09:00 UTC
    assert "scheduled for: 2030-03-06T10:00:00+01:00" in status
    assert "2030-03-04T10:00:00+01:00" in listed  # created, 09:00 UTC
    assert "created: 2030-03-04T10:00:00+01:00" in status


# -- help -------------------------------------------------------------------------------------


def _commands(command: object, path: str) -> Iterator[tuple[str, object]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def _sentence(text: str | None) -> bool:
    text = (text or "").strip()
    return bool(text) and text[0].isupper() and text.endswith(".")


def test_every_help_text_is_a_sentence() -> None:
    wrong = []
    for path, command in _commands(typer.main.get_command(app), "relais"):
        if not _sentence(command.help):  # type: ignore[attr-defined]
            wrong.append(f"{path}: {command.help!r}")  # type: ignore[attr-defined]
        for param in command.params:  # type: ignore[attr-defined]
            if param.name != "help" and not _sentence(getattr(param, "help", None)):
                wrong.append(f"{path} {param.opts}: {getattr(param, 'help', None)!r}")
    assert wrong == []


# -- channels that are not configured ----------------------------------------------------------


def test_broadcast_to_a_channel_that_is_not_configured_refuses_at_once(
    sqlite_url: str,
) -> None:
    seed(sqlite_url, Inbound("terminal", "terminal:marie", "bonjour", provider_id="m1"))
    outbox = count(sqlite_url, Outbox)
    code, out, err = relais(sqlite_url, "broadcast", "send", "--text", "Essai", "--test",
                            "sms:+33699999999", "--yes")
    assert (code, out) == (2, "")
    assert "--test: sms is not configured" in one_line(err)
    assert "RELAIS_TWILIO_ACCOUNT_SID" in err and "RELAIS_TWILIO_SMS_FROM" in err
    code, out, err = relais(sqlite_url, "broadcast", "schedule", "--at", "2030-03-06T10:00",
                            "--text", "Essai", "--test", "telegram:4242", "--yes")
    assert (code, out) == (2, "") and "RELAIS_TELEGRAM_TOKEN" in one_line(err)
    assert count(sqlite_url, Outbox) == outbox  # nothing waits for ever
    code, out, err = relais(sqlite_url, "broadcast", "send", "--text", "Essai", "--test",
                            "sms:+33699999999", "--yes", env=TWILIO)
    assert code == 0, err
    assert count(sqlite_url, Outbox) == outbox + 1


def test_broadcast_to_people_on_a_channel_that_is_not_configured_refuses(
    sqlite_url: str,
) -> None:
    people = Path("people.csv")
    people.write_text("phone,name,consent\n06 12 34 56 78,Paul,oui\n", encoding="utf-8")
    assert relais(sqlite_url, "contacts", "import", str(people))[0] == 0
    code, out, err = relais(sqlite_url, "broadcast", "preview", "--text", "Essai", "--json")
    assert code == 0 and '"recipients": 1' in out, err
    code, out, err = relais(sqlite_url, "broadcast", "send", "--text", "Essai", "--yes")
    assert (code, out) == (2, "")
    assert "1 recipient(s) on sms: sms is not configured" in one_line(err)
    assert "RELAIS_TWILIO_AUTH_TOKEN" in err


def test_queue_reply_to_a_person_on_a_channel_that_is_not_configured_refuses(
    sqlite_url: str,
) -> None:
    seed(sqlite_url, Inbound("sms", "sms:+33612345678", "AIDE", provider_id="s1",
                             profile_name="Paul"))
    assert relais(sqlite_url, "staff", "add", "telegram:4242", "--name", "Bob")[0] == 0
    outbox = count(sqlite_url, Outbox)
    code, out, err = relais(sqlite_url, "queue", "reply", "1", "Bonjour", "--as",
                            "telegram:4242")
    assert (code, out) == (2, "")
    assert "cannot reply to #1: sms is not configured" in one_line(err)
    assert "RELAIS_TWILIO_ACCOUNT_SID" in err
    assert count(sqlite_url, Outbox) == outbox
    code, out, err = relais(sqlite_url, "queue", "reply", "1", "Bonjour", "--as",
                            "telegram:4242", env=TWILIO)
    assert (code, err) == (0, "") and "reply to #1 queued" in out


# -- relais chat ----------------------------------------------------------------------------

# Loaded at start-up by the command under test: the bot answers slowly and logs a warning
# while it answers, the way a real hiccup would.
SLOW_BOT = '''
import asyncio, logging
from bot.engine import Engine

_handle = Engine.handle

async def handle(self, inbound, *args, **kwargs):
    logging.getLogger("relais.test").warning("LOG-LINE-IN-THE-CONVERSATION")
    if inbound.text == "lent":
        await asyncio.sleep(60)
    return await _handle(self, inbound, *args, **kwargs)

Engine.handle = handle
'''


def _spawn_chat(tmp_path: Path, hook: bool = True) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAIS_")}
    env.update(RELAIS_DATABASE_URL=f"sqlite:///{tmp_path}/chat.db", TERM="dumb",
               RELAIS_OPENING_HOURS="24/7")
    if hook:
        (tmp_path / "hook").mkdir()
        (tmp_path / "hook" / "sitecustomize.py").write_text(SLOW_BOT, encoding="utf-8")
        env["PYTHONPATH"] = str(tmp_path / "hook")
    return pexpect.spawn(RELAIS, ["chat", "--as", "alice"], env=env, cwd=str(tmp_path),
                         encoding="utf-8", timeout=30)


@pytest.mark.parametrize("leave", ["ctrl-d", "ctrl-c"])
def test_chat_leaves_at_once_while_the_bot_answers_and_shows_no_log_line(
    tmp_path: Path, leave: str
) -> None:
    child = _spawn_chat(tmp_path)
    try:
        child.expect("vous> ")
        child.sendline("bonjour")
        child.expect("Choisissez votre langue")
        child.expect("vous> ")
        child.sendline("lent")  # the bot takes a minute to answer this one
        time.sleep(0.5)
        started = time.monotonic()
        if leave == "ctrl-d":
            child.sendeof()
        else:
            child.sendintr()
        child.expect("Au revoir", timeout=10)
        assert time.monotonic() - started < 5
        conversation = child.before
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close(force=True)
    assert "LOG-LINE-IN-THE-CONVERSATION" not in conversation
    assert "WARNING" not in conversation
    assert child.exitstatus == 0


def test_chat_leaves_at_once_on_ctrl_c_at_the_prompt(tmp_path: Path) -> None:
    child = _spawn_chat(tmp_path, hook=False)
    try:
        child.expect("vous> ")
        started = time.monotonic()
        child.sendintr()
        child.expect("Au revoir", timeout=10)
        child.expect(pexpect.EOF, timeout=10)
        assert time.monotonic() - started < 5
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_chat_refuses_a_name_that_is_not_one(tmp_path: Path) -> None:
    code, out, err = relais(f"sqlite+aiosqlite:///{tmp_path}/x.db", "chat", "--as",
                            "a b")
    assert (code, out) == (2, "")
    assert "--as: 'a b' is not a terminal name" in one_line(err)


def test_chat_accepts_terminal_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["chat", "--as", "terminal:zoe"], input="",
                                env={"RELAIS_DATABASE_URL": f"sqlite:///{tmp_path}/c.db"})
    assert result.exit_code == 0, result.stderr
    assert "Relais chat as terminal:zoe." in result.stdout
