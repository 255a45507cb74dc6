"""seen webhook signatures, kept 48 hours against replays

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

``seen_signatures`` holds the SHA-256 of each accepted webhook signature (never the
signature itself) for 48 hours, so that every process refuses a captured request sent again
in another shape that keeps its signature.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seen_signatures",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_seen_signatures"),
    )
    op.create_index("ix_seen_signatures_seen_at", "seen_signatures", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_seen_signatures_seen_at", table_name="seen_signatures")
    op.drop_table("seen_signatures")
