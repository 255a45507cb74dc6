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

Erasure and retention delete ``media`` rows (``bot.rights``); their chunks go with them
(foreign key ``ON DELETE CASCADE``; SQLite runs with ``secure_delete``).
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.base import Failure, Registry, SendError
from bot.config import Settings
from bot.scheduler import MAX_JOB_ATTEMPTS, current_scheduler, job, prepared, schedule
from bot.storage.db import read_only
from bot.storage.models import Contact, Job, MediaChunk, MediaItem, Staff, Ticket

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


@dataclass(frozen=True)
class Fetched:
    """What the download (outside any transaction) gave."""

    media_id: int
    state: str  # stored, too_large, unavailable
    data: bytes = b""
    content_type: str | None = None
    size: int | None = None
    reason: str | None = None


def _media_id(item: Job) -> int:
    value = item.payload.get("media_id") if isinstance(item.payload, dict) else None
    return int(value if value is not None else item.key.removeprefix("media:"))


def _last_try(item: Job) -> bool:
    return item.attempts >= MAX_JOB_ATTEMPTS


async def _pending(sessions: async_sessionmaker[AsyncSession], media_id: int,
                   state: str = PENDING) -> tuple[str, str] | None:
    """(channel, ref) of a media row in ``state``, read without the write lock."""
    bind = sessions.kw["bind"]
    async with read_only(bind) as conn:
        row = (await conn.execute(
            select(MediaItem.channel, MediaItem.ref)
            .where(MediaItem.id == media_id, MediaItem.state == state)
        )).first()
    return (row[0], row[1]) if row is not None else None


def _running() -> tuple[Registry, async_sessionmaker[AsyncSession], Settings]:
    """The channels, sessions and settings of the scheduler running the job."""
    scheduler = current_scheduler()
    if scheduler is None or scheduler.registry is None or scheduler.settings is None:
        raise RuntimeError("media jobs need a scheduler with channels and settings")
    return scheduler.registry, scheduler.sessions, scheduler.settings


def install_media_jobs() -> None:
    """Register the fetch and provider-delete jobs (they run with the channels of the
    scheduler's own process: ``Services.scheduler``)."""

    async def _download(item: Job, now: datetime) -> Fetched | None:
        registry, sessions, settings = _running()
        media_id = _media_id(item)
        found = await _pending(sessions, media_id)
        if found is None:  # erased, or already done
            return None
        channel_name, ref = found
        fetch = getattr(registry.get(channel_name), "fetch_media", None)
        if fetch is None:
            if _last_try(item):
                return Fetched(media_id, UNAVAILABLE, reason=f"channel {channel_name} is off")
            raise RuntimeError(f"channel {channel_name} is not configured in this process")
        try:
            data, content_type = await fetch(ref)
        except web.HTTPNotFound:
            return Fetched(media_id, UNAVAILABLE, reason="the provider no longer has it")
        except SendError as exc:
            if exc.failure is Failure.FAILED or _last_try(item):
                return Fetched(media_id, UNAVAILABLE, reason=exc.reason[:200])
            raise
        except web.HTTPException as exc:  # the adapters answer a 502 for a provider error
            if _last_try(item):
                return Fetched(media_id, UNAVAILABLE, reason=exc.text or exc.reason)
            raise RuntimeError(f"download failed: {exc.text or exc.reason}") from None
        size = len(data)
        if size > max_bytes(settings):
            return Fetched(media_id, TOO_LARGE, size=size)
        return Fetched(media_id, STORED, data=bytes(data), content_type=content_type, size=size)

    @job(FETCH_JOB, prepare=_download)
    async def _store(session: AsyncSession, item: Job, now: datetime) -> None:
        fetched: Fetched | None = prepared()
        if fetched is None:
            return
        registry, _sessions, settings = _running()
        media = await session.get(MediaItem, fetched.media_id)
        if media is None or media.state != PENDING:  # erased while it downloaded
            return
        media.state, media.size = fetched.state, fetched.size
        if fetched.state == STORED:
            await _write_chunks(session, media, fetched.data)
            media.stored_at = now
            if fetched.content_type and media.content_type in ("", "application/octet-stream"):
                media.content_type = fetched.content_type[:100]
        elif fetched.state == TOO_LARGE:
            await _tell_too_large(session, media, now, settings.media_max_mb)
        log.info("media %s: %s%s", media.id, media.state,
                 f" ({fetched.reason})" if fetched.reason else "")
        if fetched.state in (STORED, TOO_LARGE) and hasattr(
            registry.get(media.channel), "delete_media"
        ):
            await schedule(session, DELETE_JOB, f"media:{media.id}", now,
                           {"media_id": media.id}, about=media.contact_id)

    async def _delete_at_provider(item: Job, now: datetime) -> bool:
        registry, sessions, _settings = _running()
        media_id = _media_id(item)
        for state in (STORED, TOO_LARGE):
            found = await _pending(sessions, media_id, state)
            if found is not None:
                break
        else:
            return False
        channel_name, ref = found
        delete = getattr(registry.get(channel_name), "delete_media", None)
        if delete is None:
            raise RuntimeError(f"channel {channel_name} is not configured in this process")
        try:
            await delete(ref)
        except SendError as exc:
            if exc.failure is Failure.FAILED or _last_try(item):
                log.warning("media %s: not deleted at the provider (%s)", media_id, exc.reason)
                return False
            raise
        return True

    @job(DELETE_JOB, prepare=_delete_at_provider)
    async def _mark_deleted(session: AsyncSession, item: Job, now: datetime) -> None:
        if prepared():
            media = await session.get(MediaItem, _media_id(item))
            if media is not None:
                media.provider_deleted_at = now


async def _write_chunks(session: AsyncSession, media: MediaItem, data: bytes) -> None:
    view = memoryview(data)
    count = 0
    for count, start in enumerate(range(0, len(data), CHUNK), start=1):
        session.add(MediaChunk(media_id=media.id, seq=count - 1,
                               data=bytes(view[start:start + CHUNK])))
        if count % 16 == 0:
            await session.flush()
    media.chunks = count
    await session.flush()


async def _tell_too_large(session: AsyncSession, media: MediaItem, now: datetime,
                          limit_mb: float) -> None:
    """The mediator holding the person's ticket learns the file was not kept."""
    from bot import notify, queue

    ticket = await session.scalar(
        select(Ticket).where(Ticket.contact_id == media.contact_id, Ticket.state == "taken",
                             Ticket.mediator_id.is_not(None))
    )
    if ticket is None or ticket.mediator_id is None:
        return  # the take summary says it (bot.notify.entry_lines)
    holder = await session.get(Staff, ticket.mediator_id)
    if holder is None:
        return
    contact = await session.get(Contact, media.contact_id)
    name = queue.first_name(contact.name if contact else None) or "?"
    size = media.size or 0
    limit = f"{limit_mb:g}"

    def make(_: Any) -> str:
        return _("#{id} {name} sent a file too large for Relais ({size} MB, over {limit} MB): "
                 "ask the person to bring it.", id=ticket.id, name=name,
                 size=megabytes(size), limit=limit)

    await notify.tell(session, holder, now, make, about=(media.contact_id,))


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
