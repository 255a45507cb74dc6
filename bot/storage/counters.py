"""Anonymous counters for reports, written when things happen.

A counter is one row of ``counters``: a local day (``RELAIS_TIMEZONE``), a figure
(``tickets.opened``), the value of *one* dimension (``key``: a channel, a source, a
departement, a level, an outcome, a duration bucket; "" for none), a count and a sum. A
happening with several dimensions bumps one counter per dimension (``tickets.opened`` by
source, ``tickets.opened.channel`` by channel…), never one joint row, so no row can single a
person out; nothing finer than the day is kept, and no id. Reports read only these counts
(and the anonymous ``events`` of the outbox), so an erasure changes no figure.

Durations (the wait before a ticket is taken, its handling time) are stored at write time as
histogram buckets: ``key`` is the bucket's lower bound in minutes, ``count`` the tickets in
it, ``total`` the sum of their seconds. A median is then the mean of the bucket holding the
middle value, exact when that value is alone in its bucket and never off by more than the
bucket's width (1 minute under 10 minutes, 5 under an hour…). Exact values, even sorted, would
be a list of quasi-identifiers; buckets with sums are enough.

People are counted once per calendar month, on the day of their first message of the month:
the person's row keeps only when they were last counted (``contacts.counted_at``), no log.
Their language, departement and level are counted with them; when one of these becomes known
or changes later that month (onboarding asks them after the first message), the count moves
from the old value to the new one on the same day, so each person-month counts once. A value
is never moved back to "unknown" (an erasure empties the person's row, not the figures).

Writes are buffered in the session and written just before the transaction commits, one
upsert for all of them in key order: a busy counter row (today's SMS received) is locked only
for the commit, never for a whole flow step, and two transactions never wait for each other
in a cycle. A savepoint rolled back (a failed flow step) drops what it counted.

Staff messages are not activity. Whether the sender is staff is decided at the commit, not
when the message is counted: the staff hook tells it (``known_staff``, from the staff
directory in memory) during the step; only when nobody did (the step did not reach the
hook) is the ``staff`` table read then, once for the whole transaction. A staff member's
counts are then dropped and their ``counted_at`` put back, as if never counted.
"""

from __future__ import annotations

import statistics
from collections import Counter as CountOf
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.orm.exc import DetachedInstanceError, ObjectDeletedError

from bot.storage.models import Contact, ReportCounter, Staff

UNKNOWN = "unknown"

# Figures (counter names).
RECEIVED = "messages.received"  # key: channel (citizens only, staff commands left out)
NEW = "people.new"  # key: channel (their first message, or an import)
IMPORTED = "people.imported"  # key: channel
ACTIVE = "people.active"  # key "": distinct people of the month, on their first message
ACTIVE_CHANNEL = "people.active.channel"
ACTIVE_LANGUAGE = "people.active.language"
ACTIVE_DEPARTEMENT = "people.active.departement"
ACTIVE_LEVEL = "people.active.level"
CHECKINS_SENT = "checkins.sent"
CHECKINS_REMINDED = "checkins.reminded"
CHECKINS_ANSWER = "checkins.answer"  # key: the answer
CHECKINS_SILENCE = "checkins.silence"
OPENED = "tickets.opened"  # key: source
OPENED_PRIORITY = "tickets.opened.priority"
OPENED_CHANNEL = "tickets.opened.channel"
TAKEN = "tickets.taken"  # a ticket's first take
CLOSED = "tickets.closed"  # key: outcome category (bot.domain.tickets.queue.OUTCOMES)
WAIT = "tickets.wait"  # histogram: opened -> first taken
HANDLING = "tickets.handling"  # histogram: first taken -> closed
SATISFACTION = "tickets.satisfaction"  # key: yes, no
CALLBACKS = "callbacks"  # key: booked, reached, no_answer, cancelled, moved

# What a flow's event (``Context.event``) counts: kind -> [(counter, value key or None)].
# "=channel" is the channel the person wrote from; a kind's suffix is "=suffix".
FROM_EVENTS: dict[str, list[tuple[str, str | None]]] = {
    "checkin.sent": [(CHECKINS_SENT, None)],
    "checkin.reminded": [(CHECKINS_REMINDED, None)],
    "checkin.answer": [(CHECKINS_ANSWER, "answer")],
    "checkin.silence": [(CHECKINS_SILENCE, None)],
    "ticket.opened": [(OPENED, "source"), (OPENED_PRIORITY, "priority"),
                      (OPENED_CHANNEL, "=channel")],
    "ticket.satisfaction": [(SATISFACTION, "answer")],
    "callback.booked": [(CALLBACKS, "=suffix")],
    "callback.moved": [(CALLBACKS, "=suffix")],
    "callback.cancelled": [(CALLBACKS, "=suffix")],
    "callback.reached": [(CALLBACKS, "=suffix")],
    "callback.no_answer": [(CALLBACKS, "=suffix")],
}

# Lower bounds of the duration buckets, in minutes.
BUCKETS: tuple[int, ...] = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 90, 105, 120, 150,
    180, 240, 300, 360, 480, 600, 720, 960, 1200, 1440, 2160, 2880, 4320, 5760, 7200, 10080,
    14400, 20160, 43200,
)
KEY_MAX = 64
_BUFFER = "relais.counters"
_CITIZENS = "relais.counters.citizens"  # inbound messages whose sender may still be staff
_VERDICTS = "relais.counters.staff"  # contact id -> is staff, as the staff hook found


def day_of(at: datetime, tz: str) -> date:
    """The local day of ``at`` in ``tz`` (the instance's time zone)."""
    return at.astimezone(ZoneInfo(tz)).date()


def _key(value: Any) -> str:
    if value is None or value == "":
        return UNKNOWN
    return str(value)[:KEY_MAX]


# -- writing ----------------------------------------------------------------------------------


@dataclass
class _Bump:
    transaction: SessionTransaction | None  # the innermost one when it was counted
    day: date
    name: str
    key: str
    count: int
    total: int
    citizen: int | None = None  # dropped at the commit if this contact turns out staff


@dataclass
class _Citizen:
    """An inbound message counted before its sender was known not to be staff."""

    transaction: SessionTransaction | None
    contact_id: int
    contact: Contact
    previous: datetime | None  # ``counted_at`` before this message
    counted: bool  # this message set ``counted_at``


def add(session: AsyncSession, day: date, name: str, key: Any = "", *, count: int = 1,
        total: int = 0) -> None:
    """Count ``count`` (and add ``total``) to ``name``/``key`` on ``day``: written when the
    session's transaction commits, dropped if it (or the savepoint around it) rolls back."""
    _add(session, day, name, key, count, total, None)


def _add(session: AsyncSession, day: date, name: str, key: Any, count: int, total: int,
         citizen: int | None) -> None:
    sync = session.sync_session
    _listen(sync)
    sync.info.setdefault(_BUFFER, []).append(
        _Bump(_current(sync), day, name, "" if key == "" else _key(key), count, total,
              citizen)
    )


def _current(sync: Session) -> SessionTransaction | None:
    return sync.get_nested_transaction() or sync.get_transaction()


def known_staff(session: AsyncSession, contact_id: int, is_staff: bool) -> None:
    """The staff hook found whether this contact is staff: no query at the commit."""
    sync = session.sync_session
    _listen(sync)
    sync.info.setdefault(_VERDICTS, {})[contact_id] = is_staff


def count(session: AsyncSession, tz: str, at: datetime, name: str, key: Any = "", *,
          n: int = 1, total: int = 0) -> None:
    """``add`` on the local day of ``at``."""
    add(session, day_of(at, tz), name, key, count=n, total=total)


def bucket(minutes: float) -> int:
    """The lower bound of the duration bucket ``minutes`` falls in."""
    found = BUCKETS[0]
    for bound in BUCKETS:
        if minutes < bound:
            break
        found = bound
    return found


def duration(session: AsyncSession, tz: str, at: datetime, name: str, seconds: float) -> None:
    """One measured duration, as a histogram bucket with its sum of seconds."""
    seconds = max(0, int(seconds))
    count(session, tz, at, name, str(bucket(seconds / 60)), total=seconds)


def count_event(session: AsyncSession, tz: str, at: datetime, kind: str,
                channel: str | None, value: dict[str, Any] | None) -> None:
    """The counters a flow's event bumps (``FROM_EVENTS``); other kinds count nothing."""
    for name, field in FROM_EVENTS.get(kind, ()):
        if field is None:
            key: Any = ""
        elif field == "=channel":
            key = channel
        elif field == "=suffix":
            key = kind.rpartition(".")[2]
        else:
            key = (value or {}).get(field)
        count(session, tz, at, name, key)


def _listen(sync: Session) -> None:
    if not event.contains(sync, "before_commit", _before_commit):
        event.listen(sync, "before_commit", _before_commit)
        event.listen(sync, "after_soft_rollback", _after_soft_rollback)
        event.listen(sync, "after_transaction_end", _after_transaction_end)


def _before_commit(sync: Session) -> None:
    if sync.in_nested_transaction():  # a savepoint released: its counts wait for the commit
        return
    staff = _staff_senders(sync)
    bumps = sync.info.pop(_BUFFER, None)
    if bumps and staff:
        bumps = [b for b in bumps if b.citizen not in staff]
    if not bumps:
        return
    sync.flush()  # every other write first: counter rows are the last ones locked
    totals: dict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for bump in bumps:
        item = totals[(bump.day, bump.name, bump.key)]
        item[0] += bump.count
        item[1] += bump.total
    rows = [{"day": day, "name": name, "key": key, "count": n, "total": total}
            for (day, name, key), (n, total) in sorted(totals.items()) if n or total]
    if not rows:
        return
    dialect = sync.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    table = ReportCounter.__table__
    for start in range(0, len(rows), 1000):  # well under every database's bound parameters
        statement = insert(table).values(rows[start:start + 1000])
        statement = statement.on_conflict_do_update(
            index_elements=["day", "name", "key"],
            set_={"count": table.c.count + statement.excluded.count,
                  "total": table.c.total + statement.excluded.total},
        )
        sync.execute(statement)


def _staff_senders(sync: Session) -> set[int]:
    """The contacts of this transaction's inbound messages that are staff (known from the
    staff hook, else read now); their ``counted_at`` is put back."""
    pending: list[_Citizen] | None = sync.info.pop(_CITIZENS, None)
    if not pending:
        return set()
    verdicts: dict[int, bool] = sync.info.get(_VERDICTS, {})
    unknown = sorted({p.contact_id for p in pending} - verdicts.keys())
    staff = {p.contact_id for p in pending if verdicts.get(p.contact_id)}
    if unknown:
        staff.update(sync.scalars(select(Staff.contact_id).where(Staff.contact_id.in_(unknown))))
    for item in pending:
        if item.contact_id in staff and item.counted:
            state = inspect(item.contact)
            if not (state.deleted or state.was_deleted or state.detached):
                item.contact.counted_at = item.previous
    return staff


def _after_soft_rollback(sync: Session, previous: SessionTransaction) -> None:
    for name in (_BUFFER, _CITIZENS):
        items = sync.info.get(name)
        if not items:
            continue
        if previous.parent is None:
            sync.info.pop(name, None)
            continue
        sync.info[name] = [i for i in items if not _inside(i.transaction, previous)]


def _after_transaction_end(sync: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the whole transaction ended: nothing carries over
        for name in (_BUFFER, _CITIZENS, _VERDICTS):
            sync.info.pop(name, None)


def _inside(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


# -- people -------------------------------------------------------------------------------------


def person_keys(contact: Contact) -> dict[str, str]:
    """The dimensions a person-month is counted under (departement from the postcode)."""
    from bot.core.postcodes import departement

    dept = departement(contact.postcode) if contact.postcode else None
    return {
        ACTIVE_LANGUAGE: _key(contact.language),
        ACTIVE_DEPARTEMENT: _key(dept),
        ACTIVE_LEVEL: _key(contact.level),
    }


async def inbound(session: AsyncSession, tz: str, now: datetime, contact: Contact,
                  channel: str, *, new: bool) -> None:
    """A citizen's message: counted by channel; a new person; and, on their first message
    of the month, the person once (with their language, departement and level).

    Staff commands are not activity: unless the staff hook already said this contact is
    not staff, the counts wait for the commit to know (see the module's docstring)."""
    sync = session.sync_session
    verdict = sync.info.get(_VERDICTS, {}).get(contact.id)
    if verdict:  # staff commands are not activity
        return
    citizen = None if verdict is False else contact.id
    today = day_of(now, tz)
    _add(session, today, RECEIVED, channel, 1, 0, citizen)
    if new:
        _add(session, today, NEW, channel, 1, 0, citizen)
    previous = contact.counted_at
    last = day_of(previous, tz) if previous is not None else None
    counted = last is None or (last.year, last.month) != (today.year, today.month)
    if citizen is not None:
        sync.info.setdefault(_CITIZENS, []).append(
            _Citizen(_current(sync), contact.id, contact, previous, counted)
        )
    if not counted:
        return
    contact.counted_at = now
    _add(session, today, ACTIVE, "", 1, 0, citizen)
    _add(session, today, ACTIVE_CHANNEL, channel, 1, 0, citizen)
    for name, key in person_keys(contact).items():
        _add(session, today, name, key, 1, 0, citizen)


def refile(session: AsyncSession, tz: str, now: datetime, contact: Contact,
           before: dict[str, str]) -> None:
    """Move this month's count of the person when a dimension became known or changed
    since ``before`` (``person_keys`` then). Never back to "unknown"."""
    if contact.counted_at is None:
        return
    counted, today = day_of(contact.counted_at, tz), day_of(now, tz)
    if (counted.year, counted.month) != (today.year, today.month):
        return
    try:
        after = person_keys(contact)
    except (DetachedInstanceError, ObjectDeletedError):  # erased in this step
        return
    # Counted by this transaction's message while the sender may still be staff: so is this.
    citizen = contact.id if any(
        p.contact_id == contact.id and p.counted
        for p in session.sync_session.info.get(_CITIZENS, ())
    ) else None
    for name in sorted(after):
        old, new = before.get(name, UNKNOWN), after[name]
        if new == old or new == UNKNOWN:
            continue
        _add(session, counted, name, old, -1, 0, citizen)
        _add(session, counted, name, new, 1, 0, citizen)


def new_people(session: AsyncSession, tz: str, now: datetime, channels: Iterable[str]) -> None:
    """People created by an import, by the channel of their first address."""
    today = day_of(now, tz)
    for channel, n in sorted(CountOf(channels).items()):
        add(session, today, NEW, channel, count=n)
        add(session, today, IMPORTED, channel, count=n)


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """The counters of a span of days: ``count[name][key]``, ``total[name][key]``."""

    count: dict[str, dict[str, int]]
    total: dict[str, dict[str, int]]

    def by(self, name: str) -> dict[str, int]:
        """Counts per key, without empty ones, largest first (then by key)."""
        found = self.count.get(name, {})
        return dict(sorted(((k, v) for k, v in found.items() if v),
                           key=lambda kv: (-kv[1], kv[0])))

    def sum(self, name: str) -> int:
        return sum(self.count.get(name, {}).values())

    def median_minutes(self, name: str) -> float | None:
        return median_of_buckets(self.count.get(name, {}), self.total.get(name, {}))


async def read(session: AsyncSession, first: date, last: date) -> Figures:
    """Every counter of the days ``first`` to ``last`` (included), summed per name and key."""
    rows = await session.execute(
        select(ReportCounter.name, ReportCounter.key, func.sum(ReportCounter.count),
               func.sum(ReportCounter.total))
        .where(ReportCounter.day >= first, ReportCounter.day <= last)
        .group_by(ReportCounter.name, ReportCounter.key)
    )
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    totals: dict[str, dict[str, int]] = defaultdict(dict)
    for name, key, n, total in rows.all():
        counts[name][key] = int(n or 0)
        totals[name][key] = int(total or 0)
    return Figures(dict(counts), dict(totals))


async def daily(session: AsyncSession, first: date, last: date, names: Iterable[str]
                ) -> dict[date, dict[str, int]]:
    """Per day, the sum of each of ``names`` over its keys."""
    rows = await session.execute(
        select(ReportCounter.day, ReportCounter.name, func.sum(ReportCounter.count))
        .where(ReportCounter.day >= first, ReportCounter.day <= last,
               ReportCounter.name.in_(list(names)))
        .group_by(ReportCounter.day, ReportCounter.name)
    )
    found: dict[date, dict[str, int]] = defaultdict(dict)
    for day, name, n in rows.all():
        found[day][name] = int(n or 0)
    return dict(found)


def median_of_buckets(counts: dict[str, int], totals: dict[str, int]) -> float | None:
    """The median in minutes (one decimal): the mean of the bucket that holds the middle
    value (the two middle values' buckets for an even count)."""
    buckets = sorted((int(k), n, totals.get(k, 0)) for k, n in counts.items() if n > 0)
    size = sum(n for _k, n, _t in buckets)
    if size == 0:
        return None

    def at(rank: int) -> float:
        seen = 0
        for _low, n, total in buckets:
            seen += n
            if rank < seen:
                return total / n / 60
        return buckets[-1][2] / buckets[-1][1] / 60

    middle = [at((size - 1) // 2), at(size // 2)]
    return round(statistics.fmean(middle), 1)
