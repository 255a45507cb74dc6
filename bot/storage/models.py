"""SQLAlchemy 2 models. Times are aware UTC in Python and never come from the database.

Tables holding personal data are listed in ``PERSONAL_DATA`` (export and erasure walk it);
``events`` is anonymous and survives erasure and retention.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, WriteOnlyMapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# The values of the status columns: CHECK constraints (migration 0008) hold them.
OUTBOX_STATUSES = ("queued", "sending", "in_doubt", "sent", "delivered", "read", "failed",
                   "cancelled")
JOB_STATUSES = ("queued", "running", "done", "failed")
TICKET_STATES = ("open", "taken", "closed")
TICKET_PRIORITIES = ("urgent", "normal", "low")
ACTIVE_TICKET = "state IN ('open', 'taken')"
SLOT_STATUSES = ("open", "booked", "cancelled", "done")
MEDIA_STATES = ("pending", "stored", "too_large", "unavailable")
BROADCAST_STATUSES = ("scheduled", "sending", "done", "cancelled")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use the Clock")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class HourUTCDateTime(UTCDateTime):
    """A time kept to the hour: anonymous event rows carry no exact moment that could be
    matched with another row to single a person out."""

    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return super().process_bind_param(value, dialect)


# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Every table gets ``sqlite_autoincrement``: on SQLite an integer id is then never given
    again after its row is deleted (an erased person's ticket or slot number never names
    someone else). PostgreSQL sequences never go back anyway. ``tests/integration/test_erasure.py``
    checks the migrated schema."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "__tablename__" in cls.__dict__:
            cls.__table_args__ = _with_autoincrement(cls.__dict__.get("__table_args__", ()))
        super().__init_subclass__(**kwargs)


def _with_autoincrement(args: Any) -> Any:
    """``__table_args__`` with ``sqlite_autoincrement=True`` added (a tuple or a dict)."""
    if isinstance(args, dict):
        return {"sqlite_autoincrement": True, **args}
    items = tuple(args)
    if items and isinstance(items[-1], dict):
        return (*items[:-1], {"sqlite_autoincrement": True, **items[-1]})
    return (*items, {"sqlite_autoincrement": True})


class Contact(Base):
    """A person. Staff are contacts too (with a row in ``staff``)."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(8))
    level: Mapped[int | None] = mapped_column(Integer)  # ease with digital tools, 1..3
    postcode: Mapped[str | None] = mapped_column(String(10))
    timezone: Mapped[str | None] = mapped_column(String(64))
    opted_out_at: Mapped[datetime | None]  # STOP; only START lifts it
    created_at: Mapped[datetime]
    last_inbound_at: Mapped[datetime | None]
    last_address_id: Mapped[int | None] = mapped_column(BigId)  # where they last wrote from
    counted_at: Mapped[datetime | None]  # their first message this month (bot.storage.counters)
    addresses: Mapped[list[Address]] = relationship(back_populates="contact")


class Address(Base):
    """One way to reach a person: ``channel:external_id``."""

    __tablename__ = "addresses"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        Index("ix_addresses_contact", "contact_id"),
        Index(
            "ix_addresses_paused", "paused_until",
            postgresql_where=text("paused_until IS NOT NULL"),
            sqlite_where=text("paused_until IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_inbound_at: Mapped[datetime | None]
    blocked_at: Mapped[datetime | None]  # provider-side block, lifted when they write again
    blocked_reason: Mapped[str | None] = mapped_column(String(200))
    landline: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_until: Mapped[datetime | None]  # per-person pause (pair rate, Retry-After)
    contact: Mapped[Contact] = relationship(back_populates="addresses")

    @property
    def address(self) -> str:
        return f"{self.channel}:{self.external_id}"


class Tag(Base):
    __tablename__ = "contact_tags"
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class Consent(Base):
    """One consent decision per purpose (``checkins``, ``news``); the latest row counts."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(64))  # "chat:sms", "import:file.csv", "cli"


class Message(Base):
    """A message in or out, as stored (masked) text. Inbound rows dedupe on provider id."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("direction", "channel", "provider_id"),
        Index("ix_messages_contact_created", "contact_id", "created_at"),
        Index("ix_messages_address", "address_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    address_id: Mapped[int | None] = mapped_column(
        ForeignKey("addresses.id", ondelete="SET NULL")
    )
    ticket_id: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.id", ondelete="SET NULL"), index=True
    )
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    channel: Mapped[str] = mapped_column(String(16))
    provider_id: Mapped[str | None] = mapped_column(String(128))
    body: Mapped[str | None] = mapped_column(Text)  # None once purged
    choice_id: Mapped[str | None] = mapped_column(String(64))
    media: Mapped[list[Any] | None]
    masked: Mapped[list[Any] | None]  # kinds of private data masked before storage
    created_at: Mapped[datetime]
    handled_at: Mapped[datetime | None]  # inbound: flow step done
    step_error: Mapped[str | None] = mapped_column(String(500))


class Conversation(Base):
    """Where a person is in a flow. One row per contact."""

    __tablename__ = "conversations"
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    flow: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    misunderstood: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]


class Outbox(Base):
    """A message to send. The only way a message leaves Relais.

    status: queued, sending, sent, delivered, read, failed, cancelled, in_doubt.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(_one_of("status", OUTBOX_STATUSES), name="status"),
        Index("ix_outbox_claim", "status", "next_attempt_at"),
        Index("ix_outbox_order", "contact_id", "priority", "id"),
        Index("ix_outbox_provider", "channel", "provider_id"),
        # What a claim scans: only rows still to send (partial index, both databases).
        Index(
            "ix_outbox_ready", "channel", "priority", "id",
            postgresql_where=text("status IN ('queued', 'in_doubt')"),
            sqlite_where=text("status IN ('queued', 'in_doubt')"),
        ),
        # Foreign keys that deletes and cancels look up.
        Index("ix_outbox_fallback_of", "fallback_of"),
        Index("ix_outbox_address", "address_id"),
        Index("ix_outbox_message", "message_id"),
        Index("ix_outbox_ticket", "ticket_id"),
        Index("ix_outbox_broadcast", "broadcast_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    address_id: Mapped[int | None] = mapped_column(
        ForeignKey("addresses.id", ondelete="SET NULL")
    )
    channel: Mapped[str] = mapped_column(String(16))
    to: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0)  # 0 reply, 1 bulk
    kind: Mapped[str] = mapped_column(String(32), default="reply")
    body: Mapped[str | None] = mapped_column(Text)
    choices: Mapped[list[Any] | None]
    language: Mapped[str] = mapped_column(String(8), default="fr")
    segments: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    call_started_at: Mapped[datetime | None]  # a provider call began: a crash → in_doubt
    was_in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)
    provider_id: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_reason: Mapped[str | None] = mapped_column(String(500))
    failure: Mapped[str | None] = mapped_column(String(32))  # bot.core.channel.Failure
    held: Mapped[bool] = mapped_column(Boolean, default=False)  # waits for the person to write
    fallback_of: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
    broadcast_id: Mapped[int | None] = mapped_column(BigId)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    about: WriteOnlyMapped[OutboxAbout] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class OutboxAbout(Base):
    """A staff-side outbox row (an alert, a take summary, a relay, a notice listing several
    tickets) and each person it names or quotes: erasing a person deletes these rows."""

    __tablename__ = "outbox_about"
    __table_args__ = (Index("ix_outbox_about_contact", "contact_id"),)
    outbox_id: Mapped[int] = mapped_column(
        ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[int] = mapped_column(BigId, primary_key=True)


class MessageAbout(Base):
    """A staff member's stored message (a reply, a note, an outcome) and the person it is
    about: erasing a person deletes these rows."""

    __tablename__ = "message_about"
    __table_args__ = (Index("ix_message_about_contact", "contact_id"),)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[int] = mapped_column(BigId, primary_key=True)


class Job(Base):
    """A scheduled job; unique on (kind, key, due_at) so several schedulers are safe."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("kind", "key", "due_at"),
        CheckConstraint(_one_of("status", JOB_STATUSES), name="status"),
        Index("ix_jobs_claim", "status", "run_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    due_at: Mapped[datetime]
    run_at: Mapped[datetime]  # due_at, or later after a failed attempt
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # running, done, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
    # The person the job is about (a check-in, a ticket's reminder, a slot's reminder): an
    # erasure deletes the job. No foreign key: the job row must not outlive the person.
    contact_id: Mapped[int | None] = mapped_column(BigId, index=True)


INBOX_STATES = ("pending", "done", "parked")
INBOX_KINDS = ("message", "status", "event")


class InboxItem(Base):
    """A verified webhook, stored before it is answered (``bot.storage.inbox``) and processed
    by the inbox workers (``bot.delivery.inbox``). ``payload`` is the parsed event, its text
    masked as a stored message is; emptied once processed, while ``dedupe`` (kind, channel
    and provider id) stays to refuse a provider's redelivery. ``sender`` orders one person's
    events (a phone number for SMS and WhatsApp alike); ``held_until`` is how long a failing
    event keeps that person's later events waiting."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("dedupe"),
        CheckConstraint(_one_of("state", INBOX_STATES), name="state"),
        CheckConstraint(_one_of("kind", INBOX_KINDS), name="kind"),
        Index("ix_inbox_claim", "state", "next_at"),
        Index("ix_inbox_sender", "sender", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(16))
    dedupe: Mapped[str | None] = mapped_column(String(200))
    sender: Mapped[str | None] = mapped_column(String(160))
    address: Mapped[str | None] = mapped_column(String(160))  # CHANNEL:ID, None once purged
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime]
    held_until: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
    # set once processed: the person (erasure) and the stored message (retries of its step)
    contact_id: Mapped[int | None] = mapped_column(BigId, index=True)
    message_id: Mapped[int | None] = mapped_column(BigId)


class WorkerBeat(Base):
    """A running worker (outbox, inbox, scheduler) and when it last said it was alive; a
    row whose beat is older than a few intervals is a dead process, whose leases are taken
    back at once (``bot.delivery.heartbeat``)."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # worker_name()
    kind: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    beat_at: Mapped[datetime] = mapped_column(index=True)


class RateLimit(Base):
    """Shared send rate per channel (GCRA: theoretical arrival time) and Retry-After pause."""

    __tablename__ = "rate_limits"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tat: Mapped[datetime]
    paused_until: Mapped[datetime | None]


class Staff(Base):
    __tablename__ = "staff"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), unique=True
    )
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # mediator | coordinator
    on_duty: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class StaffAddress(Base):
    """An exact address a staff member's powers come from (``relais staff add``).

    ``sms:+33…`` is not ``whatsapp:+33…``: a person's phone number on both channels is one
    citizen, but staff powers belong only to the addresses registered here."""

    __tablename__ = "staff_addresses"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"),
                                          index=True)
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]

    @property
    def address(self) -> str:
        return f"{self.channel}:{self.external_id}"


class StaffSmsSession(Base):
    """The working session of a staff address on SMS (``RELAIS_STAFF_SMS=challenge``).

    A one-time code is sent back by SMS to the number; only its keyed hash is kept. Once the
    code comes back, staff powers by SMS last until ``confirmed_until``. ``pending_message_id``
    is the staff message that asked for the code: it is run once the code is confirmed."""

    __tablename__ = "staff_sms_sessions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    staff_address_id: Mapped[int] = mapped_column(
        ForeignKey("staff_addresses.id", ondelete="CASCADE"), unique=True
    )
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    pending_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    confirmed_until: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class SeenSignature(Base):
    """A webhook signature already accepted (its SHA-256, never the signature itself), kept
    48 hours so that every process refuses a replay of a captured request."""

    __tablename__ = "seen_signatures"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    seen_at: Mapped[datetime] = mapped_column(index=True)


class Ticket(Base):
    """An escalation to a human. One open ticket per person (state open or taken)."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_state", "state", "priority", "created_at"),
        CheckConstraint(_one_of("state", TICKET_STATES), name="state"),
        CheckConstraint(_one_of("priority", TICKET_PRIORITIES), name="priority"),
        # one open or taken ticket per person
        Index("uq_tickets_active", "contact_id", unique=True,
              sqlite_where=text(ACTIVE_TICKET), postgresql_where=text(ACTIVE_TICKET)),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    priority: Mapped[str] = mapped_column(String(8), default="normal")  # urgent, normal, low
    source: Mapped[str] = mapped_column(String(32))  # keyword, menu, misunderstood, checkin…
    topic: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(8), default="open")  # open, taken, closed
    language: Mapped[str | None] = mapped_column(String(8))
    channel: Mapped[str | None] = mapped_column(String(16))
    level: Mapped[int | None] = mapped_column(Integer)
    mediator_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    taken_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(200))


class TicketNote(Base):
    __tablename__ = "ticket_notes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), index=True
    )
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class MediaItem(Base):
    """A citizen's photo, voice note or file: the provider's reference, and the bytes Relais
    fetched when it arrived (``bot.domain.media_store``; chunks in ``media_chunks``).

    state: pending (not fetched yet), stored, too_large (over ``RELAIS_MEDIA_MAX_MB``, not
    kept), unavailable (the provider no longer gives it)."""

    __tablename__ = "media"
    __table_args__ = (
        Index("ix_media_contact", "contact_id"),
        CheckConstraint(_one_of("state", MEDIA_STATES), name="state"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    content_type: Mapped[str] = mapped_column(String(100))
    ref: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), default="pending",
                                       server_default="pending")
    size: Mapped[int | None] = mapped_column(BigInteger)  # bytes, once fetched
    chunks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stored_at: Mapped[datetime | None]
    provider_deleted_at: Mapped[datetime | None]  # deleted at the provider (Twilio)


class MediaChunk(Base):
    """One piece of a stored media file (at most ``bot.domain.media_store.CHUNK`` bytes), so that
    ``/media`` streams a file without ever holding it whole. Erased with its media row
    (foreign key cascade, and ``bot.domain.rights`` deletes media rows with the person)."""

    __tablename__ = "media_chunks"
    media_id: Mapped[int] = mapped_column(
        ForeignKey("media.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Event(Base):
    """Anonymous counts for reports: no contact id, no text. Survives erasure."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(HourUTCDateTime())  # to the hour only
    kind: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(16))
    language: Mapped[str | None] = mapped_column(String(8))
    value: Mapped[dict[str, Any] | None]


class Resource(Base):
    """A help resource of the catalogue (YAML file, merged by id)."""

    __tablename__ = "resources"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    theme: Mapped[str] = mapped_column(String(64))
    level: Mapped[int | None] = mapped_column(Integer)  # the ease level it suits, 1..3
    url: Mapped[str] = mapped_column(String(500))
    texts: Mapped[dict[str, Any]] = mapped_column(JSON)  # {lang: {"title": …, "text": …}}
    keywords: Mapped[list[Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]


class Place(Base):
    """A digital-inclusion place (LaMednum ``standard-mediation-num`` open data)."""

    __tablename__ = "places"
    __table_args__ = (Index("ix_places_postcode", "postcode"),)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    address: Mapped[str | None] = mapped_column(String(300))
    postcode: Mapped[str | None] = mapped_column(String(10))
    commune: Mapped[str | None] = mapped_column(String(200))
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    phone: Mapped[str | None] = mapped_column(String(32))
    hours: Mapped[str | None] = mapped_column(String(500))  # OpenStreetMap opening_hours
    services: Mapped[str | None] = mapped_column(Text)
    booking_url: Mapped[str | None] = mapped_column(String(500))
    extra: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime]


class Slot(Base):
    """A phone callback slot a mediator opened; one person each."""

    __tablename__ = "slots"
    __table_args__ = (
        Index("ix_slots_start", "status", "start_at"),
        CheckConstraint(_one_of("status", SLOT_STATUSES), name="status"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    start_at: Mapped[datetime]
    minutes: Mapped[int] = mapped_column(Integer)
    mediator_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    # open, booked, cancelled, done
    status: Mapped[str] = mapped_column(String(16), default="open")
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    phone: Mapped[str | None] = mapped_column(String(32))  # the number to call (E.164)
    booked_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))  # reached, no-answer
    created_at: Mapped[datetime]


class CheckinRule(Base):
    """Check-in cadence for a tag or one person (the person's own rule wins)."""

    __tablename__ = "checkin_rules"
    __table_args__ = (UniqueConstraint("tag", "contact_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tag: Mapped[str | None] = mapped_column(String(64))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    every_days: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


class Checkin(Base):
    """One check-in sent to a person, and what became of it."""

    __tablename__ = "checkins"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    sent_at: Mapped[datetime]
    reminded_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    answer: Mapped[str | None] = mapped_column(String(32))  # ok, help, callback, stop
    no_news_at: Mapped[datetime | None]  # the "no news" item for mediators was created


class KeyValue(Base):
    """Small internal values, e.g. the generated key that signs media links."""

    __tablename__ = "kv"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Suppression(Base):
    """Salted hashes of addresses that must stay unreachable after erasure."""

    __tablename__ = "suppressions"
    address_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime]


# Tables with personal data and the column that ties a row to a person. Export and erasure
# walk this registry; a new table with personal data must be added here.
PERSONAL_DATA: tuple[tuple[type[Base], str], ...] = (
    (Contact, "id"),
    (Address, "contact_id"),
    (Tag, "contact_id"),
    (Consent, "contact_id"),
    (Message, "contact_id"),
    (MediaItem, "contact_id"),
    (Conversation, "contact_id"),
    (Outbox, "contact_id"),
    (Ticket, "contact_id"),
    (Staff, "contact_id"),
    (Slot, "contact_id"),
    (CheckinRule, "contact_id"),
    (Checkin, "contact_id"),
)

# Every table, classified by how it relates to people; export, erasure and retention follow
# it, and ``tests/integration/test_erasure.py`` fails for a table left out.
#   person      a row of the person's own (PERSONAL_DATA gives the column); exported, erased
#   about       a row about a person written elsewhere (staff-side copies, jobs); erased
#   ticket      belongs to a person's ticket (notes); erased with the ticket
#   media       the bytes of a person's media row; erased and purged with that row
#   staff       staff members' own data (a broadcast's --test address)
#   anonymous   counts, no person id, no text: survive erasure (suppressions: salted hashes)
#   catalogue   help resources and places, no personal data
#   internal    keys and rates
DATA_CLASSES: dict[str, str] = {
    **{model.__tablename__: "person" for model, _column in PERSONAL_DATA},
    "outbox_about": "about",
    "message_about": "about",
    "jobs": "about",
    "ticket_notes": "ticket",
    "broadcasts": "staff",
    "events": "anonymous",
    "counters": "anonymous",  # bot.storage.counters: one dimension per row, by day
    "suppressions": "anonymous",
    "resources": "catalogue",
    "places": "catalogue",
    "kv": "internal",
    "rate_limits": "internal",
    "staff_addresses": "staff",  # erased with the staff row (cascade)
    "staff_sms_sessions": "staff",
    "seen_signatures": "internal",  # digests only, purged after 48 hours
    "inbox": "about",  # webhooks before processing: found by address, erased, purged
    "workers": "internal",  # process names and heartbeats
    "media_chunks": "media",  # a person's stored file: erased and purged with its media row
}


# Anonymous: not listed in PERSONAL_DATA (no person, no text; survives erasure and retention).
class ReportCounter(Base):
    """One anonymous figure of one day, written when things happen (``bot.storage.counters``).

    ``name`` says what is counted (``tickets.opened``), ``key`` the value of one dimension
    only (a channel, a source, a departement, a duration bucket; "" for none), ``count`` how
    many times, ``total`` the sum of what was measured (seconds, for durations). One
    dimension per row, never two joined, and no time finer than the day: no row can single
    a person out. No integer id and, on SQLite, no rowid: rows are kept in key order, not in
    the order they were written.
    """

    __tablename__ = "counters"
    __table_args__ = {"sqlite_with_rowid": False}
    day: Mapped[date] = mapped_column(Date, primary_key=True)  # local day, RELAIS_TIMEZONE
    name: Mapped[str] = mapped_column(String(48), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int] = mapped_column(BigInteger, default=0)


# -- broadcasts (migration 0002) ------------------------------------------------------------
# A broadcast keeps its texts and its segment, not its recipients: they are chosen when it is
# sent (batch by batch, ``cursor`` is the last contact id done) and become outbox rows with
# ``outbox.broadcast_id``. It holds no personal data except ``test_address`` (a staff
# member's own address, for ``--test``).



class Broadcast(Base):
    """News sent to a segment of contacts. status: scheduled, sending, done, cancelled."""

    __tablename__ = "broadcasts"
    __table_args__ = (
        Index("ix_broadcasts_status", "status", "scheduled_at"),
        CheckConstraint(_one_of("status", BROADCAST_STATUSES), name="status"),
    )
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
