"""The jobs of a citizen's files (``bot.domain.media_store``): ``media.fetch`` downloads a
file with its channel's ``fetch_media`` before its transaction (a download never holds a
database lock), then stores it in chunks, or tells the mediator it was too large;
``media.provider_delete`` deletes it at the provider where the API allows. Both run with
the channels of the scheduler's own process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.channel import Failure, SendError
from bot.delivery.scheduler import MAX_JOB_ATTEMPTS, JobContext, JobEnv, JobKind, schedule
from bot.domain.media_store import (
    DELETE_JOB,
    FETCH_JOB,
    PENDING,
    STORED,
    TOO_LARGE,
    UNAVAILABLE,
    max_bytes,
    megabytes,
    write_chunks,
)
from bot.domain.tickets import notify, queue
from bot.storage.db import read_only
from bot.storage.models import Contact, Job, MediaItem, Staff, Ticket

log = logging.getLogger("relais.media")


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


async def _download(env: JobEnv, item: Job) -> Fetched | None:
    """Fetch the file from its channel, outside any transaction."""
    registry, sessions, settings = env.registry, env.sessions, env.settings
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

async def _store(jc: JobContext, item: Job) -> None:
    fetched: Fetched | None = jc.prepared
    if fetched is None:
        return
    session, now, registry, settings = jc.session, jc.now, jc.registry, jc.settings
    media = await session.get(MediaItem, fetched.media_id)
    if media is None or media.state != PENDING:  # erased while it downloaded
        return
    media.state, media.size = fetched.state, fetched.size
    if fetched.state == STORED:
        await write_chunks(session, media, fetched.data)
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

async def _delete_at_provider(env: JobEnv, item: Job) -> bool:
    registry, sessions = env.registry, env.sessions
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

async def _mark_deleted(jc: JobContext, item: Job) -> None:
    if jc.prepared:
        media = await jc.session.get(MediaItem, _media_id(item))
        if media is not None:
            media.provider_deleted_at = jc.now


# The fetch and provider-delete jobs run with the channels of the scheduler's own process.
JOBS = (
    JobKind(FETCH_JOB, _store, prepare=_download),
    JobKind(DELETE_JOB, _mark_deleted, prepare=_delete_at_provider),
)


async def _tell_too_large(session: AsyncSession, media: MediaItem, now: datetime,
                          limit_mb: float) -> None:
    """The mediator holding the person's ticket learns the file was not kept."""
    ticket = await session.scalar(
        select(Ticket).where(Ticket.contact_id == media.contact_id, Ticket.state == "taken",
                             Ticket.mediator_id.is_not(None))
    )
    if ticket is None or ticket.mediator_id is None:
        return  # the take summary says it (bot.domain.tickets.notify.entry_lines)
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
