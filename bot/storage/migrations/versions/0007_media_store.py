"""media kept by Relais: fetched on arrival, stored in chunks

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

- ``media`` gains ``state`` (pending, stored, too_large, unavailable), ``size``, ``chunks``,
  ``stored_at`` and ``provider_deleted_at``: a citizen's file is fetched by a job when it
  arrives (provider links expire) instead of on every view.
- ``media_chunks`` holds the bytes, in pieces, so that ``/media`` streams a file without
  holding it whole. Erased with its media row (foreign key cascade).
- Media stored before this revision get a ``media.fetch`` job each, so that they are fetched
  once too (those the provider no longer gives end ``unavailable``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("media") as batch:
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False,
                                   server_default="pending"))
        batch.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("chunks", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("provider_deleted_at", sa.DateTime(timezone=True),
                                   nullable=True))
    op.create_table(
        "media_chunks",
        sa.Column("media_id", BigId, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["media_id"], ["media.id"], ondelete="CASCADE",
                                name="fk_media_chunks_media_id_media"),
        sa.PrimaryKeyConstraint("media_id", "seq", name="pk_media_chunks"),
        sqlite_autoincrement=True,
    )
    _plan_fetches()


def _plan_fetches() -> None:
    """One ``media.fetch`` job per media row already there (``bot.media_store``)."""
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, contact_id FROM media WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE "
        "jobs.kind = 'media.fetch' AND jobs.key = 'media:' || media.id) ORDER BY id"
    )).all()
    if not rows:
        return
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    when = now.replace(tzinfo=None) if bind.dialect.name == "sqlite" else now
    jobs = sa.table(
        "jobs",
        sa.column("kind", sa.String()), sa.column("key", sa.String()),
        sa.column("due_at", sa.DateTime(timezone=True)),
        sa.column("run_at", sa.DateTime(timezone=True)),
        sa.column("payload", sa.JSON()), sa.column("status", sa.String()),
        sa.column("attempts", sa.Integer()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("contact_id", BigId),
    )
    op.bulk_insert(jobs, [
        {"kind": "media.fetch", "key": f"media:{media_id}", "due_at": when, "run_at": when,
         "payload": {"media_id": media_id}, "status": "queued", "attempts": 0,
         "created_at": when, "contact_id": contact_id}
        for media_id, contact_id in rows
    ])


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind IN ('media.fetch', 'media.provider_delete')")
    op.drop_table("media_chunks")
    with op.batch_alter_table("media") as batch:
        batch.drop_column("provider_deleted_at")
        batch.drop_column("stored_at")
        batch.drop_column("chunks")
        batch.drop_column("size")
        batch.drop_column("state")
