"""Importing this module registers every provider adapter (routes and channel setup)."""

from bot.channels import telegram, twilio, whatsapp  # noqa: F401
