"""OUBLIER (FORGET): a person erases their data by message, after a confirmation. By SMS,
whose sender id can be forged, the yes is a 4-digit code sent in the question (only the
phone's owner reads it), never "1" or "oui".

The last message ("it is done") is written to the outbox before the erasure, which keeps
that row, the contact row (emptied) and its addresses; a job deletes that shell once the
message has left (``bot.domain.rights``). Anonymous events stay for reports.
"""

from __future__ import annotations

import secrets

from bot.conversation.choices import fold
from bot.conversation.context import Context, Flow, Next, State, choice
from bot.core.types import Reply
from bot.domain import rights
from bot.domain.staff import staff_for_contact
from bot.domain.tickets import notify

YES = "yes"
NO = "no"
CODE_KEY = "forget_code"
KIND = "forget"  # outbox kind: sent even after STOP (``bot.delivery.outbox.STOPPED_MAY_GET``)
CODE_CHANNELS = ("sms",)  # the channels whose sender id can be forged
KEEP_WORDS = frozenset({"non", "no", "n"})


async def on_forget(ctx: Context) -> Next:
    """The OUBLIER keyword: ask before erasing anything."""
    if await staff_for_contact(ctx.session, ctx.contact.id) is not None:
        ctx.say(ctx._("You are a staff member. A coordinator can erase your data with the "
                      "relais forget command."))
        return "menu.main!quiet"
    ctx.event("forget.asked")
    return "forget.confirm"


async def ask(ctx: Context) -> Next:
    _ = ctx._
    question = _("Do you want us to erase all your data? Your messages, requests and "
                 "appointments will be deleted.")
    if ctx.address is not None and ctx.address.channel in CODE_CHANNELS:
        # An SMS sender can be forged: the yes is a code only the phone's owner reads.
        code = f"{secrets.randbelow(9000) + 1000}"
        ctx.remember(**{CODE_KEY: code})
        ctx.ask(Reply("\n".join([question, _("To erase everything, reply {code}.", code=code),
                                 _("To keep your data, reply NO.")])),
                kind=KIND, force=True)
        return None
    ctx.ask(
        Reply(
            question,
            (
                choice(YES, _("Yes, erase everything"), "oui", "yes", "effacer", "erase"),
                choice(NO, _("No"), "non", "no"),
            ),
        ),
        kind=KIND, force=True,  # they asked, even after STOP: erasure is a right
    )
    return None


async def code_typed(ctx: Context, text: str) -> Next:
    """SMS: the code of the question is the yes; anything else erases nothing."""
    code = ctx.recall(CODE_KEY)
    answer = text.strip().rstrip(".!")
    if code is not None and answer == code:
        return await answered(ctx, YES)
    if fold(answer) in KEEP_WORDS:
        return await answered(ctx, NO)
    return None


async def answered(ctx: Context, choice_id: str) -> Next:
    _ = ctx._
    ctx.remember(**{CODE_KEY: None})
    if choice_id != YES:
        ctx.event("forget.cancelled")
        stopped = ctx.contact.opted_out_at is not None  # else joined with the menu
        ctx.say(_("All right, we keep your data."), kind=KIND if stopped else "reply",
                force=True)
        return "menu.main"
    # The last message first: its outbox row is kept by the erasure and sent afterwards.
    ctx.say(_("It is done: your data is erased. We cannot erase the copies kept by your "
              "phone company, your messaging app or on our team's phones."), kind=KIND,
            force=True)
    ctx.say(_("You can write to us again at any time."), kind=KIND, force=True)
    ctx.flush()
    await ctx.session.flush()
    keep = rights.Keep(
        outbox_ids=frozenset(row.id for row in ctx.sent if row.id is not None),
        message_id=ctx.message.id if ctx.message is not None else None,
    )
    erased = await rights.erase(ctx.session, ctx.contact, ctx.now, keep=keep)
    await notify.slots_freed(ctx.session, ctx.settings, ctx.now, erased.freed_slots)
    await rights.plan_shell_removal(ctx.session, ctx.contact.id, ctx.now)
    ctx.event("forget", source="chat")
    return "menu.main!quiet"


FLOW = (
    Flow(
        "forget",
        {"confirm": State(enter=ask, on_choice=answered, on_text=code_typed)},
    )
)
