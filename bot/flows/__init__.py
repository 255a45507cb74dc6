"""The conversations. Importing this package registers every flow."""

from bot.flows import (  # noqa: F401
    callbacks,
    checkins,
    escalation,
    forget,
    menu,
    onboarding,
    places,
    privacy,
    resources,
    staff,
)

FLOWS_LOADED = True
