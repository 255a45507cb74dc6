"""A report as one self-contained HTML page, with inline SVG charts."""

from __future__ import annotations

import html
from datetime import date, datetime, timedelta
from typing import Any

from bot.core.i18n import Translator
from bot.domain.tickets import outcomes as oc

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
            ["messages reçus en attente de traitement", _fr_num(m["inbox_waiting"])],
            ["messages reçus bloqués après plusieurs essais", _fr_num(m["inbox_parked"])],
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
