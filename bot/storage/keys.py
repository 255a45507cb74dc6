"""Secret keys Relais generates for itself and keeps in the ``kv`` table (the key that
signs media links, the key that hashes staff one-time codes)."""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.models import KeyValue


async def generated_key(session: AsyncSession, name: str) -> bytes:
    """The key called ``name``, created (32 random bytes) in the caller's transaction when
    missing."""
    row = await session.get(KeyValue, name)
    if row is None:
        row = KeyValue(key=name, value=secrets.token_hex(32))
        session.add(row)
        await session.flush()
    return bytes.fromhex(row.value)
