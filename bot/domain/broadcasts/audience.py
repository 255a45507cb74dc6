"""Who gets a broadcast and what they read: the segment, the texts, choosing the
recipients batch by batch (with the reason each one left out is left out), the preview."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import sms
from bot.core.addresses import POSTCODE_TIMEZONES, timezone_for
from bot.core.addresses import Address as AddressValue
from bot.core.config import Settings
from bot.core.i18n import Translator
from bot.delivery.quiet import next_allowed
from bot.domain.broadcasts import base
from bot.domain.broadcasts.base import (
    _LANGUAGE,
    _POSTCODE,
    PURPOSE,
    REASONS,
    SENDABLE_CHANNELS,
    WEEK,
    BroadcastError,
)
from bot.storage import suppression
from bot.storage.models import Address, Broadcast, Consent, Contact, Outbox, Tag

# -- what and to whom ------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Who a broadcast is for. Empty filters mean everyone."""

    tags: tuple[str, ...] = ()
    language: str | None = None
    postcode: str | None = None  # a prefix: "59" is the Nord département
    channel: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"tags": list(self.tags), "language": self.language,
                "postcode": self.postcode, "channel": self.channel}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Segment:
        data = data or {}
        return cls(tuple(data.get("tags") or ()), data.get("language"), data.get("postcode"),
                   data.get("channel"))

    def describe(self) -> str:
        parts = [f"tag {t}" for t in self.tags]
        if self.language:
            parts.append(f"language {self.language}")
        if self.postcode:
            parts.append(f"postcode {self.postcode}*")
        if self.channel:
            parts.append(f"channel {self.channel}")
        return ", ".join(parts) or "everyone"


def make_segment(
    tags: Iterable[str] = (), language: str | None = None, postcode: str | None = None,
    channel: str | None = None,
) -> Segment:
    """A checked segment; raise BroadcastError naming the faulty option."""
    given = list(tags)
    if any(not t.strip() for t in given):
        raise BroadcastError("--tag: empty tag")
    clean_tags = tuple(dict.fromkeys(t.strip() for t in given))
    lang = language.strip().lower() if language else None
    if lang is not None and not _LANGUAGE.match(lang):
        raise BroadcastError(f"--language: expected a language code like fr or en, "
                             f"got {language!r}")
    prefix = postcode.strip().upper().replace(" ", "") if postcode else None
    if prefix is not None and not _POSTCODE.match(prefix):
        raise BroadcastError(f"--postcode: expected the start of a postcode like 59 or "
                             f"75011, got {postcode!r}")
    chan = channel.strip().lower() if channel else None
    if chan is not None and chan not in SENDABLE_CHANNELS:
        raise BroadcastError(f"--channel: one of {', '.join(SENDABLE_CHANNELS)}, "
                             f"got {channel!r}")
    return Segment(clean_tags, lang, prefix, chan)


def make_texts(text: str | None = None, file_content: str | None = None) -> dict[str, str]:
    """``--text`` (one text for everyone) or ``--file`` (YAML, one text per language, French
    as the fallback) → ``{language: text}``; raise BroadcastError."""
    if (text is None) == (file_content is None):
        raise BroadcastError("give the text with --text TEXT or --file FILE.yaml")
    if text is not None:
        if not text.strip():
            raise BroadcastError("--text: empty text")
        return {"fr": text.strip()}
    assert file_content is not None
    try:
        data = yaml.safe_load(file_content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise BroadcastError(f"--file: not valid YAML{where}") from None
    if not isinstance(data, dict) or not data:
        raise BroadcastError("--file: expected one text per language, like  fr: Bonjour …")
    texts: dict[str, str] = {}
    for key, value in data.items():
        code = str(key).strip().lower()
        if not _LANGUAGE.match(code):
            raise BroadcastError(f"--file: {key!r} is not a language code like fr or en")
        if not isinstance(value, str) or not value.strip():
            raise BroadcastError(f"--file: the {code} text is empty or not text")
        texts[code] = value.strip()
    if "fr" not in texts:
        raise BroadcastError("--file: a French text (fr) is needed: it goes to everyone "
                             "whose language has no text")
    return texts


def text_language(texts: dict[str, str], language: str | None) -> str:
    """The language of the text a person gets: theirs when there is one, else French."""
    return language if language and language in texts else "fr"


def render(texts: dict[str, str], language: str) -> str:
    """The message as sent: the text, then how to stop, in the text's language."""
    _ = Translator(language)
    return texts[language].strip() + "\n\n" + _("STOP to stop receiving")


def sms_segments(body: str) -> int:
    return sms.segments(sms.normalise(body))


# -- choosing recipients -----------------------------------------------------------------------


@dataclass
class Candidate:
    """A contact of the segment and the address that would be used."""

    contact_id: int
    language: str  # the contact's language ("fr" when unknown)
    postcode: str | None
    timezone: str | None
    opted_out: bool
    address_id: int | None
    channel: str | None
    external_id: str | None
    blocked: bool
    landline: bool
    consent: bool = False
    capped: bool = False
    suppressed: bool = False

    @property
    def address(self) -> str:
        return f"{self.channel}:{self.external_id}"

    def reason(self) -> str | None:
        """Why this person is left out (the first reason that applies), or None."""
        if self.address_id is None:
            return "no_address"
        if self.opted_out:
            return "stop"
        if not self.consent:
            return "no_consent"
        if self.blocked:
            return "blocked"
        if self.landline and self.channel == "sms":
            return "landline"
        if self.suppressed:
            return "suppressed"
        if self.capped:
            return "weekly_cap"
        return None


@dataclass
class Batch:
    recipients: list[Candidate]
    excluded: Counter[str]
    last_id: int | None  # the last contact id looked at; None when there were none
    full: bool  # as many contacts as asked: there may be more


def _contact_filters(segment: Segment) -> list[Any]:
    """The segment's conditions on contacts (the channel is checked on their address)."""
    where: list[Any] = []
    for tag in segment.tags:
        where.append(
            select(Tag.contact_id)
            .where(Tag.contact_id == Contact.id, func.lower(Tag.tag) == tag.lower())
            .exists()
        )
    if segment.language:
        where.append(func.coalesce(Contact.language, "fr") == segment.language)
    if segment.postcode:
        where.append(func.upper(Contact.postcode).like(segment.postcode + "%"))
    return where


def _among(column: Any, ids: list[int]) -> Any:
    """``column`` is one of ``ids`` (sorted): a range when they are dense (no long list of
    parameters to render and send), else a list. Extra rows of a range are ignored."""
    if ids[-1] - ids[0] < 4 * len(ids):
        return and_(column >= ids[0], column <= ids[-1])
    return column.in_(ids)


async def _addresses(
    connection: Any, contacts: dict[int, int | None]
) -> dict[int, tuple[int, str, str, bool, bool]]:
    """The address a broadcast uses for each contact: where they last wrote from, else
    their first. ``contacts`` maps contact id → last address id. Plain index lookups, so
    the plan stays good even before the statistics of a fresh import are gathered."""
    rows = await connection.execute(
        select(Address.id, Address.contact_id, Address.channel, Address.external_id,
               Address.blocked_at.is_not(None), Address.landline)
        .where(_among(Address.contact_id, list(contacts)))
        .order_by(Address.contact_id, Address.id)
    )
    chosen: dict[int, tuple[int, str, str, bool, bool]] = {}
    for aid, cid, channel, ext, blocked, landline in rows.all():
        if cid not in chosen or aid == contacts.get(cid):
            chosen[cid] = (aid, channel, ext, bool(blocked), bool(landline))
    return chosen


async def _suppressed(session: AsyncSession, addresses: list[str]) -> set[str]:
    """The addresses on the suppression list (``bot.domain.rights``, guarded: built alongside)."""
    if not addresses:
        return set()
    try:
        from bot.domain import rights
    except ImportError:
        return set()
    from bot.storage.models import Suppression

    if (await session.scalar(select(Suppression.address_hash).limit(1))) is None:
        return set()  # nothing suppressed: no need to hash every address
    batch_check = getattr(rights, "suppressed", None)
    if batch_check is not None:
        return set(await batch_check(session, addresses))
    check = suppression.is_suppressed
    return {a for a in addresses if await check(session, a)}


async def select_batch(
    session: AsyncSession,
    segment: Segment,
    settings: Settings,
    now: datetime,
    *,
    after: int = 0,
    limit: int | None = None,
    broadcast_id: int | None = None,
) -> Batch:
    """The next ``limit`` contacts of the segment after contact id ``after``, classified
    (``base.BATCH`` of them by default)."""
    limit = limit or base.BATCH
    connection = await session.connection()  # Core rows: no ORM loading needed here
    contacts = (await connection.execute(
        select(Contact.id, Contact.language, Contact.postcode, Contact.timezone,
               Contact.opted_out_at.is_not(None), Contact.last_address_id)
        .where(Contact.id > after, *_contact_filters(segment))
        .order_by(Contact.id)
        .limit(limit)
    )).all()
    if not contacts:
        return Batch([], Counter(), None, False)
    addresses = await _addresses(connection, {row[0]: row[5] for row in contacts})
    found = []
    for cid, lang, postcode, tz, opted, _last in contacts:
        aid, channel, ext, blocked, landline = addresses.get(
            cid, (None, None, None, False, False))
        if segment.channel and channel != segment.channel:
            continue  # reached on another channel: not in this segment
        found.append(Candidate(cid, lang or "fr", postcode, tz, bool(opted), aid, channel,
                               ext, blocked, landline))
    high = contacts[-1][0]
    full = len(contacts) == limit
    if not found:
        return Batch([], Counter(), high, full)
    ids = [item.contact_id for item in found]
    consent = await _consents(session, ids)
    capped = await _capped(session, settings, now, ids, broadcast_id)
    for item in found:
        item.consent = consent.get(item.contact_id, False)
        item.capped = item.contact_id in capped
    suppressed = await _suppressed(
        session, [item.address for item in found if item.reason() in (None, "weekly_cap")])
    recipients: list[Candidate] = []
    excluded: Counter[str] = Counter()
    for item in found:
        item.suppressed = item.address_id is not None and item.address in suppressed
        reason = item.reason()
        if reason is None:
            recipients.append(item)
        else:
            excluded[reason] += 1
    return Batch(recipients, excluded, high, full)


async def _consents(session: AsyncSession, ids: list[int]) -> dict[int, bool]:
    """The latest "news" decision of each of these contacts."""
    rows = await session.execute(
        select(Consent.contact_id, Consent.granted)
        .where(Consent.purpose == PURPOSE, _among(Consent.contact_id, ids))
        .order_by(Consent.contact_id, Consent.at, Consent.id)
    )
    return {cid: bool(granted) for cid, granted in rows.all()}  # the last one wins


async def _capped(
    session: AsyncSession, settings: Settings, now: datetime, ids: list[int],
    broadcast_id: int | None,
) -> set[int]:
    """Those of these contacts who already got the weekly number of broadcasts.

    A broadcast counts once per person (a fallback copy is the same one) unless it was
    cancelled or failed for them; ``--test`` broadcasts do not count."""
    cap = settings.max_broadcasts_per_week
    real = select(Broadcast.id).where(Broadcast.test_address.is_(None))
    where = [
        Outbox.broadcast_id.is_not(None),
        Outbox.broadcast_id.in_(real),
        _among(Outbox.contact_id, ids),
        Outbox.created_at > now - WEEK, Outbox.created_at <= now,
        or_(Outbox.status.not_in(("cancelled", "failed")), Outbox.held.is_(True)),
    ]
    if broadcast_id is not None:
        where.append(Outbox.broadcast_id != broadcast_id)
    rows = await session.execute(
        select(Outbox.contact_id)
        .where(*where)
        .group_by(Outbox.contact_id)
        .having(func.count(func.distinct(Outbox.broadcast_id)) >= cap)
    )
    return {cid for (cid,) in rows.all()}


def recipient_timezone(item: Candidate, settings: Settings) -> str:
    """The person's zone: as stored, else from their postcode or number, else the default."""
    if item.timezone:
        return item.timezone
    if item.external_id and item.external_id.startswith("+33") and not (
        item.postcode and item.postcode[:3] in POSTCODE_TIMEZONES
    ):
        return settings.timezone  # metropolitan number: no need to parse it
    address = (AddressValue(item.channel, item.external_id)
               if item.channel and item.external_id else None)
    return timezone_for(item.postcode, address, settings.timezone)


# -- preview ---------------------------------------------------------------------------------


@dataclass
class Preview:
    segment: Segment
    texts: dict[str, str]
    recipients: int = 0
    by_channel: Counter[str] = field(default_factory=Counter)
    by_language: Counter[str] = field(default_factory=Counter)  # the contacts' languages
    by_text: Counter[str] = field(default_factory=Counter)  # the language of their text
    sms_by_text: Counter[str] = field(default_factory=Counter)
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    in_quiet_hours: int = 0
    test_address: str | None = None

    def add(self, batch: Batch, settings: Settings, now: datetime,
            zones: dict[str, datetime]) -> None:
        self.excluded.update(batch.excluded)
        for item in batch.recipients:
            self.recipients += 1
            channel = item.channel or "?"
            lang = text_language(self.texts, item.language)
            self.by_channel[channel] += 1
            self.by_language[item.language] += 1
            self.pairs[(channel, item.language)] += 1
            self.by_text[lang] += 1
            if channel == "sms":
                self.sms_by_text[lang] += 1
            if _resume_at(item, settings, now, zones) > now:
                self.in_quiet_hours += 1

    def as_json(self, settings: Settings) -> dict[str, Any]:
        texts = []
        segments_total = 0
        for lang in sorted(set(self.texts) | set(self.by_text),
                           key=lambda code: (code != "fr", code)):
            body = render(self.texts, text_language(self.texts, lang))
            count = sms_segments(body)
            segments_total += count * self.sms_by_text[lang]
            texts.append({
                "language": lang, "text": body, "sms_segments": count,
                "encoding": sms.encoding(sms.normalise(body)),
                "recipients": self.by_text[lang], "sms_recipients": self.sms_by_text[lang],
            })
        return {
            "segment": self.segment.as_json(),
            "test_address": self.test_address,
            "recipients": self.recipients,
            "by_channel": dict(sorted(self.by_channel.items())),
            "by_language": dict(sorted(self.by_language.items())),
            "by_channel_language": [
                {"channel": c, "language": lang, "recipients": n}
                for (c, lang), n in sorted(self.pairs.items())
            ],
            "excluded": {reason: self.excluded[reason] for reason in REASONS},
            "excluded_total": sum(self.excluded.values()),
            "in_quiet_hours": self.in_quiet_hours,
            "texts": texts,
            "sms_segments": segments_total,
            "sms_segment_price": settings.sms_segment_price,
            "estimated_cost": round(segments_total * settings.sms_segment_price, 2),
        }


async def preview(
    session: AsyncSession,
    segment: Segment,
    texts: dict[str, str],
    settings: Settings,
    now: datetime,
    *,
    test_address: str | None = None,
    batch_size: int | None = None,
) -> Preview:
    """Who would get the broadcast now, who is left out and why; nothing is written."""
    result = Preview(segment, texts, test_address=test_address)
    zones: dict[str, datetime] = {}
    if test_address is not None:
        item = await test_candidate(session, test_address)
        if item is not None:
            batch = Batch([item], Counter(), None, False)
            if item.opted_out or item.blocked:
                batch = Batch([], Counter({"stop" if item.opted_out else "blocked": 1}),
                              None, False)
            result.add(batch, settings, now, zones)
        else:  # a new address: it would be created, in French
            result.recipients = 1
            channel = test_address.partition(":")[0]
            result.by_channel[channel] += 1
            result.by_language["fr"] += 1
            result.by_text["fr"] += 1
            result.pairs[(channel, "fr")] += 1
            if channel == "sms":
                result.sms_by_text["fr"] += 1
        return result
    after = 0
    while True:
        batch = await select_batch(session, segment, settings, now, after=after,
                                   limit=batch_size or base.BATCH)
        result.add(batch, settings, now, zones)
        if not batch.full or batch.last_id is None:
            return result
        after = batch.last_id


def _resume_at(item: Candidate, settings: Settings, now: datetime,
               zones: dict[str, datetime]) -> datetime:
    """When the person may get it: now, or the end of their quiet hours."""
    tz = recipient_timezone(item, settings)
    when = zones.get(tz)
    if when is None:
        when = zones[tz] = next_allowed(settings.quiet, tz, now)
    return when


async def test_candidate(session: AsyncSession, address: str) -> Candidate | None:
    channel, _, external_id = address.partition(":")
    row = (
        await session.execute(
            select(Contact.id, Contact.language, Contact.postcode, Contact.timezone,
                   Contact.opted_out_at, Address.id, Address.channel, Address.external_id,
                   Address.blocked_at, Address.landline)
            .join(Address, Address.contact_id == Contact.id)
            .where(Address.channel == channel, Address.external_id == external_id)
        )
    ).first()
    if row is None:
        return None
    cid, lang, postcode, tz, opted, aid, chan, ext, blocked, landline = row
    return Candidate(cid, lang or "fr", postcode, tz, opted is not None, aid, chan, ext,
                     blocked is not None, bool(landline), consent=True)
