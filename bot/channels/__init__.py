"""The provider adapters, listed once: each module exposes one ``SPEC``
(``bot.core.channel.AdapterSpec``); ``bot.app`` opens them, ``bot.web`` mounts their
routes. Adding a channel: one module here, its fixtures, and one line below."""

from bot.channels import telegram, twilio, whatsapp
from bot.core.channel import AdapterSpec

ADAPTERS: tuple[AdapterSpec, ...] = (
    twilio.SPEC,
    whatsapp.SPEC,  # after twilio: WhatsApp by the Cloud API replaces WhatsApp by Twilio
    telegram.SPEC,
)
