"""What flows are made of: a context (the only door to storage, clock and translator), states
with a question and handlers, and a registry of flows.

A flow is a table of states. Entering a state runs its ``enter`` (which usually asks a
question through ``ctx.ask``); an answer runs ``on_choice`` when it names one of the offered
choices, else ``on_text``. A handler returns the next state as ``"flow.state"``, ``STAY`` to
keep waiting, or ``None`` when it did not understand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import sms
from bot.core.clock import Clock
from bot.core.config import Settings
from bot.core.i18n import Translator
from bot.core.render import choices_to_json, numbered
from bot.core.types import PRIORITY_REPLY, Choice, Inbound, Reply
from bot.delivery.writer import enqueue
from bot.storage import about, counters, events
from bot.storage.models import (
    Address,
    Consent,
    Contact,
    Conversation,
    Message,
    Outbox,
    Ticket,
)

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
    # step read (``bot.storage.about``), and is erased with them.
    staff_side: bool = False
    # A staff one-time code sent back by SMS, read before masking (``bot.domain.staff_sms``).
    sms_code: str | None = None
    machine: Machine = field(default_factory=lambda: NO_FLOWS)

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
        """An anonymous event, and the report counters it bumps (``bot.storage.counters``)."""
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
            from bot.storage.suppression import unsuppress

            await unsuppress(self.session, self.address.address)

    async def open_ticket_of(self) -> Ticket | None:
        return await self.session.scalar(
            select(Ticket).where(
                Ticket.contact_id == self.contact.id, Ticket.state.in_(("open", "taken"))
            )
        )


# -- opening a context: the one unit of work for inbound events and jobs alike ---------------


async def reachable_address(session: AsyncSession, contact: Contact) -> Address | None:
    """Where to reach a person: the address they last wrote from, else a usable one."""
    if contact.last_address_id is not None:
        last = await session.get(Address, contact.last_address_id)
        if last is not None and last.blocked_at is None:
            return last
    rows = (await session.scalars(
        select(Address).where(Address.contact_id == contact.id).order_by(Address.id)
    )).all()
    usable = [row for row in rows if row.blocked_at is None]
    return (usable or list(rows) or [None])[0]


async def last_address(session: AsyncSession, contact: Contact) -> Address | None:
    """The address the person last wrote from (None if they never wrote)."""
    if contact.last_address_id is None:
        return None
    return await session.get(Address, contact.last_address_id)


async def open_context(
    session: AsyncSession, settings: Settings, now: datetime, contact: Contact,
    address: Address | None, *, clock: Clock | None = None, machine: Machine | None = None,
    inbound: Inbound | None = None, message: Message | None = None, is_new: bool = False,
    refresh: bool = False,
) -> Context:
    """The context of one step for ``contact`` (their conversation made on first use).
    ``refresh``: read the conversation again (a job or a command, after other work)."""
    conversation = await session.get(Conversation, contact.id, populate_existing=refresh)
    if conversation is None:
        conversation = Conversation(
            contact_id=contact.id, flow="menu", state="main", data={}, misunderstood=0,
            updated_at=now,
        )
        session.add(conversation)
    return Context(
        session=session, settings=settings, clock=clock or Clock(), now=now,
        contact=contact, address=address, conversation=conversation, inbound=inbound,
        message=message, is_new=is_new, machine=machine or NO_FLOWS,
    )


Reach = Callable[[AsyncSession, Contact], Awaitable[Address | None]]


async def person_context(
    session: AsyncSession, settings: Settings, now: datetime, contact_id: int, *,
    machine: Machine | None = None, reach: Reach = reachable_address,
) -> Context | None:
    """A context to speak to a person first (a job, a mediator's command): their contact row
    locked as the engine locks it for their own messages (one step at a time per person),
    on the address ``reach`` picks. None when the person was erased."""
    query = select(Contact).where(Contact.id == contact_id)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    contact = await session.scalar(query.execution_options(populate_existing=True))
    if contact is None:
        return None
    return await open_context(session, settings, now, contact, await reach(session, contact),
                              machine=machine, refresh=True)


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


@dataclass(frozen=True)
class MenuItem:
    """One choice of the main menu (``bot.flows.MENU`` lists them, in the order shown)."""

    id: str
    label: str  # a message id, translated when shown
    keywords: tuple[str, ...]
    handler: Handler


@dataclass(frozen=True)
class Machine:
    """The conversations a context can enter: every flow by name, and the main menu's items.
    Built once (``bot.flows.MACHINE``) and handed to each context by whoever opens it."""

    flows: Mapping[str, Flow] = field(default_factory=dict)
    menu: tuple[MenuItem, ...] = ()

    @classmethod
    def of(cls, flows: Iterable[Flow], menu: Iterable[MenuItem] = ()) -> Machine:
        table: dict[str, Flow] = {}
        for flow in flows:
            if flow.name in table:
                raise ValueError(f"flow {flow.name!r} listed twice")
            table[flow.name] = flow
        return cls(table, tuple(menu))

    def lookup(self, target: str) -> tuple[str, str, State]:
        flow_name, _, state_name = target.partition(".")
        flow = self.flows.get(flow_name)
        if flow is None:
            raise LookupError(f"no flow {flow_name!r} in this context's machine")
        return flow_name, state_name, flow.states[state_name]


NO_FLOWS = Machine()  # a context opened by the domain (a mediator's command): sets states only


def enter_state(ctx: Context, target: str, *, fresh: bool = False) -> None:
    """Put the person in ``target`` ("flow.state") without saying anything: the one way a
    state is set. ``fresh`` (a job or a mediator moved them) also forgets misunderstandings."""
    flow, _sep, state = target.partition(".")
    conversation = ctx.conversation
    conversation.flow, conversation.state = flow, state
    data = dict(conversation.data or {})
    data.pop("choices", None)
    conversation.data = data
    conversation.expires_at = None
    if fresh:
        conversation.misunderstood = 0
        conversation.updated_at = ctx.now


MAX_CHAIN = 6  # states entered in a row by one step (welcome -> language …)


async def goto(ctx: Context, target: Next) -> None:
    """Enter ``target`` ("flow.state"; "!quiet" sets it without asking anything), then the
    states its ``enter`` leads to. Used by the engine and by proactive jobs alike."""
    for _ in range(MAX_CHAIN):
        if target is None or target == STAY:
            return
        quiet = target.endswith("!quiet")
        target = target.removesuffix("!quiet")
        flow_name, state_name, state = ctx.machine.lookup(target)
        enter_state(ctx, f"{flow_name}.{state_name}")
        if quiet:
            return
        target = await state.enter(ctx)
    logging.getLogger("relais.flows").warning("state chain too long at %s", target)


def choice(choice_id: str, label: str, *keywords: str) -> Choice:
    return Choice(choice_id, label, tuple(keywords))
