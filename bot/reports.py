"""Activity reports for coordinators and funders: text, JSON, CSV files and one
self-contained HTML page (French, inline SVG charts, no external asset).

Every figure about people, check-ins, tickets and callbacks comes from the anonymous
``counters`` (``bot.counters``): one count per local day and per value of one dimension,
written when things happen, durations included. Nothing is read from the tables about people
(contacts, messages, tickets, notes), so an erasure or the retention purge changes no
figure, and no text anyone wrote (a message, a note, an outcome typed by hand) can reach a
report: outcomes are the categories of a closed list (``bot.outcomes``). Sends (messages
sent, SMS segments, sends in doubt) come from the outbox's anonymous ``events`` (a channel,
a kind, a segment count). Broadcasts come from their settled figures (``broadcast.settled``
events) once their 48 h replies window has closed, and from the outbox before that (those
may still change, and say so in ``source``).

Counters are by day: a period is read from its first to its last local day, whole days.
People are counted once per calendar month, on the day of their first message of the month:
``active`` is exact for a period of whole months, and counts a person again in each month a
longer period covers (``active_by_month`` shows each month).
"""

from __future__ import annotations

import csv
import html
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import broadcasts as bc
from bot import counters as cn
from bot import csv_cells
from bot import outcomes as oc
from bot.broadcast_model import Broadcast
from bot.i18n import Translator
from bot.storage.models import Event

DEFAULT_DAYS = 30
CALLBACK_KINDS = ("booked", "reached", "no_answer", "cancelled", "moved")
CHECKIN_NEEDS = ("help", "callback")


class ReportError(ValueError):
    """A period that cannot be used; ``str()`` is one line."""


@dataclass(frozen=True)
class Period:
    since: datetime  # aware UTC, included
    until: datetime  # aware UTC, excluded
    tz: str

    @property
    def first_day(self) -> date:
        return self.since.astimezone(ZoneInfo(self.tz)).date()

    @property
    def last_day(self) -> date:
        return (self.until - timedelta(microseconds=1)).astimezone(ZoneInfo(self.tz)).date()

    def days(self) -> list[date]:
        day, out = self.first_day, []
        while day <= self.last_day:
            out.append(day)
            day += timedelta(days=1)
        return out


def _parse_day(text: str, option: str, tz: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"{option}: expected a date like 2026-11-01, got {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz))
    return value


def make_period(since: str | None, until: str | None, tz: str, now: datetime) -> Period:
    """``--since DATE`` (from its first minute) and ``--until DATE`` (to its last minute,
    included), in ``tz``; by default the last 30 days, today included."""
    zone = ZoneInfo(tz)
    if until is not None:
        end = _parse_day(until, "--until", tz)
        if len(until.strip()) <= 10:  # a date: the whole day
            end = datetime.combine(end.date() + timedelta(days=1), time(), tzinfo=zone)
    else:
        end = datetime.combine(now.astimezone(zone).date() + timedelta(days=1), time(),
                               tzinfo=zone)
    if since is not None:
        start = _parse_day(since, "--since", tz)
    else:
        start = end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise ReportError("--since must come before --until")
    return Period(start.astimezone(UTC), end.astimezone(UTC), tz)


# -- counting --------------------------------------------------------------------------------


def _in(period: Period) -> Any:
    return and_(Event.at >= period.since, Event.at < period.until)


async def _counts(session: AsyncSession, period: Period, *kinds: str) -> Counter[str]:
    rows = await session.execute(
        select(Event.kind, func.count()).where(_in(period), Event.kind.in_(kinds))
        .group_by(Event.kind)
    )
    found: Counter[str] = Counter()
    for kind, n in rows.all():
        found[kind] = n
    return found


async def _by(session: AsyncSession, period: Period, kind: str, column: Any
              ) -> Counter[str]:
    rows = await session.execute(
        select(column, func.count()).where(_in(period), Event.kind == kind).group_by(column)
    )
    found: Counter[str] = Counter()
    for key, n in rows.all():
        found["unknown" if key in (None, "") else str(key)] += n
    return found


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _sorted(mapping: dict[str, int]) -> dict[str, int]:
    return dict(sorted(mapping.items()))


def people(figures: cn.Figures, months: dict[str, int]) -> dict[str, Any]:
    """New people (their first message, or an import) and people counted once a month."""
    return {
        "new": figures.sum(cn.NEW),
        "new_by_channel": _sorted(figures.by(cn.NEW)),
        "imported": figures.sum(cn.IMPORTED),
        "active": figures.sum(cn.ACTIVE),
        "active_by_month": months,
        "by_channel": _sorted(figures.by(cn.ACTIVE_CHANNEL)),
        "by_language": figures.by(cn.ACTIVE_LANGUAGE),
        "by_departement": _sorted(figures.by(cn.ACTIVE_DEPARTEMENT)),
        "by_level": _sorted(figures.by(cn.ACTIVE_LEVEL)),
    }


async def messages(session: AsyncSession, period: Period, figures: cn.Figures
                   ) -> dict[str, Any]:
    """Received: the counters (citizens only). Sent: the outbox's anonymous events."""
    sent = await _by(session, period, "outbox.sent", Event.channel)
    segments = await session.scalar(
        select(func.coalesce(func.sum(Event.value["segments"].as_integer()), 0))
        .where(_in(period), Event.kind == "outbox.sent", Event.channel == "sms")
    )
    kinds = await _by(session, period, "outbox.sent", Event.value["kind"].as_string())
    in_doubt = await _counts(session, period, "outbox.in_doubt")
    return {
        "received": figures.sum(cn.RECEIVED),
        "received_by_channel": _sorted(figures.by(cn.RECEIVED)),
        "sent": sum(sent.values()),
        "sent_by_channel": dict(sorted(sent.items())),
        "sent_broadcast": kinds.get(bc.KIND, 0),
        "sms_messages": sent.get("sms", 0),
        "sms_segments": int(segments or 0),
        "in_doubt": in_doubt["outbox.in_doubt"],
    }


def checkins(figures: cn.Figures) -> dict[str, Any]:
    answers = figures.by(cn.CHECKINS_ANSWER)
    sent = figures.sum(cn.CHECKINS_SENT)
    answered = sum(answers.values())
    return {
        "sent": sent,
        "reminded": figures.sum(cn.CHECKINS_REMINDED),
        "answered": answered,
        "answer_rate": _rate(answered, sent),
        "answers": answers,
        "needs": sum(answers.get(a, 0) for a in CHECKIN_NEEDS),
        "no_news": figures.sum(cn.CHECKINS_SILENCE),
    }


def tickets(figures: cn.Figures) -> dict[str, Any]:
    """Opened (by source, priority, channel), first taken, closed by outcome category; the
    median wait before the first take and handling time (first take to close) from the
    duration buckets; satisfaction."""
    satisfaction = figures.by(cn.SATISFACTION)
    answered = satisfaction.get("yes", 0) + satisfaction.get("no", 0)
    return {
        "opened": figures.sum(cn.OPENED),
        "by_source": figures.by(cn.OPENED),
        "by_priority": figures.by(cn.OPENED_PRIORITY),
        "by_channel": _sorted(figures.by(cn.OPENED_CHANNEL)),
        "taken": figures.sum(cn.TAKEN),
        "closed": figures.sum(cn.CLOSED),
        "median_wait_minutes": figures.median_minutes(cn.WAIT),
        "median_handling_minutes": figures.median_minutes(cn.HANDLING),
        "outcomes": figures.by(cn.CLOSED),
        "satisfaction": satisfaction,
        "satisfied_rate": _rate(satisfaction.get("yes", 0), answered),
        "sources": {"wait": "counters", "handling": "counters", "outcomes": "counters"},
    }


def callbacks(figures: cn.Figures) -> dict[str, Any]:
    found = figures.count.get(cn.CALLBACKS, {})
    return {kind: found.get(kind, 0) for kind in CALLBACK_KINDS}


async def broadcasts(session: AsyncSession, period: Period) -> dict[str, Any]:
    """Broadcasts started in the period: their settled figures (an event) when the 48 h
    replies window has closed, else what the outbox says now."""
    settled: dict[int, dict[str, Any]] = {}
    rows = await session.scalars(select(Event.value).where(Event.kind == "broadcast.settled"))
    for value in rows.all():
        if value and "broadcast_id" in value:
            settled[int(value["broadcast_id"])] = value
    started = (await session.scalars(
        select(Broadcast).where(Broadcast.test_address.is_(None),
                                Broadcast.started_at >= period.since,
                                Broadcast.started_at < period.until)
        .order_by(Broadcast.started_at)
    )).all()
    items = []
    for broadcast in started:
        figures = settled.get(broadcast.id)
        source = "events"
        if figures is None:
            figures = await bc.status_counts(session, broadcast.id, period.until)
            source = "outbox"
        items.append(_broadcast_item(broadcast, figures, source))
    total = Counter()
    for item in items:
        for key in ("recipients", "reached", "delivered", "failed", "cancelled", "replied"):
            total[key] += item[key]
    attempted = total["recipients"] - total["cancelled"]
    return {
        "count": len(items),
        "recipients": total["recipients"],
        "delivered": total["delivered"],
        "failed": total["failed"],
        "replied": total["replied"],
        "delivery_rate": _rate(total["delivered"], attempted),
        "failure_rate": _rate(total["failed"], attempted),
        "items": items,
    }


def _broadcast_item(broadcast: Broadcast, figures: dict[str, Any], source: str
                    ) -> dict[str, Any]:
    # Telegram reports no delivery: a message Telegram accepted counts as delivered.
    telegram_sent = int((figures.get("by_channel") or {}).get("telegram", {}).get("sent", 0))
    delivered = int(figures.get("delivered", 0)) + int(figures.get("read", 0)) + telegram_sent
    recipients = int(figures.get("recipients", 0))
    cancelled = int(figures.get("cancelled", 0))
    failed = int(figures.get("failed", 0))
    attempted = recipients - cancelled
    return {
        "id": broadcast.id,
        "started_at": broadcast.started_at.isoformat() if broadcast.started_at else None,
        "segment": bc.Segment.from_json(broadcast.filters).describe(),
        "recipients": recipients,
        "reached": delivered + int(figures.get("sent", 0)) - telegram_sent,
        "delivered": delivered,
        "read": int(figures.get("read", 0)),
        "failed": failed,
        "cancelled": cancelled,
        "replied": int(figures.get("replied", 0)),
        "delivery_rate": _rate(delivered, attempted),
        "failure_rate": _rate(failed, attempted),
        "source": source,
    }


DAILY = {cn.RECEIVED: "messages_received", cn.NEW: "new_people", cn.OPENED: "tickets_opened"}


async def daily(session: AsyncSession, period: Period) -> list[dict[str, Any]]:
    found = await cn.daily(session, period.first_day, period.last_day, DAILY)
    return [{"date": day.isoformat(),
             **{label: found.get(day, {}).get(name, 0) for name, label in DAILY.items()}}
            for day in period.days()]


async def _months(session: AsyncSession, period: Period) -> dict[str, int]:
    found = await cn.daily(session, period.first_day, period.last_day, [cn.ACTIVE])
    months: Counter[str] = Counter()
    for day in period.days():
        months[day.strftime("%Y-%m")] += found.get(day, {}).get(cn.ACTIVE, 0)
    return dict(sorted(months.items()))


async def build(session: AsyncSession, period: Period, org: str) -> dict[str, Any]:
    """The whole report, as one JSON-ready object."""
    figures = await cn.read(session, period.first_day, period.last_day)
    return {
        "organisation": org,
        "period": {"since": period.since.astimezone(ZoneInfo(period.tz)).isoformat(),
                   "until": period.until.astimezone(ZoneInfo(period.tz)).isoformat(),
                   "timezone": period.tz},
        "people": people(figures, await _months(session, period)),
        "messages": await messages(session, period, figures),
        "checkins": checkins(figures),
        "tickets": tickets(figures),
        "callbacks": callbacks(figures),
        "broadcasts": await broadcasts(session, period),
        "daily": await daily(session, period),
    }


# -- text ------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else (f"{value:,.0f}" if float(value).is_integer()
                                      else f"{value:,.1f}")


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in mapping.items()) or "-"


def as_text(report: dict[str, Any]) -> str:
    p, m, c = report["people"], report["messages"], report["checkins"]
    t, cb, b = report["tickets"], report["callbacks"], report["broadcasts"]
    period = report["period"]
    lines = [
        f"{report['organisation']}: activity from {period['since'][:10]} to "
        f"{_last_day(period)}",
        "",
        "People",
        f"  new: {p['new']:,} ({_pairs(p['new_by_channel'])}); imported: {p['imported']:,}",
        f"  active (counted once a month, on their first message): {p['active']:,} "
        f"({_pairs(p['active_by_month'])})",
        f"  by channel: {_pairs(p['by_channel'])}",
        f"  by language: {_pairs(p['by_language'])}",
        f"  by département: {_pairs(p['by_departement'])}",
        f"  by level: {_pairs(p['by_level'])}",
        "Messages",
        f"  received: {m['received']:,}; sent: {m['sent']:,} "
        f"(broadcasts {m['sent_broadcast']:,})",
        f"  SMS: {m['sms_messages']:,} messages, {m['sms_segments']:,} segments",
        f"  sends in doubt: {m['in_doubt']:,}",
        "Check-ins",
        f"  sent: {c['sent']:,}; answered: {c['answered']:,} ({_pct(c['answer_rate'])}); "
        f"needs (help or callback): {c['needs']:,}; no news: {c['no_news']:,}",
        f"  answers: {_pairs(c['answers'])}",
        "Tickets",
        f"  opened: {t['opened']:,}; taken: {t['taken']:,}; closed: {t['closed']:,}",
        f"  by source: {_pairs(t['by_source'])}; by priority: {_pairs(t['by_priority'])}",
        f"  median wait before taken: {_num(t['median_wait_minutes'])} min; "
        f"median handling time: {_num(t['median_handling_minutes'])} min",
        f"  outcomes: {_pairs(t['outcomes'])}",
        f"  satisfaction: {_pairs(t['satisfaction'])} "
        f"(satisfied {_pct(t['satisfied_rate'])})",
        "Callbacks",
        f"  booked {cb['booked']:,}, reached {cb['reached']:,}, no answer "
        f"{cb['no_answer']:,}, cancelled {cb['cancelled']:,}, moved {cb['moved']:,}",
        "Broadcasts",
        f"  {b['count']:,} broadcasts to {b['recipients']:,} people: delivered "
        f"{_pct(b['delivery_rate'])}, failed {_pct(b['failure_rate'])}, "
        f"replied {b['replied']:,}",
    ]
    for item in b["items"]:
        lines.append(
            f"  #{item['id']} {(item['started_at'] or '')[:10]} {item['segment']}: "
            f"{item['recipients']:,} people, delivered {_pct(item['delivery_rate'])}, "
            f"failed {_pct(item['failure_rate'])}, replied {item['replied']:,}"
        )
    return "\n".join(lines) + "\n"


def _last_day(period: dict[str, Any]) -> str:
    until = datetime.fromisoformat(period["until"]) - timedelta(microseconds=1)
    return until.date().isoformat()


# -- CSV -------------------------------------------------------------------------------------


def write_csv(report: dict[str, Any], folder: Path) -> list[Path]:
    """One CSV file per table (UTF-8 with BOM, for spreadsheets); returns the files. Text
    cells that a spreadsheet would run as a formula start with ``'`` (``bot.csv_cells``)."""
    folder.mkdir(parents=True, exist_ok=True)
    p, t = report["people"], report["tickets"]
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {
        "summary.csv": (["section", "figure", "value"], list(_summary_rows(report))),
        "people_by_channel.csv": (
            ["channel", "new", "active"],
            [[ch, p["new_by_channel"].get(ch, 0), p["by_channel"].get(ch, 0)]
             for ch in sorted(set(p["new_by_channel"]) | set(p["by_channel"]))]),
        "people_by_month.csv": (["month", "active"], list(p["active_by_month"].items())),
        "people_by_language.csv": (["language", "people"], list(p["by_language"].items())),
        "people_by_departement.csv": (["departement", "people"],
                                      list(p["by_departement"].items())),
        "people_by_level.csv": (["level", "people"], list(p["by_level"].items())),
        "checkin_answers.csv": (["answer", "count"],
                                list(report["checkins"]["answers"].items())),
        "ticket_outcomes.csv": (["outcome", "count"], list(t["outcomes"].items())),
        "broadcasts.csv": (
            ["id", "started_at", "segment", "recipients", "delivered", "read", "failed",
             "cancelled", "replied", "delivery_rate", "failure_rate"],
            [[i[k] for k in ("id", "started_at", "segment", "recipients", "delivered", "read",
                             "failed", "cancelled", "replied", "delivery_rate",
                             "failure_rate")]
             for i in report["broadcasts"]["items"]]),
        "daily.csv": (["date", "messages_received", "new_people", "tickets_opened"],
                      [list(d.values()) for d in report["daily"]]),
    }
    written = []
    for name, (header, rows) in tables.items():
        path = folder / name
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(csv_cells.row(header))
            writer.writerows(csv_cells.row(row) for row in rows)
        written.append(path)
    return written


def _summary_rows(report: dict[str, Any]) -> Any:
    for section in ("people", "messages", "checkins", "tickets", "callbacks", "broadcasts"):
        for key, value in report[section].items():
            if isinstance(value, (int, float)) or value is None:
                yield [section, key, "" if value is None else value]


# -- HTML ------------------------------------------------------------------------------------

FR_LABELS = {
    "sms": "SMS", "whatsapp": "WhatsApp", "telegram": "Telegram", "terminal": "Terminal",
    "unknown": "non renseigné", "none": "sans issue notée",
    "ok": "tout va bien", "help": "besoin d'aide", "callback": "rappel demandé",
    "stop": "arrêt", "yes": "oui", "no": "non",
    "1": "niveau 1 (débutant)", "2": "niveau 2", "3": "niveau 3 (à l'aise)",
    "keyword": "mot AIDE", "menu": "menu", "misunderstood": "incompris",
    "checkin": "prise de nouvelles", "checkin_silence": "sans nouvelles",
    "media": "photo ou message vocal", "danger": "mots de danger", "places": "lieu d'aide",
    "resource": "page d'aide", "forget": "effacement demandé",
    "sender_limit": "beaucoup de messages",
    "urgent": "urgente", "normal": "normale", "low": "basse",
}
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
          "septembre", "octobre", "novembre", "décembre")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1d2330;
max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;
border-bottom:2px solid #2b6cb0;padding-bottom:.2rem}.sub{color:#555;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}.card{background:#f2f6fb;
border-radius:.5rem;padding:.7rem 1rem;min-width:9rem}.card b{display:block;font-size:1.5rem}
table{border-collapse:collapse;margin:.6rem 0}td,th{padding:.25rem .8rem;text-align:left;
border-bottom:1px solid #dde3ea}td.n{text-align:right}svg{display:block;margin:.6rem 0}
.note{color:#555;font-size:.9rem}
@media print{.card{border:1px solid #ccc}}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _label(key: str) -> str:
    return FR_LABELS.get(key, key)


def _fr_date(day: date) -> str:
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def _fr_num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    text = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    return text.replace(",", "\u202f").replace(".", ",") + unit


def _fr_pct(value: float | None) -> str:
    return "–" if value is None else _fr_num(round(value * 100, 1), "\u00a0%")


def bar_chart(items: list[tuple[str, float]], title: str, width: int = 560) -> str:
    """Horizontal bars, one per item, as inline SVG (no external asset)."""
    if not items or not any(v for _k, v in items):
        return f'<p class="note">{_e(title)} : aucune donnée sur la période.</p>'
    bar_h, gap, label_w, value_w = 22, 8, 190, 70
    height = len(items) * (bar_h + gap) + 30
    top = max(v for _k, v in items) or 1
    span = width - label_w - value_w
    parts = [f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<text x="0" y="16" font-size="14" font-weight="bold" fill="#1d2330">'
             f'{_e(title)}</text>']
    for index, (key, value) in enumerate(items):
        y = 28 + index * (bar_h + gap)
        length = max(1.0, span * value / top) if value else 0
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" font-size="13" '
                     f'text-anchor="end" fill="#1d2330">{_e(key)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_h}" '
                     f'rx="3" fill="#2b6cb0"/>')
        parts.append(f'<text x="{label_w + length + 6:.1f}" y="{y + 15}" font-size="13" '
                     f'fill="#1d2330">{_e(_fr_num(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def column_chart(series: list[tuple[str, float]], title: str, width: int = 760) -> str:
    """Vertical bars over time (one per day), as inline SVG."""
    if not series or not any(v for _k, v in series):
        return f'<p class="note">{_e(title)} : aucune donnée sur la période.</p>'
    height, base, left = 200, 170, 40
    step = (width - left - 10) / len(series)
    top = max(v for _k, v in series) or 1
    parts = [f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{height + 20}"'
             f' viewBox="0 0 {width} {height + 20}">',
             f'<text x="0" y="16" font-size="14" font-weight="bold" fill="#1d2330">'
             f'{_e(title)}</text>',
             f'<text x="{left - 6}" y="34" font-size="11" text-anchor="end" fill="#555">'
             f'{_e(_fr_num(top))}</text>',
             f'<line x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#999"/>']
    every = max(1, len(series) // 10)
    for index, (key, value) in enumerate(series):
        h = (base - 30) * value / top
        x = left + index * step
        parts.append(f'<rect x="{x + 1:.1f}" y="{base - h:.1f}" width="{max(step - 2, 1):.1f}"'
                     f' height="{h:.1f}" fill="#2b6cb0"><title>{_e(key)} : '
                     f'{_e(_fr_num(value))}</title></rect>')
        if index % every == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{base + 16}" font-size="11" '
                         f'text-anchor="middle" fill="#555">{_e(key[8:10] + "/" + key[5:7])}'
                         f'</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cards(items: list[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{_e(value)}</b>{_e(label)}</div>' for label, value in items
    ) + "</div>"


def _items(mapping: dict[str, Any], limit: int = 12, label: Any = None
           ) -> list[tuple[str, float]]:
    ordered = sorted(mapping.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [((label or _label)(k), float(v)) for k, v in ordered]


def _outcome_label(key: str) -> str:
    """An outcome category in French, as mediators pick it ("orienté vers un partenaire")."""
    return oc.label(Translator("fr"), key) if key in oc.BY_ID else _label(key)


def as_html(report: dict[str, Any]) -> str:
    """One self-contained page (no script, no external file) a funder can open offline."""
    p, m, c = report["people"], report["messages"], report["checkins"]
    t, cb, b = report["tickets"], report["callbacks"], report["broadcasts"]
    since = datetime.fromisoformat(report["period"]["since"]).date()
    until = (datetime.fromisoformat(report["period"]["until"]) - timedelta(microseconds=1)
             ).date()
    org = report["organisation"]
    body = [
        f"<h1>Rapport d'activité : {_e(org)}</h1>",
        f'<p class="sub">Du {_e(_fr_date(since))} au {_e(_fr_date(until))}</p>',
        _cards([
            ("personnes accompagnées", _fr_num(p["active"])),
            ("nouvelles personnes", _fr_num(p["new"])),
            ("messages reçus", _fr_num(m["received"])),
            ("demandes d'aide", _fr_num(t["opened"])),
            ("rappels téléphoniques", _fr_num(cb["booked"])),
        ]),
        "<h2>Les personnes</h2>",
        "<p>Une personne accompagnée est comptée une fois par mois, le jour de son premier "
        "message du mois : le chiffre est exact pour des mois entiers, et une personne qui "
        "écrit plusieurs mois compte pour chacun d'eux.</p>",
        column_chart([(d["date"], float(d["messages_received"])) for d in report["daily"]],
                     "Messages reçus par jour"),
        bar_chart(_items(p["by_channel"]), "Personnes accompagnées par canal"),
        bar_chart(_items(p["by_language"]), "Par langue"),
        bar_chart(_items(p["by_departement"]), "Par département"),
        bar_chart(_items(p["by_level"]), "Par aisance avec le numérique"),
        "<h2>Prises de nouvelles</h2>",
        _cards([
            ("envoyées", _fr_num(c["sent"])),
            ("réponses", _fr_num(c["answered"])),
            ("taux de réponse", _fr_pct(c["answer_rate"])),
            ("besoins exprimés", _fr_num(c["needs"])),
            ("sans nouvelles", _fr_num(c["no_news"])),
        ]),
        bar_chart(_items(c["answers"]), "Réponses"),
        "<h2>Demandes d'aide à un médiateur</h2>",
        _cards([
            ("ouvertes", _fr_num(t["opened"])),
            ("prises en charge", _fr_num(t["taken"])),
            ("closes", _fr_num(t["closed"])),
            ("urgentes", _fr_num(t.get("by_priority", {}).get("urgent", 0))),
            ("attente médiane", _fr_num(t["median_wait_minutes"], " min")),
            ("durée médiane de traitement", _fr_num(t["median_handling_minutes"], " min")),
            ("personnes satisfaites", _fr_pct(t["satisfied_rate"])),
        ]),
        bar_chart(_items(t["by_source"]), "D'où viennent les demandes"),
        bar_chart(_items(t["outcomes"], label=_outcome_label), "Issues"),
        "<h2>Rappels téléphoniques</h2>",
        _table(["", "nombre"], [
            ["réservés", _fr_num(cb["booked"])], ["joints", _fr_num(cb["reached"])],
            ["sans réponse", _fr_num(cb["no_answer"])], ["annulés", _fr_num(cb["cancelled"])],
            ["déplacés", _fr_num(cb["moved"])],
        ]),
        "<h2>Messages d'information</h2>",
        _cards([
            ("envois", _fr_num(b["count"])),
            ("destinataires", _fr_num(b["recipients"])),
            ("taux de remise", _fr_pct(b["delivery_rate"])),
            ("taux d'échec", _fr_pct(b["failure_rate"])),
            ("réponses sous 48 h", _fr_num(b["replied"])),
        ]),
        _table(["n°", "date", "public", "destinataires", "remis", "échecs", "réponses"], [
            [str(i["id"]), (i["started_at"] or "")[:10], i["segment"],
             _fr_num(i["recipients"]), _fr_pct(i["delivery_rate"]),
             _fr_pct(i["failure_rate"]), _fr_num(i["replied"])]
            for i in b["items"]
        ]) if b["items"] else '<p class="note">Aucun envoi sur la période.</p>',
        "<h2>Envois</h2>",
        _table(["", "nombre"], [
            ["messages envoyés", _fr_num(m["sent"])],
            ["SMS envoyés", _fr_num(m["sms_messages"])],
            ["segments SMS facturés", _fr_num(m["sms_segments"])],
            ["envois incertains (coupure pendant l'envoi)", _fr_num(m["in_doubt"])],
        ]),
        _footer(b),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Rapport d'activité : {_e(org)}</title>\n<style>{CSS}</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _footer(b: dict[str, Any]) -> str:
    """What the figures are made of: a true statement, and the exception when there is one."""
    text = ("Ces chiffres viennent de compteurs anonymes, tenus jour par jour au moment où "
            "les choses arrivent : un compteur par critère (canal, langue, département, "
            "aisance, origine de la demande, issue), sans lien avec une personne et sans "
            "aucun texte. Ils ne changent pas quand les données d'une personne sont effacées. "
            "Aucun message, aucune note, aucun texte écrit par une personne ou par un "
            "médiateur ne figure dans ce rapport.")
    if any(item.get("source") == "outbox" for item in b.get("items", [])):
        text += (" Seule exception : les messages d'information envoyés il y a moins de 48 h "
                 "sont comptés sur les envois eux-mêmes ; leurs chiffres peuvent encore "
                 "changer.")
    return f'<p class="note">{_e(text)}</p>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{_e(v)}</td>' if index and _numeric(v) else f"<td>{_e(v)}</td>"
            for index, v in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _numeric(value: str) -> bool:
    return bool(value) and (value[0].isdigit() or value == "–")
