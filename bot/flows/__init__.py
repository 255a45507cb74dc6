"""The conversations, listed once: every flow (a table of states), the main menu's items in
the order people see them, and the jobs the flows own. The engine and the scheduler are
handed ``MACHINE`` and ``JOBS`` by the composition root (``bot.app``); nothing registers
itself by being imported."""

from bot.conversation.context import Machine
from bot.flows import (
    callbacks,
    checkins,
    escalation,
    forget,
    menu,
    onboarding,
    places,
    resources,
)

FLOWS = (
    onboarding.FLOW,
    menu.FLOW,
    escalation.FLOW,
    callbacks.FLOW,
    checkins.FLOW,
    resources.FLOW,
    places.FLOW,
    forget.FLOW,
)
MENU = (
    escalation.MENU_ITEM,
    callbacks.MENU_ITEM,
    resources.MENU_ITEM,
    places.MENU_ITEM,
    checkins.MENU_ITEM,
    menu.LANGUAGE_ITEM,
)
MACHINE = Machine.of(FLOWS, MENU)
JOBS = (*callbacks.JOBS, *checkins.JOBS)
