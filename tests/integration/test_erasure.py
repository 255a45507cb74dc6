"""Erasure leaves nothing, on SQLite and PostgreSQL: a distinct marker goes into every path a
person's words can take (message, photo and its stored bytes, urgent alert, take summary,
mediator's reply, note, relay, callback number, outcome), the person is erased with ``relais
forget``, then every column of every table — and on SQLite the raw bytes of the database and
its ``-wal`` file — is scanned for the markers, the name and the number. Also: ids are never
given again, every table is classified in the registry of personal data, jobs about the
person are gone, and a booked callback is freed with its mediator told."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bot.app import Services
from bot.core.types import Media
from bot.domain import rights
from bot.domain.staff import add_staff, find_contact
from bot.storage.models import DATA_CLASSES, Base, Job, Slot, Ticket
from tests.helpers.cli import relais
from tests.helpers.dialog import Dialog

PHONE = "+33612340099"
NATIONAL = "0612340099"
CALLBACK = "+33755501234"
NAME = "Zelmira Quobrant"
MARKERS = {
    "message": "MKMESSAGE",
    "photo": "MKPHOTO",
    "reply": "MKREPLY",
    "note": "MKNOTE",
    "relay": "MKRELAY",
    "outcome": "MKOUTCOME",
    "bytes": "MKBYTES",  # inside the photo's stored bytes (bot.domain.media_store)
}


async def every_value(services: Services) -> str:
    """Every value of every table, as text: what a leak would show."""
    chunks = []
    async with services.sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in await session.execute(select(table)):
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


def leaks(text: str) -> list[str]:
    found = [f"{what} {marker}" for what, marker in MARKERS.items() if marker in text]
    for word in (NAME, NAME.split()[0], NAME.split()[1], PHONE, NATIONAL, CALLBACK):
        if word in text:
            found.append(word)
    return found


async def a_story(services: Services) -> tuple[int, int]:
    """Zelmira writes danger words on SMS with a photo; Léa takes the ticket, answers, notes,
    gets a relay, a callback is booked; the ticket is closed with an outcome. Returns the
    contact id and the ticket id."""
    now = services.clock.now()
    async with services.sessions() as session, session.begin():
        await add_staff(session, "terminal:lea", name="Léa", role="mediator", now=now,
                        default_timezone="Europe/Paris")
    mediator = Dialog(services, who="lea")
    await mediator.send("/aide")
    citizen = Dialog(services, who=PHONE, channel="sms")
    await citizen.send(f"Bonjour je suis {NAME}")
    alert = await citizen.send(f"il m a frappee hier soir {MARKERS['message']}")
    await mediator.drain()
    async with services.sessions() as session:
        contact = await find_contact(session, f"sms:{PHONE}")
        assert contact is not None
        contact.name = NAME
        ticket = await session.scalar(select(Ticket).where(Ticket.contact_id == contact.id))
        assert ticket is not None and ticket.priority == "urgent"
        await session.commit()
        cid, tid = contact.id, ticket.id
    texts = [m.text for m in mediator.recorder.sent]
    assert any(MARKERS["message"] in t for t in texts), texts  # the urgent alert quotes it
    assert alert, "the person got an answer"
    async def fetch_media(ref: str) -> tuple[bytes, str]:  # what the provider gives
        return b"\xff\xd8\xff" + MARKERS["bytes"].encode() * 50, "image/jpeg"

    citizen.recorder.fetch_media = fetch_media  # type: ignore[attr-defined]
    await citizen.send(MARKERS["photo"], media=(Media("image/jpeg", f"ref-{MARKERS['photo']}"),))
    await services.scheduler().run_due()  # the fetch job keeps the bytes in media_chunks
    await mediator.send(f"/prendre {tid}")
    await mediator.send(f"/repondre {tid} bonjour madame {MARKERS['reply']}")
    await mediator.send(f"/note {tid} voisine {MARKERS['note']} a rappeler")
    await citizen.send(f"merci {MARKERS['relay']}")
    await mediator.drain()
    assert any(MARKERS["relay"] in m.text for m in mediator.recorder.sent)
    async with services.sessions() as session, session.begin():
        staff_contact = await find_contact(session, "terminal:lea")
        assert staff_contact is not None
        from bot.domain.staff import staff_for_contact

        staff = await staff_for_contact(session, staff_contact.id)
        assert staff is not None
        session.add(Slot(start_at=now + timedelta(days=2), minutes=20, status="booked",
                         mediator_id=staff.id, contact_id=cid, phone=CALLBACK, booked_at=now,
                         created_at=now))
        from bot.delivery.scheduler import schedule

        await schedule(session, "callbacks.remind.hour", "1", now + timedelta(days=1),
                       {"contact_id": cid, "phone": CALLBACK}, about=cid)
    await mediator.send(f"/fermer {tid} 1 {MARKERS['outcome']}")
    await mediator.drain()
    return cid, tid


async def test_erasure_leaves_nothing_that_names_or_quotes_the_person(
    services: Services, db_url: str
):
    cid, tid = await a_story(services)
    before = await every_value(services)
    missing = [m for m in MARKERS.values() if m not in before]
    assert missing == [], f"the story did not write {missing}: the scan would prove nothing"

    code, out, err = await asyncio.to_thread(relais, db_url, "forget", f"sms:{PHONE}", "--yes")
    assert code == 0, err
    assert "forgot" in out

    after = await every_value(services)
    assert leaks(after) == []
    async with services.sessions() as session:
        jobs = await session.scalar(select(func.count()).select_from(Job).where(
            Job.contact_id == cid))
        assert jobs == 0
        slot = await session.scalar(select(Slot))
        assert slot is not None and (slot.status, slot.contact_id, slot.phone) == (
            "open", None, None)
    mediator = Dialog(services, who="lea")
    await mediator.drain()
    freed = [m.text for m in mediator.recorder.sent if "annul" in m.text]
    assert freed, "the mediator is told their callback is free again"

    if make_url(db_url).get_backend_name() == "sqlite":
        path = Path(make_url(db_url).database or "")
        wal = Path(f"{path}-wal")
        raw = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        found = [m for m in [*MARKERS.values(), NAME, PHONE, CALLBACK]
                 if m.encode() in raw]
        assert found == [], f"still in the SQLite file's bytes: {found}"


async def test_ids_are_never_given_again(services: Services):
    first = Dialog(services, who="+33611111111", channel="sms")
    await first.send("AIDE")
    async with services.sessions() as session, session.begin():
        contact = await find_contact(session, "sms:+33611111111")
        assert contact is not None
        erased_contact = contact.id
        erased_ticket = await session.scalar(select(Ticket.id).where(
            Ticket.contact_id == contact.id))
        await rights.forget(session, contact, services.clock.now(), source="cli")
    second = Dialog(services, who="+33622222222", channel="sms")
    await second.send("AIDE")
    async with services.sessions() as session:
        contact = await find_contact(session, "sms:+33622222222")
        assert contact is not None
        ticket = await session.scalar(select(Ticket.id).where(Ticket.contact_id == contact.id))
    assert contact.id > erased_contact
    assert ticket is not None and erased_ticket is not None and ticket > erased_ticket


def test_every_table_is_classified():
    tables = set(Base.metadata.tables)
    assert tables - set(DATA_CLASSES) == set(), "classify it in bot.storage.models.DATA_CLASSES"
    assert set(DATA_CLASSES) - tables == set()


async def test_every_integer_id_uses_autoincrement_on_sqlite(sqlite_url: str):
    """Read from the migrated schema itself, so a table a later migration adds is checked."""
    from bot.storage.db import make_engine

    engine = make_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            tables = (await conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'")).all()
            plain = []
            for name, sql in tables:
                columns = (await conn.exec_driver_sql(f'PRAGMA table_info("{name}")')).all()
                keys = [c for c in columns if c[5]]
                foreign = {f[3] for f in (await conn.exec_driver_sql(
                    f'PRAGMA foreign_key_list("{name}")')).all()}
                one_integer_key = (len(keys) == 1 and keys[0][2].upper() == "INTEGER"
                                   and keys[0][1] not in foreign)
                if one_integer_key and "AUTOINCREMENT" not in sql.upper():
                    plain.append(name)
    finally:
        await engine.dispose()
    assert len(tables) > 10
    assert plain == [], "these tables would give an erased person's ids to someone else"
