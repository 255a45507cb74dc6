"""OUBLIER (FORGET): a person erases their data by message, after a confirmation.

The last message ("it is done") is written to the outbox before the erasure, which keeps
that row, the contact row (emptied) and its addresses; a job deletes that shell once the
message has left (``bot.rights``). Anonymous events stay for reports.
"""

from __future__ import annotations

from bot import notify, rights
from bot.flows.base import Context, Flow, Next, State, choice, register
from bot.staff import staff_for_contact
from bot.types import Reply

YES = "yes"
NO = "no"


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
    ctx.ask(
        Reply(
            _("Do you want us to erase all your data? Your messages, requests and "
              "appointments will be deleted."),
            (
                choice(YES, _("Yes, erase everything"), "oui", "yes", "effacer", "erase"),
                choice(NO, _("No"), "non", "no"),
            ),
        )
    )
    return None


async def answered(ctx: Context, choice_id: str) -> Next:
    _ = ctx._
    if choice_id != YES:
        ctx.event("forget.cancelled")
        ctx.say(_("All right, we keep your data."))
        return "menu.main"
    # The last message first: its outbox row is kept by the erasure and sent afterwards.
    ctx.say(_("It is done: your data is erased. We cannot erase the copies kept by your "
              "phone company, your messaging app or on our team's phones."), kind="forget")
    ctx.say(_("You can write to us again at any time."), kind="forget")
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


FLOW = register(
    Flow(
        "forget",
        {"confirm": State(enter=ask, on_choice=answered)},
    )
)
