"""The suppression list: salted hashes of the addresses of people who said STOP and were
then forgotten, so that an import or a broadcast does not write to them again. No address
is kept in clear; the same number on SMS and WhatsApp is one hash."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.addresses import PHONE_CHANNELS, AddressError, parse_address
from bot.core.addresses import Address as AddressValue
from bot.storage.models import KeyValue, Suppression

SALT_KEY = "suppression_salt"


def _is_pg(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"


async def suppression_salt(session: AsyncSession) -> bytes:
    """The secret salt of the suppression hashes, made on first use (safe when racing)."""
    row = await session.get(KeyValue, SALT_KEY)
    if row is None:
        builder = postgresql.insert if _is_pg(session) else sqlite.insert
        await session.execute(
            builder(KeyValue).values(key=SALT_KEY, value=secrets.token_hex(32))
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = await session.get(KeyValue, SALT_KEY, populate_existing=True)
        assert row is not None
    return bytes.fromhex(row.value)


def canonical(address: AddressValue) -> str:
    """One person's number is the same on SMS and WhatsApp: both hash as ``phone:+33…``."""
    if address.channel in PHONE_CHANNELS:
        return f"phone:{address.id}"
    return f"{address.channel}:{address.id}"


def address_hash(salt: bytes, address: AddressValue) -> str:
    return hmac.new(salt, canonical(address).encode(), hashlib.sha256).hexdigest()


_STORED = re.compile(r"^(sms|whatsapp):(\+\d{6,15})$|^(telegram|terminal):(\S+)$")


def _value(address: str | AddressValue) -> AddressValue:
    """An address as stored (``sms:+33…``) is taken as it is; anything else is parsed."""
    if isinstance(address, AddressValue):
        return address
    stored = _STORED.match(address)
    if stored is not None:
        channel, ident = (stored.group(1), stored.group(2)) if stored.group(1) else (
            stored.group(3), stored.group(4)
        )
        return AddressValue(channel, ident)
    return parse_address(address)


async def suppressed(
    session: AsyncSession, addresses: Iterable[str | AddressValue]
) -> set[str]:
    """The given addresses (as ``CHANNEL:ID``) that are on the suppression list."""
    values = []
    for address in addresses:
        try:
            values.append(_value(address))
        except AddressError:
            continue
    if not values:
        return set()
    salt = await suppression_salt(session)
    by_hash = {address_hash(salt, value): value for value in values}
    found: set[str] = set()
    hashes = list(by_hash)
    for start in range(0, len(hashes), 1000):
        rows = await session.scalars(
            select(Suppression.address_hash).where(
                Suppression.address_hash.in_(hashes[start:start + 1000])
            )
        )
        found.update(str(by_hash[h]) for h in rows)
    return {str(v) for v in values if str(v) in found}


async def is_suppressed(session: AsyncSession, address: str | AddressValue) -> bool:
    """True when this address belonged to a person who said STOP and was then forgotten."""
    return bool(await suppressed(session, [address]))


async def suppress(
    session: AsyncSession, addresses: Iterable[str | AddressValue], now: datetime
) -> int:
    """Put addresses on the suppression list (idempotent). Returns how many were given."""
    salt = await suppression_salt(session)
    hashes = {address_hash(salt, _value(a)) for a in addresses}
    if not hashes:
        return 0
    builder = postgresql.insert if _is_pg(session) else sqlite.insert
    await session.execute(
        builder(Suppression).on_conflict_do_nothing(index_elements=["address_hash"]),
        [{"address_hash": h, "created_at": now} for h in sorted(hashes)],
    )
    return len(hashes)


async def unsuppress(session: AsyncSession, address: str | AddressValue) -> bool:
    """Lift the suppression of an address (the person came back and said START or yes)."""
    salt = await suppression_salt(session)
    result = await session.execute(
        delete(Suppression).where(
            Suppression.address_hash == address_hash(salt, _value(address))
        )
    )
    return bool(result.rowcount)
