"""What each keyword does. Matching lives in ``keywords``; this is the action table."""

from __future__ import annotations

from bot.conversation import keywords as kw
from bot.conversation.context import Context, Next
from bot.delivery.writer import cancel_queued
from bot.flows import callbacks
from bot.flows.escalation import request_human
from bot.flows.forget import on_forget


async def on_help(ctx: Context) -> Next:
    return await request_human(ctx, source="keyword")


async def on_menu(ctx: Context) -> Next:
    return "menu.main"


async def on_language(ctx: Context) -> Next:
    return "onboarding.language"


async def on_stop(ctx: Context) -> Next:
    """Record the opt-out and confirm once; a refused confirmation is not retried."""
    if ctx.contact.opted_out_at is not None:
        return None
    ctx.contact.opted_out_at = ctx.now
    await cancel_queued(ctx.session, ctx.now, contact_id=ctx.contact.id)
    ctx.say(
        ctx._("You will not get any more messages. Send START to get them again."),
        kind="optout", max_attempts=1, force=True,
    )
    ctx.event("optout")
    return "menu.main!quiet"


async def on_start(ctx: Context) -> Next:
    if ctx.contact.opted_out_at is not None:
        from bot.storage.suppression import unsuppress

        ctx.contact.opted_out_at = None
        ctx.event("optin")
        if ctx.address is not None:
            await unsuppress(ctx.session, ctx.address.address)
        ctx.say(ctx._("Welcome back. You will get our messages again."))
    return "menu.main"


ACTIONS = {
    kw.HELP: on_help,
    kw.MENU: on_menu,
    kw.LANGUAGE: on_language,
    kw.STOP: on_stop,
    kw.START: on_start,
    kw.CANCEL_BOOKING: callbacks.cancel_keyword,
    kw.MOVE_BOOKING: callbacks.move_keyword,
    kw.FORGET: on_forget,
}
