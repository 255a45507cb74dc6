"""The staff registry: mediators and coordinators are contacts with a ``staff`` row.

Staff powers come only from the command line (``relais staff add``), never from a chat.
A person's phone number on SMS and WhatsApp is one citizen, but staff powers belong only
to the exact addresses registered (``staff_addresses``): ``sms:+33…`` is not
``whatsapp:+33…``. By SMS they also need a working session (``bot.domain.staff_sms``).

Every inbound event asks "is this address a staff address?". ``StaffDirectory`` answers
from memory: the whole (small) registry of staff addresses, loaded once per process and
loaded again only when the version row (``kv`` key ``staff_version``) changed. Each event
reads that row (one primary-key SELECT), so another process sees a ``relais staff
add/remove`` on its very next event. Every write to ``staff`` or ``staff_addresses`` calls
``bump_version`` in its own transaction (here and in ``bot.cli.staff``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, Text, cast, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.sql.selectable import ScalarSelect

from bot.core.addresses import PHONE_CHANNELS, parse_address, timezone_for
from bot.core.addresses import Address as AddressValue
from bot.storage.models import Address, Contact, KeyValue, Staff, StaffAddress

ROLES = ("mediator", "coordinator")
VERSION_KEY = "staff_version"


# -- the per-process directory of staff addresses -----------------------------------------------


@dataclass(frozen=True)
class StaffEntry:
    """A registered staff address: whose powers it carries."""

    staff_id: int
    staff_address_id: int


_UNLOADED = object()


class StaffDirectory:
    """Which (channel, external id) are staff addresses, and which contacts are staff, for
    one database, in memory. ``load`` reads the version row (one primary-key SELECT) and
    reads the registry again only when the version changed since the last load; the
    lookups are then dict reads. Owned by whoever opens the database (``directory_for``
    keeps one per engine unless one is given with ``use_directory``)."""

    def __init__(self) -> None:
        self._version: object = _UNLOADED
        self._by_address: dict[tuple[str, str], StaffEntry] = {}
        self._contacts: frozenset[int] = frozenset()
        self._loaded_in: weakref.ref[SessionTransaction] | None = None
        self.reloads = 0  # how many times the registry was read (for tests and benches)

    async def load(self, session: AsyncSession, *, version: object = _UNLOADED) -> None:
        """Bring the directory up to date for this event: read the version row, and the
        registry when the version changed. ``version``: the version row's value already
        read by the caller in this transaction (``version_subquery`` in its own query)."""
        if version is _UNLOADED:
            version = await session.scalar(
                select(KeyValue.value).where(KeyValue.key == VERSION_KEY)
            )
        if version != self._version:
            # The version first, then the registry: what is read is at least that new.
            rows = (await session.execute(
                select(StaffAddress.channel, StaffAddress.external_id, StaffAddress.staff_id,
                       StaffAddress.id)
            )).all()
            contacts = (await session.scalars(select(Staff.contact_id))).all()
            self._by_address = {(channel, external): StaffEntry(staff_id, address_id)
                                for channel, external, staff_id, address_id in rows}
            self._contacts = frozenset(contacts)
            self._version = version
            self.reloads += 1
        root = _root(session)
        self._loaded_in = None if root is None else weakref.ref(root)

    def loaded_for(self, session: AsyncSession) -> bool:
        """True when ``load`` ran in this session's current transaction (this event)."""
        root = _root(session)
        return root is not None and self._loaded_in is not None and self._loaded_in() is root

    def at(self, channel: str, external_id: str) -> StaffEntry | None:
        """The staff address (channel, external_id) as of the last ``load``, or None."""
        return self._by_address.get((channel, external_id))

    def is_staff_contact(self, contact_id: int) -> bool:
        """True when this contact has a staff row, as of the last ``load``."""
        return contact_id in self._contacts


def version_subquery() -> ScalarSelect[str]:
    """SQL: the staff registry's version (NULL before the first staff change), to read
    alone or as a column of another query."""
    return select(KeyValue.value).where(KeyValue.key == VERSION_KEY).scalar_subquery()


def _root(session: AsyncSession) -> SessionTransaction | None:
    transaction = session.sync_session.get_transaction()
    while transaction is not None and transaction.parent is not None:
        transaction = transaction.parent
    return transaction


_DIRECTORIES: weakref.WeakKeyDictionary[Engine, StaffDirectory] = weakref.WeakKeyDictionary()


def use_directory(engine: AsyncEngine, directory: StaffDirectory) -> None:
    """Make ``directory`` the one of ``engine`` (the composition root owns it)."""
    _DIRECTORIES[engine.sync_engine] = directory


def directory_for(session: AsyncSession) -> StaffDirectory:
    """The directory of the session's database engine (``directory_of``)."""
    return directory_of(session.bind)


def directory_of(engine: AsyncEngine) -> StaffDirectory:
    """The directory of ``engine``, made on first use: one per engine, so one per process
    and database (two engines on one database behave as two processes)."""
    found = _DIRECTORIES.get(engine.sync_engine)
    if found is None:
        found = _DIRECTORIES[engine.sync_engine] = StaffDirectory()
    return found


async def bump_version(session: AsyncSession) -> None:
    """The staff registry changed (in this transaction): every directory reloads on its
    next event after the commit. Call it from every write to staff or staff addresses."""
    builder = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    statement = builder(KeyValue).values(key=VERSION_KEY, value="1")
    await session.execute(statement.on_conflict_do_update(
        index_elements=["key"],
        set_={"value": cast(cast(KeyValue.value, Integer) + 1, Text)},
    ))


async def find_address(session: AsyncSession, target: AddressValue) -> Address | None:
    """The stored address, or for a phone number the same number on the other phone channel."""
    found = await session.scalar(
        select(Address).where(Address.channel == target.channel, Address.external_id == target.id)
    )
    if found is not None or target.channel not in PHONE_CHANNELS:
        return found
    return await session.scalar(
        select(Address)
        .where(Address.external_id == target.id, Address.channel.in_(PHONE_CHANNELS))
        .order_by(Address.id)
        .limit(1)
    )


async def find_contact(session: AsyncSession, address_str: str) -> Contact | None:
    """The contact reached at ``address_str`` (raises ``AddressError`` when malformed)."""
    address = await find_address(session, parse_address(address_str))
    return None if address is None else await session.get(Contact, address.contact_id)


async def find_staff(session: AsyncSession, address_str: str) -> Staff | None:
    """The staff member named by ``address_str`` (the operator's CLI, ``/transfer``): the
    one registered at exactly that address, else the staff member who is that person (the
    same number on the other phone channel). This names someone; it gives no powers: those
    come from ``staff_at`` alone.

    Raises ``bot.core.addresses.AddressError`` when the address cannot be understood.
    """
    target = parse_address(address_str)
    exact = await staff_at(session, target.channel, target.id)
    if exact is not None:
        return exact
    address = await find_address(session, target)
    return None if address is None else await staff_for_contact(session, address.contact_id)


async def staff_at(session: AsyncSession, channel: str, external_id: str) -> Staff | None:
    """The staff member whose powers come from this exact address, or None."""
    return await session.scalar(
        select(Staff).join(StaffAddress, StaffAddress.staff_id == Staff.id)
        .where(StaffAddress.channel == channel, StaffAddress.external_id == external_id)
    )


async def staff_address(session: AsyncSession, channel: str, external_id: str
                        ) -> StaffAddress | None:
    return await session.scalar(
        select(StaffAddress).where(StaffAddress.channel == channel,
                                   StaffAddress.external_id == external_id)
    )


async def staff_for_contact(session: AsyncSession, contact_id: int) -> Staff | None:
    return await session.scalar(select(Staff).where(Staff.contact_id == contact_id))


async def find_or_create_contact(
    session: AsyncSession, target: AddressValue, now: datetime, *, name: str | None,
    default_timezone: str,
) -> Contact:
    """The contact at ``target``; a phone number known on the other phone channel is the same
    person (the missing address is added); else a new contact with that address."""
    address = await find_address(session, target)
    if address is not None:
        contact = await session.get(Contact, address.contact_id)
        assert contact is not None
        if (address.channel, address.external_id) != (target.channel, target.id):
            session.add(Address(contact_id=contact.id, channel=target.channel,
                                external_id=target.id, created_at=now, landline=False))
        if not contact.name and name:
            contact.name = name
        return contact
    contact = Contact(name=name, timezone=timezone_for(None, target, default_timezone),
                      created_at=now)
    session.add(contact)
    await session.flush()
    session.add(Address(contact_id=contact.id, channel=target.channel, external_id=target.id,
                        created_at=now, landline=False))
    await session.flush()
    return contact


class StaffAddressTaken(ValueError):
    """The address is already registered for another staff member."""


async def add_staff(
    session: AsyncSession, address_str: str, *, name: str, role: str, now: datetime,
    default_timezone: str,
) -> tuple[Staff, bool]:
    """Register (or update) a staff member at exactly ``address_str``. Returns (staff,
    created). New staff are on duty. The same phone number on the other phone channel is the
    same person, but it gets staff powers only once it is added too."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    target = parse_address(address_str)
    holder = await staff_at(session, target.channel, target.id)
    contact = await find_or_create_contact(session, target, now, name=name,
                                           default_timezone=default_timezone)
    staff = await staff_for_contact(session, contact.id)
    if holder is not None and (staff is None or holder.id != staff.id):
        raise StaffAddressTaken(f"{target} is already registered for {holder.name}")
    created = staff is None
    if staff is None:
        staff = Staff(contact_id=contact.id, name=name, role=role, on_duty=True,
                      created_at=now)
        session.add(staff)
        await session.flush()
    else:
        staff.name, staff.role = name, role
    if holder is None:
        session.add(StaffAddress(staff_id=staff.id, channel=target.channel,
                                 external_id=target.id, created_at=now))
        await session.flush()
    await bump_version(session)
    return staff, created


async def remove_staff(session: AsyncSession, member: Staff) -> None:
    """Take away staff powers: the staff row and its addresses go, the contact stays."""
    await session.delete(member)
    await session.flush()
    await bump_version(session)


@dataclass(frozen=True)
class StaffRow:
    id: int
    name: str
    role: str
    on_duty: bool
    created_at: datetime
    addresses: tuple[str, ...]

    @property
    def address(self) -> str | None:
        return self.addresses[0] if self.addresses else None


async def staff_addresses_of(session: AsyncSession, staff_id: int) -> tuple[str, ...]:
    rows = await session.scalars(
        select(StaffAddress).where(StaffAddress.staff_id == staff_id).order_by(StaffAddress.id)
    )
    return tuple(row.address for row in rows)


async def list_staff(session: AsyncSession) -> list[StaffRow]:
    """Staff members with the exact addresses their powers come from."""
    staff = (await session.scalars(select(Staff).order_by(Staff.name, Staff.id))).all()
    return [
        StaffRow(s.id, s.name, s.role, s.on_duty, s.created_at,
                 await staff_addresses_of(session, s.id))
        for s in staff
    ]
