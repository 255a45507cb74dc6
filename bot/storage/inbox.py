"""The durable inbox: a verified webhook becomes one row here, committed before the provider
is answered; the inbox workers (``bot.delivery.inbox``) then run the engine on it.

- **Accept** (``message_values``/``status_values``/``event_values`` + ``insert``): the parsed
  event, its text already masked as a stored message is, deduplicated on the provider's id
  with ``INSERT … ON CONFLICT (dedupe) DO NOTHING RETURNING id`` (None: a redelivery).
- **Claim** (``claim``): pending rows whose time has come, oldest id first, at most one per
  person (``sender``: the phone number for SMS and WhatsApp alike, else the address) and
  none while an earlier row of that person is pending (see ``HOLD``); on PostgreSQL with
  ``FOR UPDATE SKIP LOCKED``, the lock held while the row is processed, so every process
  can share the inbox and a crash simply gives the row back.
- **Order**: ids are given at insert. A row of a person committed after a later-numbered
  row of the same person was already processed (two processes accepting that person's
  webhooks in the same millisecond) is processed when it becomes visible: the order is
  that of commits, which is the order the provider delivered them in, to a millisecond.
- **Failure** (``retry``): retried with backoff (``bot.core.retry``), then ``parked`` with
  its reason. A failing row keeps that person's later rows waiting ``HOLD`` at most, then
  they go on: long enough for a passing failure (a lock, a restart) to clear on the first
  retries, short enough that a person who writes AIDE after a broken step is answered.
- **Privacy**: rows are personal data (``about`` in the registry): once processed, the text,
  address and sender are emptied and only the dedupe key stays (``KEEP_DONE``: providers
  redeliver for days); erased with the person (by contact, address or number); parked rows
  keep their text for the operator until the retention period.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.addresses import PHONE_CHANNELS
from bot.core.channel import ChannelEvent, Failure, StatusUpdate
from bot.core.retry import backoff
from bot.core.types import Inbound, Media
from bot.storage.models import InboxItem

MAX_ATTEMPTS = 6  # the first try and five retries (about a minute in all), then parked
HOLD = timedelta(seconds=30)  # how long a failing row keeps its person's later rows waiting
KEEP_DONE = timedelta(days=8)  # dedupe keys of processed rows (Meta redelivers for 7 days)
MIN_RETRY_S = 1.0


def sender_of(address: str) -> str:
    """The key that orders one person's events: ``+33612345678`` for ``sms:`` and
    ``whatsapp:`` alike (one person, ``bot.engine``), else the whole address."""
    channel, _, external = address.partition(":")
    return external if channel in PHONE_CHANNELS and external else address


def message_values(inbound: Inbound, text: str, masked: tuple[str, ...] | list[str],
                   now: datetime, *, staff_code: str | None = None) -> dict[str, Any]:
    """The row of an inbound message; ``text`` is what will be stored (masked)."""
    payload: dict[str, Any] = {"text": text}
    if masked:
        payload["masked"] = list(masked)
    if staff_code:
        payload["staff_code"] = staff_code  # a keyed digest (``bot.domain.staff_sms``)
    for name in ("provider_id", "choice_id", "profile_name", "language_hint"):
        value = getattr(inbound, name)
        if value is not None:
            payload[name] = value
    if inbound.media:
        payload["media"] = [{"content_type": m.content_type, "ref": m.ref,
                             "caption": m.caption} for m in inbound.media]
    if inbound.extra:
        payload["extra"] = {k: v for k, v in inbound.extra.items()
                            if isinstance(v, str | int | float | bool) or v is None}
    return _row("message", inbound.channel, inbound.provider_id, inbound.address,
                sender_of(inbound.address), payload, now)


def status_values(update: StatusUpdate, now: datetime) -> dict[str, Any]:
    payload = {k: v for k, v in asdict(update).items() if v not in (None, False)}
    if update.failure is not None:
        payload["failure"] = update.failure.value
    key = f"{update.provider_id}:{update.status}"
    return _row("status", update.channel, key, None, None, payload, now)


def event_values(event: ChannelEvent, now: datetime) -> dict[str, Any]:
    payload = {"kind": event.kind, "value": event.value}
    # after the person's message of the same request (same sender, later id)
    return _row("event", event.channel, None, event.address, sender_of(event.address),
                payload, now)


def _row(kind: str, channel: str, provider_key: str | None, address: str | None,
         sender: str | None, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "kind": kind, "channel": channel,
        "dedupe": f"{kind}:{channel}:{provider_key}"[:200] if provider_key else None,
        "address": address, "sender": sender, "payload": payload, "state": "pending",
        "attempts": 0, "next_at": now, "received_at": now,
    }


async def insert(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Store one row; its id, or None when the provider delivered it before."""
    builder = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    statement = (builder(InboxItem).values(**values)
                 .on_conflict_do_nothing(index_elements=["dedupe"])
                 .returning(InboxItem.id))
    return (await session.execute(statement)).scalar()


# -- reading a row back --------------------------------------------------------------------


def inbound_of(item: InboxItem) -> Inbound:
    payload = item.payload or {}
    return Inbound(
        channel=item.channel, address=item.address or f"{item.channel}:?",
        text=payload.get("text") or "", provider_id=payload.get("provider_id"),
        choice_id=payload.get("choice_id"),
        media=tuple(Media(content_type=m.get("content_type", ""), ref=m.get("ref", ""),
                          caption=m.get("caption")) for m in payload.get("media") or ()),
        profile_name=payload.get("profile_name"), language_hint=payload.get("language_hint"),
        extra=dict(payload.get("extra") or {}),
    )


def status_of(item: InboxItem) -> StatusUpdate:
    p = item.payload or {}
    return StatusUpdate(
        channel=p.get("channel", item.channel), provider_id=p["provider_id"],
        status=p["status"], error_code=p.get("error_code"),
        error_reason=p.get("error_reason"),
        failure=Failure(p["failure"]) if p.get("failure") else None,
        landline=bool(p.get("landline")),
    )


def event_of(item: InboxItem) -> ChannelEvent:
    p = item.payload or {}
    return ChannelEvent(item.channel, item.address or f"{item.channel}:?", p.get("kind", ""),
                        p.get("value"))


# -- the workers' side ---------------------------------------------------------------------


SCAN = 500  # pending rows looked at per claim, oldest first


async def claim(session: AsyncSession, now: datetime, limit: int, *,
                lock: bool) -> list[InboxItem]:
    """Pending rows ready now, oldest first, at most one per person and none behind an
    earlier pending row of that person (unless that one's ``held_until`` passed). With
    ``lock`` (PostgreSQL), the rows stay locked until the caller's transaction ends and
    other processes skip them.

    Two steps, so that the cost does not depend on the planner's statistics: the oldest
    ``SCAN`` pending rows (an index range) are read without a lock and the person's first
    row is chosen here (every earlier pending row of that person is among them: they are
    the oldest); then those rows are locked, skipping the ones another worker holds — a
    person whose first row is held elsewhere is skipped, never overtaken."""
    window = (await session.execute(
        select(InboxItem.id, InboxItem.sender, InboxItem.next_at, InboxItem.held_until)
        .where(InboxItem.state == "pending").order_by(InboxItem.id).limit(SCAN))).all()
    chosen: list[int] = []
    settled: set[str] = set()
    for item_id, sender, next_at, held_until in window:
        if sender is not None and sender in settled:
            continue
        if _aware(next_at) <= now:
            chosen.append(item_id)
            if sender is not None:
                settled.add(sender)
            if len(chosen) >= limit:
                break
        elif sender is not None and (held_until is None or _aware(held_until) > now):
            settled.add(sender)  # a failing row still holds this person's later rows
    if not chosen:
        return []
    query = (select(InboxItem)
             .where(InboxItem.id.in_(chosen), InboxItem.state == "pending",
                    InboxItem.next_at <= now)
             .order_by(InboxItem.id))
    if lock:
        query = query.with_for_update(skip_locked=True, of=InboxItem)
    return list((await session.scalars(query)).all())


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def finish(item: InboxItem, now: datetime, *, contact_id: int | None = None,
           message_id: int | None = None) -> None:
    """Processed: only the dedupe key (and who it was, for erasure) stays."""
    item.state = "done"
    item.done_at = now
    item.payload = None
    item.address = None
    item.sender = None
    item.error = None
    item.held_until = None
    if contact_id is not None:
        item.contact_id = contact_id
    if message_id is not None:
        item.message_id = message_id


def fail(item: InboxItem, now: datetime, error: str, *, max_attempts: int = MAX_ATTEMPTS,
         alerted: bool = False) -> bool:
    """A failed attempt: retried later (False) or parked for good (True)."""
    item.attempts = (item.attempts or 0) + 1
    item.error = error[:500]
    if alerted and item.payload is not None and not item.payload.get("alerted"):
        item.payload = {**item.payload, "alerted": True}
    if item.held_until is None:
        item.held_until = now + HOLD
    delay = backoff(item.attempts, max_attempts)
    if delay is None:
        item.state = "parked"
        item.held_until = None
        return True
    item.next_at = now + timedelta(seconds=max(delay, MIN_RETRY_S * item.attempts))
    return False


async def retry_parked(session: AsyncSession, now: datetime, ids: list[int] | None = None
                       ) -> int:
    """Parked rows back to pending (all, or ``ids``): after a fix, ``relais inbox retry``."""
    query = update(InboxItem).where(InboxItem.state == "parked")
    if ids:
        query = query.where(InboxItem.id.in_(ids))
    result = await session.execute(
        query.values(state="pending", attempts=0, next_at=now, held_until=None)
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def depth(session: AsyncSession, now: datetime) -> tuple[int, int, float]:
    """(pending rows, parked rows, seconds since the oldest pending row was received)."""
    pending, oldest = (await session.execute(
        select(func.count(), func.min(InboxItem.received_at))
        .where(InboxItem.state == "pending"))).one()
    parked = await session.scalar(
        select(func.count()).select_from(InboxItem).where(InboxItem.state == "parked"))
    if isinstance(oldest, str):  # SQLite aggregates lose the column type
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None:
        oldest = _aware(oldest)
    lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return int(pending or 0), int(parked or 0), lag


async def parked(session: AsyncSession, limit: int = 50) -> list[InboxItem]:
    return list((await session.scalars(
        select(InboxItem).where(InboxItem.state == "parked").order_by(InboxItem.id)
        .limit(limit))).all())


async def purge(session: AsyncSession, now: datetime, retention: timedelta) -> int:
    """Dedupe keys older than ``KEEP_DONE``; parked rows past the retention period."""
    result = await session.execute(
        delete(InboxItem).where(or_(
            and_(InboxItem.state == "done", InboxItem.done_at < now - KEEP_DONE),
            and_(InboxItem.state == "parked", InboxItem.received_at < now - retention),
        )).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def erase(session: AsyncSession, contact_id: int, addresses: list[str]) -> int:
    """Every row of a person: by contact once processed, by address or number before."""
    conditions = [InboxItem.contact_id == contact_id]
    if addresses:
        conditions.append(InboxItem.address.in_(addresses))
        conditions.append(InboxItem.sender.in_({sender_of(a) for a in addresses}))
    result = await session.execute(
        delete(InboxItem).where(or_(*conditions)).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
