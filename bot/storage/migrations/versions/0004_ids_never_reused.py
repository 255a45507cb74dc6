"""ids never reused, rows linked to the people they are about

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

- SQLite: every table keyed by one integer ``id`` is rebuilt with ``AUTOINCREMENT`` (data
  kept), so an id freed by an erasure is never given to anyone else. ``bot.storage.migrate``
  turns foreign keys off around the migrations (a rebuild drops and renames tables) and
  checks them afterwards; connections run with ``secure_delete`` on, so the old pages are
  zeroed. PostgreSQL sequences never go back: nothing to do there.
- ``outbox_about`` and ``message_about`` link staff-side rows (alerts, summaries, relays,
  replies, notes) to each person they name or quote; ``jobs.contact_id`` names the person a
  job is about. Erasure deletes them.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("contact_id", BigId, nullable=True))
    op.create_index("ix_jobs_contact_id", "jobs", ["contact_id"])
    op.create_table(
        "outbox_about",
        sa.Column("outbox_id", BigId, nullable=False),
        sa.Column("contact_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"], ondelete="CASCADE",
                                name="fk_outbox_about_outbox_id_outbox"),
        sa.PrimaryKeyConstraint("outbox_id", "contact_id", name="pk_outbox_about"),
    )
    op.create_index("ix_outbox_about_contact", "outbox_about", ["contact_id"])
    op.create_table(
        "message_about",
        sa.Column("message_id", BigId, nullable=False),
        sa.Column("contact_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE",
                                name="fk_message_about_message_id_messages"),
        sa.PrimaryKeyConstraint("message_id", "contact_id", name="pk_message_about"),
    )
    op.create_index("ix_message_about_contact", "message_about", ["contact_id"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for table in _tables_to_rebuild(bind):
            _rebuild_with_autoincrement(bind, table)


def downgrade() -> None:
    op.drop_table("message_about")
    op.drop_table("outbox_about")
    op.drop_index("ix_jobs_contact_id", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("contact_id")


def _tables_to_rebuild(bind: sa.Connection) -> list[str]:
    """Tables whose primary key is one INTEGER ``id`` (not a foreign key), without
    AUTOINCREMENT yet."""
    names = []
    rows = bind.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version' ORDER BY name"
    ).all()
    for name, sql in rows:
        if "AUTOINCREMENT" in sql.upper():
            continue
        columns = bind.exec_driver_sql(f'PRAGMA table_info("{name}")').all()
        keys = [c for c in columns if c[5]]
        foreign = {f[3] for f in bind.exec_driver_sql(f'PRAGMA foreign_key_list("{name}")')}
        if len(keys) == 1 and keys[0][1] == "id" and keys[0][2].upper() == "INTEGER" \
                and "id" not in foreign:
            names.append(name)
    return names


_ID = re.compile(r"\bid INTEGER NOT NULL\b")
_PK = re.compile(r",\s*CONSTRAINT \w+ PRIMARY KEY \(id\)")


def _rebuild_with_autoincrement(bind: sa.Connection, table: str) -> None:
    """SQLite's own recipe: new table, copy, drop, rename, indexes again."""
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    indexes = [row[0] for row in bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
        "AND sql IS NOT NULL", (table,)
    )]
    new, ids = _ID.subn("id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT", sql, count=1)
    new, pks = _PK.subn("", new, count=1)
    if ids != 1 or pks != 1:
        raise RuntimeError(f"cannot add AUTOINCREMENT to {table}: unexpected schema {sql!r}")
    temporary = f"_relais_new_{table}"
    head = re.compile(rf"^CREATE TABLE\s+\"?{re.escape(table)}\"?", re.IGNORECASE)
    new, heads = head.subn(f'CREATE TABLE "{temporary}"', new, count=1)
    if heads != 1:
        raise RuntimeError(f"cannot add AUTOINCREMENT to {table}: unexpected schema {sql!r}")
    columns = ", ".join(
        f'"{c[1]}"' for c in bind.exec_driver_sql(f'PRAGMA table_info("{table}")')
    )
    bind.exec_driver_sql(new)
    bind.exec_driver_sql(
        f'INSERT INTO "{temporary}" ({columns}) SELECT {columns} FROM "{table}"'
    )
    bind.exec_driver_sql(f'DROP TABLE "{table}"')
    bind.exec_driver_sql(f'ALTER TABLE "{temporary}" RENAME TO "{table}"')
    for index in indexes:
        bind.exec_driver_sql(index)
