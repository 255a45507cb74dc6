"""``relais export ADDRESS`` (GDPR access: everything about a person as JSON on stdout) and
``relais forget ADDRESS [--yes]`` (erasure; anonymous counts stay for reports)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli.common import EXIT_NOT_FOUND, NotFound, check_address, fail, in_transaction, plain

if TYPE_CHECKING:
    from bot.app import Services


def export(
    address: str = typer.Argument(..., help="The person's address: sms:+33…, whatsapp:+33…, "
                                            "telegram:ID, or a phone number."),
) -> None:
    """Everything Relais holds about one person, as one JSON object on stdout."""
    from bot.domain import rights
    from bot.domain.staff import find_contact

    target = check_address(address)

    async def work(session: AsyncSession, services: Services) -> dict[str, Any]:
        now = services.clock.now()
        contact = await find_contact(session, target)
        data = None if contact is None else await rights.export(session, contact.id, now)
        if data is None:
            raise NotFound(f"no contact at {target}")
        return {"address": target, **data}

    typer.echo(json.dumps(in_transaction(work), ensure_ascii=False, indent=2))


def forget(
    address: str = typer.Argument(..., help="The person's address."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Erase everything about a person (GDPR erasure). If they had said STOP, their
    addresses stay unreachable (a salted hash is kept on the suppression list)."""
    from bot.domain import rights
    from bot.domain.staff import find_contact
    from bot.domain.tickets import notify

    target = check_address(address)
    if not yes and sys.stdin.isatty():
        if not typer.confirm(f"Erase everything about {target}? This cannot be undone"):
            fail("nothing erased", EXIT_NOT_FOUND)

    async def work(session: AsyncSession, services: Services
                   ) -> tuple[str | None, rights.Erased]:
        now = services.clock.now()
        contact = await find_contact(session, target)
        if contact is not None:
            contact = await rights.lock_contact(session, contact.id)
        if contact is None:
            raise NotFound(f"no contact at {target}")
        name = contact.name
        erased = await rights.forget(session, contact, now, source="cli")
        await notify.slots_freed(session, services.settings, now, erased.freed_slots)
        return name, erased

    name, erased = in_transaction(work)
    who = f"{name} ({target})" if name else target
    typer.echo(f"forgot {plain(who)}: erased {erased.describe()}")
    if erased.suppressed:
        typer.echo(f"{erased.suppressed} address(es) kept on the suppression list "
                   "(they had said STOP): imports and broadcasts will skip them")
