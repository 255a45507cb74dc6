"""Anonymous events that reports count. No person id, no text: they survive erasure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.models import Event


def record(
    session: AsyncSession,
    kind: str,
    at: datetime,
    *,
    channel: str | None = None,
    language: str | None = None,
    value: dict[str, Any] | None = None,
) -> None:
    session.add(Event(kind=kind, at=at, channel=channel, language=language, value=value))
