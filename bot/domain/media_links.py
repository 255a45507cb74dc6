"""Signed links to a citizen's file for staff (``GET /media/{id}?exp=…&sig=…``, served by
``bot.web.media``): an HMAC of the id and expiry with a key kept in the database."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.core.i18n import Translator
from bot.domain import media_store
from bot.storage.db import read_only
from bot.storage.keys import generated_key
from bot.storage.models import KeyValue, MediaItem

LINK_TTL = timedelta(days=7)
KEY_NAME = "media_link_key"


async def signing_key(session: AsyncSession) -> bytes:
    """The key, created in the caller's (write) transaction when missing."""
    return await generated_key(session, KEY_NAME)


async def ensure_signing_key(sessions: async_sessionmaker[AsyncSession]) -> bytes:
    """The key, read without the write lock; created in one short transaction only when it
    is missing (at start, so ``/media`` itself never writes)."""
    key = await _stored_key(sessions.kw["bind"])
    if key is not None:
        return key
    async with sessions() as session, session.begin():
        return await signing_key(session)


async def _stored_key(db: AsyncEngine) -> bytes | None:
    async with read_only(db) as conn:
        value = await conn.scalar(select(KeyValue.value).where(KeyValue.key == KEY_NAME))
    return bytes.fromhex(value) if value else None


def signature(key: bytes, media_id: int, expires: int) -> str:
    message = f"{media_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


async def media_link(
    session: AsyncSession, base_url: str, media_id: int, now: datetime
) -> str:
    """A link staff can open until it expires."""
    expires = int((now + LINK_TTL).timestamp())
    sig = signature(await signing_key(session), media_id, expires)
    return f"{base_url}/media/{media_id}?exp={expires}&sig={sig}"


async def staff_link(
    session: AsyncSession, base_url: str, media_id: int, now: datetime, _: Translator
) -> str:
    """The link, or what to do instead when Relais has no file to show (too large)."""
    item = await session.get(MediaItem, media_id)
    said = media_store.notice(_, item.state, item.size) if item is not None else None
    return said if said is not None else await media_link(session, base_url, media_id, now)
