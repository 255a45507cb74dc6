"""The staff directory in memory (``bot.domain.staff.StaffDirectory``), on SQLite and
PostgreSQL: two processes on one database (two ``Services``, each with its own engine and
so its own directory); what the operator changes through one, or with ``relais staff``,
the other applies on its very next event, without reading the registry on every event."""

from __future__ import annotations

import asyncio

import pytest

import bot.cli.staff  # noqa: F401 - registers `relais staff`
from bot.app import Services, open_services
from bot.core.config import Settings
from bot.domain.rights import forget
from bot.domain.staff import directory_of, find_contact, find_staff, remove_staff
from tests.helpers.cli import relais
from tests.helpers.factories import Room, add

QUEUE_EMPTY = "Personne n'attend."
WELCOME = "Bonjour ! Ici Relais"


async def _remove(services: Services, address: str) -> None:
    async with services.sessions() as session, session.begin():
        member = await find_staff(session, address)
        assert member is not None
        await remove_staff(session, member)


def _reloads(services: Services) -> int:
    return directory_of(services.db).reloads


async def test_staff_added_then_removed_by_one_process_the_other_sees_next_event(
    settings: Settings,
):
    first = await open_services(settings, migrate=False)
    second = await open_services(settings, migrate=False)
    try:
        room = Room(second)
        got = await room.send("alice", "/queue", name="Alice Martin")
        assert got["alice"][0].startswith(WELCOME)  # a citizen: onboarding
        assert not any(QUEUE_EMPTY in text for text in got["alice"])

        await add(first, "terminal:alice", "Alice Martin")
        got = await room.send("alice", "/queue")  # the very next event, other process
        assert got == {"alice": [QUEUE_EMPTY]}
        loaded = _reloads(second)
        for _ in range(3):  # nothing changed: the registry is not read again
            assert await room.send("alice", "/file") == {"alice": [QUEUE_EMPTY]}
        assert _reloads(second) == loaded

        await _remove(first, "terminal:alice")
        got = await room.send("alice", "/queue")  # a citizen again, at once
        assert QUEUE_EMPTY not in "\n".join(got.get("alice", []))
        assert _reloads(second) == loaded + 1
        # and as a citizen their text goes to the citizen flows: AIDE opens a ticket
        got = await room.send("alice", "AIDE")
        assert got["alice"] == ["Merci. Une personne de Relais va vous répondre ici."]
    finally:
        await second.close()
        await first.close()


async def test_an_erased_staff_member_has_no_powers_in_the_other_process(
    settings: Settings,
):
    """``relais forget`` of a staff member (their staff row goes with their record) in one
    process: the other, whose directory still lists the address, gives it no powers."""
    first = await open_services(settings, migrate=False)
    second = await open_services(settings, migrate=False)
    try:
        room = Room(second)
        await add(first, "terminal:bob", "Bob Durand")
        assert await room.send("bob", "/queue") == {"bob": [QUEUE_EMPTY]}
        async with first.sessions() as session, session.begin():
            contact = await find_contact(session, "terminal:bob")
            assert contact is not None
            await forget(session, contact, first.clock.now(), source="cli")
        got = await room.send("bob", "/queue")  # a new person now: onboarding
        assert got["bob"][0].startswith(WELCOME)
        assert QUEUE_EMPTY not in "\n".join(got["bob"])
    finally:
        await second.close()
        await first.close()


@pytest.mark.usefixtures("no_dotenv")
def test_relais_staff_add_and_remove_reach_a_running_process(settings: Settings):
    """The operator's ``relais staff add/remove`` (its own process) and a running one."""
    with asyncio.Runner() as runner:
        running = runner.run(open_services(settings, migrate=False))
        try:
            room = Room(running)
            got = runner.run(room.send("carol", "/queue", name="Carol Petit"))
            assert got["carol"][0].startswith(WELCOME)

            code, _out, err = relais(settings.database_url, "staff", "add", "terminal:carol",
                                     "--name", "Carol Petit")
            assert (code, err) == (0, "")
            assert runner.run(room.send("carol", "/queue")) == {"carol": [QUEUE_EMPTY]}

            code, _out, err = relais(settings.database_url, "staff", "off", "terminal:carol")
            assert (code, err) == (0, "")
            assert runner.run(room.send("carol", "/file")) == {"carol": [QUEUE_EMPTY]}

            code, _out, err = relais(settings.database_url, "staff", "remove",
                                     "terminal:carol")
            assert (code, err) == (0, "")
            got = runner.run(room.send("carol", "AIDE"))
            assert got["carol"] == ["Merci. Une personne de Relais va vous répondre ici."]
        finally:
            runner.run(running.close())
