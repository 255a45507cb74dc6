"""the durable inbox and worker heartbeats

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

- ``inbox``: every verified webhook (message, status, event), stored and committed before
  the provider is answered; the inbox workers process it (``bot.delivery.inbox``);
- ``workers``: one row per running worker and its last heartbeat, so that the leases of a
  process known dead are taken back at once rather than when they expire.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", BigId, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("dedupe", sa.String(length=200), nullable=True),
        sa.Column("sender", sa.String(length=160), nullable=True),
        sa.Column("address", sa.String(length=160), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", When, nullable=False),
        sa.Column("held_until", When, nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("received_at", When, nullable=False),
        sa.Column("done_at", When, nullable=True),
        sa.Column("contact_id", BigId, nullable=True),
        sa.Column("message_id", BigId, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_inbox"),
        sa.UniqueConstraint("dedupe", name="uq_inbox_dedupe"),
        sa.CheckConstraint("state IN ('pending', 'done', 'parked')", name="ck_inbox_state"),
        sa.CheckConstraint("kind IN ('message', 'status', 'event')", name="ck_inbox_kind"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_inbox_claim", "inbox", ["state", "next_at"])
    op.create_index("ix_inbox_sender", "inbox", ["sender", "id"])
    op.create_index("ix_inbox_contact_id", "inbox", ["contact_id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("started_at", When, nullable=False),
        sa.Column("beat_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_workers_beat_at", "workers", ["beat_at"])


def downgrade() -> None:
    op.drop_index("ix_workers_beat_at", table_name="workers")
    op.drop_table("workers")
    for name in ("ix_inbox_contact_id", "ix_inbox_sender", "ix_inbox_claim"):
        op.drop_index(name, table_name="inbox")
    op.drop_table("inbox")
