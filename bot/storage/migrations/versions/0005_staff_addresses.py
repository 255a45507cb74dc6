"""staff powers belong to exact addresses; SMS staff sessions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

- ``staff_addresses``: the exact addresses a staff member's powers come from. Every address
  of an existing staff member is copied; a phone number becomes its two explicit addresses
  (``sms:`` and ``whatsapp:``), so nobody loses access the day this lands.
- ``staff_sms_sessions``: the one-time code (keyed hash only) and the working session of a
  staff address on SMS, the one channel whose sender can be forged.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PHONE_CHANNELS = ("sms", "whatsapp")


def upgrade() -> None:
    op.create_table(
        "staff_addresses",
        sa.Column("id", BigId, nullable=False),
        sa.Column("staff_id", BigId, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], ondelete="CASCADE",
                                name="fk_staff_addresses_staff_id_staff"),
        sa.PrimaryKeyConstraint("id", name="pk_staff_addresses"),
        sa.UniqueConstraint("channel", "external_id", name="uq_staff_addresses_channel"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_staff_addresses_staff_id", "staff_addresses", ["staff_id"])
    op.create_table(
        "staff_sms_sessions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("staff_address_id", BigId, nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("pending_message_id", BigId, nullable=True),
        sa.Column("confirmed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["staff_address_id"], ["staff_addresses.id"],
                                ondelete="CASCADE",
                                name="fk_staff_sms_sessions_staff_address_id_staff_addresses"),
        sa.ForeignKeyConstraint(["pending_message_id"], ["messages.id"], ondelete="SET NULL",
                                name="fk_staff_sms_sessions_pending_message_id_messages"),
        sa.PrimaryKeyConstraint("id", name="pk_staff_sms_sessions"),
        sa.UniqueConstraint("staff_address_id",
                            name="uq_staff_sms_sessions_staff_address_id"),
        sqlite_autoincrement=True,
    )
    _copy_existing_staff()


def _copy_existing_staff() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT staff.id, addresses.channel, addresses.external_id FROM staff"
        " JOIN addresses ON addresses.contact_id = staff.contact_id"
        " ORDER BY staff.id, addresses.id"
    )).all()
    wanted: dict[tuple[str, str], int] = {}
    for staff_id, channel, external_id in rows:
        channels = PHONE_CHANNELS if channel in PHONE_CHANNELS else (channel,)
        for each in channels:
            wanted.setdefault((each, external_id), staff_id)
    table = sa.table("staff_addresses", sa.column("staff_id"), sa.column("channel"),
                     sa.column("external_id"),
                     sa.column("created_at", sa.DateTime(timezone=True)))
    now = datetime.now(UTC)  # migration time, not an event of the application
    if bind.dialect.name == "sqlite":  # stored as naive UTC text there (UTCDateTime)
        now = now.replace(tzinfo=None)
    if wanted:
        op.bulk_insert(table, [
            {"staff_id": staff_id, "channel": channel, "external_id": external_id,
             "created_at": now}
            for (channel, external_id), staff_id in wanted.items()
        ])


def downgrade() -> None:
    op.drop_table("staff_sms_sessions")
    op.drop_index("ix_staff_addresses_staff_id", table_name="staff_addresses")
    op.drop_table("staff_addresses")
