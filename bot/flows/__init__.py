"""The conversations. Importing this package registers every flow."""

from bot.flows import escalation, menu, onboarding  # noqa: F401

FLOWS_LOADED = True
