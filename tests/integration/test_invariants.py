"""The invariants the code keeps are also the database's (migration 0008): a status outside
its list and a second active ticket for one person are refused, on SQLite and PostgreSQL,
and a database that already breaks one stops the upgrade with a message naming it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from bot.app import Services
from bot.storage.db import make_engine
from bot.storage.migrate import upgrade
from bot.storage.models import Contact, Job, Ticket

NOW = datetime(2030, 3, 4, 10, 0, tzinfo=UTC)


async def _person(services: Services) -> int:
    async with services.sessions() as session, session.begin():
        contact = Contact(created_at=NOW, timezone="Europe/Paris")
        session.add(contact)
        await session.flush()
        return contact.id


def _ticket(contact_id: int, state: str = "open", priority: str = "normal") -> Ticket:
    return Ticket(contact_id=contact_id, priority=priority, source="help", state=state,
                  created_at=NOW)


async def test_a_second_active_ticket_for_one_person_is_refused(services: Services) -> None:
    person = await _person(services)
    async with services.sessions() as session, session.begin():
        session.add(_ticket(person))
    with pytest.raises(IntegrityError):
        async with services.sessions() as session, session.begin():
            session.add(_ticket(person, state="taken"))
    async with services.sessions() as session, session.begin():  # closed ones may be many
        session.add_all([_ticket(person, state="closed"), _ticket(person, state="closed")])
        count = await session.scalar(text("SELECT COUNT(*) FROM tickets"))
    assert count == 3


@pytest.mark.parametrize("model, column, value", [
    (Ticket, "state", "reopened"),
    (Ticket, "priority", "critical"),
    (Job, "status", "paused"),
])
async def test_an_unknown_status_is_refused(services: Services, model: type, column: str,
                                            value: str) -> None:
    person = await _person(services)
    async with services.sessions() as session, session.begin():
        if model is Ticket:
            session.add(_ticket(person))
        else:
            session.add(Job(kind="test", key="k", due_at=NOW, run_at=NOW, payload={},
                            status="queued", attempts=0, created_at=NOW))
    with pytest.raises(IntegrityError):
        async with services.sessions() as session, session.begin():
            await session.execute(text(f"UPDATE {model.__tablename__} SET {column} = :v"),
                                  {"v": value})


async def test_an_upgrade_over_broken_data_names_what_to_fix(db_url: str) -> None:
    """A database at revision 0007 holding two open tickets for one person: the upgrade to
    0008 stops, says which people, and leaves the database as it was."""
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:  # back to 0007 (the fixture's database is at head)
            await conn.execute(text("DROP INDEX uq_tickets_active"))
            await conn.execute(text("UPDATE alembic_version SET version_num = '0007'"))
            await conn.execute(text(
                "INSERT INTO contacts (id, created_at, timezone) VALUES (77, :t, 'Europe/Paris')"
            ), {"t": NOW})
            for _ in range(2):
                await conn.execute(text(
                    "INSERT INTO tickets (contact_id, priority, source, state, created_at) "
                    "VALUES (77, 'normal', 'help', 'open', :t)"), {"t": NOW})
        with pytest.raises(RuntimeError, match=r"two active tickets \(contact ids 77\)"):
            await upgrade(engine)
        async with engine.connect() as conn:
            version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        assert version == "0007"
    finally:
        await engine.dispose()
