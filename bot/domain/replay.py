"""Seen webhook signatures: a captured request sent again in another shape is refused.

Twilio signs ``URL + name1 + value1 + name2 + value2 …`` with no separator, so a request can
be reshaped without breaking its signature: ``MessageSid=SM…`` followed by ``NumMedia=0``
signs the same bytes as ``MessageSid=SM…NumMedia0`` with no ``NumMedia`` at all. Each
verified webhook therefore records, in ``seen_signatures`` (shared by every process on the
database), two SHA-256 digests, never the signature itself:

- the *signature* digest: ``sha256(provider + signature)``;
- the *request* digest: ``sha256(provider + signature + the exact fields received)``.

On the next request with the same signature:

- same request digest: the very same request, a genuine provider retry. It goes on as
  usual and the provider id deduplicates it (the message is stored once, the status moves
  forward only). A first attempt that failed before storing is processed: nothing is lost;
- different request digest: the same signature over other fields, a replay. Refused, and
  nothing is written.

Rows are kept 48 hours (``KEEP``), purged by the process that records, at most once every
``PURGE_EVERY``, with the time of the injected clock (never the database's ``now()``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.channel import Verdict
from bot.core.clock import Clock
from bot.storage.models import SeenSignature

log = logging.getLogger("relais.replay")

KEEP = timedelta(hours=48)
PURGE_EVERY = timedelta(minutes=10)


def signature_digest(provider: str, signature: str) -> str:
    """The key of a seen signature: ``sha256(provider + signature)`` in hex."""
    return hashlib.sha256((provider + signature).encode("utf-8")).hexdigest()


def request_digest(provider: str, signature: str, fields: str) -> str:
    """The key of one exact signed request (``fields``: a canonical form of what was signed)."""
    text = json.dumps([provider, signature, fields], ensure_ascii=True)
    return hashlib.sha256(("request:" + text).encode("utf-8")).hexdigest()


_PURGED_AT: dict[str, datetime] = {}  # by database URL: when this process last purged


async def check(
    sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
    provider: str,
    signature: str,
    fields: str,
) -> Verdict:
    """Record a verified request's signature and say whether it was seen before, in a
    transaction of its own (``record`` is the same inside a shared one: the group commit).

    Committed before the request is handled, so every other process sees it at once. The
    signature digest is inserted with ``ON CONFLICT DO NOTHING``: of two processes given the
    same signature at the same moment, exactly one records it first."""
    async with sessions() as session, session.begin():
        return await record(session, clock.now(), provider, signature, fields)


async def record(session: AsyncSession, now: datetime, provider: str, signature: str,
                 fields: str) -> Verdict:
    """``check`` inside the caller's transaction."""
    sig_key = signature_digest(provider, signature)
    request_key = request_digest(provider, signature, fields)
    postgres = session.bind.dialect.name == "postgresql"
    builder = postgresql.insert if postgres else sqlite.insert
    inserted = await session.execute(
        builder(SeenSignature)
        .values(digest=sig_key, provider=provider, seen_at=now)
        .on_conflict_do_nothing(index_elements=["digest"])
    )
    if inserted.rowcount:  # type: ignore[attr-defined]
        await session.execute(
            builder(SeenSignature).values(digest=request_key, provider=provider, seen_at=now)
            .on_conflict_do_nothing(index_elements=["digest"]))
        verdict = Verdict.NEW
    else:
        same = await session.scalar(
            select(SeenSignature.digest).where(SeenSignature.digest == request_key)
        )
        verdict = Verdict.RETRY if same is not None else Verdict.REPLAY
    database = str(session.bind.url)
    last = _PURGED_AT.get(database)
    if last is None or now - last >= PURGE_EVERY or now < last:
        await purge(session, now)
        _PURGED_AT[database] = now
    return verdict


async def purge(session: AsyncSession, now: datetime) -> int:
    """Forget the signatures seen more than 48 hours before ``now``; how many rows went."""
    result = await session.execute(
        delete(SeenSignature).where(SeenSignature.seen_at < now - KEEP)
        .execution_options(synchronize_session=False)
    )
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        log.info("seen signatures: %d older than %s purged", count, KEEP)
    return count
