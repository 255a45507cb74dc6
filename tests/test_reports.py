"""Reports on SQLite and PostgreSQL, from a seeded set of anonymous events and tables: every
figure asserted, the period's edges in the local time zone, the text, JSON, CSV files and a
self-contained French HTML page with inline SVG charts."""

from __future__ import annotations

import asyncio
import csv
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from bot import reports
from bot.broadcast_model import Broadcast
from bot.cli.app import app
from bot.storage.db import make_engine, sessionmaker
from bot.storage.models import Address, Contact, Event, Message, Outbox, Staff, Ticket

NOW = datetime(2030, 3, 10, 9, 0, tzinfo=UTC)
DAY = datetime(2030, 3, 3, 12, 0, tzinfo=UTC)  # inside the period
BEFORE = datetime(2030, 2, 28, 22, 0, tzinfo=UTC)  # 28 February, 23:00 in Paris: outside
AFTER = datetime(2030, 3, 5, 23, 30, tzinfo=UTC)  # 6 March, 00:30 in Paris: outside
PERIOD = ("--since", "2030-03-01", "--until", "2030-03-05")


@pytest.fixture(autouse=True)
def frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)  # no .env
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def ev(event_kind: str, at: datetime = DAY, channel: str | None = None, **value: Any
       ) -> dict[str, Any]:
    return {"kind": event_kind, "at": at, "channel": channel, "language": "fr",
            "value": value or None}


def seeded_events() -> list[dict[str, Any]]:
    rows = (
        [ev("contact.new", channel="sms")] * 3 + [ev("contact.new", channel="telegram")] * 2
        + [ev("contact.new", BEFORE, "sms"), ev("contact.new", AFTER, "sms")]
        + [ev("inbound", channel="sms")] * 8
        + [ev("inbound", DAY + timedelta(days=1), "sms")] * 2
        + [ev("inbound", channel="telegram")] * 4 + [ev("inbound", AFTER, "sms")]
        + [ev("outbox.sent", channel="sms", segments=n, kind="reply") for n in (1, 2, 3)]
        + [ev("outbox.sent", channel="sms", segments=2, kind="broadcast")]
        + [ev("outbox.sent", channel="telegram", segments=1, kind="reply")] * 2
        + [ev("outbox.sent", BEFORE, "sms", segments=5, kind="reply")]
        + [ev("outbox.in_doubt", channel="sms")] * 2
        + [ev("checkin.sent")] * 10 + [ev("checkin.reminded")] * 3
        + [ev("checkin.answer", answer="ok")] * 4 + [ev("checkin.answer", answer="help")] * 2
        + [ev("checkin.answer", answer="callback"), ev("checkin.silence")]
        + [ev("ticket.opened", source="keyword", priority="normal")] * 3
        + [ev("ticket.opened", source="checkin", priority="normal")] * 2
        + [ev("ticket.taken", waited_minutes=m, source="keyword") for m in (10, 20, 30, 40)]
        + [ev("ticket.closed", minutes=60, source="keyword")] * 3
        + [ev("ticket.satisfaction", answer="yes")] * 2 + [ev("ticket.satisfaction",
                                                              answer="no")]
        + [ev("callback.booked")] * 4 + [ev("callback.reached")] * 2
        + [ev("callback.no_answer"), ev("callback.cancelled", by="person"),
           ev("callback.moved")]
    )
    return rows


SETTLED = {"broadcast_id": 0, "recipients": 10, "queued": 0, "held": 0, "sent": 2,
           "delivered": 5, "read": 1, "failed": 1, "cancelled": 1, "replied": 3,
           "by_channel": {"sms": {"delivered": 5, "read": 1, "failed": 1, "cancelled": 1},
                          "telegram": {"sent": 2}}}


async def seed(session: AsyncSession) -> None:
    await session.execute(insert(Event), seeded_events())
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
            at = BEFORE if index == 3 else DAY  # the last one wrote before the period only
            session.add(Message(contact_id=contact.id, address_id=address.id, direction="in",
                                channel=channel, body="bonjour", created_at=at))
    staff = Contact(language="fr", created_at=BEFORE)
    session.add(staff)
    await session.flush()
    session.add(Staff(contact_id=staff.id, name="Awa", role="mediator", created_at=BEFORE))
    session.add(Message(contact_id=staff.id, direction="in", channel="sms", body="/queue",
                        created_at=DAY))
    for handled, outcome in ((15, "résolu"), (30, "résolu"), (45, None)):
        taken = DAY + timedelta(minutes=5)
        session.add(Ticket(contact_id=contact_ids[0], source="keyword", state="closed",
                           created_at=DAY, taken_at=taken,
                           closed_at=taken + timedelta(minutes=handled), outcome=outcome))
    session.add(Ticket(contact_id=contact_ids[1], source="keyword", state="closed",
                       created_at=BEFORE, taken_at=BEFORE, closed_at=BEFORE, outcome="old"))

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


def in_db(db_url: str, work: Any) -> Any:
    async def go() -> Any:
        engine = make_engine(db_url)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def relais(db_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"RELAIS_DATABASE_URL": db_url})
    return result.exit_code, result.stdout, result.stderr


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
        "new": 5, "new_by_channel": {"sms": 3, "telegram": 2},
        "active": 3, "by_channel": {"sms": 2, "telegram": 2},
        "by_language": {"en": 1, "fr": 1, "unknown": 1},
        "by_departement": {"59": 1, "75": 1, "unknown": 1},
        "by_level": {"1": 1, "2": 1, "unknown": 1},
    }
    assert report["messages"] == {
        "received": 14, "received_by_channel": {"sms": 10, "telegram": 4},
        "sent": 6, "sent_by_channel": {"sms": 4, "telegram": 2}, "sent_broadcast": 1,
        "sms_messages": 4, "sms_segments": 8, "in_doubt": 2,
    }


def test_checkins_tickets_callbacks(report: dict[str, Any]) -> None:
    assert report["checkins"] == {
        "sent": 10, "reminded": 3, "answered": 7, "answer_rate": 0.7,
        "answers": {"ok": 4, "help": 2, "callback": 1}, "needs": 3, "no_news": 1,
    }
    tickets = report["tickets"]
    assert (tickets["opened"], tickets["taken"], tickets["closed"]) == (5, 4, 3)
    assert tickets["by_source"] == {"keyword": 3, "checkin": 2}
    assert tickets["median_wait_minutes"] == 25.0  # from the events
    assert tickets["median_handling_minutes"] == 30.0  # from the tickets still known
    assert tickets["outcomes"] == {"résolu": 2, "none": 1}
    assert tickets["satisfaction"] == {"yes": 2, "no": 1}
    assert tickets["satisfied_rate"] == pytest.approx(0.6667)
    assert tickets["sources"] == {"wait": "events", "handling": "tickets",
                                  "outcomes": "tickets"}
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


def test_figures_survive_erasure(db_url: str, report: dict[str, Any]) -> None:
    async def erase(session: AsyncSession) -> None:
        from sqlalchemy import delete

        await session.execute(delete(Contact))

    in_db(db_url, erase)
    _code, out, _err = relais(db_url, "report", *PERIOD, "--json")
    after = json.loads(out)
    for section in ("messages", "checkins", "callbacks"):
        assert after[section] == report[section]
    assert after["people"]["new"] == 5
    assert after["tickets"]["median_wait_minutes"] == 25.0
    settled = after["broadcasts"]["items"][0]
    assert (settled["recipients"], settled["delivered"]) == (10, 8)


# -- the files -----------------------------------------------------------------------------------


def test_text_report(db_url: str) -> None:
    in_db(db_url, seed)
    code, out, err = relais(db_url, "report", *PERIOD)
    assert (code, err) == (0, "")
    assert "activity from 2030-03-01 to 2030-03-05" in out
    assert "new: 5 (sms 3, telegram 2)" in out
    assert "SMS: 4 messages, 8 segments" in out
    assert "median wait before taken: 25 min; median handling time: 30 min" in out
    assert "2 broadcasts to 12 people: delivered 81.8%, failed 18.2%, replied 5" in out


def test_csv_files(db_url: str, tmp_path: Path) -> None:
    in_db(db_url, seed)
    folder = tmp_path / "out"
    code, out, err = relais(db_url, "report", *PERIOD, "--csv", str(folder))
    assert (code, out) == (0, "")
    assert "9 CSV files written" in err

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
        {"channel": "telegram", "new": "2", "active": "2"}]
    assert read("ticket_outcomes.csv") == [{"outcome": "résolu", "count": "2"},
                                           {"outcome": "none", "count": "1"}]
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
                     "in_doubt": 0},
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
    assert "aucune donnée" in page


def test_bad_period_is_a_usage_error(db_url: str) -> None:
    code, out, err = relais(db_url, "report", "--since", "yesterday")
    assert (code, out) == (2, "")
    assert "--since" in err
