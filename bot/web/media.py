"""``GET /media/{id}?exp=…&sig=…``: a citizen's photo or voice note for staff.

Links are signed with a key kept in the database (generated on first use) and expire.
Relais fetches the file from the provider with its own credentials, so provider tokens
(in Telegram file URLs, WhatsApp bearer tokens) never leave Relais.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels.base import SendError
from bot.storage.models import KeyValue, MediaItem

LINK_TTL = timedelta(days=7)
KEY_NAME = "media_link_key"


async def signing_key(session: AsyncSession) -> bytes:
    row = await session.get(KeyValue, KEY_NAME)
    if row is None:
        row = KeyValue(key=KEY_NAME, value=secrets.token_hex(32))
        session.add(row)
        await session.flush()
    return bytes.fromhex(row.value)


def _signature(key: bytes, media_id: int, expires: int) -> str:
    message = f"{media_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


async def media_link(
    session: AsyncSession, base_url: str, media_id: int, now: datetime
) -> str:
    """A link staff can open until it expires."""
    expires = int((now + LINK_TTL).timestamp())
    sig = _signature(await signing_key(session), media_id, expires)
    return f"{base_url}/media/{media_id}?exp={expires}&sig={sig}"


async def serve_media(request: web.Request) -> web.StreamResponse:
    from bot.web.app import SERVICES

    services = request.app[SERVICES]
    try:
        media_id = int(request.match_info["id"])
        expires = int(request.query.get("exp", ""))
    except ValueError:
        raise web.HTTPForbidden(text="invalid link") from None
    sig = request.query.get("sig", "")
    now = services.clock.now()
    async with services.sessions() as session, session.begin():
        key = await signing_key(session)
        expected = _signature(key, media_id, expires)
        if not hmac.compare_digest(expected, sig):
            raise web.HTTPForbidden(text="invalid link")
        if now.timestamp() > expires:
            raise web.HTTPGone(text="this link has expired")
        item = await session.scalar(select(MediaItem).where(MediaItem.id == media_id))
    if item is None:
        raise web.HTTPNotFound(text="no such media (erased?)")
    channel = services.registry.get(item.channel)
    fetch = getattr(channel, "fetch_media", None)
    if fetch is None:
        raise web.HTTPServiceUnavailable(text=f"channel {item.channel} is not configured")
    try:
        data, content_type = await fetch(item.ref)
    except SendError as exc:
        raise web.HTTPBadGateway(text=f"the provider did not give the file ({exc.reason})") \
            from None
    return web.Response(body=data, content_type=content_type or item.content_type,
                        headers={"Cache-Control": "private, no-store"})


def install(app: web.Application) -> None:
    app.router.add_get("/media/{id}", serve_media)
