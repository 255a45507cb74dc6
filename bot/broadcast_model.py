"""The ``broadcasts`` table (migration 0002). To be moved into ``bot.storage.models``.

A broadcast keeps its texts and its segment, not its recipients: they are chosen when it is
sent (batch by batch, ``cursor`` is the last contact id done) and become outbox rows with
``outbox.broadcast_id``. It holds no personal data except ``test_address`` (a staff
member's own address, for ``--test``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from bot.storage.models import Base, BigId

STATUSES = ("scheduled", "sending", "done", "cancelled")


class Broadcast(Base):
    """News sent to a segment of contacts. status: scheduled, sending, done, cancelled."""

    __tablename__ = "broadcasts"
    __table_args__ = (Index("ix_broadcasts_status", "status", "scheduled_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    texts: Mapped[dict[str, Any]] = mapped_column(JSON)  # {language: text}; "fr" is the fallback
    filters: Mapped[dict[str, Any]] = mapped_column(JSON)  # tags, language, postcode, channel
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    scheduled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]  # the first batch was enqueued
    enqueued_at: Mapped[datetime | None]  # every batch enqueued
    finished_at: Mapped[datetime | None]  # nothing left to send (done) or cancelled
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)  # last contact id enqueued
    test_address: Mapped[str | None] = mapped_column(String(80))
    # recipients, excluded {reason: n}, by_channel, by_language, sms_segments; and
    # "settled": the final figures, written once the replies window has closed.
    totals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
