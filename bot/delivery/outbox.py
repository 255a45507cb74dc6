"""The outbox: the only way a message leaves Relais.

Rows are claimed by workers with a lease (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite one
``UPDATE … RETURNING`` under ``BEGIN IMMEDIATE``). Each claim reserves send slots in the
channel's shared rate (``rate_limits``, a GCRA "theoretical arrival time"), so every process
together sends at the provider's rate. Before a provider call the row is marked
``call_started_at``: a worker that dies after that leaves a row that becomes ``in_doubt``
(resent once, counted); before that, the row simply goes back to ``queued``.
A person's rows go out in order within a priority: a row is claimable only when no earlier
row of the same person and priority is still queued, sending or in doubt (a row quiet hours
never hold may pass one that waits for the end of them).
Quiet hours are checked again at claim time (``bot.delivery.quiet.release_at``, on the row's
kind, the
person's time zone and last message): a row a retry, a fallback or a provider pause brought
into its person's quiet hours is not sent but due again at their end (``QUIET_REASON``), and
``release_quiet`` lets such rows go as soon as the person writes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from bot.core.channel import Channel, Failure, Registry, SendError, SendResult
from bot.core.clock import Clock
from bot.core.config import Settings
from bot.core.metrics import Metrics
from bot.core.render import choices_from_json
from bot.core.types import PRIORITY_REPLY, Outbound
from bot.delivery import rates
from bot.delivery.heartbeat import Heartbeat, dead_workers, purge_dead
from bot.delivery.policy import Action, decide
from bot.delivery.quiet import (
    NEVER_HELD,
    QUIET_REASON,
    STAFF_PREFIX,
    URGENT_SUFFIX,
    WAITS_EVEN_FOR_WRITERS,
    is_held_kind,
    person_timezone,
    release_at,
)
from bot.delivery.status import FollowUp, block_address, scrubbed_body
from bot.storage.models import Address, Contact, Event, Outbox, RateLimit, Staff

log = logging.getLogger("relais.outbox")

LEASE = timedelta(seconds=60)
HORIZON = 1.0  # seconds of a channel's rate one claim may reserve ahead
RECLAIM_EVERY = timedelta(seconds=5)  # between sweeps of expired leases (injected clock)
START_WINDOW = 1.02  # seconds: a provider's 1 s window, with a little slack
ACTIVE = ("queued", "sending", "in_doubt")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Claimed:
    row: Outbox
    send_at: datetime


def _is_pg(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"


OPTOUT_KIND = "optout"  # the STOP confirmation: the one message a stopped person gets
# ... and the OUBLIER question and answers, which a stopped person asked for themselves
# (erasure is a right after STOP too).
STOPPED_MAY_GET = (OPTOUT_KIND, "forget")


def _blocked_address() -> Any:
    return exists().where(Address.id == Outbox.address_id, Address.blocked_at.is_not(None))


def _stopped_person() -> Any:
    return exists().where(Contact.id == Outbox.contact_id, Contact.opted_out_at.is_not(None))


async def cancel_unreachable(session: AsyncSession, now: datetime) -> int:
    """Unsent rows to a person who said STOP or to an address the provider blocked are
    cancelled (whoever wrote them: a flow, a broadcast, a mediator)."""
    result = await session.execute(
        update(Outbox)
        .where(Outbox.status.in_(("queued", "in_doubt")),
               _blocked_address() | (_stopped_person() & Outbox.kind.not_in(STOPPED_MAY_GET)))
        .values(status="cancelled", updated_at=now, body=scrubbed_body(),
                error_reason="the person said STOP or the address is blocked")
        .returning(Outbox.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())


def _never_held(row: Any) -> Any:
    """SQL: ``row`` is of a kind quiet hours never hold (``bot.delivery.quiet.is_held_kind``)."""
    return (row.kind.in_(sorted(NEVER_HELD)) | row.kind.endswith(URGENT_SUFFIX)
            | (row.kind == STAFF_PREFIX) | row.kind.startswith(STAFF_PREFIX + "."))


def _waits_for_quiet_end(row: Any, now: datetime) -> Any:
    """SQL: ``row`` waits for the end of its person's quiet hours: held itself, or queued
    behind a row of the same person and priority that is (so it leaves after it)."""
    first = aliased(Outbox)
    return (row.status.in_(("queued", "in_doubt")) & ~_never_held(row) & exists().where(
        first.contact_id == row.contact_id, first.priority == row.priority,
        first.id <= row.id, first.status.in_(("queued", "in_doubt")),
        first.error_reason == QUIET_REASON, first.next_attempt_at > now,
    ))


def _quiet_kind(kind: str, priority: int) -> str:
    """The kind quiet hours judge: a broadcast row at reply priority is a ``--test`` send
    (bot/broadcasts.py), which goes to a coordinator's phone at any hour."""
    if kind == "broadcast" and priority == PRIORITY_REPLY:
        return "broadcast.test"
    return kind


async def hold_quiet(
    session: AsyncSession, picked: list[Any], now: datetime, settings: Settings
) -> list[int]:
    """Apply the quiet-hours rule to rows about to be claimed (``(id, contact_id, kind,
    priority, channel, to)``): those that may not go now are due again when their person's
    quiet hours end. Returns the ids that may go."""
    judged = [p for p in picked if is_held_kind(_quiet_kind(p.kind, p.priority))]
    if not judged:
        return [p.id for p in picked]
    is_staff = exists().where(Staff.contact_id == Contact.id)
    people = {
        cid: (tz, postcode, last, bool(staff))
        for cid, tz, postcode, last, staff in (await session.execute(
            select(Contact.id, Contact.timezone, Contact.postcode, Contact.last_inbound_at,
                   is_staff)
            .where(Contact.id.in_({p.contact_id for p in judged}))
        )).all()
    }
    held: dict[datetime, list[int]] = {}
    for p in judged:
        tz, postcode, last, staff = people.get(p.contact_id, (None, None, None, False))
        zone = person_timezone(tz, postcode, p.channel, p.to, settings.timezone)
        when = release_at(_quiet_kind(p.kind, p.priority), zone, last, now, settings,
                          to_staff=staff)
        if when > now:
            held.setdefault(when, []).append(p.id)
    for when, ids in held.items():
        await session.execute(
            update(Outbox).where(Outbox.id.in_(ids))
            .values(next_attempt_at=when, error_reason=QUIET_REASON, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    if held:
        log.info("quiet hours: %d rows held until their person's quiet hours end",
                 sum(len(ids) for ids in held.values()))
    waiting = {i for ids in held.values() for i in ids}
    return [p.id for p in picked if p.id not in waiting]


async def release_quiet(session: AsyncSession, contact_id: int, now: datetime) -> int:
    """The person wrote: what waited for the end of their quiet hours goes now (in its
    place: the rows keep their ids). Broadcasts keep waiting."""
    result = await session.execute(
        update(Outbox)
        .where(Outbox.contact_id == contact_id, Outbox.status.in_(("queued", "in_doubt")),
               Outbox.error_reason == QUIET_REASON, Outbox.next_attempt_at > now,
               Outbox.kind.not_in(sorted(WAITS_EVEN_FOR_WRITERS)))
        .values(next_attempt_at=now, error_reason=None, updated_at=now)
        .returning(Outbox.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())


async def reclaim_expired(
    session: AsyncSession, now: datetime, *, alive: Collection[str] = ()
) -> tuple[int, int]:
    """Leases taken back: expired ones, and at once those of a worker known dead
    (``bot.delivery.heartbeat.dead_workers``: its beat stopped, or its pid on this machine is
    gone), whatever their expiry. A lease whose owner has no heartbeat row keeps the rule of
    its expiry; ``alive`` (the caller's own id) is never taken back before it. Back to queued
    if the call never started, else in_doubt (or failed when it already was). Returns
    (requeued, in_doubt)."""
    dead = await dead_workers(session, now)
    dead.difference_update(alive)
    taken_back = Outbox.lease_until < now
    if dead:
        taken_back = taken_back | Outbox.lease_owner.in_(sorted(dead))
        log.debug("workers known dead: %s", ", ".join(sorted(dead)))
    never_called = await session.execute(
        update(Outbox)
        .where(Outbox.status == "sending", taken_back,
               Outbox.call_started_at.is_(None))
        .values(status="queued", lease_owner=None, lease_until=None, updated_at=now,
                attempts=Outbox.attempts - 1)
        .returning(Outbox.id)
        .execution_options(synchronize_session=False)
    )
    requeued = len(never_called.all())
    doubtful = (
        await session.execute(
            update(Outbox)
            .where(Outbox.status == "sending", taken_back,
                   Outbox.call_started_at.is_not(None), Outbox.was_in_doubt.is_(False))
            .values(status="in_doubt", was_in_doubt=True, lease_owner=None, lease_until=None,
                    call_started_at=None, next_attempt_at=now, updated_at=now,
                    error_reason="worker stopped during the provider call")
            .returning(Outbox.channel)
            .execution_options(synchronize_session=False)
        )
    ).scalars().all()
    twice = await session.execute(
        update(Outbox)
        .where(Outbox.status == "sending", taken_back,
               Outbox.call_started_at.is_not(None), Outbox.was_in_doubt.is_(True))
        .values(status="failed", lease_owner=None, lease_until=None, updated_at=now,
                body=scrubbed_body(), error_reason="in doubt twice: not sent again")
        .returning(Outbox.id)
        .execution_options(synchronize_session=False)
    )
    twice.all()
    for channel in doubtful:
        session.add(Event(kind="outbox.in_doubt", at=now, channel=channel))
    await purge_dead(session, now)
    return requeued, len(doubtful)


async def claim_channel(
    session: AsyncSession,
    channel: Channel,
    worker: str,
    now: datetime,
    limit: int,
    only_to: str | None = None,
    *,
    settings: Settings,
) -> list[Claimed]:
    """Claim up to ``limit`` due rows of one channel and reserve their send slots. Rows
    quiet hours hold are left queued, due at the end of them (``hold_quiet``)."""
    rate = channel.rate
    start = now
    rate_row: RateLimit | None = None
    if rate is not None:
        rate_row = await rates.rate_row(session, channel.name, now)
        paused_until = rate_row.paused_until
    else:  # no rate, but a Retry-After pause still holds for every process
        paused_until = await session.scalar(
            select(RateLimit.paused_until).where(RateLimit.key == channel.name)
        )
    if paused_until is not None and paused_until > now:
        return []
    if rate_row is not None and rate is not None:
        start = max(rate_row.tat, now)
        room = (now + timedelta(seconds=HORIZON) - start).total_seconds()
        if room <= 0:
            return []
        limit = max(1, min(limit, math.floor(room * rate)))
    earlier = aliased(Outbox)
    blocked_earlier = exists().where(
        earlier.contact_id == Outbox.contact_id,
        earlier.priority == Outbox.priority,
        earlier.id < Outbox.id,
        earlier.status.in_(ACTIVE),
        # A row quiet hours never hold does not wait behind those waiting for their end.
        ~(_never_held(Outbox) & _waits_for_quiet_end(earlier, now)),
    )
    paused_person = exists().where(
        Address.id == Outbox.address_id, Address.paused_until > now
    )
    due = [
        # Literal values, so SQLite can use the partial index ix_outbox_ready.
        text("outbox.status IN ('queued', 'in_doubt')"),
        Outbox.channel == channel.name,
        Outbox.next_attempt_at <= now,
        ~blocked_earlier,
        ~paused_person,
        ~_blocked_address(),
        ~_stopped_person() | Outbox.kind.in_(STOPPED_MAY_GET),
    ]
    if only_to is not None:
        due.append(Outbox.to == only_to)

    async def pick(priority: Any, cap: int) -> list[int]:
        chosen: list[int] = []
        while len(chosen) < cap:  # again while quiet hours hold some of what was found
            query = select(Outbox.id, Outbox.contact_id, Outbox.kind, Outbox.priority,
                           Outbox.channel, Outbox.to).where(*due, priority)
            if chosen:
                query = query.where(Outbox.id.not_in(chosen))
            query = query.order_by(Outbox.id).limit(cap - len(chosen))
            if _is_pg(session):
                query = query.with_for_update(skip_locked=True, of=Outbox)
            found = list((await session.execute(query)).all())
            may_go = await hold_quiet(session, found, now, settings)
            chosen += may_go
            if len(may_go) == len(found):
                break
        return chosen

    # Replies first. Bulk (broadcasts) gets the rest of the budget, but at most half of it
    # while replies are waiting, so the next replies find room in the channel's rate.
    ids = await pick(Outbox.priority == PRIORITY_REPLY, limit)
    bulk = limit - len(ids)
    if ids:
        bulk = min(bulk, limit // 2)
    if bulk > 0:
        ids += await pick(Outbox.priority != PRIORITY_REPLY, bulk)
    if not ids:
        return []
    lease_until = now + LEASE + timedelta(seconds=channel.call_timeout + HORIZON)
    result = await session.execute(
        update(Outbox)
        .where(Outbox.id.in_(ids))
        .values(status="sending", lease_owner=worker, lease_until=lease_until,
                attempts=Outbox.attempts + 1, updated_at=now)
        .returning(Outbox)
        .execution_options(synchronize_session=False)
    )
    rows = sorted(result.scalars().all(), key=lambda r: (r.priority, r.id))
    claimed: list[Claimed] = []
    slot = start
    for row in rows:
        claimed.append(Claimed(row, slot))
        if rate is not None:
            units = max(1, row.segments or 1) if channel.rate_by_segments else 1
            slot = slot + timedelta(seconds=units / rate)
    if rate_row is not None and rows:
        rate_row.tat = slot
    return claimed


def to_outbound(row: Outbox) -> Outbound:
    return Outbound(
        id=row.id, channel=row.channel, to=row.to, text=row.body or "",
        choices=choices_from_json(row.choices), language=row.language, priority=row.priority,
        kind=row.kind,
    )


class OutboxWorker:
    """Claims and sends outbox rows for the channels of ``registry``.

    ``drain_once`` is one claim-and-send pass (tests and benchmarks call it); ``run`` loops
    until ``stop``. ``only_to`` restricts the claim to one recipient (``relais chat``).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        clock: Clock | None = None,
        *,
        worker_id: str | None = None,
        batch_size: int = 100,
        only_to: str | None = None,
        metrics: Metrics | None = None,
        poll_interval: float = 0.5,
        settings: Settings,
        follow_up: FollowUp | None = None,
    ) -> None:
        self.settings = settings  # quiet hours, per person
        self.follow_up = follow_up  # after a WhatsApp failure (``bot.domain.fallback``)
        self.sessions = sessions
        self.registry = registry
        self.clock = clock or Clock()
        self.worker_id = worker_id or worker_name()
        self.batch_size = batch_size
        self.only_to = only_to
        self.metrics = metrics
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._starts: dict[str, deque[tuple[float, int]]] = {}
        self._stopping = False
        self._last_reclaim: datetime | None = None  # the first claim sweeps at once

    # -- loop ------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Finish in-flight sends, release the rest, and leave ``run``."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Claim and send until ``stop``, with this worker's heartbeat beating all along
        (forgotten on a clean stop; after a crash it ages and other processes take back
        this worker's rows)."""
        async with Heartbeat(self.sessions, self.clock, self.worker_id, "outbox"):
            await self._loop()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                sent = await self.drain_once()
            except Exception:
                log.exception("outbox pass failed")
                sent = 0
            if sent == 0 and not self._stopping:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                except TimeoutError:
                    pass

    async def drain_once(self) -> int:
        """Claim due rows of every channel once and send them; returns rows handled."""
        claimed = await self.claim()
        if not claimed:
            return 0
        by_channel: dict[str, list[Claimed]] = {}
        for item in claimed:
            by_channel.setdefault(item.row.channel, []).append(item)
        renew = asyncio.create_task(self._renew_leases())
        try:
            await asyncio.gather(
                *(self._send_channel(name, items) for name, items in by_channel.items())
            )
        finally:
            renew.cancel()
        return len(claimed)

    async def claim(self) -> list[Claimed]:
        now = self.clock.now()
        claimed: list[Claimed] = []
        async with self.sessions() as session, session.begin():
            last = self._last_reclaim
            if last is None or now - last >= RECLAIM_EVERY or now < last:
                self._last_reclaim = now
                requeued, doubtful = await reclaim_expired(session, now,
                                                           alive=(self.worker_id,))
                await cancel_unreachable(session, now)
                if requeued or doubtful:
                    log.warning("reclaimed leases: %d requeued, %d in doubt",
                                requeued, doubtful)
            for name in self.registry.names():
                channel = self.registry.get(name)
                assert channel is not None
                claimed += await claim_channel(
                    session, channel, self.worker_id, now, self.batch_size, self.only_to,
                    settings=self.settings,
                )
        return claimed

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(LEASE.total_seconds() / 3)
            now = self.clock.now()
            async with self.sessions() as session, session.begin():
                await session.execute(
                    update(Outbox)
                    .where(Outbox.lease_owner == self.worker_id, Outbox.status == "sending")
                    .values(lease_until=now + LEASE)
                    .execution_options(synchronize_session=False)
                )

    # -- sending ---------------------------------------------------------------------------

    async def _send_channel(self, name: str, items: list[Claimed]) -> None:
        channel = self.registry.get(name)
        pending = sorted(items, key=lambda c: c.send_at)
        while pending:
            if channel is None or self._stopping:
                await self._release([c.row for c in pending])
                return
            now = self.clock.now()
            due = [c for c in pending if c.send_at <= now]
            if not due:
                await asyncio.sleep(min(HORIZON, (pending[0].send_at - now).total_seconds()))
                continue
            due = self._fit_window(channel, due)
            if not due:  # this second's sends have all started: wait for room
                await asyncio.sleep(0.01)
                continue
            pending = pending[len(due):]
            started = await self._mark_started([c.row for c in due], name)
            if not started:  # the channel is paused (Retry-After) for every process
                await self._release([c.row for c in due] + [c.row for c in pending])
                return
            self._note_starts(channel, due)
            results = await asyncio.gather(*(self._call(channel, c.row) for c in due))
            throttled = await self._record(list(zip([c.row for c in due], results, strict=True)))
            if throttled:
                await self._release([c.row for c in pending])
                return
            channel = self.registry.get(name)

    # A guard on when calls really start. Slots are reserved ahead in the database, but a
    # call can leave late (a transaction, a busy loop) and the next ones on time, so a
    # provider counting a strict 1 s window would see more than its rate and answer 429.
    # Never start more than the rate's worth within one window, whatever the slots say.

    @staticmethod
    def _units(channel: Channel, row: Outbox) -> int:
        return max(1, row.segments or 1) if channel.rate_by_segments else 1

    def _window(self, name: str) -> deque[tuple[float, int]]:
        starts = self._starts.setdefault(name, deque())
        horizon = time.monotonic() - START_WINDOW
        while starts and starts[0][0] <= horizon:
            starts.popleft()
        return starts

    def _fit_window(self, channel: Channel, due: list[Claimed]) -> list[Claimed]:
        if channel.rate is None:
            return due
        starts = self._window(channel.name)
        used = sum(units for _, units in starts)
        room = max(1, math.floor(channel.rate)) - used
        fit: list[Claimed] = []
        for item in due:
            units = self._units(channel, item.row)
            if units > room and (fit or used):  # one oversized message alone may go
                break
            fit.append(item)
            room -= units
        return fit

    def _note_starts(self, channel: Channel, started: list[Claimed]) -> None:
        if channel.rate is None:
            return
        starts = self._window(channel.name)
        moment = time.monotonic()
        for item in started:
            starts.append((moment, self._units(channel, item.row)))

    async def _call(self, channel: Channel, row: Outbox) -> SendResult | SendError:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(
                channel.send(to_outbound(row)), timeout=channel.call_timeout
            )
        except SendError as exc:
            result_or_error: SendResult | SendError = exc
        except TimeoutError:
            result_or_error = SendError(Failure.RETRYABLE, "provider call timed out")
        except Exception as exc:  # an adapter bug must not lose the row
            log.exception("channel %s raised", channel.name)
            result_or_error = SendError(Failure.RETRYABLE, f"{type(exc).__name__}: {exc}")
        else:
            result_or_error = result
        if self.metrics is not None:
            self.metrics.send_latency.labels(channel.name).observe(
                time.perf_counter() - started
            )
        return result_or_error

    async def _mark_started(self, rows: list[Outbox], channel: str) -> bool:
        now = self.clock.now()
        paused = exists().where(RateLimit.key == channel, RateLimit.paused_until > now)
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(Outbox)
                .where(Outbox.id.in_([r.id for r in rows]),
                       Outbox.lease_owner == self.worker_id, ~paused)
                .values(call_started_at=now)
                .execution_options(synchronize_session=False)
            )
        return (result.rowcount or 0) > 0

    async def _release(self, rows: list[Outbox]) -> None:
        """Give unstarted rows back to the queue (shutdown, or a Retry-After pause)."""
        if not rows:
            return
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            pause = await session.scalar(
                select(func.max(RateLimit.paused_until)).where(
                    RateLimit.key.in_({r.channel for r in rows})
                )
            )
            await session.execute(
                update(Outbox)
                .where(Outbox.id.in_([r.id for r in rows]),
                       Outbox.lease_owner == self.worker_id)
                .values(status="queued", lease_owner=None, lease_until=None,
                        call_started_at=None, attempts=Outbox.attempts - 1,
                        next_attempt_at=max(now, pause) if pause else now, updated_at=now)
                .execution_options(synchronize_session=False)
            )

    async def _record(self, outcomes: list[tuple[Outbox, SendResult | SendError]]) -> bool:
        """Store every result of one group in one transaction. True when throttled."""
        now = self.clock.now()
        throttled = False
        mine = and_(Outbox.lease_owner == self.worker_id, Outbox.status == "sending")
        async with self.sessions() as session, session.begin():
            sent_params: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for row, outcome in outcomes:
                if isinstance(outcome, SendResult):
                    segments = outcome.segments or row.segments
                    sent_params.append({
                        "b_id": row.id, "provider_id": outcome.provider_id,
                        "segments": segments,
                    })
                    events.append({"kind": "outbox.sent", "at": now, "channel": row.channel,
                                   "language": row.language,
                                   "value": {"segments": segments, "kind": row.kind}})
                    self._count(row.channel, "sent")
                    continue
                throttled |= await self._failed(session, row, outcome, now, mine)
                events.append({"kind": f"outbox.{outcome.failure.value}", "at": now,
                               "channel": row.channel, "language": row.language,
                               "value": {"code": outcome.code}})
            if sent_params:
                await session.execute(
                    update(Outbox.__table__)
                    .where(Outbox.__table__.c.id == bindparam("b_id"),
                           Outbox.__table__.c.lease_owner == self.worker_id,
                           Outbox.__table__.c.status == "sending")
                    .values(status="sent", provider_id=bindparam("provider_id"),
                            body=scrubbed_body(),
                            segments=bindparam("segments"), sent_at=now, updated_at=now,
                            lease_owner=None, lease_until=None, call_started_at=None,
                            error_code=None, error_reason=None),
                    sent_params,
                )
            if events:
                await session.execute(insert(Event), events)
        return throttled

    async def _failed(
        self, session: AsyncSession, row: Outbox, error: SendError, now: datetime, mine: Any
    ) -> bool:
        """Write what ``policy.decide`` says of a refused send. True when the channel must
        wait (a pause, or its credentials refused)."""
        base = update(Outbox).where(Outbox.id == row.id, mine).execution_options(
            synchronize_session=False
        )
        release = {"lease_owner": None, "lease_until": None, "call_started_at": None,
                   "updated_at": now, "error_code": error.code,
                   "error_reason": error.reason[:500]}
        log.info("send of outbox row %s on %s: %s (%s)", row.id, row.channel,
                 error.failure.value, error.code)
        decision = decide(error, row.attempts, row.max_attempts)
        action = decision.action
        if action in (Action.PAUSE_PERSON, Action.PAUSE_CHANNEL):
            wait = timedelta(seconds=decision.wait or 1.0)
            if action is Action.PAUSE_PERSON and row.address_id is not None:
                await session.execute(
                    update(Address).where(Address.id == row.address_id)
                    .values(paused_until=now + wait)
                )
            else:
                await rates.rate_row(session, row.channel, now)
                await session.execute(
                    update(RateLimit).where(RateLimit.key == row.channel)
                    .values(paused_until=now + wait, tat=now + wait)
                )
            await session.execute(base.values(
                status="queued", next_attempt_at=now + wait,
                attempts=Outbox.attempts - 1, **release))
            self._count(row.channel, "throttled")
            return action is Action.PAUSE_CHANNEL
        if action is Action.DISABLE_CHANNEL:
            log.error("channel %s refused our credentials (%s): disabled in this process; "
                      "fix the RELAIS_* credentials and restart", row.channel, error.reason)
            self.registry.remove(row.channel)
            await session.execute(base.values(
                status="queued", attempts=Outbox.attempts - 1, **release))
            return True
        if action is Action.RETRY:
            await session.execute(base.values(
                status="queued", next_attempt_at=now + timedelta(seconds=decision.wait or 1.0),
                **release))
            self._count(row.channel, "retry")
            return False
        if decision.block_address:
            await block_address(session, row.address_id, now, error.reason,
                                landline=decision.landline, except_row=row.id)
        await session.execute(base.values(status="failed", failure=error.failure.value,
                                          body=scrubbed_body(), **release))
        self._count(row.channel, "failed")
        if decision.follow_up and self.follow_up is not None:
            await self.follow_up(session, row, error.failure, now)
        return False

    def _count(self, channel: str, status: str) -> None:
        if self.metrics is not None:
            self.metrics.outbound.labels(channel, status).inc()


async def depth(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(Outbox.status, func.count()).where(Outbox.status.in_(ACTIVE))
        .group_by(Outbox.status)
    )
    return {status: count for status, count in rows.all()}
