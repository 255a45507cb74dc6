"""When WhatsApp cannot deliver: the approved template, or SMS, as a new linked row.

Outside WhatsApp's 24-hour window free text is refused (Twilio 63016, Meta 131047). With
``RELAIS_WHATSAPP_TEMPLATE`` set, Relais sends the template ("you have a message, reply to
read it") and holds the message until the person writes again on WhatsApp. Without a
template, when the template fails too, or when WhatsApp cannot deliver at all (131026), the
message goes by SMS to the same number, as a new row linked to the first (``fallback_of``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.channel import Failure
from bot.core.config import Settings
from bot.core.i18n import Translator
from bot.core.render import choices_from_json
from bot.core.types import TEMPLATE_KIND, Reply
from bot.delivery.writer import enqueue
from bot.storage.models import Address, Contact, Outbox, OutboxAbout

log = logging.getLogger("relais.fallback")




def sms_configured(settings: Settings) -> bool:
    return bool(
        settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_sms_from
    )


async def after_failure(
    session: AsyncSession, row: Outbox, failure: Failure, now: datetime, settings: Settings
) -> Outbox | None:
    """Plan what follows a WhatsApp failure; returns the new row, if any."""
    if row.channel != "whatsapp" or failure not in (Failure.WINDOW_CLOSED,
                                                    Failure.UNDELIVERABLE):
        return None
    contact = await session.get(Contact, row.contact_id)
    if contact is None or contact.opted_out_at is not None:
        return None
    if row.kind == TEMPLATE_KIND:  # the template itself failed: the held message goes by SMS
        original = await session.get(Outbox, row.fallback_of) if row.fallback_of else None
        if original is None:
            return None
        original.held = False
        return await _by_sms(session, contact, original, now, settings)
    if failure is Failure.WINDOW_CLOSED and settings.whatsapp_template:
        already = await session.scalar(
            select(Outbox.id).where(
                Outbox.contact_id == row.contact_id, Outbox.kind == TEMPLATE_KIND,
                Outbox.status.in_(("queued", "sending", "sent", "delivered", "read")),
                Outbox.channel == "whatsapp",
                Outbox.id.in_(select(Outbox.fallback_of).where(Outbox.held.is_(True))) |
                Outbox.fallback_of.in_(
                    select(Outbox.id).where(Outbox.contact_id == row.contact_id,
                                            Outbox.held.is_(True))
                ),
            )
        )
        await session.execute(
            update(Outbox).where(Outbox.id == row.id).values(held=True)
        )
        if already is not None:  # one notice is enough for several waiting messages
            return None
        address = await session.get(Address, row.address_id) if row.address_id else None
        if address is None:
            return None
        _ = Translator(contact.language)
        text = _("You have a new message. Reply to read it.")
        notice = enqueue(session, contact, address, Reply(text), now=now, kind=TEMPLATE_KIND,
                         priority=row.priority)
        notice.fallback_of = row.id
        return notice
    return await _by_sms(session, contact, row, now, settings)


async def _by_sms(
    session: AsyncSession, contact: Contact, row: Outbox, now: datetime, settings: Settings
) -> Outbox | None:
    if not sms_configured(settings):
        log.info("outbox row %s: no SMS fallback (SMS not configured)", row.id)
        return None
    address = await session.scalar(
        select(Address).where(Address.contact_id == contact.id, Address.channel == "sms")
    )
    if address is None and row.to.startswith("+"):
        address = await session.scalar(
            select(Address).where(Address.channel == "sms", Address.external_id == row.to)
        )
        if address is None:
            address = Address(contact_id=contact.id, channel="sms", external_id=row.to,
                              created_at=now, landline=False)
            session.add(address)
            await session.flush()
    if address is None or address.blocked_at is not None or address.landline:
        log.info("outbox row %s: no SMS address to fall back to", row.id)
        return None
    copy = enqueue(session, contact, address,
                   Reply(row.body or "", choices_from_json(row.choices)), now=now,
                   kind=row.kind, priority=row.priority, max_attempts=row.max_attempts,
                   broadcast_id=row.broadcast_id, ticket_id=row.ticket_id,
                   about=await about_of(session, row.id))
    copy.fallback_of = row.id
    return copy


async def about_of(session: AsyncSession, outbox_id: int) -> list[int]:
    """The people a row is linked to (``OutboxAbout``): its copy is linked to them too."""
    return list(await session.scalars(
        select(OutboxAbout.contact_id).where(OutboxAbout.outbox_id == outbox_id)
    ))


async def release_held(session: AsyncSession, contact_id: int, now: datetime) -> int:
    """The person wrote on WhatsApp: the messages held for them go now (as new rows)."""
    held = (
        await session.scalars(
            select(Outbox).where(Outbox.contact_id == contact_id, Outbox.held.is_(True))
            .order_by(Outbox.id)
        )
    ).all()
    for row in held:
        row.held = False
        address = await session.get(Address, row.address_id) if row.address_id else None
        contact = await session.get(Contact, contact_id)
        if address is None or contact is None:
            continue
        copy = enqueue(session, contact, address,
                       Reply(row.body or "", choices_from_json(row.choices)), now=now,
                       kind=row.kind, priority=row.priority, ticket_id=row.ticket_id,
                       broadcast_id=row.broadcast_id, about=await about_of(session, row.id))
        copy.fallback_of = row.id
    return len(held)
