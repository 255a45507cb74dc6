"""Check-ins ("prendre des nouvelles"): the opt-in from the menu, the question sent on a
schedule, the person's answer, the gentle reminder and the "no news" item for mediators.

The question is sent by the ``checkin.send`` job at 10:00 in the person's time zone. No
answer within 48 h brings one reminder (``checkin.remind``); 48 h more of silence opens a
low-priority ticket (``checkin.silence``): silence from a fragile person is a signal. Until
that ticket exists the numbers answer the check-in; after it they mean the menu again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation.context import (
    QUESTION_TTL,
    Context,
    Flow,
    Machine,
    MenuItem,
    Next,
    State,
    choice,
    enter_state,
    last_address,
    open_context,
)
from bot.core.config import Settings
from bot.core.i18n import N_
from bot.core.render import choices_to_json
from bot.core.types import Choice, Reply
from bot.delivery.quiet import may_send_proactive, next_allowed
from bot.delivery.scheduler import JobContext, JobKind, schedule
from bot.domain import checkins as rules
from bot.domain.tickets.opening import open_ticket
from bot.flows.escalation import request_human
from bot.storage.models import Checkin, Contact, Job

DATE_FORMAT = N_("EEEE d MMMM 'at' H:mm")  # a CLDR pattern: the first check-in's date
QUESTION = "checkins.question"

# -- opting in and out, from the menu --------------------------------------------------------


async def from_menu(ctx: Context) -> Next:
    if await rules.has_consent(ctx.session, ctx.contact.id):
        return "checkins.manage"
    return "checkins.offer"


async def offer(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(
        _("We can write to you now and then to ask how you are. Do you want that?"),
        _yes_no(ctx),
    ))
    return None


async def offer_chosen(ctx: Context, choice_id: str) -> Next:
    if choice_id != "yes":
        return "menu.main"
    _ = ctx._
    await ctx.set_consent(rules.PURPOSE, True)
    due = await rules.plan_next(ctx.session, ctx.contact, ctx.settings, ctx.now)
    tz = rules.timezone_of(ctx.contact, ctx.settings)
    ctx.say(_("Thank you. We will write to you on {date}.",
              date=_.datetime(due, tz, _(DATE_FORMAT))))
    return "menu.main"


async def manage(ctx: Context) -> Next:
    _ = ctx._
    ctx.ask(Reply(
        _("We write to you now and then to ask how you are. Do you want to stop?"),
        (choice("stop", _("Yes, stop"), "oui", "yes"),
         choice("keep", _("No, continue"), "non", "no")),
    ))
    return None


async def manage_chosen(ctx: Context, choice_id: str) -> Next:
    if choice_id == "stop":
        await _withdraw(ctx)
    return "menu.main"


async def _withdraw(ctx: Context) -> None:
    await ctx.set_consent(rules.PURPOSE, False)
    await rules.unplan(ctx.session, ctx.contact.id)
    ctx.say(ctx._("Noted. We stop these messages."))


def _yes_no(ctx: Context) -> tuple[Choice, ...]:
    _ = ctx._
    return (choice("yes", _("Yes"), "oui", "yes", "ok"), choice("no", _("No"), "non", "no"))


# -- the check-in question and its answers ---------------------------------------------------


def answers(ctx: Context) -> tuple[Choice, ...]:
    _ = ctx._
    return (
        choice("ok", _("All is well"), "ok", "bien", "ca va", "tout va bien", "fine", "good"),
        choice("help", _("I need help"), "besoin d'aide"),
        choice("callback", _("Call me back"), "rappel", "rappelez-moi", "call me"),
        choice("stop", _("Stop these messages")),
    )


def _ask(ctx: Context, text: str, kind: str) -> None:
    """Ask the check-in question. Like ``Context.ask`` but with its own kind of message, and
    no 24 h expiry: the state does not expire."""
    reply = Reply(text, answers(ctx))
    ctx.say(reply, kind=kind)
    ctx.remember(choices=choices_to_json(reply.choices))


async def question(ctx: Context) -> Next:
    """Entered again after a misunderstood answer: the short form of the question."""
    _ask(ctx, ctx._("How are you? Send the number."), "reply")
    return None


async def answered(ctx: Context, choice_id: str) -> Next:
    checkin = await rules.latest(ctx.session, ctx.contact.id)
    if not rules.is_open(checkin):
        return "menu.main"
    assert checkin is not None
    checkin.answered_at = ctx.now
    checkin.answer = choice_id
    ctx.event("checkin.answer", answer=choice_id)
    if choice_id == "stop":
        await _withdraw(ctx)
        return "checkins.done"
    await rules.plan_next(ctx.session, ctx.contact, ctx.settings, ctx.now)
    if choice_id == "ok":
        ctx.say(ctx._("Thank you! Good to hear. Write to us any time."))
        return "checkins.done"
    if choice_id == "callback" and "callbacks" in ctx.machine.flows:
        return "callbacks.offer"
    nxt = await request_human(ctx, source="checkin")
    if choice_id == "callback":
        ticket = await ctx.open_ticket_of()
        if ticket is not None and ticket.topic is None:
            ticket.topic = "callback"
    return nxt


async def done(ctx: Context) -> Next:
    return None  # nothing more to say after an answer


async def after_done(ctx: Context, text: str) -> Next:
    return "menu.main"  # "merci", or anything: the menu, without a "sorry"


# -- the jobs ----------------------------------------------------------------------------------


async def _send_job(jc: JobContext, item: Job) -> None:
    await send_checkin(jc.session, jc.settings, _id(item.key), jc.now, jc.machine)


async def _remind_job(jc: JobContext, item: Job) -> None:
    await remind(jc.session, jc.settings, _id(item.key), jc.now, jc.machine)


async def _silence_job(jc: JobContext, item: Job) -> None:
    await no_news(jc.session, jc.settings, _id(item.key), jc.now, jc.machine)


JOBS = (
    JobKind(rules.SEND_JOB, _send_job),
    JobKind(rules.REMIND_JOB, _remind_job),
    JobKind(rules.SILENCE_JOB, _silence_job),
)


def _id(key: str) -> int:
    return int(key.partition(":")[2])


async def send_checkin(
    session: AsyncSession, settings: Settings, contact_id: int, now: datetime,
    machine: Machine | None = None,
) -> Checkin | None:
    """Send the check-in question if the person still wants it and can get it now."""
    contact = await _lock(session, contact_id)
    if contact is None or not await rules.has_consent(session, contact.id):
        return None  # consent withdrawn: check-ins end
    tz = rules.timezone_of(contact, settings)
    if not may_send_proactive(settings, tz, now):
        await rules.plan(session, contact.id, next_allowed(settings.quiet, tz, now))
        return None
    ctx = await _context(session, settings, contact, now, machine)
    if not _reachable(ctx) or await ctx.open_ticket_of() is not None:
        # STOP, a blocked address, or already with a mediator: skip this one, keep the
        # cadence (START or a closed ticket brings the next one).
        await rules.plan_next(session, contact, settings, now)
        return None
    checkin = Checkin(contact_id=contact.id, sent_at=now)
    session.add(checkin)
    await session.flush()
    _enter_question(ctx)
    _ask(ctx, ctx._("Hello, this is {org}. How are you?", org=ctx.org), "checkin")
    ctx.event("checkin.sent")
    ctx.flush()
    await schedule(session, rules.REMIND_JOB, rules.checkin_key(checkin.id),
                   now + rules.ANSWER_WAIT, about=checkin.contact_id)
    return checkin


async def remind(
    session: AsyncSession, settings: Settings, checkin_id: int, now: datetime,
    machine: Machine | None = None,
) -> None:
    """One gentle reminder when the check-in is still unanswered."""
    checkin, contact = await _open_checkin(session, checkin_id)
    if checkin is None or contact is None:
        return
    tz = rules.timezone_of(contact, settings)
    if not may_send_proactive(settings, tz, now):
        await schedule(session, rules.REMIND_JOB, rules.checkin_key(checkin.id),
                       next_allowed(settings.quiet, tz, now), about=checkin.contact_id)
        return
    ctx = await _context(session, settings, contact, now, machine)
    if await ctx.open_ticket_of() is not None:  # they asked for a human meanwhile
        await rules.plan_next(session, contact, settings, now)
        return
    if _reachable(ctx):
        _enter_question(ctx)
        _ask(ctx, ctx._("Hello, it is {org} again. We are thinking of you. How are you?",
                        org=ctx.org), "checkin")
        checkin.reminded_at = now
        ctx.event("checkin.reminded")
        ctx.flush()
    await schedule(session, rules.SILENCE_JOB, rules.checkin_key(checkin.id),
                   now + rules.ANSWER_WAIT, about=checkin.contact_id)


async def no_news(
    session: AsyncSession, settings: Settings, checkin_id: int, now: datetime,
    machine: Machine | None = None,
) -> None:
    """Still no answer: a low-priority item for mediators, then the next check-in."""
    checkin, contact = await _open_checkin(session, checkin_id)
    if checkin is None or contact is None:
        return
    wrote = contact.last_inbound_at is not None and contact.last_inbound_at > checkin.sent_at
    ctx = await _context(session, settings, contact, now, machine)
    # STOP is an answer of its own; a person who wrote, or who is with a mediator, is not
    # silent: no ticket then.
    if contact.opted_out_at is None and not wrote and await ctx.open_ticket_of() is None:
        await open_ticket(ctx, "checkin_silence", priority="low", topic="no news")
        checkin.no_news_at = now
        ctx.event("checkin.silence")
        conversation = ctx.conversation
        if f"{conversation.flow}.{conversation.state}" == QUESTION:
            _quiet_menu(ctx)  # the numbers mean the menu again
    await rules.plan_next(session, contact, settings, now)


async def _open_checkin(
    session: AsyncSession, checkin_id: int
) -> tuple[Checkin | None, Contact | None]:
    """The check-in and its person, when it still waits for an answer and is still wanted."""
    checkin = await session.get(Checkin, checkin_id)
    if checkin is None:
        return None, None
    contact = await _lock(session, checkin.contact_id)
    if contact is None or not rules.is_open(checkin):
        return None, None
    if not await rules.has_consent(session, contact.id):
        return None, None
    latest = await rules.latest(session, contact.id)
    if latest is None or latest.id != checkin.id:  # a newer check-in went out
        return None, None
    return checkin, contact


async def _lock(session: AsyncSession, contact_id: int) -> Contact | None:
    """The person, locked like the engine does, so their own messages wait for the job."""
    query = select(Contact).where(Contact.id == contact_id)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    return await session.scalar(query)


async def _context(
    session: AsyncSession, settings: Settings, contact: Contact, now: datetime,
    machine: Machine | None = None,
) -> Context:
    """A context for a job, on the address the person last wrote from."""
    return await open_context(session, settings, now, contact,
                              await last_address(session, contact), machine=machine)


def _reachable(ctx: Context) -> bool:
    return (
        ctx.contact.opted_out_at is None
        and ctx.address is not None
        and ctx.address.blocked_at is None
    )


def _enter_question(ctx: Context) -> None:
    enter_state(ctx, QUESTION, fresh=True)


def _quiet_menu(ctx: Context) -> None:
    """The main menu's state and choices, without saying the menu."""
    enter_state(ctx, "menu.main", fresh=True)
    _ = ctx._
    choices = tuple(Choice(item.id, _(item.label), item.keywords) for item in ctx.machine.menu)
    ctx.remember(choices=choices_to_json(choices))
    ctx.conversation.expires_at = ctx.now + QUESTION_TTL


MENU_ITEM = MenuItem("checkins", N_("Someone checks on me regularly"),
                  ("nouvelles", "checkin", "check-in"), from_menu)

FLOW = (
    Flow(
        "checkins",
        {
            "offer": State(enter=offer, on_choice=offer_chosen),
            "manage": State(enter=manage, on_choice=manage_chosen),
            "question": State(enter=question, on_choice=answered, expires=False),
            "done": State(enter=done, on_text=after_done, expires=False),
        },
    )
)
