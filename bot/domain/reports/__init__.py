"""Activity reports for coordinators and funders: text, JSON, CSV files and one
self-contained HTML page (French, inline SVG charts, no external asset).

Every figure about people, check-ins, tickets and callbacks comes from the anonymous
``counters`` (``bot.storage.counters``): one count per local day and per value of one dimension,
written when things happen, durations included. Nothing is read from the tables about people
(contacts, messages, tickets, notes), so an erasure or the retention purge changes no
figure, and no text anyone wrote (a message, a note, an outcome typed by hand) can reach a
report: outcomes are the categories of a closed list (``bot.domain.tickets.outcomes``).
Sends (messages
sent, SMS segments, sends in doubt) come from the outbox's anonymous ``events`` (a channel,
a kind, a segment count). Broadcasts come from their settled figures (``broadcast.settled``
events) once their 48 h replies window has closed, and from the outbox before that (those
may still change, and say so in ``source``).

Counters are by day: a period is read from its first to its last local day, whole days.
People are counted once per calendar month, on the day of their first message of the month:
``active`` is exact for a period of whole months, and counts a person again in each month a
longer period covers (``active_by_month`` shows each month).


The parts: ``figures`` (counting), then ``text``, ``csv_files`` and ``html`` (showing);
``base`` holds what they share."""

from bot.domain.reports.base import (
    CALLBACK_KINDS,
    Period,
    ReportError,
    make_period,
)
from bot.domain.reports.csv_files import (
    write_csv,
)
from bot.domain.reports.figures import (
    build,
)
from bot.domain.reports.html import (
    as_html,
)
from bot.domain.reports.text import (
    as_text,
)

__all__ = [
    "CALLBACK_KINDS",
    "Period",
    "ReportError",
    "as_html",
    "as_text",
    "build",
    "make_period",
    "write_csv",
]
