"""Broadcasts on SQLite and PostgreSQL: who is reached and who is left out (and why), the
texts per language with their SMS cost, bulk rows in the outbox, quiet hours per time zone
(enqueue timing and the pause of a long send), the weekly cap, cancel, schedule, ``--test``,
status counts (replied within 48 h), and the ``relais broadcast`` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import Services
from bot.core.config import Settings
from bot.core.types import Inbound
from bot.delivery.quiet import is_quiet
from bot.delivery.status import apply_status
from bot.domain import broadcasts as bc
from bot.storage import suppression
from bot.storage.models import Address, Broadcast, Event, Job, Outbox
from tests.helpers.cli import relais
from tests.helpers.db import in_db, make_settings
from tests.helpers.dialog import RecordingChannel
from tests.helpers.factories import T0, Person, seed

TEXTS = {"fr": "Distribution samedi à 10h au centre.", "en": "Food distribution Saturday 10am."}
STOP_FR = "STOP pour ne plus recevoir"
STOP_EN = "STOP to stop receiving"


@pytest.fixture(autouse=True)
def frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[time_machine.Coordinates]:
    monkeypatch.chdir(tmp_path)  # no .env for the CLI
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


# -- seeding ---------------------------------------------------------------------------------


async def past_broadcasts(session: AsyncSession, contact_id: int, count: int, at: datetime,
                          status: str = "delivered") -> None:
    """``count`` earlier broadcasts received by one person at ``at``."""
    address_id = await session.scalar(select(Address.id).where(Address.contact_id == contact_id))
    for _ in range(count):
        broadcast = Broadcast(texts={"fr": "x"}, filters={}, status="done", created_at=at,
                              cursor=0, totals={})
        session.add(broadcast)
        await session.flush()
        session.add(Outbox(contact_id=contact_id, address_id=address_id, channel="sms",
                           to="x", priority=1, kind="broadcast", body="x", status=status,
                           next_attempt_at=at, broadcast_id=broadcast.id, created_at=at,
                           updated_at=at, language="fr", segments=1, attempts=1,
                           max_attempts=8, held=False, was_in_doubt=False))
    await session.flush()


MIXED = [
    Person("sms:+33612000001", tags=("nord",), postcode="59000"),  # 0 reached
    Person("sms:+33612000002", postcode="75011"),  # 1 reached
    Person("sms:+33612000003", language=None, postcode="59100", tags=("Nord",)),  # 2 reached
    Person("telegram:1001", language="en", postcode="59200"),  # 3 reached
    Person("telegram:1002", language="ar"),  # 4 reached (French text)
    Person("sms:+33612000006", opted_out=True),  # 5 STOP
    Person("sms:+33612000007", consents=()),  # 6 no consent
    Person("sms:+33612000008", consents=(True, False)),  # 7 withdrawn
    Person("sms:+33612000009", consents=(False, True)),  # 8 reached (yes last)
    Person("sms:+33612000010", blocked=True),  # 9 blocked
    Person("sms:+33140000000", landline=True),  # 10 landline
    Person("sms:+33612000012"),  # 11 weekly cap (3 this week)
    Person("sms:+33612000013"),  # 12 reached (3 more than a week ago)
    Person(None),  # 13 no address
    Person("sms:+33612000015"),  # 14 forgotten after STOP: suppressed
    Person("whatsapp:+33612000016", language="en"),  # 15 reached
    Person("sms:+33612000017", last="telegram:1017"),  # 16 reached on Telegram
]


async def seed_mixed(session: AsyncSession) -> list[int]:
    ids = await seed(session, MIXED)
    await past_broadcasts(session, ids[11], 3, T0 - timedelta(days=2))
    await past_broadcasts(session, ids[12], 3, T0 - timedelta(days=8))
    await suppression.suppress(session, ["sms:+33612000015"], T0)
    return ids


async def run(services: Services, work: Any) -> Any:
    async with services.sessions() as session, session.begin():
        return await work(session)


async def preview(services: Services, segment: bc.Segment = bc.Segment(),
                  settings: Settings | None = None, **kw: Any) -> dict[str, Any]:
    config = settings or services.settings

    async def work(session: AsyncSession) -> dict[str, Any]:
        result = await bc.preview(session, segment, TEXTS, config, T0, **kw)
        return result.as_json(config)

    return await run(services, work)


async def send(services: Services, segment: bc.Segment = bc.Segment(),
               texts: dict[str, str] = TEXTS, settings: Settings | None = None,
               **kw: Any) -> int:
    config = settings or services.settings

    async def create(session: AsyncSession) -> int:
        return (await bc.create(session, segment, texts, services.clock.now(), **kw)).id

    broadcast_id = await run(services, create)
    await bc.enqueue_all(services.sessions, broadcast_id, config, services.clock)
    return broadcast_id


async def rows_of(services: Services, broadcast_id: int | None = None) -> list[Outbox]:
    async with services.sessions() as session:
        query = select(Outbox).order_by(Outbox.id)
        if broadcast_id is not None:
            query = query.where(Outbox.broadcast_id == broadcast_id)
        return list((await session.scalars(query)).all())


def recorders(services: Services) -> dict[str, RecordingChannel]:
    found = {}
    for name in ("sms", "whatsapp", "telegram"):
        channel = RecordingChannel(name=name)
        services.registry.add(channel)
        found[name] = channel
    return found


async def drain(services: Services) -> None:
    worker = services.outbox_worker()
    while await worker.drain_once():
        pass


# -- texts and segments ----------------------------------------------------------------------


def test_texts_from_option_or_yaml_with_french_fallback() -> None:
    assert bc.make_texts("  Atelier mardi  ") == {"fr": "Atelier mardi"}
    texts = bc.make_texts(file_content="fr: |\n  Atelier mardi.\nEN: Workshop on Tuesday.\n")
    assert texts == {"fr": "Atelier mardi.", "en": "Workshop on Tuesday."}
    assert bc.text_language(texts, "en") == "en"
    assert bc.text_language(texts, "ar") == "fr"
    assert bc.render(texts, "fr") == "Atelier mardi.\n\n" + STOP_FR
    assert bc.render(texts, "en") == "Workshop on Tuesday.\n\n" + STOP_EN
    for bad, why in (("en: Hello\n", "French text"), ("- a\n- b\n", "one text per language"),
                     ("fr: [\n", "not valid YAML"), ("fr: ''\n", "empty"),
                     ("french: x\n", "not a language code")):
        with pytest.raises(bc.BroadcastError, match=why):
            bc.make_texts(file_content=bad)
    with pytest.raises(bc.BroadcastError, match="--text"):
        bc.make_texts()
    with pytest.raises(bc.BroadcastError, match="--text"):
        bc.make_texts("x", "fr: y")


def test_segment_options_are_checked() -> None:
    segment = bc.make_segment(["nord", " Nord ", "nord"], "EN", "2a", "SMS")
    assert segment == bc.Segment(("nord", "Nord"), "en", "2A", "sms")
    for kwargs, option in (({"channel": "fax"}, "--channel"), ({"postcode": "59%"}, "--postcode"),
                           ({"language": "français"}, "--language"), ({"tags": [" "]}, "--tag")):
        with pytest.raises(bc.BroadcastError, match=option):
            bc.make_segment(**kwargs)


# -- preview ---------------------------------------------------------------------------------


async def test_preview_counts_recipients_and_each_reason_to_leave_out(services: Services
                                                                       ) -> None:
    await run(services, seed_mixed)
    data = await preview(services)
    assert data["recipients"] == 9
    assert data["by_channel"] == {"sms": 5, "telegram": 3, "whatsapp": 1}
    assert data["by_language"] == {"ar": 1, "en": 2, "fr": 6}
    assert data["excluded"] == {"no_address": 1, "stop": 1, "no_consent": 2, "blocked": 1,
                                "landline": 1, "suppressed": 1, "weekly_cap": 1}
    assert data["excluded_total"] == 8
    fr, en = data["texts"]
    assert (fr["language"], fr["recipients"], fr["sms_recipients"]) == ("fr", 7, 5)
    assert fr["text"] == TEXTS["fr"] + "\n\n" + STOP_FR
    assert (fr["sms_segments"], fr["encoding"]) == (1, "GSM-7")
    assert (en["language"], en["recipients"], en["text"]) == ("en", 2, TEXTS["en"] + "\n\n"
                                                              + STOP_EN)
    assert data["sms_segments"] == 5
    assert data["estimated_cost"] == pytest.approx(0.35)
    # Nothing was written by a preview.
    assert {r.to for r in await rows_of(services)} == {"x"}  # the earlier broadcasts only


async def test_preview_filters_combine_with_and(services: Services) -> None:
    await run(services, seed_mixed)

    async def count(**options: Any) -> int:
        return (await preview(services, bc.make_segment(**options)))["recipients"]

    assert await count(tags=["NORD"]) == 2  # tags match whatever their case
    assert await count(postcode="59") == 3
    assert await count(postcode="59", channel="telegram") == 1
    assert await count(postcode="59", tags=["nord"], channel="telegram") == 0
    assert await count(language="en") == 2
    assert await count(language="fr") == 6  # no language is French
    assert await count(channel="whatsapp") == 1
    assert await count(channel="sms") == 5


async def test_segment_skips_people_between_its_members(services: Services) -> None:
    people = [Person("sms:+33612000001", tags=("atelier",)),
              Person("sms:+33612000002", last="telegram:6002"),  # two addresses, no tag
              Person("telegram:6003", tags=("atelier",), last="sms:+33612000003")]
    await run(services, lambda s: seed(s, people))
    data = await preview(services, bc.make_segment(tags=["atelier"]))
    assert (data["recipients"], data["by_channel"]) == (2, {"sms": 2})
    data = await preview(services, bc.make_segment(channel="telegram"))
    assert (data["recipients"], data["by_channel"]) == (1, {"telegram": 1})


async def test_long_text_costs_more_segments_and_ucs2(services: Services) -> None:
    await run(services, lambda s: seed(s, [Person("sms:+33612000001"),
                                           Person("sms:+33612000002")]))
    long_text = {"fr": "Bonjour, " + "la distribution aura lieu samedi. " * 8 + "🙂"}

    async def work(session: AsyncSession) -> dict[str, Any]:
        return (await bc.preview(session, bc.Segment(), long_text, services.settings, T0)
                ).as_json(services.settings)

    data = await run(services, work)
    (text,) = data["texts"]
    assert text["encoding"] == "UCS-2"
    assert text["sms_segments"] == 5
    assert data["sms_segments"] == 10
    assert data["estimated_cost"] == pytest.approx(0.70)


# -- sending ---------------------------------------------------------------------------------


async def test_send_writes_one_bulk_row_per_recipient(services: Services) -> None:
    ids = await run(services, seed_mixed)
    broadcast_id = await send(services)
    rows = await rows_of(services, broadcast_id)
    assert len(rows) == 9
    assert {r.priority for r in rows} == {1}
    assert {r.kind for r in rows} == {"broadcast"}
    assert {r.status for r in rows} == {"queued"}
    by_contact = {r.contact_id: r for r in rows}
    assert set(by_contact) == {ids[i] for i in (0, 1, 2, 3, 4, 8, 12, 15, 16)}
    assert by_contact[ids[3]].body == TEXTS["en"] + "\n\n" + STOP_EN
    assert by_contact[ids[4]].body == TEXTS["fr"] + "\n\n" + STOP_FR  # ar: French text
    assert (by_contact[ids[16]].channel, by_contact[ids[16]].to) == ("telegram", "1017")
    assert (by_contact[ids[15]].channel, by_contact[ids[15]].to) == ("whatsapp",
                                                                     "+33612000016")
    async with services.sessions() as session:
        broadcast = await session.get(Broadcast, broadcast_id)
        assert broadcast is not None
        assert (broadcast.status, broadcast.enqueued_at) == ("sending", T0)
        assert broadcast.totals["recipients"] == 9
        assert broadcast.totals["excluded"]["weekly_cap"] == 1
    # Enqueueing again (a scheduler job racing the CLI) writes nothing more.
    assert await bc.enqueue_all(services.sessions, broadcast_id, services.settings,
                                services.clock) == 0
    assert len(await rows_of(services, broadcast_id)) == 9


async def test_batches_from_the_cli_and_the_scheduler_never_write_twice(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bc.base, "BATCH", 3)  # read at each batch
    await run(services, seed_mixed)

    async def create(session: AsyncSession) -> int:
        return (await bc.create(session, bc.Segment(), TEXTS, T0)).id

    broadcast_id = await run(services, create)
    async with services.sessions() as session, session.begin():  # the CLI: one batch
        assert await bc.enqueue_batch(session, broadcast_id, services.settings, T0) == 3
    scheduler = services.scheduler()
    assert await scheduler.run_due() == 1  # the job: the next batch
    await bc.enqueue_all(services.sessions, broadcast_id, services.settings, services.clock)
    while await scheduler.run_due():
        pass
    rows = await rows_of(services, broadcast_id)
    assert len(rows) == 9
    assert len({r.contact_id for r in rows}) == 9


async def test_sent_once_to_each_and_never_after_stop(services: Services) -> None:
    ids = await run(services, seed_mixed)
    channels = recorders(services)
    broadcast_id = await send(services)
    # STOP arrives before the send.
    await services.engine.handle(Inbound("sms", "sms:+33612000002", "STOP",
                                         provider_id="stop-1"))
    await drain(services)
    got = [(m.channel, m.to) for c in channels.values() for m in c.sent if m.kind == "broadcast"]
    assert len(got) == len(set(got)) == 8
    assert ("sms", "+33612000002") not in got
    rows = {r.contact_id: r for r in await rows_of(services, broadcast_id)}
    assert rows[ids[1]].status == "cancelled"
    assert {r.status for cid, r in rows.items() if cid != ids[1]} == {"sent"}


# -- quiet hours -------------------------------------------------------------------------------


QUIET_PEOPLE = [
    Person("sms:+33612000001", postcode="75011"),  # Paris
    Person("sms:+262692000001"),  # Réunion, by its number
    Person("telegram:2001", postcode="97400"),  # Réunion, by its postcode
    Person("telegram:2002", timezone="Indian/Reunion"),  # Réunion, as stored
]


async def test_people_in_quiet_hours_get_it_when_their_quiet_hours_end(
    services: Services, frozen: time_machine.Coordinates
) -> None:
    ids = await run(services, lambda s: seed(s, QUIET_PEOPLE))
    channels = recorders(services)
    evening = datetime(2030, 3, 5, 17, 30, tzinfo=UTC)  # 18:30 Paris, 21:30 Réunion
    frozen.move_to(evening)
    broadcast_id = await send(services)
    rows = {r.contact_id: r for r in await rows_of(services, broadcast_id)}
    reunion_morning = datetime(2030, 3, 6, 5, 0, tzinfo=UTC)  # 09:00 in Réunion
    assert rows[ids[0]].next_attempt_at == evening
    assert {rows[i].next_attempt_at for i in ids[1:]} == {reunion_morning}

    # The Paris row is still waiting at 19:59 (say the channel is slow): quiet hours begin
    # within the look-ahead, so the tick holds it until 09:00 Paris time.
    frozen.move_to(datetime(2030, 3, 5, 18, 59, tzinfo=UTC))
    await run(services, lambda s: bc.tick(s, broadcast_id, services.settings,
                                          services.clock.now()))
    rows = {r.contact_id: r for r in await rows_of(services, broadcast_id)}
    paris_morning = datetime(2030, 3, 6, 8, 0, tzinfo=UTC)
    assert rows[ids[0]].next_attempt_at == paris_morning

    frozen.move_to(datetime(2030, 3, 5, 19, 30, tzinfo=UTC))
    await drain(services)
    assert sum(len(c.sent) for c in channels.values()) == 0
    frozen.move_to(reunion_morning)
    await drain(services)
    assert sorted(m.to for c in channels.values() for m in c.sent) == [
        "+262692000001", "2001", "2002"]
    frozen.move_to(paris_morning)
    await drain(services)
    assert [m.to for m in channels["sms"].sent][-1] == "+33612000001"
    for row in await rows_of(services, broadcast_id):
        zone = "Europe/Paris" if row.to == "+33612000001" else "Indian/Reunion"
        assert row.sent_at is not None
        assert not is_quiet(services.settings.quiet, zone, row.sent_at)


async def test_preview_counts_people_in_quiet_hours(services: Services,
                                                    frozen: time_machine.Coordinates) -> None:
    await run(services, lambda s: seed(s, QUIET_PEOPLE))
    frozen.move_to(datetime(2030, 3, 5, 17, 30, tzinfo=UTC))

    async def work(session: AsyncSession) -> dict[str, Any]:
        return (await bc.preview(session, bc.Segment(), TEXTS, services.settings,
                                 services.clock.now())).as_json(services.settings)

    assert (await run(services, work))["in_quiet_hours"] == 3


# -- weekly cap, test sends, cancel, schedule ----------------------------------------------------


async def test_weekly_cap_counts_broadcasts_sent_but_not_tests_nor_cancelled(
    services: Services, db_url: str, frozen: time_machine.Coordinates
) -> None:
    capped = make_settings(db_url, max_broadcasts_per_week=2)
    await run(services, lambda s: seed(s, [Person("sms:+33612000001"),
                                           Person("telegram:3001")]))
    first = await send(services, settings=capped)
    await send(services, settings=capped, test_address="sms:+33612000001")  # not counted
    frozen.shift(timedelta(hours=1))
    cancelled = await send(services, settings=capped)
    await run(services, lambda s: bc.cancel(s, cancelled, services.clock.now()))
    frozen.shift(timedelta(hours=1))
    second = await send(services, settings=capped)
    assert len(await rows_of(services, second)) == 2
    frozen.shift(timedelta(days=1))
    third = await send(services, settings=capped)
    assert await rows_of(services, third) == []
    async with services.sessions() as session:
        broadcast = await session.get(Broadcast, third)
        assert broadcast is not None
        assert broadcast.totals["excluded"]["weekly_cap"] == 2
    frozen.shift(timedelta(days=6, minutes=1))  # the first is now more than 7 days old
    assert (await preview(services, settings=capped))["recipients"] == 2
    assert first < second


async def test_test_address_gets_the_only_message_now(services: Services,
                                                      frozen: time_machine.Coordinates
                                                      ) -> None:
    await run(services, seed_mixed)
    frozen.move_to(datetime(2030, 3, 5, 22, 0, tzinfo=UTC))  # 23:00 Paris: quiet hours
    data = await preview(services, test_address="sms:+33699999999")
    assert data["recipients"] == 1
    broadcast_id = await send(services, test_address="sms:+33699999999",
                              segment=bc.Segment(language="en"))
    (row,) = await rows_of(services, broadcast_id)
    assert (row.channel, row.to, row.priority) == ("sms", "+33699999999", 0)
    assert row.next_attempt_at == services.clock.now()
    assert row.body == TEXTS["en"] + "\n\n" + STOP_EN
    # An address that said STOP gets nothing, even as a test.
    stopped = await send(services, test_address="sms:+33612000006")
    assert await rows_of(services, stopped) == []


async def test_cancel_cancels_only_unsent_rows(services: Services) -> None:
    await run(services, seed_mixed)
    broadcast_id = await send(services)
    rows = await rows_of(services, broadcast_id)

    async def mark_two_sent(session: AsyncSession) -> None:
        for row in rows[:2]:
            found = await session.get(Outbox, row.id)
            assert found is not None
            found.status, found.sent_at, found.provider_id = "sent", T0, f"p{row.id}"

    await run(services, mark_two_sent)
    cancelled = await run(services, lambda s: bc.cancel(s, broadcast_id, T0))
    assert cancelled == 7
    statuses = [r.status for r in await rows_of(services, broadcast_id)]
    assert statuses.count("sent") == 2 and statuses.count("cancelled") == 7
    again = await run(services, lambda s: bc.cancel(s, broadcast_id, T0))
    assert again == 0
    async with services.sessions() as session:
        status = await bc.describe(session, await bc.get(session, broadcast_id), T0)
    assert (status["status"], status["sent"], status["cancelled"]) == ("cancelled", 2, 7)
    async with services.sessions() as session:  # its figures are settled in 48 hours
        settle = (await session.scalars(select(Job).where(Job.kind == bc.SETTLE_JOB))).all()
    assert [job.run_at for job in settle] == [T0 + timedelta(hours=48)]
    with pytest.raises(bc.NotFound):
        await run(services, lambda s: bc.cancel(s, 999, T0))


async def test_scheduled_broadcast_is_sent_by_the_scheduler_at_its_time(
    services: Services, frozen: time_machine.Coordinates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bc.base, "BATCH", 4)  # read at each batch
    await run(services, seed_mixed)
    at = T0 + timedelta(hours=2)

    async def create(session: AsyncSession) -> int:
        return (await bc.create(session, bc.Segment(), TEXTS, T0, at=at)).id

    broadcast_id = await run(services, create)
    with pytest.raises(bc.BroadcastError, match="past"):
        await run(services, lambda s: bc.create(s, bc.Segment(), TEXTS, T0, at=T0))
    scheduler = services.scheduler()
    assert await scheduler.run_due() == 0
    assert await rows_of(services, broadcast_id) == []
    frozen.move_to(at)
    while await scheduler.run_due():
        pass
    rows = await rows_of(services, broadcast_id)
    assert len(rows) == len({r.contact_id for r in rows}) == 9
    async with services.sessions() as session:
        broadcast = await session.get(Broadcast, broadcast_id)
        assert broadcast is not None
        assert (broadcast.status, broadcast.started_at) == ("sending", at)
        batches = await session.scalar(select(func.count()).select_from(Job).where(
            Job.kind == bc.SEND_JOB))
    assert batches == 5  # 17 contacts, 4 a batch: 5 jobs, the last one finds none left


async def test_a_cancelled_scheduled_broadcast_sends_nothing(
    services: Services, frozen: time_machine.Coordinates
) -> None:
    await run(services, seed_mixed)
    at = T0 + timedelta(hours=2)
    created = await run(services, lambda s: bc.create(s, bc.Segment(), TEXTS, T0, at=at))
    broadcast_id = created.id
    await run(services, lambda s: bc.cancel(s, broadcast_id, T0))
    frozen.move_to(at)
    while await services.scheduler().run_due():
        pass
    assert await rows_of(services, broadcast_id) == []
    async with services.sessions() as session:
        kinds = (await session.scalars(select(Job.kind))).all()
    assert bc.SETTLE_JOB not in kinds  # never started: nothing to settle


# -- status ----------------------------------------------------------------------------------


async def test_status_counts_each_person_once_and_replies_within_48_hours(
    services: Services, frozen: time_machine.Coordinates
) -> None:
    people = [Person(f"sms:+3361200010{i}") for i in range(6)] + [
        Person("telegram:4001"), Person("whatsapp:+33612000200")]
    ids = await run(services, lambda s: seed(s, people))
    recorders(services)
    broadcast_id = await send(services)
    await drain(services)
    rows = {r.to: r for r in await rows_of(services, broadcast_id)}

    async def statuses(session: AsyncSession) -> None:
        now = services.clock.now()
        await apply_status(session, "sms", rows["+33612000100"].provider_id, "delivered", now)
        await apply_status(session, "sms", rows["+33612000101"].provider_id, "delivered", now)
        await apply_status(session, "sms", rows["+33612000101"].provider_id, "read", now)
        await apply_status(session, "sms", rows["+33612000102"].provider_id, "failed", now,
                           "30003", "Unreachable destination handset")
        # WhatsApp could not deliver: the SMS copy (a fallback) was delivered instead.
        wa = await session.get(Outbox, rows["+33612000200"].id)
        assert wa is not None
        wa.status, wa.failure = "failed", "undeliverable"
        sms_address = Address(contact_id=ids[7], channel="sms", external_id="+33612000200",
                              created_at=now, landline=False)
        session.add(sms_address)
        await session.flush()
        session.add(Outbox(contact_id=ids[7], address_id=sms_address.id, channel="sms",
                           to="+33612000200", priority=1, kind="broadcast", body=wa.body,
                           status="delivered", next_attempt_at=now, broadcast_id=broadcast_id,
                           fallback_of=wa.id, created_at=now, updated_at=now, sent_at=now,
                           language="fr", segments=1, attempts=1, max_attempts=8,
                           held=False, was_in_doubt=False))

    await run(services, statuses)
    frozen.shift(timedelta(hours=3))
    await services.engine.handle(Inbound("sms", "sms:+33612000100", "merci",
                                         provider_id="r1"))
    await services.engine.handle(Inbound("telegram", "telegram:4001", "ok", provider_id="r2"))
    frozen.shift(timedelta(hours=46))  # 49 h after: too late to count
    await services.engine.handle(Inbound("sms", "sms:+33612000103", "bonjour",
                                         provider_id="r3"))
    async with services.sessions() as session:
        data = await bc.describe(session, await bc.get(session, broadcast_id),
                                 services.clock.now())
    assert data["recipients"] == 8
    assert {k: data[k] for k in bc.OUTCOMES} == {
        "queued": 0, "held": 0, "sent": 4, "delivered": 2, "read": 1, "failed": 1,
        "cancelled": 0}
    assert data["replied"] == 2
    assert data["failures"] == [{"failure": None, "code": "30003",
                                 "reason": "Unreachable destination handset", "count": 1}]
    assert data["by_channel"]["sms"]["delivered"] == 2
    assert data["by_channel"]["telegram"]["sent"] == 1


async def test_tick_marks_done_and_settle_records_the_final_figures(
    services: Services, frozen: time_machine.Coordinates
) -> None:
    await run(services, lambda s: seed(s, [Person("sms:+33612000001"),
                                           Person("telegram:5001")]))
    recorders(services)
    broadcast_id = await send(services)
    scheduler = services.scheduler()
    frozen.shift(timedelta(minutes=1))
    await scheduler.run_due()  # a tick: still sending
    async with services.sessions() as session:
        broadcast = await session.get(Broadcast, broadcast_id)
        assert broadcast is not None and broadcast.status == "sending"
    await drain(services)
    frozen.shift(timedelta(minutes=2))
    await scheduler.run_due()
    async with services.sessions() as session:
        broadcast = await session.get(Broadcast, broadcast_id)
        assert broadcast is not None and broadcast.status == "done"
    frozen.shift(timedelta(hours=48, minutes=1))
    await scheduler.run_due()
    async with services.sessions() as session:
        (value,) = (await session.scalars(
            select(Event.value).where(Event.kind == "broadcast.settled"))).all()
    assert value["broadcast_id"] == broadcast_id
    assert (value["recipients"], value["sent"], value["replied"]) == (2, 2, 0)


# -- the command line --------------------------------------------------------------------------


# Channels configured (no network call is made: a broadcast is only enqueued here); without
# them `broadcast send` refuses, naming the variables to set.
CHANNELS = {
    "RELAIS_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "RELAIS_TWILIO_AUTH_TOKEN": "token",
    "RELAIS_TWILIO_SMS_FROM": "+33700000000", "RELAIS_TWILIO_WHATSAPP_FROM": "+33700000001",
    "RELAIS_TELEGRAM_TOKEN": "123:abc",
}


def test_cli_preview_send_list_status_cancel(db_url: str, tmp_path: Path) -> None:
    in_db(db_url, seed_mixed)
    code, out, err = relais(db_url, "broadcast", "preview", "--text", "Atelier mardi.",
                            "--postcode", "59", "--json", env=CHANNELS)
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["recipients"], data["by_channel"]) == (3, {"sms": 2, "telegram": 1})
    code, out, err = relais(db_url, "broadcast", "preview", "--text", "Atelier mardi.",
                            env=CHANNELS)
    assert code == 0
    assert "Recipients: 9" in out and STOP_FR in out and "said STOP: 1" in out
    texts = tmp_path / "texts.yaml"
    texts.write_text("fr: Atelier mardi.\nen: Workshop on Tuesday.\n", encoding="utf-8")
    code, out, err = relais(db_url, "broadcast", "send", "--file", str(texts), "--yes",
                            env=CHANNELS)
    assert code == 0, err
    broadcast_id = int(out.strip())
    assert f"broadcast {broadcast_id}: 9 messages queued" in err
    code, out, _ = relais(db_url, "broadcast", "list", "--json", env=CHANNELS)
    listed = json.loads(out)  # newest first, after the two people's earlier broadcasts
    assert [(b["id"], b["recipients"], b["status"]) for b in listed][0] == (
        broadcast_id, 9, "sending")
    assert len(listed) == 7
    code, out, _ = relais(db_url, "broadcast", "status", str(broadcast_id), "--json", env=CHANNELS)
    status = json.loads(out)
    assert (status["recipients"], status["queued"], status["languages"]) == (9, 9, ["en", "fr"])
    assert status["created_at"] == "2030-03-05T10:00:00+00:00"
    code, out, _ = relais(db_url, "broadcast", "status", str(broadcast_id), env=CHANNELS)
    assert code == 0 and f"Broadcast {broadcast_id}" in out
    code, out, _ = relais(db_url, "broadcast", "cancel", str(broadcast_id), env=CHANNELS)
    assert (code, out) == (0, f"broadcast {broadcast_id} cancelled: 9 unsent messages "
                              "cancelled\n")
    code, out, _ = relais(db_url, "broadcast", "status", str(broadcast_id), "--json", env=CHANNELS)
    assert (json.loads(out)["status"], json.loads(out)["cancelled"]) == ("cancelled", 9)


def test_cli_schedule_and_test_send(db_url: str) -> None:
    in_db(db_url, seed_mixed)
    code, out, err = relais(db_url, "broadcast", "schedule", "--at", "2030-03-06T10:00",
                            "--text", "Atelier", "--tag", "nord", "--yes", env=CHANNELS)
    assert code == 0, err
    broadcast_id = int(out)
    code, out, _ = relais(db_url, "broadcast", "status", str(broadcast_id), "--json", env=CHANNELS)
    status = json.loads(out)
    assert (status["status"], status["scheduled_at"]) == ("scheduled",
                                                          "2030-03-06T09:00:00+00:00")
    assert status["segment"]["tags"] == ["nord"]
    code, out, err = relais(db_url, "broadcast", "send", "--text", "Essai",
                            "--test", "06 99 99 99 99", env=CHANNELS)
    assert code == 0, err
    test_id = int(out)
    rows = in_db(db_url, lambda s: _rows(s, test_id))
    assert rows == [("sms", "+33699999999", "Essai\n\n" + STOP_FR)]


async def _rows(session: AsyncSession, broadcast_id: int) -> list[tuple[str, str, str]]:
    found = await session.execute(select(Outbox.channel, Outbox.to, Outbox.body)
                                  .where(Outbox.broadcast_id == broadcast_id))
    return [tuple(r) for r in found.all()]  # type: ignore[misc]


@pytest.mark.parametrize(("args", "code", "message"), [
    (("send", "--yes"), 2, "--text TEXT or --file"),
    (("send", "--text", "x", "--channel", "fax", "--yes"), 2, "--channel"),
    (("send", "--file", "missing.yaml", "--yes"), 2, "cannot read"),
    (("schedule", "--at", "2030-03-01T10:00", "--text", "x", "--yes"), 2, "past"),
    (("schedule", "--at", "next week", "--text", "x", "--yes"), 2, "--at"),
    (("send", "--text", "x", "--test", "not a number", "--yes"), 2, "--test"),
    (("status", "999"), 1, "no broadcast 999"),
    (("cancel", "999"), 1, "no broadcast 999"),
    (("send", "--text", "x", "--tag", "nobody", "--yes"), 1, "nobody to send to"),
])
def test_cli_errors(db_url: str, args: tuple[str, ...], code: int, message: str) -> None:
    got, out, err = relais(db_url, "broadcast", *args, env=CHANNELS)
    assert got == code
    assert out == ""
    assert message in err
