"""broadcasts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

The ``broadcasts`` table, and on ``outbox`` a partial unique index that lets one broadcast
reach a person only once (fallback copies, ``fallback_of`` set, are the same message and
are left out).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ONCE = "broadcast_id IS NOT NULL AND fallback_of IS NULL"


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("texts", sa.JSON(), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("test_address", sa.String(length=80), nullable=True),
        sa.Column("totals", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    op.create_index("ix_broadcasts_status", "broadcasts", ["status", "scheduled_at"])
    op.create_index(
        "uq_outbox_broadcast_contact", "outbox", ["broadcast_id", "contact_id"], unique=True,
        sqlite_where=sa.text(ONCE), postgresql_where=sa.text(ONCE),
    )


def downgrade() -> None:
    op.drop_index("uq_outbox_broadcast_contact", table_name="outbox")
    op.drop_index("ix_broadcasts_status", table_name="broadcasts")
    op.drop_table("broadcasts")
