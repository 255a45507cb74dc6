"""People, staff and rooms that several test modules seed the same way."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import Services
from bot.core.render import numbered
from bot.core.types import Inbound, Media
from bot.domain.staff import add_staff
from bot.storage.models import Address, Consent, Contact, Tag
from tests.helpers.dialog import RecordingChannel

# -- staff and a room of people talking at once ---------------------------------------------

MONDAY_10 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)  # 10:00 in Paris: open


class Room:
    """Several people talking to Relais at once; ``send`` returns, per recipient id, the
    texts each one received (numbered choices rendered as on SMS)."""

    _ids = itertools.count()

    def __init__(self, services: Services) -> None:
        self.services = services
        self.recorders = [RecordingChannel(name="terminal"), RecordingChannel(name="sms")]
        for recorder in self.recorders:
            services.registry.add(recorder)
        self.worker = services.outbox_worker()
        self.seen = 0

    def _all(self) -> list:
        return sorted((m for r in self.recorders for m in r.sent), key=lambda m: m.id)

    async def send(self, who: str, text: str = "", *, media: tuple[Media, ...] = (),
                   name: str | None = None, language: str | None = None,
                   channel: str = "terminal") -> dict[str, list[str]]:
        await self.services.engine.handle(Inbound(
            channel, f"{channel}:{who}", text, provider_id=f"room-{next(self._ids)}",
            media=media, profile_name=name, language_hint=language))
        return await self.received()

    async def jobs(self) -> dict[str, list[str]]:
        """Run the scheduler's due jobs (notices, reminders…), then what they sent."""
        while await self.services.scheduler().run_due():
            pass
        return await self.received()

    async def received(self) -> dict[str, list[str]]:
        while await self.worker.drain_once():
            pass
        everything = self._all()
        got: dict[str, list[str]] = defaultdict(list)
        for message in everything[self.seen:]:
            got[message.to].append(numbered(message.text, message.choices))
        self.seen = len(everything)
        return got

    def everything_to(self, who: str) -> str:
        return "\n".join(m.text for m in self._all() if m.to == who)


async def add(services: Services, address: str, name: str, role: str = "mediator",
              language: str | None = None, on_duty: bool = True) -> int:
    async with services.sessions() as session, session.begin():
        member, _created = await add_staff(session, address, name=name, role=role,
                                           now=services.clock.now(),
                                           default_timezone="Europe/Paris")
        member.on_duty = on_duty
        contact = await session.get(Contact, member.contact_id)
        assert contact is not None
        contact.language = language
        return member.id


async def rows(services: Services, model: type, *where: object) -> list:
    async with services.sessions() as session:
        return list((await session.scalars(select(model).where(*where))).all())


# -- contacts for broadcasts ------------------------------------------------------------------

T0 = datetime(2030, 3, 5, 10, 0, tzinfo=UTC)  # Tuesday: 11:00 in Paris, 14:00 in Réunion


@dataclass
class Person:
    address: str | None  # "sms:+33…", "telegram:ID"; None: no address at all
    language: str | None = "fr"
    consents: tuple[bool, ...] = (True,)  # news decisions, oldest first
    postcode: str | None = None
    timezone: str | None = None
    tags: tuple[str, ...] = ()
    opted_out: bool = False
    blocked: bool = False
    landline: bool = False
    last: str | None = None  # a second address, where they last wrote from


async def seed(session: AsyncSession, people: list[Person], now: datetime = T0) -> list[int]:
    """Contacts, addresses, tags and consents in a few bulk statements; returns contact ids."""
    ids = list((await session.scalars(
        insert(Contact).returning(Contact.id, sort_by_parameter_order=True),
        [{"name": None, "language": p.language, "postcode": p.postcode,
          "timezone": p.timezone, "created_at": now - timedelta(days=30),
          "opted_out_at": now - timedelta(days=1) if p.opted_out else None}
         for p in people],
    )).all())
    rows, lasts = [], []
    for cid, p in zip(ids, people, strict=True):
        for index, address in enumerate(a for a in (p.address, p.last) if a):
            channel, _, ident = address.partition(":")
            rows.append({"contact_id": cid, "channel": channel, "external_id": ident,
                         "created_at": now - timedelta(days=30 - index),
                         "blocked_at": now if p.blocked else None, "landline": p.landline})
            if index == 1:
                lasts.append((cid, channel, ident))
    if rows:
        await session.execute(insert(Address), rows)
    for cid, channel, ident in lasts:
        address_id = await session.scalar(select(Address.id).where(
            Address.channel == channel, Address.external_id == ident))
        contact = await session.get(Contact, cid)
        assert contact is not None
        contact.last_address_id = address_id
    consents = [{"contact_id": cid, "purpose": "news", "granted": granted,
                 "at": now - timedelta(days=10 - index), "source": "import:test.csv"}
                for cid, p in zip(ids, people, strict=True)
                for index, granted in enumerate(p.consents)]
    if consents:
        await session.execute(insert(Consent), consents)
    tags = [{"contact_id": cid, "tag": tag} for cid, p in zip(ids, people, strict=True)
            for tag in p.tags]
    if tags:
        await session.execute(insert(Tag), tags)
    await session.flush()
    return ids


async def to_menu_as_known(dialog: Any, now: datetime, expect_item: str,
                           **fields: Any) -> list:
    """A person who went through onboarding already (``fields``: language, postcode,
    level…): straight to the main menu, which must offer ``expect_item``."""
    from bot.core.addresses import normalise_phone
    from bot.storage.models import Address, Contact

    channel, _, external = dialog.address.partition(":")
    async with dialog.services.sessions() as session, session.begin():
        contact = Contact(created_at=now, **fields)
        session.add(contact)
        await session.flush()
        if channel in ("sms", "whatsapp"):
            external = normalise_phone(external)
        session.add(Address(contact_id=contact.id, channel=channel, external_id=external,
                            created_at=now, landline=False))
    got = await dialog.send("MENU")
    assert expect_item in dialog.last_choices(got), dialog.texts(got)
    return got
