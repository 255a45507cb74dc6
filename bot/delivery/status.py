"""What becomes of a sent row: a provider's status moves it forward only, a refusal blocks
the address (once, here, for the worker and every status webhook), and a WhatsApp failure
may be followed by the template or SMS (``FollowUp``, given by the application: the rule
lives in ``bot.domain.fallback``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.channel import Failure, StatusUpdate
from bot.delivery.policy import after_failed_status
from bot.storage.models import Address, Event, Outbox

# Status order for provider callbacks: never move backwards.
STATUS_RANK = {
    "queued": 0, "in_doubt": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4,
    "failed": 5, "cancelled": 5,
}
# Kinds whose text is a secret for the person only (a staff one-time code): once the row
# is sent, failed or cancelled, it keeps a placeholder.
SECRET_KIND = "staff.code"
SECRET_PLACEHOLDER = "[code]"
BLOCKED_REASON = "address blocked by the provider"

# What may follow a failure (the row, its failure, now): True when a new row was written.
FollowUp = Callable[[AsyncSession, Outbox, Failure, datetime], Awaitable[bool]]


def scrubbed_body() -> Any:
    """SQL: the body a finished row keeps (a secret's placeholder, else the body)."""
    table = Outbox.__table__
    return case((table.c.kind == literal(SECRET_KIND), literal(SECRET_PLACEHOLDER)),
                else_=table.c.body)


async def block_address(session: AsyncSession, address_id: int | None, now: datetime,
                        reason: str, *, landline: bool = False,
                        except_row: int | None = None) -> None:
    """The provider refused this address (blocked us, unsubscribed, cannot deliver): write
    nothing more to it until the person writes again there; its unsent rows are cancelled."""
    if address_id is None:
        return
    values: dict[str, Any] = {"blocked_at": now, "blocked_reason": (reason or "refused")[:200]}
    if landline:
        values["landline"] = True
    await session.execute(update(Address).where(Address.id == address_id).values(**values))
    others = [Outbox.address_id == address_id, Outbox.status.in_(("queued", "in_doubt"))]
    if except_row is not None:
        others.append(Outbox.id != except_row)
    await session.execute(
        update(Outbox).where(*others)
        .values(status="cancelled", updated_at=now, body=scrubbed_body(),
                error_reason=BLOCKED_REASON)
        .execution_options(synchronize_session=False)
    )


async def apply_status(
    session: AsyncSession, channel: str, provider_id: str, status: str, now: datetime,
    error_code: str | None = None, error_reason: str | None = None,
) -> bool:
    """A provider's delivery status: moves a row forward only (delivered never → sent).
    False when no row has that provider id."""
    row = await session.scalar(
        select(Outbox).where(Outbox.channel == channel, Outbox.provider_id == provider_id)
    )
    if row is None:
        return False
    if STATUS_RANK.get(status, -1) <= STATUS_RANK.get(row.status, 0):
        return True
    row.status = status
    row.updated_at = now
    if error_code is not None:
        row.error_code = error_code
        row.error_reason = (error_reason or "")[:500] or row.error_reason
    session.add(Event(kind=f"outbox.{status}", at=now, channel=channel,
                      language=row.language))
    return True


@dataclass(frozen=True)
class Applied:
    row_id: int | None  # None: no row has that provider id
    status: str | None = None  # the row's status after the update
    newly_failed: bool = False
    followed_up: bool = False


async def apply_update(session: AsyncSession, update_: StatusUpdate, now: datetime,
                       follow_up: FollowUp | None = None) -> Applied:
    """One status callback, in the caller's transaction: the row moves forward; when it
    newly fails, the same rule as for a refused send blocks the address and may follow up."""
    row = await session.scalar(
        select(Outbox).where(Outbox.channel == update_.channel,
                             Outbox.provider_id == update_.provider_id)
    )
    if row is None:
        return Applied(None)
    before = row.status
    await apply_status(session, update_.channel, update_.provider_id, update_.status, now,
                       update_.error_code, update_.error_reason)
    if before == "failed" or row.status != "failed":
        return Applied(row.id, row.status)  # not a new failure (or a retried callback)
    failure = update_.failure or Failure.FAILED
    row.failure = failure.value
    decision = after_failed_status(failure, update_.landline)
    if decision.block_address:
        await block_address(session, row.address_id, now,
                            update_.error_reason or failure.value,
                            landline=decision.landline, except_row=row.id)
    followed = False
    if decision.follow_up and follow_up is not None:
        followed = await follow_up(session, row, failure, now)
    return Applied(row.id, row.status, newly_failed=True, followed_up=followed)
