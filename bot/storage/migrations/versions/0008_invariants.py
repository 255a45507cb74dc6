"""the invariants as constraints: status values, one active ticket per person

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

What the code always kept becomes what the database refuses to break:

- a CHECK on each status column: ``outbox.status``, ``jobs.status``, ``tickets.state`` and
  ``tickets.priority``, ``slots.status``, ``media.state``, ``broadcasts.status``;
- a partial unique index: one open or taken ticket per person (``uq_tickets_active``).

A database holding a value outside these lists (or two active tickets for one person)
stops the upgrade with a message naming the table, before anything is changed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# table -> column -> allowed values (the same lists as bot/storage/models.py)
CHECKS: dict[str, dict[str, tuple[str, ...]]] = {
    "outbox": {"status": ("queued", "sending", "in_doubt", "sent", "delivered", "read",
                          "failed", "cancelled")},
    "jobs": {"status": ("queued", "running", "done", "failed")},
    "tickets": {"state": ("open", "taken", "closed"), "priority": ("urgent", "normal", "low")},
    "slots": {"status": ("open", "booked", "cancelled", "done")},
    "media": {"state": ("pending", "stored", "too_large", "unavailable")},
    "broadcasts": {"status": ("scheduled", "sending", "done", "cancelled")},
}
ACTIVE = "state IN ('open', 'taken')"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _sequence(bind: sa.engine.Connection, table: str) -> int | None:
    return bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"),
                        {"t": table}).scalar()


def _restore_sequence(bind: sa.engine.Connection, table: str, seq: int) -> None:
    now = _sequence(bind, table)
    if now is None:
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"),
                     {"t": table, "s": seq})
    elif now < seq:
        bind.execute(sa.text("UPDATE sqlite_sequence SET seq = :s WHERE name = :t"),
                     {"t": table, "s": seq})


def upgrade() -> None:
    bind = op.get_bind()
    for table, columns in CHECKS.items():
        for column, values in columns.items():
            bad = bind.execute(sa.text(
                f"SELECT {column}, COUNT(*) FROM {table} WHERE NOT ({_in(column, values)}) "
                f"GROUP BY {column}"
            )).all()
            if bad:
                found = ", ".join(f"{value!r} ({count})" for value, count in bad)
                raise RuntimeError(f"{table}.{column} holds values Relais does not know: "
                                   f"{found}; fix them, then run `relais db upgrade` again")
    twice = bind.execute(sa.text(
        f"SELECT contact_id FROM tickets WHERE {ACTIVE} GROUP BY contact_id "
        f"HAVING COUNT(*) > 1"
    )).scalars().all()
    if twice:
        raise RuntimeError(f"{len(twice)} people have two active tickets (contact ids "
                           f"{', '.join(map(str, twice[:10]))}); close one of each with "
                           "`relais queue close`, then run `relais db upgrade` again")
    sqlite = bind.dialect.name == "sqlite"
    for table, columns in CHECKS.items():
        # SQLite rebuilds the table: keep AUTOINCREMENT (migration 0004) and the highest id
        # ever given, so that an id freed by an erasure is still never given again.
        sequence = _sequence(bind, table) if sqlite else None
        with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True}) as batch:
            for column, values in columns.items():
                batch.create_check_constraint(f"ck_{table}_{column}", _in(column, values))
        if sequence is not None:
            _restore_sequence(bind, table, sequence)
    op.create_index("uq_tickets_active", "tickets", ["contact_id"], unique=True,
                    sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE))


def downgrade() -> None:
    op.drop_index("uq_tickets_active", table_name="tickets")
    for table, columns in CHECKS.items():
        with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True}) as batch:
            for column in columns:
                batch.drop_constraint(f"ck_{table}_{column}", type_="check")
