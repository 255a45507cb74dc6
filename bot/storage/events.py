"""Anonymous events that reports count. No person id, no text: they survive erasure.

``record`` buffers the event in the session; the events of a transaction are written just
before it commits, in one multi-row INSERT (in the order they were recorded), before the
report counters (``bot.storage.counters``). A savepoint rolled back (a failed flow step)
drops what it recorded, as it would drop the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from bot.storage.models import Event

_BUFFER = "relais.events"


@dataclass
class _Pending:
    transaction: SessionTransaction | None  # the innermost one when it was recorded
    row: dict[str, Any]


def record(
    session: AsyncSession,
    kind: str,
    at: datetime,
    *,
    channel: str | None = None,
    language: str | None = None,
    value: dict[str, Any] | None = None,
) -> None:
    """One anonymous event, written when the session's transaction commits."""
    sync = session.sync_session
    _listen(sync)
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    sync.info.setdefault(_BUFFER, []).append(_Pending(transaction, {
        "kind": kind, "at": at, "channel": channel, "language": language, "value": value,
    }))


def _listen(sync: Session) -> None:
    if not event.contains(sync, "before_commit", _before_commit):
        # First in line: the events go before the counters' upsert (the last rows locked).
        event.listen(sync, "before_commit", _before_commit, insert=True)
        event.listen(sync, "after_soft_rollback", _after_soft_rollback)
        event.listen(sync, "after_transaction_end", _after_transaction_end)


def _before_commit(sync: Session) -> None:
    if sync.in_nested_transaction():  # a savepoint released: its events wait for the commit
        return
    pending: list[_Pending] | None = sync.info.pop(_BUFFER, None)
    if not pending:
        return
    sync.flush()  # the ORM's own writes first, as when events were ORM rows
    rows = [item.row for item in pending]
    for start in range(0, len(rows), 1000):  # well under every database's bound parameters
        sync.execute(insert(Event).values(rows[start:start + 1000]))


def _after_soft_rollback(sync: Session, previous: SessionTransaction) -> None:
    pending = sync.info.get(_BUFFER)
    if not pending:
        return
    if previous.parent is None:
        sync.info.pop(_BUFFER, None)
        return
    sync.info[_BUFFER] = [p for p in pending if not _inside(p.transaction, previous)]


def _after_transaction_end(sync: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the whole transaction ended: nothing carries over
        sync.info.pop(_BUFFER, None)


def _inside(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False
