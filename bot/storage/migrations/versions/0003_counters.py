"""counters

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

The anonymous ``counters`` reports are built from (``bot.counters``): one row per local
day, figure and value of one dimension, with a count and a sum; no integer id and, on
SQLite, no rowid (rows are kept in key order, not in the order they were written). On
``contacts``, ``counted_at``: the person's first message of the month, when reports counted
them (the latest one only, no log; erased with the person).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("name", sa.String(length=48), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "name", "key", name=op.f("pk_counters")),
        sqlite_with_rowid=False,
    )
    op.add_column("contacts", sa.Column("counted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("counted_at")
    op.drop_table("counters")
