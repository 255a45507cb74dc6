"""Channel adapters: one module per provider family, and the registry."""

from bot.channels.base import Channel, Failure, Registry, SendError, SendResult

__all__ = ["Channel", "Failure", "Registry", "SendError", "SendResult"]
