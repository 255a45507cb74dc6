"""``GET /media/{id}?exp=…&sig=…``: a citizen's photo, voice note or file, for staff.

Links are signed with a key kept in the database (created when the server starts) and
expire. The file is the copy Relais fetched when it arrived (``bot.domain.media_store``), streamed
from the database one chunk at a time: a request never holds a whole file, and the
provider is never called here (its tokens never leave Relais).

A file a person sent could be a web page or an SVG with a script in it: only an allow-list
of image and audio types is shown inline; everything else is a download
(``Content-Disposition: attachment``, ``application/octet-stream``, a file name Relais
makes). Every answer carries ``X-Content-Type-Options: nosniff``,
``Content-Security-Policy: sandbox`` (no script runs on Relais's origin even if a browser
renders it) and ``Cache-Control: private, no-store``.

Reads never take SQLite's write lock (``bot.storage.db.read_only``); a malformed link (a
non-ASCII or garbage ``sig``/``exp``/id) is refused with 403.
"""

from __future__ import annotations

import hmac
import logging
import re

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.i18n import Translator
from bot.domain import media_store
from bot.domain.media_links import ensure_signing_key, signature
from bot.storage.db import read_only
from bot.storage.models import MediaChunk, MediaItem
from bot.web.keys import SERVICES

log = logging.getLogger("relais.web.media")

RETRY_AFTER_S = 30  # while a file is still being fetched

# Shown in the browser; everything else is downloaded. Never SVG, HTML, XML or PDF.
INLINE_TYPES = frozenset({
    "image/jpeg", "image/png", "image/gif", "image/webp",
    "audio/ogg", "audio/mpeg", "audio/mp4", "audio/amr", "audio/aac", "audio/opus",
})
SAFETY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
}
_ID = re.compile(r"[0-9]{1,18}")
_EXP = re.compile(r"[0-9]{1,12}")
_SIG = re.compile(r"[0-9a-f]{32}")


def _translator(request: web.Request) -> Translator:
    wanted = (request.headers.get("Accept-Language") or "").strip().lower()
    return Translator("en" if wanted.startswith("en") else "fr")


def _text(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text, headers={**SAFETY_HEADERS, **headers})


def _checked(request: web.Request) -> tuple[int, int, str] | None:
    """(media id, expiry, signature) when each has its exact shape, else None."""
    raw_id = request.match_info.get("id", "")
    exp, sig = request.query.get("exp", ""), request.query.get("sig", "")
    if not (_ID.fullmatch(raw_id) and _EXP.fullmatch(exp) and _SIG.fullmatch(sig)):
        return None
    return int(raw_id), int(exp), sig


async def serve_media(request: web.Request) -> web.StreamResponse:


    services = request.app[SERVICES]
    _ = _translator(request)
    checked = _checked(request)
    if checked is None:
        return _text(403, _("This link is not valid."))
    media_id, expires, sig = checked
    key = await ensure_signing_key(services.sessions)
    if not hmac.compare_digest(signature(key, media_id, expires), sig):
        return _text(403, _("This link is not valid."))
    if services.clock.now().timestamp() > expires:
        return _text(410, _("This link has expired: ask for the message again."))
    async with read_only(services.db) as conn:
        item = (await conn.execute(
            select(MediaItem.state, MediaItem.content_type, MediaItem.size, MediaItem.chunks)
            .where(MediaItem.id == media_id)
        )).first()
    if item is None:
        return _text(404, _("This file is no longer kept (erased)."))
    state, content_type, size, chunks = item
    if state == media_store.PENDING:
        return _text(503, _("Relais is still fetching this file: try again in a minute."),
                     **{"Retry-After": str(RETRY_AFTER_S)})
    if state != media_store.STORED:
        said = media_store.notice(_, state, size)  # too large, or gone at the provider
        return _text(404, (said or _("file no longer available")) + "\n")
    return await _stream(request, services.db, media_id, content_type, size or 0, chunks)


async def _stream(request: web.Request, db: AsyncEngine, media_id: int, content_type: str,
                  size: int, chunks: int) -> web.StreamResponse:
    kind = content_type.split(";")[0].strip().lower()
    inline = kind in INLINE_TYPES
    name = media_store.file_name(media_id, kind)
    response = web.StreamResponse(headers={
        **SAFETY_HEADERS,
        "Content-Type": kind if inline else "application/octet-stream",
        "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
    })
    response.content_length = size
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    for seq in range(chunks):  # one chunk in memory at a time, each read on its own
        async with read_only(db) as conn:
            data = await conn.scalar(select(MediaChunk.data).where(
                MediaChunk.media_id == media_id, MediaChunk.seq == seq))
        if data is None:  # erased while it was being sent: cut the answer short
            log.info("media %s erased while being sent", media_id)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write(data)
    await response.write_eof()
    return response


def install(app: web.Application) -> None:
    app.router.add_get("/media/{id}", serve_media)
