"""The main menu. Later flows add their items with ``add_item``; tests pick items by id."""

from __future__ import annotations

from dataclasses import dataclass

from bot.flows.base import Context, Flow, Handler, Next, State, register
from bot.i18n import N_
from bot.types import Choice, Reply


@dataclass(frozen=True)
class MenuItem:
    id: str
    label: str  # a message id, translated when shown
    keywords: tuple[str, ...]
    handler: Handler


MENU_ITEMS: list[MenuItem] = []


def add_item(item: MenuItem, position: int | None = None) -> None:
    """Add (or replace) a menu item; ``position`` counts from 0."""
    for index, existing in enumerate(MENU_ITEMS):
        if existing.id == item.id:
            MENU_ITEMS[index] = item
            return
    MENU_ITEMS.insert(len(MENU_ITEMS) if position is None else position, item)


async def show(ctx: Context) -> Next:
    _ = ctx._
    choices = tuple(
        Choice(item.id, _(item.label), item.keywords) for item in MENU_ITEMS
    )
    ctx.ask(Reply(_("What do you need? Send the number."), choices))
    return None


async def chosen(ctx: Context, choice_id: str) -> Next:
    for item in MENU_ITEMS:
        if item.id == choice_id:
            ctx.event("menu.chosen", item=choice_id)
            return await item.handler(ctx)
    return None


async def _to_language(ctx: Context) -> Next:
    return "onboarding.language"


async def _to_human(ctx: Context) -> Next:
    from bot.flows.escalation import request_human

    return await request_human(ctx, source="menu")


add_item(MenuItem("human", N_("Talk to a person"), ("parler", "personne", "talk"), _to_human))
add_item(MenuItem("language", N_("Change language"), ("langue", "language"), _to_language))

FLOW = register(Flow("menu", {"main": State(enter=show, on_choice=chosen)}))
