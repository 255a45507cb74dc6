"""``relais checkins set`` and ``relais checkins list``: check-in cadence per tag or person."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import typer
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli.common import (
    WHEN_WIDTH,
    NotFound,
    check_address,
    console,
    fail,
    plain,
    run_app,
    safe,
    settings,
    when,
)
from bot.core.addresses import PHONE_CHANNELS, parse_address
from bot.core.clock import Clock
from bot.domain import checkins as rules
from bot.storage.models import Address, CheckinRule, Contact, Tag

checkins_app = typer.Typer(help="Check-in cadence per tag or person.", no_args_is_help=True)


@checkins_app.command("set")
def set_cadence(
    every: str = typer.Option(..., "--every", help="How often: Nd (days) or Nw (weeks)."),
    tag: str | None = typer.Option(None, "--tag", help="For everyone with this tag."),
    address: str | None = typer.Option(None, "--address",
                                       help="For one person, by their address (CHANNEL:ID)."),
) -> None:
    """Set how often people are checked on. A person's own rule wins over their tags';
    with several tags, the shortest counts; without a rule, weekly."""
    if (tag is None) == (address is None):
        fail("give either --tag TAG or --address ADDRESS")
    try:
        days = rules.parse_every(every)
    except ValueError as exc:
        fail(str(exc))
    tag_name = tag.strip() if tag is not None else None
    if tag_name == "":
        fail("--tag: empty tag")
    target = None
    if address is not None:
        target = parse_address(check_address(address, "--address"))

    async def work(services: Any) -> str:
        async with services.sessions() as session, session.begin():
            now = Clock().now()
            if target is None:
                await rules.set_rule(session, days, now, tag=tag_name)
                return f"tag {tag_name}"
            contact_id = await _contact_of(session, target.channel, target.id)
            if contact_id is None:
                raise NotFound(f"no contact at {target}")
            await rules.set_rule(session, days, now, contact_id=contact_id)
            return str(target)

    who = run_app(work)
    typer.echo(f"{plain(who)}: check-ins every {days} day{'s' if days > 1 else ''}")


@checkins_app.command("list")
def list_rules(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array on stdout."),
) -> None:
    """The cadence rules (without a rule, every 7 days)."""
    config = settings()

    async def work(services: Any) -> list[RuleRow]:
        async with services.sessions() as session:
            return await _rows(session)

    rows = run_app(work, config=config)
    if as_json:
        typer.echo(json.dumps([row.as_json() for row in rows], ensure_ascii=False))
        return
    table = Table()
    table.add_column("tag", overflow="fold", ratio=1)
    table.add_column("person", no_wrap=True)
    table.add_column("every", no_wrap=True, justify="right")
    table.add_column("people", no_wrap=True, justify="right")
    table.add_column("since", no_wrap=True, min_width=WHEN_WIDTH)
    for row in rows:
        table.add_row(safe(row.tag), safe(row.address), f"{row.every_days} d",
                      str(row.people), when(row.created_at, config.timezone))
    out = console()
    out.print(table)
    out.print(f"Without a rule: every {rules.DEFAULT_EVERY_DAYS} days.")


@dataclass(frozen=True)
class RuleRow:
    tag: str | None
    address: str | None
    every_days: int
    people: int
    created_at: datetime

    def as_json(self) -> dict[str, object]:
        return {
            "tag": self.tag, "address": self.address, "every_days": self.every_days,
            "people": self.people, "created_at": self.created_at.isoformat(),
        }


async def _rows(session: AsyncSession) -> list[RuleRow]:
    found = (await session.scalars(
        select(CheckinRule).order_by(CheckinRule.tag.is_(None), CheckinRule.tag,
                                     CheckinRule.id)
    )).all()
    rows = []
    for rule in found:
        if rule.tag is not None:
            people = await session.scalar(
                select(func.count()).select_from(Tag)
                .where(func.lower(Tag.tag) == rule.tag.lower())
            ) or 0
            rows.append(RuleRow(rule.tag, None, rule.every_days, people, rule.created_at))
        elif rule.contact_id is not None:
            address = await _address_of(session, rule.contact_id)
            rows.append(RuleRow(None, address, rule.every_days, 1, rule.created_at))
    return rows


async def _contact_of(session: AsyncSession, channel: str, external_id: str) -> int | None:
    """The person at this address (the same number on SMS and WhatsApp is one person)."""
    channels = PHONE_CHANNELS if channel in PHONE_CHANNELS else (channel,)
    return await session.scalar(
        select(Address.contact_id)
        .where(Address.external_id == external_id, Address.channel.in_(channels))
        .order_by(Address.channel != channel, Address.id)
        .limit(1)
    )


async def _address_of(session: AsyncSession, contact_id: int) -> str | None:
    """Where the person last wrote from, else their first address."""
    contact = await session.get(Contact, contact_id)
    address = None
    if contact is not None and contact.last_address_id is not None:
        address = await session.get(Address, contact.last_address_id)
    if address is None:
        address = await session.scalar(
            select(Address).where(Address.contact_id == contact_id).order_by(Address.id)
            .limit(1)
        )
    return address.address if address is not None else None
