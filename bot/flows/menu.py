"""The main menu: the items of ``bot.flows.MENU`` (``ctx.machine.menu``), in that order."""

from __future__ import annotations

from bot.conversation.context import Context, Flow, MenuItem, Next, State
from bot.core.i18n import N_
from bot.core.types import Choice, Reply


async def show(ctx: Context) -> Next:
    _ = ctx._
    choices = tuple(
        Choice(item.id, _(item.label), item.keywords) for item in ctx.machine.menu
    )
    ctx.ask(Reply(_("What do you need? Send the number."), choices))
    return None


async def chosen(ctx: Context, choice_id: str) -> Next:
    for item in ctx.machine.menu:
        if item.id == choice_id:
            ctx.event("menu.chosen", item=choice_id)
            return await item.handler(ctx)
    return None


async def _to_language(ctx: Context) -> Next:
    return "onboarding.language"


LANGUAGE_ITEM = MenuItem("language", N_("Change language"), ("langue", "language"), _to_language)

FLOW = Flow("menu", {"main": State(enter=show, on_choice=chosen)})
