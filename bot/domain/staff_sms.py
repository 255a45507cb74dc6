"""Staff powers by SMS need a working session: the one channel whose sender can be forged.

With ``RELAIS_STAFF_SMS=challenge`` (the default), the first staff message of a session gets
a 6-digit one-time code, sent back by SMS to the registered number: someone who forged the
sender id never sees it. The code comes back as the whole message; the session then lasts
``RELAIS_STAFF_SMS_SESSION_HOURS`` and covers commands and plain replies relayed to
citizens alike, and the message that asked for the code is run then. With ``off``, staff
powers are refused by SMS.

The code is read by the engine before masking (``intercept``): the stored message says
``[code]``. Only a keyed hash of the code is kept (the key lives in the database), it
expires after ``CODE_TTL`` and ``MAX_ATTEMPTS`` wrong answers void it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.keys import generated_key
from bot.storage.models import StaffAddress, StaffSmsSession

CODE_TTL = timedelta(minutes=10)
MAX_ATTEMPTS = 5
KEY_NAME = "staff_code_key"
STORED_CODE = "[code]"  # what the messages table keeps of a code sent back
_CODE = re.compile(r"^\s*(\d{6})\s*[.!]?\s*$")


async def _key(session: AsyncSession) -> bytes:
    return await generated_key(session, KEY_NAME)


def _digest(key: bytes, session_id: int, code: str) -> str:
    return hmac.new(key, f"{session_id}:{code}".encode(), hashlib.sha256).hexdigest()


def may_be_code(text: str) -> bool:
    """Whether ``text`` has the shape of a code (no query needed otherwise)."""
    return _CODE.match(text or "") is not None


async def intercept(session: AsyncSession, external_id: str, text: str) -> str | None:
    """When ``text`` (an SMS from ``external_id``) answers a pending staff challenge, the
    code *sealed* (its keyed digest, what ``check`` compares): the clear code is never kept,
    not even in the inbox. The caller then stores ``STORED_CODE`` instead of the text."""
    match = _CODE.match(text or "")
    if match is None:
        return None
    pending = await session.scalar(
        select(StaffSmsSession.id)
        .join(StaffAddress, StaffAddress.id == StaffSmsSession.staff_address_id)
        .where(StaffAddress.channel == "sms", StaffAddress.external_id == external_id,
               StaffSmsSession.code_hash.is_not(None))
    )
    if pending is None:
        return None
    return _digest(await _key(session), pending, match.group(1))


class Gate(StrEnum):
    OPEN = "open"  # a confirmed session: go on with the staff message
    CHALLENGED = "challenged"  # a code was sent back; the message waits for it
    CONFIRMED = "confirmed"  # the code came back: run the waiting message
    WRONG = "wrong"  # a wrong or expired code
    OFF = "off"  # RELAIS_STAFF_SMS=off


@dataclass(frozen=True)
class Decision:
    gate: Gate
    code: str | None = None  # to send back (CHALLENGED)
    pending_message_id: int | None = None  # to run now (CONFIRMED)
    until: datetime | None = None  # session end (CONFIRMED)


async def check(
    session: AsyncSession, address: StaffAddress, *, mode: str, hours: float,
    now: datetime, code: str | None, message_id: int | None,
) -> Decision:
    """Decide what a staff SMS from ``address`` may do (see the module docstring); ``code``
    is the sealed code ``intercept`` returned."""
    if mode == "off":
        return Decision(Gate.OFF)
    row = await session.scalar(
        select(StaffSmsSession).where(StaffSmsSession.staff_address_id == address.id)
    )
    if row is None:
        row = StaffSmsSession(staff_address_id=address.id, attempts=0, updated_at=now)
        session.add(row)
        await session.flush()
    if row.confirmed_until is not None and row.confirmed_until > now:
        return Decision(Gate.OPEN)
    key = await _key(session)
    if code is not None and row.code_hash is not None:
        fresh = row.code_expires_at is not None and row.code_expires_at > now
        if fresh and hmac.compare_digest(row.code_hash, code):  # both sealed
            pending = row.pending_message_id
            row.code_hash = row.code_expires_at = row.pending_message_id = None
            row.attempts = 0
            row.confirmed_until = now + timedelta(hours=hours)
            row.updated_at = now
            return Decision(Gate.CONFIRMED, pending_message_id=pending,
                            until=row.confirmed_until)
        row.attempts += 1
        row.updated_at = now
        if row.attempts >= MAX_ATTEMPTS or not fresh:
            row.code_hash = row.code_expires_at = row.pending_message_id = None
            row.attempts = 0
        return Decision(Gate.WRONG)
    new_code = f"{secrets.randbelow(1_000_000):06d}"
    row.code_hash = _digest(key, row.id, new_code)
    row.code_expires_at = now + CODE_TTL
    row.attempts = 0
    row.pending_message_id = message_id
    row.confirmed_until = None
    row.updated_at = now
    return Decision(Gate.CHALLENGED, code=new_code)
