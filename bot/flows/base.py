"""What flows are made of: a context (the only door to storage, clock and translator), states
with a question and handlers, and a registry of flows.

A flow is a table of states. Entering a state runs its ``enter`` (which usually asks a
question through ``ctx.ask``); an answer runs ``on_choice`` when it names one of the offered
choices, else ``on_text``. A handler returns the next state as ``"flow.state"``, ``STAY`` to
keep waiting, or ``None`` when it did not understand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import about, counters, events, sms
from bot.clock import Clock
from bot.config import Settings
from bot.i18n import Translator
from bot.render import choices_to_json, numbered
from bot.storage.models import (
    Address,
    Consent,
    Contact,
    Conversation,
    Message,
    Outbox,
    OutboxAbout,
    Ticket,
)
from bot.types import PRIORITY_REPLY, Choice, Inbound, Reply

if TYPE_CHECKING:
    pass

STAY = "__stay__"
Next = str | None
Handler = Callable[["Context"], Awaitable[Next]]
ChoiceHandler = Callable[["Context", str], Awaitable[Next]]
TextHandler = Callable[["Context", str], Awaitable[Next]]
Enter = Callable[["Context"], Awaitable[Next]]

QUESTION_TTL = timedelta(hours=24)


@dataclass
class Context:
    """Everything a flow step may touch. One per inbound event (or job), one transaction."""

    session: AsyncSession
    settings: Settings
    clock: Clock
    now: datetime
    contact: Contact
    address: Address | None
    conversation: Conversation
    inbound: Inbound | None = None
    message: Message | None = None
    is_new: bool = False
    sent: list[Outbox] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    # Staff commands: what is said to the staff member names the people whose tickets the
    # step read (``bot.about``), and is erased with them.
    staff_side: bool = False
    # A staff one-time code sent back by SMS, read before masking (``bot.staff_sms``).
    sms_code: str | None = None

    @property
    def _(self) -> Translator:  # noqa: N802 - the gettext convention
        return Translator(self.contact.language)

    @property
    def org(self) -> str:
        return self.settings.org_name

    # -- saying things -------------------------------------------------------------------

    def say(
        self,
        reply: Reply | str,
        *,
        kind: str = "reply",
        priority: int = PRIORITY_REPLY,
        max_attempts: int = 8,
        force: bool = False,
    ) -> None:
        """Say something to the person, on the address they last wrote from.

        Nothing is said to a person who said STOP (``force`` is for the STOP confirmation
        itself) or on an address the provider blocked. Messages are written to the outbox
        by ``flush`` at the end of the step, consecutive ones joined into one.
        """
        if isinstance(reply, str):
            reply = Reply(reply)
        if self.address is None:
            return
        if self.contact.opted_out_at is not None and not force:
            return
        if self.address.blocked_at is not None and not force:
            return
        self.pending.append(Pending(reply, kind, priority, max_attempts))

    def flush(self) -> None:
        """Write what the step said to the outbox, joining consecutive messages."""
        if self.address is None:
            self.pending.clear()
            return
        people = about.mentioned(self.session) if self.staff_side else ()
        for item in join_replies(self.pending, self.address.channel):
            enqueue(
                self.session, self.contact, self.address, item.reply, now=self.now,
                kind=item.kind, priority=item.priority, max_attempts=item.max_attempts,
                sink=self.sent, about=people,
            )
        self.pending.clear()

    def ask(self, reply: Reply, *, kind: str = "reply", force: bool = False) -> None:
        """Say a question and remember its choices, so "2" or "deux" can be resolved
        (``kind`` and ``force`` as for ``say``)."""
        self.say(reply, kind=kind, force=force)
        data = dict(self.conversation.data or {})
        data["choices"] = choices_to_json(reply.choices)
        self.conversation.data = data
        self.conversation.expires_at = self.now + QUESTION_TTL

    # -- state -----------------------------------------------------------------------------

    def remember(self, **values: Any) -> None:
        data = dict(self.conversation.data or {})
        data.update(values)
        self.conversation.data = data

    def recall(self, key: str, default: Any = None) -> Any:
        return (self.conversation.data or {}).get(key, default)

    def event(self, kind: str, **value: Any) -> None:
        """An anonymous event, and the report counters it bumps (``bot.counters``)."""
        channel = self.address.channel if self.address else None
        events.record(
            self.session, kind, self.now,
            channel=channel, language=self.contact.language, value=value or None,
        )
        counters.count_event(self.session, self.settings.timezone, self.now, kind, channel,
                             value)

    # -- domain helpers shared by flows ----------------------------------------------------

    async def set_consent(self, purpose: str, granted: bool) -> None:
        source = f"chat:{self.address.channel}" if self.address else "chat"
        self.session.add(
            Consent(contact_id=self.contact.id, purpose=purpose, granted=granted,
                    at=self.now, source=source)
        )
        self.event(f"consent.{purpose}.{'yes' if granted else 'no'}")
        if granted and self.address is not None:  # they came back: lift a suppression
            from bot.rights import unsuppress

            await unsuppress(self.session, self.address.address)

    async def open_ticket(
        self, source: str, priority: str = "normal", topic: str | None = None
    ) -> tuple[Ticket, bool]:
        """The person's open ticket, or a new one. Returns (ticket, created)."""
        ticket = await self.session.scalar(
            select(Ticket).where(
                Ticket.contact_id == self.contact.id, Ticket.state.in_(("open", "taken"))
            )
        )
        if ticket is not None:
            if _rank(priority) < _rank(ticket.priority):
                ticket.priority = priority
                await self._announce(ticket)
            return ticket, False
        ticket = Ticket(
            contact_id=self.contact.id, priority=priority, source=source, topic=topic,
            state="open", language=self.contact.language,
            channel=self.address.channel if self.address else None,
            level=self.contact.level, created_at=self.now,
        )
        self.session.add(ticket)
        await self.session.flush()
        if self.message is not None and self.message.ticket_id is None:
            self.message.ticket_id = ticket.id
        self.event("ticket.opened", source=source, priority=priority)
        await self._announce(ticket)
        return ticket, True

    async def _announce(self, ticket: Ticket) -> None:
        """Tell on-duty staff (once per ticket and priority in a transaction)."""
        from bot import notify

        await notify.ticket_opened(self, ticket)

    async def open_ticket_of(self) -> Ticket | None:
        return await self.session.scalar(
            select(Ticket).where(
                Ticket.contact_id == self.contact.id, Ticket.state.in_(("open", "taken"))
            )
        )


@dataclass(frozen=True)
class Pending:
    reply: Reply
    kind: str
    priority: int
    max_attempts: int


JOIN_MAX_SMS_SEGMENTS = 2
JOIN_MAX_CHARS = 1000


def join_replies(items: list[Pending], channel: str) -> list[Pending]:
    """Join consecutive messages into one where it stays short: fewer SMS to pay for and
    no WhatsApp pair-rate wait. A message with choices ends a group (its question last)."""
    joined: list[Pending] = []
    for item in items:
        if joined:
            last = joined[-1]
            same = (last.kind, last.priority, last.max_attempts) == (
                item.kind, item.priority, item.max_attempts
            )
            if same and not last.reply.choices:
                text = last.reply.text + "\n\n" + item.reply.text
                rendered = numbered(text, item.reply.choices)
                fits = (
                    sms.segments(sms.normalise(rendered)) <= JOIN_MAX_SMS_SEGMENTS
                    if channel == "sms"
                    else len(rendered) <= JOIN_MAX_CHARS
                )
                if fits:
                    joined[-1] = Pending(Reply(text, item.reply.choices), item.kind,
                                         item.priority, item.max_attempts)
                    continue
        joined.append(item)
    return joined


def _rank(priority: str) -> int:
    return {"urgent": 0, "normal": 1, "low": 2}.get(priority, 1)


def enqueue(
    session: AsyncSession,
    contact: Contact,
    address: Address,
    reply: Reply,
    *,
    now: datetime,
    kind: str = "reply",
    priority: int = PRIORITY_REPLY,
    max_attempts: int = 8,
    broadcast_id: int | None = None,
    ticket_id: int | None = None,
    sink: list[Outbox] | None = None,
    about: Iterable[int] = (),
) -> Outbox:
    """Write one outbox row (the only way a message leaves). Segments are counted as SMS.

    ``about``: the other people the row names or quotes (a staff-side row), erased with them.
    """
    rendered = sms.normalise(numbered(reply.text, reply.choices))
    row = Outbox(
        contact_id=contact.id, address_id=address.id, channel=address.channel,
        to=address.external_id, priority=priority, kind=kind, body=reply.text,
        choices=choices_to_json(reply.choices) or None,
        language=contact.language or "fr", segments=sms.segments(rendered),
        status="queued", attempts=0, max_attempts=max_attempts, next_attempt_at=now,
        broadcast_id=broadcast_id, ticket_id=ticket_id, created_at=now, updated_at=now,
        was_in_doubt=False,
    )
    row.about.add_all(OutboxAbout(contact_id=cid) for cid in sorted(set(about) - {contact.id}))
    session.add(row)
    if sink is not None:
        sink.append(row)
    return row


async def cancel_queued(session: AsyncSession, now: datetime, **where: Any) -> None:
    """Cancel unsent rows (a STOP, a provider block)."""
    conditions = [getattr(Outbox, key) == value for key, value in where.items()]
    await session.execute(
        update(Outbox)
        .where(Outbox.status == "queued", *conditions)
        .values(status="cancelled", updated_at=now, error_reason="cancelled")
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class State:
    """One step of a conversation."""

    enter: Enter
    on_choice: ChoiceHandler | None = None
    on_text: TextHandler | None = None
    expires: bool = True  # an unanswered question expires after QUESTION_TTL


@dataclass(frozen=True)
class Flow:
    name: str
    states: dict[str, State]


FLOWS: dict[str, Flow] = {}

# Hooks that see every inbound event before keywords and flows (staff commands, danger
# words, the relay to a mediator). A hook returns True when it handled the event.
StepHook = Callable[["Context"], Awaitable[bool]]
STEP_HOOKS: list[StepHook] = []


def add_step_hook(hook: StepHook, *, first: bool = False) -> StepHook:
    if hook not in STEP_HOOKS:
        STEP_HOOKS.insert(0, hook) if first else STEP_HOOKS.append(hook)
    return hook


def register(flow: Flow) -> Flow:
    FLOWS[flow.name] = flow
    return flow


def lookup(target: str) -> tuple[str, str, State]:
    flow_name, _, state_name = target.partition(".")
    flow = FLOWS[flow_name]
    return flow_name, state_name, flow.states[state_name]


MAX_CHAIN = 6  # states entered in a row by one step (welcome -> language …)


async def goto(ctx: Context, target: Next) -> None:
    """Enter ``target`` ("flow.state"; "!quiet" sets it without asking anything), then the
    states its ``enter`` leads to. Used by the engine and by proactive jobs alike."""
    for _ in range(MAX_CHAIN):
        if target is None or target == STAY:
            return
        quiet = target.endswith("!quiet")
        target = target.removesuffix("!quiet")
        flow_name, state_name, state = lookup(target)
        conversation = ctx.conversation
        conversation.flow, conversation.state = flow_name, state_name
        data = dict(conversation.data or {})
        data.pop("choices", None)
        conversation.data = data
        conversation.expires_at = None
        if quiet:
            return
        target = await state.enter(ctx)
    logging.getLogger("relais.flows").warning("state chain too long at %s", target)


def choice(choice_id: str, label: str, *keywords: str) -> Choice:
    return Choice(choice_id, label, tuple(keywords))
