"""The engine: one inbound event, one transaction.

dedupe (provider id, unique constraint) -> contact by address -> per-person lock -> stored
(masked) message -> flow step in a savepoint -> outbox rows -> commit. The inbound message
is kept even when its step fails; a job retries the step.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import flows
from bot.conversation import keywords
from bot.conversation.choices import by_id, resolve
from bot.conversation.context import Context, Machine, Next, goto, open_context
from bot.core import masking
from bot.core.addresses import PHONE_CHANNELS, parse_address, timezone_for
from bot.core.addresses import Address as AddressValue
from bot.core.channel import PHONE_SHARED
from bot.core.clock import Clock
from bot.core.config import Settings
from bot.core.i18n import normalise_language
from bot.core.metrics import Metrics
from bot.core.render import choices_from_json
from bot.core.retry import backoff
from bot.core.text import clean_text
from bot.core.types import Inbound
from bot.delivery.outbox import release_quiet
from bot.delivery.scheduler import JobContext, JobKind, schedule
from bot.delivery.status import FollowUp, apply_update
from bot.domain import contacts, sender_limit, staff_sms
from bot.domain import danger as danger_words
from bot.domain.fallback import release_held
from bot.domain.media_store import plan_fetch
from bot.domain.staff import staff_address
from bot.flows import escalation, privacy, staff
from bot.flows.escalation import request_human
from bot.flows.global_keywords import ACTIONS
from bot.storage import counters, events, inbox
from bot.storage.models import (
    Address,
    Contact,
    Conversation,
    InboxItem,
    Job,
    MediaItem,
    Message,
    Ticket,
)

log = logging.getLogger("relais.engine")

FORGET_FLOW = "forget"  # its question is answered even after STOP (``bot.flows.forget``)
STEP_RETRY_ATTEMPTS = 5
STEP_JOB = "engine.step"


class Outcome(StrEnum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"


@dataclass
class Result:
    outcome: Outcome
    message_id: int | None = None
    contact_id: int | None = None
    outbox_ids: list[int] = field(default_factory=list)
    step_failed: bool = False
    alerted: bool = False  # danger words alerted the staff (in a savepoint of their own)
    error: str | None = None  # why the step failed


@dataclass(frozen=True)
class Stored:
    """An inbound text as it is stored: masked, with the kinds masked, and a staff SMS code
    sealed (``bot.domain.staff_sms.intercept``)."""

    text: str
    masked: tuple[str, ...] = ()
    staff_code: str | None = None


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: ``run`` returns True when it handled the event."""

    name: str
    run: Callable[[Context], Awaitable[bool]]


class StepFailed(RuntimeError):
    """A flow step failed again (its reason: ``Message.step_error``)."""


class _Retry(Exception):
    """A concurrent insert of the same address: run the transaction again."""


class Engine:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock | None = None,
        on_commit: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
        machine: Machine | None = None,
    ) -> None:
        self.metrics = metrics
        self.sessions = sessions
        self.settings = settings
        self.clock = clock or Clock()
        self.on_commit = on_commit
        self.is_postgres = sessions.kw["bind"].dialect.name == "postgresql"
        self.machine = machine or flows.MACHINE
        # The pipeline, in order: the first step that handles the event ends it.
        self.pipeline: tuple[Step, ...] = (
            Step("staff", staff.hook),
            Step("private data warning", privacy.warn_about_private_data),
            Step("danger words", escalation.danger_step),
            Step("sender limit", self._sender_limit),
            Step("telegram /start", self._telegram_start),
            Step("keyword", self._keyword),
            Step("stopped", self._stopped),
            Step("new person", self._new_person),
            Step("expired question", self._expired),
            Step("media", self._media),
            Step("state", self._state),
        )

    async def handle(self, inbound: Inbound) -> Result:
        for _attempt in range(5):
            try:
                result = await self._handle_once(inbound)
            except _Retry:
                continue
            if self.on_commit is not None and result.outbox_ids:
                self.on_commit()
            if self.metrics is not None:
                self.metrics.inbound.labels(inbound.channel, result.outcome.value).inc()
            log.info("inbound %s on %s: %s", result.message_id, inbound.channel,
                     result.outcome.value)
            return result
        raise RuntimeError(f"could not store inbound event for {inbound.channel}")

    async def _handle_once(self, inbound: Inbound) -> Result:
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            return await self.store_and_step(session, inbound, now)

    async def store_and_step(
        self, session: AsyncSession, inbound: Inbound, now: datetime, *,
        stored: Stored | None = None,
    ) -> Result:
        """Store one inbound message and run its step, in the caller's transaction.

        ``stored``: the text as the inbox kept it (already masked, the staff code sealed);
        else ``inbound.text`` is the clear text and is masked here. Without ``stored`` a
        failed step schedules its own retry job (``relais chat``); from the inbox, the inbox
        retries (``Result.step_failed``)."""
        target = parse_address(inbound.address)
        from_inbox = stored is not None
        address, contact, is_new, ticket = await self._contact(session, target, inbound, now)
        if stored is None:
            clear = clean_text(inbound.text)
            # A staff one-time code is sealed here, before masking, never stored in clear.
            sms_code = await staff_sms.intercept(session, target.id, clear) \
                if target.channel == "sms" else None
            masked = masking.mask(staff_sms.STORED_CODE if sms_code else clear)
            stored = Stored(masked.text, tuple(masked.kinds), sms_code)
        # one INSERT … ON CONFLICT DO NOTHING RETURNING: the unique (direction, channel,
        # provider_id) is the deduplication, and the row comes back as an ORM object
        builder = postgresql.insert if self.is_postgres else sqlite.insert
        message = (await session.scalars(
            builder(Message).values(
                contact_id=contact.id, address_id=address.id, direction="in",
                channel=target.channel, provider_id=inbound.provider_id, body=stored.text,
                choice_id=inbound.choice_id, masked=list(stored.masked) or None,
                media=[{"content_type": m.content_type, "ref": m.ref}
                       for m in inbound.media] or None,
                created_at=now, ticket_id=ticket,
                handled_at=now,  # reset below if the step fails
            )
            .on_conflict_do_nothing(index_elements=["direction", "channel", "provider_id"])
            .returning(Message),
            execution_options={"populate_existing": True},
        )).first()
        if message is None:
            return Result(Outcome.DUPLICATE, contact_id=contact.id)
        for media in inbound.media:  # fetched by a job, kept in the database
            await plan_fetch(
                session,
                MediaItem(message_id=message.id, contact_id=contact.id,
                          channel=target.channel, content_type=media.content_type,
                          ref=media.ref, created_at=now),
                now,
            )
        contact.last_inbound_at = now
        contact.last_address_id = address.id
        address.last_inbound_at = now
        address.blocked_at = None  # they wrote again: the provider block is lifted
        address.blocked_reason = None
        await release_quiet(session, contact.id, now)  # held for their quiet hours: now
        if target.channel == "whatsapp":  # a new 24 h window: held messages can go
            await release_held(session, contact.id, now)
        events.record(session, "inbound", now, channel=target.channel,
                      language=contact.language)
        if is_new:
            events.record(session, "contact.new", now, channel=target.channel)
        await counters.inbound(session, self.settings.timezone, now, contact,
                               target.channel, new=is_new)
        ctx = await self._context(session, contact, address, now, inbound, message, is_new)
        ctx.sms_code = stored.staff_code
        alerted = await self._alert_first(ctx)
        failed = not await self._run_step(ctx, lambda: self.step(ctx, alerted=alerted))
        if failed and not from_inbox:
            await self._schedule_retry(session, message, now, attempt=1)
        return Result(
            Outcome.WRITTEN, message_id=message.id, contact_id=contact.id,
            outbox_ids=[row.id for row in ctx.sent if row.id is not None],
            step_failed=failed, alerted=alerted,
            error=message.step_error if failed else None,
        )

    # -- the inbox's rows ------------------------------------------------------------------

    async def process_item(self, session: AsyncSession, item: InboxItem,
                           follow_up: FollowUp | None = None) -> Result:
        """One inbox row (``bot.delivery.inbox``), in the caller's savepoint: a message is
        stored and stepped (its retries run the stored message's step again), a status moves
        its outbox row, an event (a shared phone number) reaches the person. Raises
        ``StepFailed`` when a message's step failed (the message itself stays stored).
        ``follow_up``: what a newly failed status may send instead (the app's)."""
        now = self.clock.now()
        payload = item.payload or {}
        if item.kind == "status":
            applied = await apply_update(session, inbox.status_of(item), now, follow_up)
            if applied.row_id is None:
                log.info("%s status %s for %s: no such outbox row", item.channel,
                         payload.get("status"), payload.get("provider_id"))
            return Result(Outcome.WRITTEN, outbox_ids=[applied.row_id]
                          if applied.followed_up and applied.row_id else [])
        if item.kind == "event":
            event = inbox.event_of(item)
            if event.kind == PHONE_SHARED and event.value:
                await contacts.attach_shared_phone(session, event.address, event.value, now,
                                                   self.settings.timezone)
            else:
                log.info("%s event %s ignored", event.channel, event.kind)
            return Result(Outcome.WRITTEN)
        if item.message_id is not None:  # stored already: only its step is retried
            return await self.retry_step(session, item.message_id,
                                         alerted=bool(payload.get("alerted")))
        inbound = inbox.inbound_of(item)
        stored = Stored(payload.get("text") or "", tuple(payload.get("masked") or ()),
                        payload.get("staff_code"))
        result = await self.store_and_step(session, inbound, now, stored=stored)
        if self.metrics is not None:
            self.metrics.inbound.labels(inbound.channel, result.outcome.value).inc()
        return result

    # -- contact and lock ------------------------------------------------------------------

    async def _contact(
        self, session: AsyncSession, target: AddressValue, inbound: Inbound, now: datetime
    ) -> tuple[Address, Contact, bool, int | None]:
        """The address, the person, whether they are new, their open ticket: one query for
        a known person (their conversation comes with it, for ``open_context``)."""
        open_ticket = (select(Ticket.id)
                       .where(Ticket.contact_id == Contact.id,
                              Ticket.state.in_(("open", "taken")))
                       .correlate(Contact).limit(1).scalar_subquery())
        query = (
            select(Address, Contact, Conversation, open_ticket)
            .join(Contact, Contact.id == Address.contact_id)
            .outerjoin(Conversation, Conversation.contact_id == Contact.id)
            .where(Address.channel == target.channel, Address.external_id == target.id)
        )
        if self.is_postgres:  # serialise one person's events: lock their contact row
            query = query.with_for_update(of=Contact)
        found = (await session.execute(query)).first()
        if found is not None:
            return found[0], found[1], False, found[3]
        contact: Contact | None = None
        if target.channel in PHONE_CHANNELS:  # same number on SMS and WhatsApp: one person
            sibling = await session.scalar(
                select(Address).where(
                    Address.external_id == target.id, Address.channel.in_(PHONE_CHANNELS)
                )
            )
            if sibling is not None:
                contact = await self._lock(session, sibling.contact_id)
        is_new = contact is None
        if contact is None:
            hint = inbound.language_hint
            contact = Contact(
                name=inbound.profile_name,
                language=normalise_language(hint) if hint else None,
                timezone=timezone_for(None, target, self.settings.timezone),
                created_at=now,
            )
            session.add(contact)
            await session.flush()
        address = Address(
            contact_id=contact.id, channel=target.channel, external_id=target.id,
            created_at=now, landline=False,
        )
        try:
            async with session.begin_nested():
                session.add(address)
                await session.flush()
        except IntegrityError as exc:
            raise _Retry from exc
        ticket = None if is_new else await session.scalar(
            select(Ticket.id).where(Ticket.contact_id == contact.id,
                                    Ticket.state.in_(("open", "taken"))))
        return address, contact, is_new, ticket

    async def _lock(self, session: AsyncSession, contact_id: int) -> Contact:
        """Serialise one person's events: a row lock on PostgreSQL (SQLite: BEGIN IMMEDIATE)."""
        query = select(Contact).where(Contact.id == contact_id)
        if self.is_postgres:
            query = query.with_for_update()
        contact = await session.scalar(query)
        assert contact is not None
        return contact

    async def _context(
        self, session: AsyncSession, contact: Contact, address: Address | None,
        now: datetime, inbound: Inbound | None, message: Message | None, is_new: bool,
    ) -> Context:
        return await open_context(session, self.settings, now, contact, address,
                                  clock=self.clock, machine=self.machine, inbound=inbound,
                                  message=message, is_new=is_new)

    async def _run_step(self, ctx: Context, step: Callable[[], object]) -> bool:
        """Run a step in a savepoint; on failure the inbound row stays and False is returned."""
        before = counters.person_keys(ctx.contact)
        try:
            async with ctx.session.begin_nested():
                await step()  # type: ignore[misc]
                # the person's language, departement or level became known: move their count
                counters.refile(ctx.session, self.settings.timezone, ctx.now, ctx.contact,
                                before)
                ctx.flush()
                ctx.conversation.updated_at = ctx.now
                await ctx.session.flush()
        except Exception as exc:  # a flow bug must not lose the message
            log.exception("flow step failed for message %s", getattr(ctx.message, "id", None))
            ctx.sent.clear()
            ctx.pending.clear()
            if ctx.message is not None:
                ctx.message.step_error = f"{type(exc).__name__}: {exc}"[:500]
                ctx.message.handled_at = None
            return False
        message = ctx.message
        if message is not None:  # only touch what changed: each change is an UPDATE
            if message.handled_at is None:
                message.handled_at = ctx.now
            if message.step_error is not None:
                message.step_error = None
        return True

    async def _schedule_retry(
        self, session: AsyncSession, message: Message, now: datetime, attempt: int
    ) -> None:
        delay = backoff(attempt, STEP_RETRY_ATTEMPTS) or 60.0
        await schedule(
            session, STEP_JOB, f"message:{message.id}",
            now + timedelta(seconds=max(delay, 5.0)), {"message_id": message.id},
            about=message.contact_id,
        )

    # -- the step --------------------------------------------------------------------------

    async def _alert_first(self, ctx: Context) -> bool:
        """Danger words from a citizen, in a savepoint of their own before the step: whatever
        fails after (and is retried, then parked), the mediators are alerted and the person
        has the emergency numbers. True when they were."""
        inbound, address = ctx.inbound, ctx.address
        if inbound is None or not inbound.text or inbound.choice_id \
                or danger_words.match(inbound.text) is None:
            return False
        if address is not None and await staff_address(
                ctx.session, address.channel, address.external_id) is not None:
            return False  # staff words are the staff step's
        return await self._run_step(ctx, lambda: escalation.danger_step(ctx))

    async def step(self, ctx: Context, *, alerted: bool = False) -> None:
        """Decide what to do with one inbound event: the first step of the pipeline that
        handles it ends it. ``alerted``: danger words already handled it (``_alert_first``);
        only the private-data warning is left."""
        assert ctx.inbound is not None
        if alerted:
            await privacy.warn_about_private_data(ctx)
            return
        for step in self.pipeline:
            if await step.run(ctx):
                return

    # The steps of the pipeline that belong to the engine itself. Flows see the text as
    # stored: masked (no password, card or NIR ever reaches them).

    def _text(self, ctx: Context) -> str:
        message, inbound = ctx.message, ctx.inbound
        assert inbound is not None
        if message is not None and message.body is not None:
            return message.body
        return clean_text(inbound.text)

    async def _sender_limit(self, ctx: Context) -> bool:
        """Over the per-sender limit: stored on the ticket, told once (after the staff and
        danger steps: those always pass)."""
        assert ctx.inbound is not None
        if not await sender_limit.over_limit(ctx, self._text(ctx)):
            return False
        if self.metrics is not None:
            self.metrics.inbound_limited.labels(ctx.inbound.channel).inc()
        return True

    async def _telegram_start(self, ctx: Context) -> bool:
        assert ctx.inbound is not None
        if ctx.inbound.channel != "telegram" or not keywords.is_telegram_start(self._text(ctx)):
            return False
        if ctx.contact.opted_out_at is not None:
            await self.goto(ctx, await ACTIONS[keywords.START](ctx))
        await self.goto(ctx, "onboarding.welcome")
        return True

    async def _keyword(self, ctx: Context) -> bool:
        assert ctx.inbound is not None
        text = self._text(ctx)
        keyword = keywords.match(text) if text and not ctx.inbound.choice_id else None
        if keyword is None:
            return False
        if ctx.contact.opted_out_at is not None and keyword not in (
            keywords.START, keywords.STOP, keywords.FORGET  # erasure: a right after STOP too
        ):
            return True
        ctx.conversation.misunderstood = 0
        ctx.event("keyword", keyword=keyword)
        await self.goto(ctx, await ACTIONS[keyword](ctx))
        return True

    async def _stopped(self, ctx: Context) -> bool:
        """Stored, never answered until START (except the OUBLIER question)."""
        return ctx.contact.opted_out_at is not None and ctx.conversation.flow != FORGET_FLOW

    async def _new_person(self, ctx: Context) -> bool:
        if not ctx.is_new:
            return False
        await self.goto(ctx, "onboarding.welcome")
        return True

    async def _expired(self, ctx: Context) -> bool:
        """A stale question is not answered: back to the menu."""
        conversation = ctx.conversation
        _flow, _state, state = ctx.machine.lookup(f"{conversation.flow}.{conversation.state}")
        if state.expires and conversation.expires_at is not None \
                and conversation.expires_at <= ctx.now:
            await self.goto(ctx, "menu.main")
            return True
        return False

    async def _media(self, ctx: Context) -> bool:
        """A photo or a voice note where no text is awaited: a person will look at it."""
        assert ctx.inbound is not None
        conversation = ctx.conversation
        _flow, _state, state = ctx.machine.lookup(f"{conversation.flow}.{conversation.state}")
        if not ctx.inbound.media or self._text(ctx).strip() or state.on_text is not None:
            return False
        ctx.say(ctx._("Thank you, we received it. A person will look at it."))
        await self.goto(ctx, await request_human(ctx, source="media"))
        return True

    async def _state(self, ctx: Context) -> bool:
        """The answer to the question of the person's current state."""
        inbound, conversation = ctx.inbound, ctx.conversation
        assert inbound is not None
        text = self._text(ctx)
        target = f"{conversation.flow}.{conversation.state}"
        _flow, _state, state = ctx.machine.lookup(target)
        offered = choices_from_json((conversation.data or {}).get("choices"))
        chosen = (
            by_id(inbound.choice_id, offered) if inbound.choice_id else resolve(text, offered)
        )
        nxt: Next = None
        if chosen is not None and state.on_choice is not None:
            nxt = await state.on_choice(ctx, chosen.id)
        elif state.on_text is not None:
            nxt = await state.on_text(ctx, text)
        if nxt is None:
            await self.misunderstood(ctx, target)
            return True
        conversation.misunderstood = 0
        await self.goto(ctx, nxt)
        return True

    async def misunderstood(self, ctx: Context, current: str) -> None:
        conversation = ctx.conversation
        conversation.misunderstood = (conversation.misunderstood or 0) + 1
        ctx.event("misunderstood")
        if conversation.misunderstood >= 2:
            conversation.misunderstood = 0
            await self.goto(ctx, "ticket.offer")
            return
        ctx.say(ctx._("Sorry, I did not understand. Send AIDE to talk to a person."))
        await self.goto(ctx, current)

    async def goto(self, ctx: Context, target: Next) -> None:
        """Enter ``target`` ("flow.state"; "!quiet" sets it without asking anything)."""
        await goto(ctx, target)

    # -- retries of failed steps -----------------------------------------------------------

    def jobs(self) -> tuple[JobKind, ...]:
        """The engine's own job: the retry of a failed flow step."""

        async def retry(jc: JobContext, item: Job) -> None:
            await self.retry_step(jc.session, int(item.payload["message_id"]))

        return (JobKind(STEP_JOB, retry),)

    async def retry_step(self, session: AsyncSession, message_id: int, *,
                         alerted: bool = False) -> Result:
        """Run again the step of a stored message whose step failed; raise if it fails."""
        now = self.clock.now()
        message = await session.get(Message, message_id)
        if message is None or message.handled_at is not None:
            return Result(Outcome.WRITTEN, message_id=message_id)
        contact = await self._lock(session, message.contact_id)
        address = await session.get(Address, message.address_id) if message.address_id else None
        inbound = Inbound(
            channel=message.channel,
            address=address.address if address else f"{message.channel}:?",
            text=message.body or "", provider_id=message.provider_id,
            choice_id=message.choice_id,
        )
        ctx = await self._context(session, contact, address, now, inbound, message, False)
        if not await self._run_step(ctx, lambda: self.step(ctx, alerted=alerted)):
            raise StepFailed(message.step_error or f"flow step failed for message {message_id}")
        if self.on_commit is not None and ctx.sent:
            self.on_commit()
        return Result(Outcome.WRITTEN, message_id=message_id, contact_id=contact.id,
                      outbox_ids=[row.id for row in ctx.sent if row.id is not None])
