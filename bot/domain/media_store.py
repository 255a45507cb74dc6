"""A citizen's files, kept by Relais: fetched once when they arrive, stored in chunks.

Provider links expire (a WhatsApp media id, a Telegram ``file_id``), and fetching a file on
every view held it whole in memory per request. So each ``MediaItem`` gets a
``media.fetch`` job in the transaction that creates it (``plan_fetch``). The job downloads
the file with the channel adapter's ``fetch_media`` *before* its transaction (a download
never holds a database lock), then writes it as ``media_chunks`` rows of at most ``CHUNK``
bytes, which ``/media`` streams one by one (``bot.web.media``). A failed download is retried
by the scheduler; a file the provider no longer gives ends ``unavailable``.

A file over ``RELAIS_MEDIA_MAX_MB`` is not kept (state ``too_large``): the mediator holding
the person's ticket is told to ask the person to bring it, and the ticket's summary says so.

Once Relais holds its copy (or decided not to keep the file), a ``media.provider_delete``
job deletes it at the provider where the API allows: Twilio (the Media resource). The
WhatsApp Cloud API's ``DELETE /{media-id}`` is for media the business uploaded, and the Bot
API has no way to delete a file a person sent: there the provider's own retention applies.

Erasure and retention delete ``media`` rows (``bot.domain.rights``); their chunks go with them
(foreign key ``ON DELETE CASCADE``; SQLite runs with ``secure_delete``).
"""

from __future__ import annotations

import logging
import mimetypes
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.config import Settings
from bot.delivery.scheduler import schedule
from bot.storage.models import MediaChunk, MediaItem

log = logging.getLogger("relais.media")

CHUNK = 256 * 1024  # bytes per media_chunks row: what /media holds per request at a time
FETCH_JOB = "media.fetch"
DELETE_JOB = "media.provider_delete"

PENDING, STORED, TOO_LARGE, UNAVAILABLE = "pending", "stored", "too_large", "unavailable"


async def plan_fetch(session: AsyncSession, item: MediaItem, now: datetime) -> MediaItem:
    """Add ``item`` and plan its fetch, in the caller's transaction."""
    session.add(item)
    await session.flush()
    await schedule(session, FETCH_JOB, f"media:{item.id}", now, {"media_id": item.id},
                   about=item.contact_id)
    return item


def max_bytes(settings: Settings) -> int:
    return int(settings.media_max_mb * 1024 * 1024)


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}".rstrip("0").rstrip(".")


async def write_chunks(session: AsyncSession, media: MediaItem, data: bytes) -> None:
    view = memoryview(data)
    count = 0
    for count, start in enumerate(range(0, len(data), CHUNK), start=1):
        session.add(MediaChunk(media_id=media.id, seq=count - 1,
                               data=bytes(view[start:start + CHUNK])))
        if count % 16 == 0:
            await session.flush()
    media.chunks = count
    await session.flush()


def notice(_: Any, state: str, size: int | None) -> str | None:
    """What staff read instead of a link when there is no file to open; else None."""
    if state == TOO_LARGE:
        return _("file too large ({size} MB), ask the person to bring it",
                 size=megabytes(size or 0))
    if state == UNAVAILABLE:
        return _("file no longer available")
    return None


def file_name(media_id: int, content_type: str) -> str:
    """A safe download name: ``relais-media-12.pdf`` (the extension from the type only)."""
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip().lower()) or ""
    if not (extension[1:].isascii() and extension[1:].isalnum()):
        extension = ""
    return f"relais-media-{media_id}{extension}"
