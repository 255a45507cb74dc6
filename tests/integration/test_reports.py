"""Reports on SQLite and PostgreSQL, built from the anonymous counters
(``bot.storage.counters``) and
the outbox's anonymous events: every figure asserted, the period's edges in the local time
zone, the text, JSON, CSV files and a self-contained French HTML page with inline SVG charts.

Then a real morning of the queue through the engine: a report, three people erased (two by
``relais forget``, one by OUBLIER), the same report again, figure for figure; and no message,
note or typed outcome in any report."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import Services
from bot.conversation import keywords as kw
from bot.domain import reports, rights
from bot.domain.staff import find_contact
from bot.flows import forget
from bot.flows.global_keywords import ACTIONS
from bot.storage import counters as cn
from bot.storage.models import (
    Address,
    Broadcast,
    Contact,
    Event,
    Message,
    Outbox,
    ReportCounter,
    Ticket,
    TicketNote,
)
from tests.helpers.cli import relais
from tests.helpers.db import in_db
from tests.helpers.factories import Room, add

NOW = datetime(2030, 3, 10, 9, 0, tzinfo=UTC)
DAY = datetime(2030, 3, 3, 12, 0, tzinfo=UTC)  # inside the period
BEFORE = datetime(2030, 2, 28, 22, 0, tzinfo=UTC)  # 28 February, 23:00 in Paris: outside
AFTER = datetime(2030, 3, 5, 23, 30, tzinfo=UTC)  # 6 March, 00:30 in Paris: outside
PERIOD = ("--since", "2030-03-01", "--until", "2030-03-05")
TZ = "Europe/Paris"
MARKER = "ZORGLUB"  # written into messages, notes and typed outcomes: never in a report


@pytest.fixture(autouse=True)
def frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)  # no .env
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def oublier_wired(monkeypatch: pytest.MonkeyPatch) -> None:
    """OUBLIER runs the confirmation flow (global_keywords wires it the same way)."""
    monkeypatch.setitem(ACTIONS, kw.FORGET, forget.on_forget)


def ev(event_kind: str, at: datetime = DAY, channel: str | None = None, **value: Any
       ) -> dict[str, Any]:
    return {"kind": event_kind, "at": at, "channel": channel, "language": "fr",
            "value": value or None}


def seeded_events() -> list[dict[str, Any]]:
    """What the outbox writes: sends, segments, sends in doubt."""
    return (
        [ev("outbox.sent", channel="sms", segments=n, kind="reply") for n in (1, 2, 3)]
        + [ev("outbox.sent", channel="sms", segments=2, kind="broadcast")]
        + [ev("outbox.sent", channel="telegram", segments=1, kind="reply")] * 2
        + [ev("outbox.sent", BEFORE, "sms", segments=5, kind="reply")]
        + [ev("outbox.in_doubt", channel="sms")] * 2
    )


def seed_counters(session: AsyncSession) -> None:
    """Counters as the code writes them (buffered, written at commit)."""
    day, before, after = (cn.day_of(at, TZ) for at in (DAY, BEFORE, AFTER))
    nxt = day + timedelta(days=1)

    def put(name: str, key: str = "", n: int = 1, on: date = day) -> None:
        cn.add(session, on, name, key, count=n)

    put(cn.NEW, "sms", 3), put(cn.NEW, "telegram", 2), put(cn.IMPORTED, "sms", 1)
    put(cn.NEW, "sms", on=before), put(cn.NEW, "sms", on=after)
    put(cn.RECEIVED, "sms", 8), put(cn.RECEIVED, "sms", 2, nxt)
    put(cn.RECEIVED, "telegram", 4), put(cn.RECEIVED, "sms", on=after)
    put(cn.ACTIVE, n=3), put(cn.ACTIVE, on=before)
    put(cn.ACTIVE_CHANNEL, "sms", 2), put(cn.ACTIVE_CHANNEL, "telegram", 1)
    for name, keys in ((cn.ACTIVE_LANGUAGE, ("fr", "en", "unknown")),
                       (cn.ACTIVE_DEPARTEMENT, ("59", "75", "unknown")),
                       (cn.ACTIVE_LEVEL, ("1", "2", "unknown"))):
        for key in keys:
            put(name, key)
    # a person whose level became known later in the month: moved, not counted twice
    put(cn.ACTIVE_LEVEL, "unknown", -1), put(cn.ACTIVE_LEVEL, "2")
    put(cn.ACTIVE_LEVEL, "3", on=before)
    put(cn.CHECKINS_SENT, n=10), put(cn.CHECKINS_REMINDED, n=3)
    put(cn.CHECKINS_ANSWER, "ok", 4), put(cn.CHECKINS_ANSWER, "help", 2)
    put(cn.CHECKINS_ANSWER, "callback"), put(cn.CHECKINS_SILENCE)
    put(cn.OPENED, "keyword", 3), put(cn.OPENED, "checkin", 2)
    put(cn.OPENED_PRIORITY, "normal", 4), put(cn.OPENED_PRIORITY, "urgent", 1)
    put(cn.OPENED_CHANNEL, "sms", 5)
    put(cn.TAKEN, n=4)
    for minutes in (10, 20, 30, 40):
        cn.duration(session, TZ, DAY, cn.WAIT, minutes * 60)
    cn.duration(session, TZ, BEFORE, cn.WAIT, 600 * 60)
    put(cn.CLOSED, "resolved", 2), put(cn.CLOSED, "other"), put(cn.CLOSED, "referred", on=before)
    for minutes in (15, 30, 45):
        cn.duration(session, TZ, DAY, cn.HANDLING, minutes * 60)
    put(cn.SATISFACTION, "yes", 2), put(cn.SATISFACTION, "no")
    put(cn.CALLBACKS, "booked", 4), put(cn.CALLBACKS, "reached", 2)
    put(cn.CALLBACKS, "no_answer"), put(cn.CALLBACKS, "cancelled"), put(cn.CALLBACKS, "moved")


SETTLED = {"broadcast_id": 0, "recipients": 10, "queued": 0, "held": 0, "sent": 2,
           "delivered": 5, "read": 1, "failed": 1, "cancelled": 1, "replied": 3,
           "by_channel": {"sms": {"delivered": 5, "read": 1, "failed": 1, "cancelled": 1},
                          "telegram": {"sent": 2}}}


async def seed(session: AsyncSession) -> None:
    await session.execute(insert(Event), seeded_events())
    seed_counters(session)
    # Tables about people hold other things: none of it is read (nor the typed outcome).
    people = [("fr", "59000", 1, ["sms"]), ("en", "75011", 2, ["telegram"]),
              (None, None, None, ["sms", "telegram"]), ("fr", "13001", 3, ["sms"])]
    contact_ids = []
    for index, (language, postcode, level, channels) in enumerate(people):
        contact = Contact(language=language, postcode=postcode, level=level,
                          created_at=BEFORE)
        session.add(contact)
        await session.flush()
        contact_ids.append(contact.id)
        for channel in channels:
            address = Address(contact_id=contact.id, channel=channel,
                              external_id=f"{channel}{index}", created_at=BEFORE,
                              landline=False)
            session.add(address)
            await session.flush()
            session.add(Message(contact_id=contact.id, address_id=address.id, direction="in",
                                channel=channel, body=f"{MARKER} bonjour", created_at=DAY))
    for handled, outcome in ((15, f"{MARKER} résolu"), (30, "résolu"), (45, None)):
        taken = DAY + timedelta(minutes=5)
        session.add(Ticket(contact_id=contact_ids[0], source="keyword", state="closed",
                           created_at=DAY, taken_at=taken,
                           closed_at=taken + timedelta(minutes=handled), outcome=outcome))

    def broadcast(started: datetime, test: str | None = None) -> Broadcast:
        item = Broadcast(texts={"fr": "x"}, filters={"tags": ["nord"]}, status="done",
                         created_at=started, started_at=started, cursor=0, totals={},
                         test_address=test)
        session.add(item)
        return item

    settled = broadcast(DAY)
    live = broadcast(DAY + timedelta(hours=1))
    broadcast(DAY, test="sms:+33699999999")
    broadcast(BEFORE)
    await session.flush()
    session.add(Event(kind="broadcast.settled", at=DAY + timedelta(days=2),
                      value={**SETTLED, "broadcast_id": settled.id}))
    for contact_id, status in ((contact_ids[0], "delivered"), (contact_ids[1], "failed")):
        session.add(Outbox(contact_id=contact_id, channel="sms", to="x", priority=1,
                           kind="broadcast", body="x", status=status, next_attempt_at=DAY,
                           broadcast_id=live.id, created_at=DAY, updated_at=DAY, sent_at=DAY,
                           language="fr", segments=1, attempts=1, max_attempts=8,
                           held=False, was_in_doubt=False))


@pytest.fixture
def report(db_url: str) -> dict[str, Any]:
    in_db(db_url, seed)
    code, out, err = relais(db_url, "report", *PERIOD, "--json")
    assert (code, err) == (0, "")
    return json.loads(out)


# -- the figures -------------------------------------------------------------------------------


def test_period_is_read_in_the_local_time_zone() -> None:
    period = reports.make_period("2030-03-01", "2030-03-05", "Europe/Paris", NOW)
    assert period.since == datetime(2030, 2, 28, 23, 0, tzinfo=UTC)
    assert period.until == datetime(2030, 3, 5, 23, 0, tzinfo=UTC)
    default = reports.make_period(None, None, "Indian/Reunion", NOW)
    assert default.until == datetime(2030, 3, 10, 20, 0, tzinfo=UTC)  # end of today there
    assert default.until - default.since == timedelta(days=30)
    with pytest.raises(reports.ReportError, match="--since"):
        reports.make_period("2030-03-05", "2030-03-01", "Europe/Paris", NOW)
    with pytest.raises(reports.ReportError, match="--until"):
        reports.make_period(None, "March", "Europe/Paris", NOW)


def test_people_and_messages(report: dict[str, Any]) -> None:
    assert report["period"] == {"since": "2030-03-01T00:00:00+01:00",
                                "until": "2030-03-06T00:00:00+01:00",
                                "timezone": "Europe/Paris"}
    assert report["people"] == {
        "new": 5, "new_by_channel": {"sms": 3, "telegram": 2}, "imported": 1,
        "active": 3, "active_by_month": {"2030-03": 3},
        "by_channel": {"sms": 2, "telegram": 1},
        "by_language": {"en": 1, "fr": 1, "unknown": 1},
        "by_departement": {"59": 1, "75": 1, "unknown": 1},
        "by_level": {"1": 1, "2": 2},
    }
    assert report["messages"] == {
        "received": 14, "received_by_channel": {"sms": 10, "telegram": 4},
        "sent": 6, "sent_by_channel": {"sms": 4, "telegram": 2}, "sent_broadcast": 1,
        "sms_messages": 4, "sms_segments": 8, "in_doubt": 2,
        "inbox_waiting": 0, "inbox_parked": 0,
    }


def test_checkins_tickets_callbacks(report: dict[str, Any]) -> None:
    assert report["checkins"] == {
        "sent": 10, "reminded": 3, "answered": 7, "answer_rate": 0.7,
        "answers": {"ok": 4, "help": 2, "callback": 1}, "needs": 3, "no_news": 1,
    }
    tickets = report["tickets"]
    assert (tickets["opened"], tickets["taken"], tickets["closed"]) == (5, 4, 3)
    assert tickets["by_source"] == {"keyword": 3, "checkin": 2}
    assert tickets["by_priority"] == {"normal": 4, "urgent": 1}
    assert tickets["by_channel"] == {"sms": 5}
    assert tickets["median_wait_minutes"] == 25.0  # 10, 20, 30, 40: each alone in its bucket
    assert tickets["median_handling_minutes"] == 30.0
    assert tickets["outcomes"] == {"resolved": 2, "other": 1}  # the closed list only
    assert tickets["satisfaction"] == {"yes": 2, "no": 1}
    assert tickets["satisfied_rate"] == pytest.approx(0.6667)
    assert tickets["sources"] == {"wait": "counters", "handling": "counters",
                                  "outcomes": "counters"}
    assert report["callbacks"] == {"booked": 4, "reached": 2, "no_answer": 1, "cancelled": 1,
                                   "moved": 1}


def test_broadcasts_settled_from_events_and_recent_from_the_outbox(report: dict[str, Any]
                                                                   ) -> None:
    b = report["broadcasts"]
    settled, live = b["items"]
    assert (settled["recipients"], settled["delivered"], settled["failed"],
            settled["replied"], settled["source"]) == (10, 8, 1, 3, "events")
    assert settled["delivery_rate"] == pytest.approx(0.8889)
    assert settled["failure_rate"] == pytest.approx(0.1111)
    # Both people of the recent broadcast wrote right after it was sent.
    assert (live["recipients"], live["delivered"], live["failed"], live["replied"],
            live["source"]) == (2, 1, 1, 2, "outbox")
    assert (live["delivery_rate"], live["failure_rate"]) == (0.5, 0.5)
    assert (b["count"], b["recipients"], b["delivered"], b["failed"], b["replied"]) == (
        2, 12, 9, 2, 5)
    assert b["delivery_rate"] == pytest.approx(0.8182)
    assert b["failure_rate"] == pytest.approx(0.1818)


def test_daily_series_in_local_days(report: dict[str, Any]) -> None:
    days = {d["date"]: d for d in report["daily"]}
    assert list(days) == ["2030-03-01", "2030-03-02", "2030-03-03", "2030-03-04",
                          "2030-03-05"]
    assert days["2030-03-03"] == {"date": "2030-03-03", "messages_received": 12,
                                  "new_people": 5, "tickets_opened": 5}
    assert days["2030-03-04"]["messages_received"] == 2
    assert days["2030-03-05"]["messages_received"] == 0


def test_no_table_about_people_is_read(db_url: str, report: dict[str, Any]) -> None:
    async def erase(session: AsyncSession) -> None:
        from sqlalchemy import delete

        await session.execute(delete(Contact))

    in_db(db_url, erase)
    _code, out, _err = relais(db_url, "report", *PERIOD, "--json")
    after = json.loads(out)
    assert after["broadcasts"]["items"][1]["source"] == "outbox"  # the one exception
    del after["broadcasts"], report["broadcasts"]
    assert after == report


# -- the counters themselves ------------------------------------------------------------------


def test_median_is_the_mean_of_the_middle_bucket() -> None:
    assert cn.median_of_buckets({}, {}) is None
    assert cn.bucket(0.5) == 0 and cn.bucket(11.9) == 10 and cn.bucket(12) == 12
    assert cn.bucket(10 ** 6) == cn.BUCKETS[-1]
    counts, totals = {"10": 1, "20": 1, "30": 2}, {"10": 600, "20": 1260, "30": 4200}
    assert cn.median_of_buckets(counts, totals) == pytest.approx((21 + 35) / 2, abs=0.1)
    assert cn.median_of_buckets({"60": 3}, {"60": 3 * 65 * 60}) == 65.0


def test_counts_are_written_at_commit_and_dropped_with_their_savepoint(db_url: str) -> None:
    day = date(2030, 3, 3)

    async def work(session: AsyncSession) -> None:
        cn.add(session, day, "test.kept", "a")
        try:
            async with session.begin_nested():
                cn.add(session, day, "test.dropped", "a")
                cn.add(session, day, "test.kept", "a")
                raise RuntimeError("a failed flow step")
        except RuntimeError:
            pass
        async with session.begin_nested():
            cn.add(session, day, "test.kept", "a", count=2, total=30)
        cn.add(session, day, "test.moved", "unknown", count=-1)
        cn.add(session, day, "test.moved", "unknown")

    async def rolled_back(session: AsyncSession) -> None:
        cn.add(session, day, "test.never")
        raise RuntimeError("the whole transaction fails")

    async def read(session: AsyncSession) -> list[tuple[Any, ...]]:
        rows = await session.execute(select(ReportCounter.name, ReportCounter.key,
                                            ReportCounter.count, ReportCounter.total)
                                     .order_by(ReportCounter.name))
        return [tuple(r) for r in rows.all()]

    in_db(db_url, work)
    with pytest.raises(RuntimeError):
        in_db(db_url, rolled_back)
    in_db(db_url, work)  # a second transaction adds to the same rows
    assert in_db(db_url, read) == [("test.kept", "a", 6, 60)]


def test_flow_events_and_imports_bump_one_counter_per_dimension(db_url: str) -> None:
    async def work(session: AsyncSession) -> None:
        for kind, value in (("checkin.sent", None), ("checkin.answer", {"answer": "help"}),
                            ("checkin.silence", None), ("callback.booked", None),
                            ("callback.cancelled", {"by": "person"}),
                            ("ticket.opened", {"source": "danger", "priority": "urgent"}),
                            ("ticket.satisfaction", {"answer": "no"}),
                            ("menu.chosen", {"item": "help"})):  # not a report figure
            cn.count_event(session, TZ, DAY, kind, "whatsapp", value)
        cn.new_people(session, TZ, DAY, ["sms", "sms", "telegram"])

    async def build(session: AsyncSession) -> dict[str, Any]:
        period = reports.make_period("2030-03-01", "2030-03-05", TZ, NOW)
        return await reports.build(session, period, "Relais")

    in_db(db_url, work)
    data = in_db(db_url, build)
    assert (data["checkins"]["sent"], data["checkins"]["answers"], data["checkins"]["needs"],
            data["checkins"]["no_news"]) == (1, {"help": 1}, 1, 1)
    assert (data["callbacks"]["booked"], data["callbacks"]["cancelled"]) == (1, 1)
    t = data["tickets"]
    assert (t["by_source"], t["by_priority"], t["by_channel"]) == (
        {"danger": 1}, {"urgent": 1}, {"whatsapp": 1})
    assert t["satisfaction"] == {"no": 1}
    assert (data["people"]["new_by_channel"], data["people"]["imported"]) == (
        {"sms": 2, "telegram": 1}, 3)

    async def rows(session: AsyncSession) -> list[tuple[Any, ...]]:
        found = await session.execute(select(ReportCounter.name, ReportCounter.key))
        return sorted(tuple(r) for r in found.all())

    assert ("tickets.opened", "danger") in in_db(db_url, rows)
    assert all(name != "menu.chosen" for name, _key in in_db(db_url, rows))


# -- the files -----------------------------------------------------------------------------------


def test_text_report(db_url: str) -> None:
    in_db(db_url, seed)
    code, out, err = relais(db_url, "report", *PERIOD)
    assert (code, err) == (0, "")
    assert "activity from 2030-03-01 to 2030-03-05" in out
    assert "new: 5 (sms 3, telegram 2); imported: 1" in out
    assert "active (counted once a month, on their first message): 3 (2030-03 3)" in out
    assert "SMS: 4 messages, 8 segments" in out
    assert "median wait before taken: 25 min; median handling time: 30 min" in out
    assert "outcomes: resolved 2, other 1" in out
    assert "2 broadcasts to 12 people: delivered 81.8%, failed 18.2%, replied 5" in out


def test_csv_files(db_url: str, tmp_path: Path) -> None:
    in_db(db_url, seed)
    folder = tmp_path / "out"
    code, out, err = relais(db_url, "report", *PERIOD, "--csv", str(folder))
    assert (code, out) == (0, "")
    assert "10 CSV files written" in err

    def read(name: str) -> list[dict[str, str]]:
        with (folder / name).open(encoding="utf-8-sig", newline="") as handle:
            return list(csv.DictReader(handle))

    summary = {(r["section"], r["figure"]): r["value"] for r in read("summary.csv")}
    assert summary[("people", "active")] == "3"
    assert summary[("messages", "sms_segments")] == "8"
    assert summary[("tickets", "median_wait_minutes")] == "25.0"
    assert summary[("broadcasts", "delivery_rate")] == "0.8182"
    assert read("people_by_channel.csv") == [
        {"channel": "sms", "new": "3", "active": "2"},
        {"channel": "telegram", "new": "2", "active": "1"}]
    assert read("people_by_month.csv") == [{"month": "2030-03", "active": "3"}]
    assert read("ticket_outcomes.csv") == [{"outcome": "resolved", "count": "2"},
                                           {"outcome": "other", "count": "1"}]
    assert [r["recipients"] for r in read("broadcasts.csv")] == ["10", "2"]
    assert len(read("daily.csv")) == 5
    assert (folder / "summary.csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_html_page_is_self_contained_with_svg_charts(db_url: str, tmp_path: Path) -> None:
    in_db(db_url, seed)
    page = tmp_path / "rapport.html"
    code, out, err = relais(db_url, "report", *PERIOD, "--html", str(page))
    assert (code, out) == (0, "")
    assert f"HTML report written to {page}" in err
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and '<html lang="fr">' in text
    assert "Rapport d'activité : Relais" in text
    assert "Du 1 mars 2030 au 5 mars 2030" in text
    assert text.count("<svg") >= 6 and "<rect" in text
    assert "Messages reçus par jour" in text and "Par département" in text
    assert "résolu" in text and "autre" in text  # outcomes in the mediators' words
    assert "compteurs anonymes" in text and "moins de 48 h" in text  # a live broadcast
    assert MARKER not in text
    # Nothing is loaded from elsewhere: no script, no stylesheet or image link, no URL
    # outside a link a reader may click.
    assert "<script" not in text and "<link" not in text and "<img" not in text
    outside_links = re.sub(r'<a\s[^>]*href="[^"]*"', "", text)
    assert "http" not in outside_links
    assert "src=" not in text and "url(" not in text


def test_html_escapes_names(tmp_path: Path) -> None:
    data = {
        "organisation": "<Centre & Co>",
        "period": {"since": "2030-03-01T00:00:00+01:00", "until": "2030-03-02T00:00:00+01:00",
                   "timezone": "Europe/Paris"},
        "people": {"new": 0, "new_by_channel": {}, "active": 1, "by_channel": {"sms": 1},
                   "by_language": {"<b>": 1}, "by_departement": {}, "by_level": {}},
        "messages": {"received": 0, "sent": 0, "sms_messages": 0, "sms_segments": 0,
                     "in_doubt": 0, "inbox_waiting": 0, "inbox_parked": 0},
        "checkins": {"sent": 0, "answered": 0, "answer_rate": None, "needs": 0,
                     "no_news": 0, "answers": {}},
        "tickets": {"opened": 0, "taken": 0, "closed": 0, "median_wait_minutes": None,
                    "median_handling_minutes": None, "satisfied_rate": None,
                    "by_source": {}, "outcomes": {"<script>": 1}},
        "callbacks": {k: 0 for k in reports.CALLBACK_KINDS},
        "broadcasts": {"count": 0, "recipients": 0, "delivery_rate": None,
                       "failure_rate": None, "replied": 0, "items": []},
        "daily": [{"date": "2030-03-01", "messages_received": 0, "new_people": 0,
                   "tickets_opened": 0}],
    }
    page = reports.as_html(data)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;Centre &amp; Co&gt;" in page and "&lt;b&gt;" in page
    assert "aucune donnée" in page and "moins de 48 h" not in page


def test_bad_period_is_a_usage_error(db_url: str) -> None:
    code, out, err = relais(db_url, "report", "--since", "yesterday")
    assert (code, out) == (2, "")
    assert "--since" in err


# -- a real morning, three erasures, the same figures -------------------------------------------

MONDAY_10 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)  # 10:00 in Paris
PEOPLE = {  # who: (channel, language choice, level choice, postcode)
    "+33611000001": ("sms", "fr", "1", "59000"),
    "+33611000002": ("sms", "en", "2", "75011"),
    "chloe": ("terminal", "fr", "3", "13001"),
    "david": ("terminal", "fr", "2", "69001"),
}


async def a_morning(room: Room, clock: Any) -> None:
    """Four people onboard and ask for a human; Léa takes three, writes a note, closes with
    an outcome (one typed wrong first); one person answers the satisfaction question."""
    for who, (channel, language, level, postcode) in PEOPLE.items():
        await room.send(who, f"Bonjour {MARKER}", channel=channel)
        for answer in (language, level, postcode, "oui"):
            await room.send(who, answer, channel=channel)
        await room.send(who, "AIDE", channel=channel)
    await room.send("+33611000001", f"{MARKER} mon dossier CAF", channel="sms")

    def at(minutes: int) -> None:
        clock.move_to(MONDAY_10 + timedelta(minutes=minutes))

    at(10)
    await room.send("lea", "/prendre 1")
    await room.send("lea", f"Bonjour, je regarde {MARKER}")
    await room.send("lea", f"/note 1 {MARKER} numero allocataire a verifier")
    at(20)
    await room.send("lea", "/prendre 2")
    at(30)
    await room.send("lea", "/prendre 3")
    at(35)
    got = await room.send("lea", "/fermer 2 résolu")
    assert got["lea"] == ["#2 est fermée. Merci !"]
    at(40)
    got = await room.send("lea", f"/fermer 1 2 {MARKER} dossier envoyé à la CAF")
    assert got["lea"] == ["#1 est fermée. Merci !"]
    await room.send("+33611000001", "1", channel="sms")  # yes, we helped
    at(60)
    got = await room.send("lea", f"/fermer 3 {MARKER} dossier fait")
    assert got["lea"][0].startswith("Quelle issue pour #3 ? Envoyez /fermer 3 et un numéro :")
    at(75)
    await room.send("lea", "/fermer 3 Injoignable")


async def build(services: Services) -> dict[str, Any]:
    period = reports.make_period("2030-03-01", "2030-03-05", TZ, services.clock.now())
    async with services.sessions() as session:
        return await reports.build(session, period, "Relais")


def every_format(data: dict[str, Any], folder: Path) -> str:
    """The report as JSON, text, CSV files and HTML, all in one string."""
    page = folder / "rapport.html"
    page.write_text(reports.as_html(data), encoding="utf-8")
    files = reports.write_csv(data, folder / "csv")
    return "\n".join([json.dumps(data, ensure_ascii=False), reports.as_text(data),
                      page.read_text(encoding="utf-8"),
                      *(f.read_text(encoding="utf-8-sig") for f in files)])


async def test_figures_survive_three_erasures_and_quote_no_one(services: Services,
                                                               tmp_path: Path) -> None:
    with time_machine.travel(MONDAY_10, tick=False) as clock:
        room = Room(services)
        await add(services, "terminal:lea", "Léa Martin")
        await a_morning(room, clock)
        before = await build(services)
        async with services.sessions() as session:
            closed = (await session.scalars(select(Ticket).order_by(Ticket.id))).all()
            typed = list(await session.scalars(
                select(TicketNote.body).where(TicketNote.body.like(f"%{MARKER}%"))))
        # the outcome is a category of the list; what was typed after it is a note
        assert [t.outcome for t in closed] == ["referred", "resolved", "no-answer", None]
        assert sorted(typed) == [f"{MARKER} dossier envoyé à la CAF",
                                 f"{MARKER} numero allocataire a verifier"]

        clock.move_to(MONDAY_10 + timedelta(days=2))  # Wednesday 6 March: after the period
        async with services.sessions() as session, session.begin():
            for address in ("sms:+33611000001", "terminal:chloe"):  # relais forget
                contact = await find_contact(session, address)
                assert contact is not None
                await rights.forget(session, contact, services.clock.now(), source="cli")
        got = await room.send("+33611000002", "OUBLIER", channel="sms")
        code = re.search(r"(?:répondez|reply) (\d{4})", got["+33611000002"][0])  # a code
        assert code is not None
        await room.send("+33611000002", code.group(1), channel="sms")
        clock.shift(timedelta(minutes=5))
        await room.jobs()  # the shell left for the last message goes
        after = await build(services)
        async with services.sessions() as session:
            people = list(await session.scalars(select(Contact.name)))
            kept = (await session.scalars(select(Ticket))).all()
            notes = list(await session.scalars(select(TicketNote.body)))

    assert len(people) == 2 and len(kept) == 1  # Léa and David remain
    assert not [n for n in notes if MARKER in n]
    t, p = before["tickets"], before["people"]
    assert (t["opened"], t["taken"], t["closed"]) == (4, 3, 3)
    assert t["by_source"] == {"keyword": 4}
    assert t["median_wait_minutes"] == 20.0  # 10, 20 and 30 min before the first take
    assert t["median_handling_minutes"] == 30.0  # 15, 30 and 45 min from take to close
    assert t["outcomes"] == {"no-answer": 1, "referred": 1, "resolved": 1}
    assert t["satisfaction"] == {"yes": 1}
    assert p["active"] == 4 and p["new"] == 4  # Léa's commands are not activity
    assert p["by_channel"] == {"sms": 2, "terminal": 2}
    assert p["by_language"] == {"fr": 3, "en": 1}  # known after the first message: moved
    assert p["by_departement"] == {"13": 1, "59": 1, "69": 1, "75": 1}
    assert p["by_level"] == {"1": 1, "2": 2, "3": 1}
    assert before["messages"]["received"] == 4 * 6 + 2
    assert after == before

    text = every_format(after, tmp_path)
    assert MARKER not in text
    for typed in ("dossier envoy", "numero allocataire", "dossier fait", "Bonjour"):
        assert typed not in text


async def test_ticket_events_date_nobody_to_the_minute(services: Services) -> None:
    """Events keep the hour only and no exact wait or handling time: joined with the hour,
    minutes would date a person's ticket (durations are counted by bucket and day)."""
    from tests.helpers.factories import Room, add

    with time_machine.travel(MONDAY_10 + timedelta(minutes=7), tick=False) as clock:
        room = Room(services)
        await add(services, "terminal:alice", "Alice")
        await room.send("marie", "AIDE")
        clock.shift(timedelta(minutes=13))
        await room.send("alice", "/prendre 1")
        clock.shift(timedelta(minutes=29))
        await room.send("alice", "/fermer 1 1")
    async with services.sessions() as session:
        rows = (await session.execute(
            select(Event.kind, Event.at, Event.value).where(Event.kind.like("ticket.%"))
        )).all()
    assert {kind for kind, _at, _value in rows} >= {"ticket.taken", "ticket.closed"}
    for kind, at, value in rows:
        assert (at.minute, at.second) == (0, 0), kind
        assert not [k for k in (value or {}) if "minute" in k or "second" in k], (kind, value)
