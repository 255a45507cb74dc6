"""``relais staff``: who may use staff commands, and who is on duty.

Staff powers come only from here, never from a chat.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli.common import (
    EXIT_USAGE,
    NotFound,
    Usage,
    check_address,
    console,
    fail,
    in_transaction,
    plain,
    safe,
)
from bot.core.clock import Clock

if TYPE_CHECKING:
    from bot.app import Services

staff_app = typer.Typer(help="Mediators and coordinators.", no_args_is_help=True)

__all__ = ["NotFound", "Usage", "check_address", "staff_app"]


@staff_app.command("add")
def add(
    address: str = typer.Argument(..., help="Their address: sms:+33…, whatsapp:+33…, "
                                            "telegram:ID, or a phone number."),
    name: str = typer.Option(..., "--name", help="The name colleagues know them by."),
    role: str = typer.Option("mediator", "--role", help="Their role: mediator or coordinator."),
) -> None:
    """Register a staff member (on duty) at this exact address, or update their name and
    role. Staff powers come only from the addresses added: sms:+33… and whatsapp:+33… are
    two addresses (add both if they use both)."""
    from bot.domain import staff

    target = check_address(address)
    if role not in staff.ROLES:
        fail(f"--role must be one of: {', '.join(staff.ROLES)}", EXIT_USAGE)
    if not name.strip():
        fail("--name must not be empty", EXIT_USAGE)

    async def work(session: AsyncSession, services: Services) -> bool:
        config = services.settings
        try:
            _member, created = await staff.add_staff(
                session, target, name=name.strip(), role=role, now=Clock().now(),
                default_timezone=config.timezone,
            )
        except staff.StaffAddressTaken as exc:
            raise Usage(str(exc)) from None
        return created

    created = in_transaction(work)
    typer.echo(f"{'added' if created else 'updated'} {role} {plain(name.strip())} ({target})")


@staff_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json",
                                      help="Print one JSON array on stdout.")) -> None:
    """Staff members, their addresses and whether they are on duty."""
    from bot.domain import staff

    async def work(session: AsyncSession, services: Services) -> list[Any]:
        return await staff.list_staff(session)

    rows = in_transaction(work)
    if as_json:
        typer.echo(json.dumps([
            {"id": r.id, "address": r.address, "addresses": list(r.addresses), "name": r.name,
             "role": r.role, "on_duty": r.on_duty, "created_at": r.created_at.isoformat()}
            for r in rows
        ], ensure_ascii=False))
        return
    if not rows:
        typer.echo("no staff yet: relais staff add ADDRESS --name NAME --role mediator")
        return
    table = Table("name", "role", "on duty", "addresses")
    for r in rows:
        table.add_row(safe(r.name), safe(r.role), "yes" if r.on_duty else "no",
                      safe(", ".join(r.addresses)))
    console().print(table)


def _unknown(address: str) -> NotFound:
    return NotFound(f"no staff member at {address}")


@staff_app.command("remove")
def remove(address: str = typer.Argument(..., help="Their address.")) -> None:
    """Take away staff powers (the person stays a contact)."""
    from bot.domain.staff import find_staff, remove_staff

    target = check_address(address)

    async def work(session: AsyncSession, services: Services) -> str:
        member = await find_staff(session, target)
        if member is None:
            raise _unknown(target)
        name = member.name
        await remove_staff(session, member)  # other processes see it on their next event
        return name

    name = in_transaction(work)
    typer.echo(f"removed {plain(name)} ({target}) from staff")


def _set_duty(address: str, on_duty: bool) -> None:
    from bot.domain.staff import bump_version, find_staff

    target = check_address(address)

    async def work(session: AsyncSession, services: Services) -> str:
        member = await find_staff(session, target)
        if member is None:
            raise _unknown(target)
        member.on_duty = on_duty
        await bump_version(session)  # every write to a staff row bumps the registry
        return member.name

    name = in_transaction(work)
    typer.echo(f"{plain(name)} ({target}) is {'on' if on_duty else 'off'} duty")


@staff_app.command("on")
def on(address: str = typer.Argument(..., help="Their address.")) -> None:
    """Put a staff member on duty."""
    _set_duty(address, True)


@staff_app.command("off")
def off(address: str = typer.Argument(..., help="Their address.")) -> None:
    """Take a staff member off duty."""
    _set_duty(address, False)
