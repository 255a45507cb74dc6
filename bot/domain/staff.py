"""The staff registry: mediators and coordinators are contacts with a ``staff`` row.

Staff powers come only from the command line (``relais staff add``), never from a chat.
A person's phone number on SMS and WhatsApp is one citizen, but staff powers belong only
to the exact addresses registered (``staff_addresses``): ``sms:+33…`` is not
``whatsapp:+33…``. By SMS they also need a working session (``bot.domain.staff_sms``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.addresses import PHONE_CHANNELS, parse_address, timezone_for
from bot.core.addresses import Address as AddressValue
from bot.storage.models import Address, Contact, Staff, StaffAddress

ROLES = ("mediator", "coordinator")


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
    return staff, created


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
