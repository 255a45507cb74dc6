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
# The order people see; items not listed here come after, in the order they were added.
MENU_ORDER = ("human", "callback", "resources", "places", "checkins", "language")


def add_item(item: MenuItem) -> None:
    """Add (or replace) a menu item, keeping ``MENU_ORDER``."""
    others = [existing for existing in MENU_ITEMS if existing.id != item.id]
    others.append(item)

    def rank(entry: MenuItem) -> int:
        return MENU_ORDER.index(entry.id) if entry.id in MENU_ORDER else len(MENU_ORDER)

    MENU_ITEMS[:] = sorted(others, key=rank)


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
