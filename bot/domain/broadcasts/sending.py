"""Making and sending a broadcast: its rows written batch by batch under a lock on the
broadcast, the test send, quiet hours while it is sending, cancelling, its jobs."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.addresses import POSTCODE_TIMEZONES, REGION_TIMEZONES, timezone_for
from bot.core.addresses import Address as AddressValue
from bot.core.clock import minute_floor
from bot.core.config import Settings, TimeRange
from bot.core.types import PRIORITY_BULK, PRIORITY_REPLY
from bot.delivery.quiet import is_quiet, next_allowed
from bot.delivery.scheduler import JobContext, JobKind, schedule
from bot.delivery.writer import enqueue_bulk, new_row
from bot.domain.broadcasts import base
from bot.domain.broadcasts.audience import (
    Batch,
    Candidate,
    Segment,
    _resume_at,
    recipient_timezone,
    render,
    select_batch,
    sms_segments,
    test_candidate,
    text_language,
)
from bot.domain.broadcasts.base import (
    ACTIVE,
    KIND,
    LOOKAHEAD,
    OUTCOMES,
    REASONS,
    REPLY_WINDOW,
    SEND_JOB,
    SETTLE_JOB,
    TICK_EVERY,
    TICK_JOB,
    BroadcastError,
    NotFound,
)
from bot.domain.broadcasts.status import status_counts
from bot.storage import events
from bot.storage.models import Address, Broadcast, Contact, Job, Outbox

# -- creating and sending ----------------------------------------------------------------------


async def create(
    session: AsyncSession,
    segment: Segment,
    texts: dict[str, str],
    now: datetime,
    *,
    at: datetime | None = None,
    test_address: str | None = None,
) -> Broadcast:
    """A new broadcast: sent from now (``sending``; call ``enqueue_batch`` or let the
    scheduler do it) or at ``at`` (``scheduled``)."""
    if at is not None and at <= now:
        raise BroadcastError("--at: that time is already past")
    broadcast = Broadcast(
        texts=dict(texts), filters=segment.as_json(),
        status="scheduled" if at is not None else "sending",
        scheduled_at=at, created_at=now, started_at=None if at is not None else now,
        cursor=0, test_address=test_address, totals={},
    )
    session.add(broadcast)
    await session.flush()
    due = at or now
    # The job sends (or resumes) the broadcast if no one else does it first.
    await schedule(session, SEND_JOB, _batch_key(broadcast.id, 0), due,
                   {"broadcast_id": broadcast.id})
    return broadcast


def _batch_key(broadcast_id: int, cursor: int) -> str:
    return f"broadcast:{broadcast_id}:{cursor}"


async def _lock(session: AsyncSession, broadcast_id: int) -> Broadcast | None:
    query = select(Broadcast).where(Broadcast.id == broadcast_id)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    return await session.scalar(query.execution_options(populate_existing=True))


async def get(session: AsyncSession, broadcast_id: int) -> Broadcast:
    broadcast = await session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id}")
    return broadcast


async def enqueue_batch(
    session: AsyncSession,
    broadcast_id: int,
    settings: Settings,
    now: datetime,
    *,
    batch_size: int | None = None,
) -> int | None:
    """Write the next batch of a broadcast to the outbox, under the broadcast's lock.

    Returns the number of rows written, or None when there is nothing left to do (every
    batch written, cancelled, or unknown)."""
    broadcast = await _lock(session, broadcast_id)
    if broadcast is None or broadcast.status in ("cancelled", "done"):
        return None
    if broadcast.enqueued_at is not None:
        return None
    if broadcast.status == "scheduled":
        broadcast.status = "sending"
        broadcast.started_at = now
    if broadcast.cursor == 0:
        await schedule_tick(session, broadcast.id, now)
    texts = dict(broadcast.texts)
    if broadcast.test_address is not None:
        written = await _enqueue_test(session, broadcast, settings, now)
        broadcast.enqueued_at = now
        return written
    segment = Segment.from_json(broadcast.filters)
    batch = await select_batch(session, segment, settings, now, after=broadcast.cursor,
                               limit=batch_size or base.BATCH, broadcast_id=broadcast.id)
    rows = _rows(broadcast, texts, batch.recipients, settings, now)
    await enqueue_bulk(session, rows)
    _add_totals(broadcast, batch, rows)
    if batch.last_id is not None:
        broadcast.cursor = batch.last_id
    if not batch.full:
        broadcast.enqueued_at = now
    return len(rows)


async def enqueue_all(
    sessions: Any, broadcast_id: int, settings: Settings, clock: Any,
    *, batch_size: int | None = None, progress: Any = None,
) -> int:
    """Write every batch, one transaction each (replies keep flowing in between)."""
    total = 0
    while True:
        async with sessions() as session, session.begin():
            written = await enqueue_batch(session, broadcast_id, settings, clock.now(),
                                          batch_size=batch_size)
        if written is None:
            return total
        total += written
        if progress is not None:
            progress(written)


def _rows(
    broadcast: Broadcast, texts: dict[str, str], recipients: list[Candidate],
    settings: Settings, now: datetime,
) -> list[dict[str, Any]]:
    bodies: dict[str, tuple[str, int]] = {}
    zones: dict[str, datetime] = {}
    rows = []
    for item in recipients:
        lang = text_language(texts, item.language)
        if lang not in bodies:
            body = render(texts, lang)
            bodies[lang] = (body, sms_segments(body))
        body, segments = bodies[lang]
        rows.append(new_row(
            now=now, contact_id=item.contact_id, address_id=item.address_id,
            channel=item.channel, to=item.external_id, priority=PRIORITY_BULK, kind=KIND,
            body=body, language=item.language, segments=segments,
            next_attempt_at=_resume_at(item, settings, now, zones),
            broadcast_id=broadcast.id,
        ))
    return rows


def _add_totals(broadcast: Broadcast, batch: Batch, rows: list[dict[str, Any]]) -> None:
    totals = dict(broadcast.totals or {})
    excluded = Counter(totals.get("excluded") or {})
    excluded.update(batch.excluded)
    by_channel = Counter(totals.get("by_channel") or {})
    by_language = Counter(totals.get("by_language") or {})
    segments = int(totals.get("sms_segments") or 0)
    paused = int(totals.get("in_quiet_hours") or 0)
    for row in rows:
        by_channel[row["channel"]] += 1
        by_language[row["language"]] += 1
        if row["channel"] == "sms":
            segments += row["segments"]
        if row["next_attempt_at"] > row["created_at"]:
            paused += 1
    totals.update(
        recipients=int(totals.get("recipients") or 0) + len(rows),
        excluded={reason: excluded[reason] for reason in REASONS},
        by_channel=dict(by_channel), by_language=dict(by_language), sms_segments=segments,
        in_quiet_hours=paused,
    )
    broadcast.totals = totals




async def _enqueue_test(
    session: AsyncSession, broadcast: Broadcast, settings: Settings, now: datetime
) -> int:
    """``--test ADDRESS``: one message, now, to that address only (a staff member's phone:
    no consent, cap or quiet hours apply; STOP and a provider block still do)."""
    address = broadcast.test_address
    assert address is not None
    item = await test_candidate(session, address)
    if item is None:
        channel, _, external_id = address.partition(":")
        contact = Contact(language=(broadcast.filters or {}).get("language"), created_at=now,
                          timezone=timezone_for(None, AddressValue(channel, external_id),
                                                settings.timezone))
        session.add(contact)
        await session.flush()
        row = Address(contact_id=contact.id, channel=channel, external_id=external_id,
                      created_at=now, landline=False)
        session.add(row)
        await session.flush()
        item = Candidate(contact.id, contact.language or "fr", None, contact.timezone, False,
                         row.id, channel, external_id, False, False, consent=True)
    language = (broadcast.filters or {}).get("language") or item.language
    item.language = language
    batch = Batch([item], Counter(), None, False)
    if item.opted_out or item.blocked:
        batch = Batch([], Counter({"stop" if item.opted_out else "blocked": 1}), None, False)
    rows = _rows(broadcast, dict(broadcast.texts), batch.recipients, settings, now)
    for row in rows:
        row["next_attempt_at"] = now
        row["priority"] = PRIORITY_REPLY  # the coordinator is waiting for it
    await enqueue_bulk(session, rows)
    _add_totals(broadcast, batch, rows)
    return len(rows)


# -- while it is sending -----------------------------------------------------------------------


async def schedule_tick(session: AsyncSession, broadcast_id: int, moment: datetime) -> None:
    await schedule(session, TICK_JOB, f"broadcast:{broadcast_id}", moment + TICK_EVERY,
                   {"broadcast_id": broadcast_id})


def _zones(settings: Settings) -> set[str]:
    return {settings.timezone, *POSTCODE_TIMEZONES.values(), *REGION_TIMEZONES.values()}


async def pause_quiet(
    session: AsyncSession, broadcast_id: int, settings: Settings, now: datetime
) -> int:
    """Rows due within ``LOOKAHEAD`` for people whose quiet hours have begun or begin by
    then: due again at the end of those quiet hours. Returns the rows moved."""
    quiet: TimeRange = settings.quiet
    soon = now + LOOKAHEAD
    known = await session.scalars(
        select(func.distinct(Contact.timezone)).where(
            Contact.id.in_(select(Outbox.contact_id).where(
                Outbox.broadcast_id == broadcast_id, Outbox.status == "queued",
                Outbox.next_attempt_at <= soon))
        )
    )
    zones = _zones(settings) | {z for z in known.all() if z}
    quiet_zones = sorted(z for z in zones if is_quiet(quiet, z, now) or is_quiet(quiet, z, soon))
    if not quiet_zones:
        return 0
    rows = await session.execute(
        select(Outbox.id, Contact.timezone, Contact.postcode, Outbox.channel, Outbox.to)
        .join(Contact, Contact.id == Outbox.contact_id)
        .where(Outbox.broadcast_id == broadcast_id, Outbox.status == "queued",
               Outbox.next_attempt_at <= soon,
               or_(Contact.timezone.in_(quiet_zones), Contact.timezone.is_(None)))
    )
    moves: dict[datetime, list[int]] = {}
    for row_id, tz, postcode, channel, to in rows.all():
        zone = tz or recipient_timezone(
            Candidate(0, "fr", postcode, None, False, None, channel, to, False, False),
            settings)
        if is_quiet(quiet, zone, now):
            resume = next_allowed(quiet, zone, now)
        elif is_quiet(quiet, zone, soon):
            resume = next_allowed(quiet, zone, soon)
        else:
            continue
        moves.setdefault(resume, []).append(row_id)
    moved = 0
    for resume, ids in moves.items():
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            result = await session.execute(
                update(Outbox)
                .where(Outbox.id.in_(chunk), Outbox.status == "queued")
                .values(next_attempt_at=resume, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            moved += result.rowcount or 0
    return moved


async def tick(
    session: AsyncSession, broadcast_id: int, settings: Settings, now: datetime
) -> None:
    """Every minute while sending: pause for quiet hours; mark done when nothing is left."""
    broadcast = await _lock(session, broadcast_id)
    if broadcast is None or broadcast.status not in ("sending",):
        return
    await pause_quiet(session, broadcast.id, settings, now)
    left = await session.scalar(
        select(func.count()).select_from(Outbox)
        .where(Outbox.broadcast_id == broadcast.id, Outbox.status.in_(ACTIVE))
    )
    if broadcast.enqueued_at is not None and not left:
        broadcast.status = "done"
        broadcast.finished_at = now
        await schedule(session, SETTLE_JOB, f"broadcast:{broadcast.id}", now + REPLY_WINDOW,
                       {"broadcast_id": broadcast.id})
        return
    await schedule_tick(session, broadcast.id, now)


async def settle(session: AsyncSession, broadcast_id: int, now: datetime) -> dict[str, Any]:
    """The final figures, once the replies window has closed: kept on the broadcast and
    recorded as an anonymous event (reports count it, whatever is erased later)."""
    broadcast = await _lock(session, broadcast_id)
    if broadcast is None:
        return {}
    figures = await status_counts(session, broadcast.id, now)
    settled = {key: figures[key] for key in ("recipients", *OUTCOMES, "replied")}
    settled["by_channel"] = figures["by_channel"]
    totals = dict(broadcast.totals or {})
    totals["settled"] = settled
    broadcast.totals = totals
    if broadcast.test_address is None:
        events.record(session, "broadcast.settled", now,
                      value={"broadcast_id": broadcast.id, **settled})
    return settled


async def cancel(session: AsyncSession, broadcast_id: int, now: datetime) -> int:
    """Stop a broadcast: its unsent rows are cancelled. Returns how many."""
    broadcast = await _lock(session, broadcast_id)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id}")
    if broadcast.status == "done":
        raise BroadcastError(f"broadcast {broadcast_id} is already done: nothing to cancel")
    result = await session.execute(
        update(Outbox)
        .where(Outbox.broadcast_id == broadcast.id,
               or_(Outbox.status == "queued", and_(Outbox.status == "failed",
                                                   Outbox.held.is_(True))))
        .values(status="cancelled", held=False, updated_at=now,
                error_reason="broadcast cancelled")
        .execution_options(synchronize_session=False)
    )
    if broadcast.status != "cancelled":
        broadcast.status = "cancelled"
        broadcast.finished_at = now
        if broadcast.started_at is not None:  # its figures are kept like a finished one's
            await schedule(session, SETTLE_JOB, f"broadcast:{broadcast.id}",
                           now + REPLY_WINDOW, {"broadcast_id": broadcast.id})
    return result.rowcount or 0




# -- jobs ------------------------------------------------------------------------------------


async def _send_job(jc: JobContext, item: Job) -> None:
    """One batch, then the next batch as a new job (each commits with its rows)."""
    session, now = jc.session, jc.now
    broadcast_id = int(item.payload["broadcast_id"])
    written = await enqueue_batch(session, broadcast_id, jc.settings, now)
    if written is None:
        return
    broadcast = await session.get(Broadcast, broadcast_id)
    if broadcast is not None and broadcast.enqueued_at is None:
        await schedule(session, SEND_JOB, _batch_key(broadcast_id, broadcast.cursor),
                       minute_floor(now), {"broadcast_id": broadcast_id})


async def _tick_job(jc: JobContext, item: Job) -> None:
    await tick(jc.session, int(item.payload["broadcast_id"]), jc.settings, jc.now)


async def _settle_job(jc: JobContext, item: Job) -> None:
    await settle(jc.session, int(item.payload["broadcast_id"]), jc.now)


JOBS = (
    JobKind(SEND_JOB, _send_job),
    JobKind(TICK_JOB, _tick_job),
    JobKind(SETTLE_JOB, _settle_job),
)
