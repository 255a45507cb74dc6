"""A report as text, for the terminal."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

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
        f"  received, not processed yet: {m['inbox_waiting']:,}; parked after retries: "
        f"{m['inbox_parked']:,}" + (" (see relais inbox list)" if m["inbox_parked"] else ""),
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
