"""``relais slots``: open callback slots, list them, cancel one, record how a call went."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli.common import (
    EXIT_USAGE,
    WHEN_WIDTH,
    NotFound,
    Usage,
    acting_staff,
    check_address,
    console,
    fail,
    in_transaction,
    not_staff,
    safe,
    when,
)
from bot.core.clock import Clock

if TYPE_CHECKING:
    from bot.app import Services

slots_app = typer.Typer(help="Phone callback slots.", no_args_is_help=True)


class Outcome(StrEnum):
    reached = "reached"
    no_answer = "no-answer"


def _local(moment: datetime, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).isoformat()


@slots_app.command("open")
def open_(
    start: str = typer.Argument(..., help="When the first slot begins, in ISO 8601: "
                                          "2030-03-05T14:00 (in RELAIS_TIMEZONE) or "
                                          "2030-03-05T14:00+04:00."),
    count: int = typer.Option(1, "--count", min=1, max=200, help="How many slots to open."),
    minutes: int = typer.Option(30, "--minutes", min=5, max=480,
                                help="How long each slot lasts, in minutes."),
    mediator: str | None = typer.Option(None, "--mediator",
                                        help="The staff member who makes the calls."),
) -> None:
    """Open COUNT back-to-back slots of MINUTES from START, one person each."""
    from bot.domain import slots
    from bot.domain.staff import find_staff

    target = check_address(mediator, "--mediator") if mediator else None

    async def work(session: AsyncSession, services: Services) -> list[Any]:
        config = services.settings
        try:
            begin = slots.parse_start(start, config.timezone)
        except ValueError as exc:
            raise Usage(f"START: {exc}") from None
        now = Clock().now()
        if begin <= now:
            raise Usage(f"START is in the past: {when(begin, config.timezone)}")
        mediator_id = None
        if target is not None:
            member = await find_staff(session, target)
            if member is None:
                raise NotFound(not_staff(target, "--mediator"))
            mediator_id = member.id
        opened = await slots.open_slots(session, begin, count=count, minutes=minutes, now=now,
                                        mediator_id=mediator_id)
        return [(s.id, when(s.start_at, config.timezone)) for s in opened]

    for slot_id, at in in_transaction(work):
        typer.echo(f"opened slot {slot_id}: {at} ({minutes} min)")


@slots_app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array on stdout."),
    everything: bool = typer.Option(False, "--all", help="Show past slots too."),
) -> None:
    """Slots from today on, and booked ones still waiting for an outcome."""
    from bot.domain import slots

    async def work(session: AsyncSession, services: Services) -> tuple[list[Any], str]:
        config = services.settings
        rows = await slots.list_slots(session, Clock().now(), config.timezone, everything)
        return rows, config.timezone

    rows, tz = in_transaction(work)
    if as_json:
        typer.echo(json.dumps([
            {"id": r.id, "start": _local(r.start_at, tz), "minutes": r.minutes,
             "status": r.status, "mediator": r.mediator, "mediator_name": r.mediator_name,
             "person": r.person, "phone": r.phone, "outcome": r.outcome}
            for r in rows
        ], ensure_ascii=False))
        return
    if not rows:
        typer.echo("no slots: relais slots open START --count N --minutes M")
        return
    table = Table()  # the start is never folded nor cut: it is what the list is for
    table.add_column("id", no_wrap=True, justify="right")
    table.add_column("start", no_wrap=True, min_width=WHEN_WIDTH)
    table.add_column("min", no_wrap=True, justify="right")
    table.add_column("status", overflow="fold")
    table.add_column("mediator", overflow="fold", ratio=1)
    table.add_column("person", overflow="fold", ratio=1)
    table.add_column("phone", no_wrap=True)
    for r in rows:
        status = f"{r.status} ({r.outcome})" if r.outcome else r.status
        table.add_row(str(r.id), when(r.start_at, tz), str(r.minutes), safe(status),
                      safe(r.mediator_name or r.mediator), safe(r.person), safe(r.phone))
    console().print(table)


@slots_app.command("cancel")
def cancel(slot_id: int = typer.Argument(..., metavar="ID", help="The slot number.")) -> None:
    """Cancel a slot; a person who booked it is told and offered other times."""
    from bot.domain import slots
    from bot.flows.callbacks import tell_slot_lost
    from bot.storage import counters, events

    async def work(session: AsyncSession, services: Services) -> str:
        config = services.settings
        now = Clock().now()
        try:
            slot, was_booked = await slots.cancel(session, slot_id)
        except (LookupError, slots.SlotError) as exc:
            raise NotFound(str(exc)) from None
        if not was_booked:
            return f"cancelled slot {slot_id} (nobody had booked it)"
        events.record(session, "callback.cancelled", now, value={"by": "staff"})
        counters.count(session, config.timezone, now, counters.CALLBACKS, "cancelled")
        sent = await tell_slot_lost(session, config, now, slot, "cancelled",
                                    machine=services.engine.machine)
        told = "told now" if sent else "told when their quiet hours end"
        return f"cancelled slot {slot_id}; the person is {told} and offered other times"

    typer.echo(in_transaction(work))


@slots_app.command("done")
def done(
    slot_id: int = typer.Argument(..., metavar="ID", help="The slot number."),
    outcome: Outcome = typer.Option(..., "--outcome",
                                    help="How the call went: reached or no-answer."),
    as_: str | None = typer.Option(
        None, "--as", help="The staff member recording it: the slot's mediator or a "
                           "coordinator (without it, the operator)."),
) -> None:
    """Record how the call went, once it has begun; after no answer the person is offered
    another time. With --as, only the slot's mediator or a coordinator may."""
    from bot.domain import slots
    from bot.flows.callbacks import tell_slot_lost
    from bot.storage import counters, events

    acting = check_address(as_, "--as") if as_ else None

    async def work(session: AsyncSession, services: Services) -> str:
        config = services.settings
        now = Clock().now()
        staff = None
        if acting is not None:
            staff = await acting_staff(session, acting)
        try:
            slot = await slots.record_outcome(session, slot_id, outcome.value, now=now,
                                              staff=staff)
        except (LookupError, slots.SlotError) as exc:
            raise NotFound(str(exc)) from None
        kind = "callback.reached" if outcome is Outcome.reached else "callback.no_answer"
        events.record(session, kind, now)
        counters.count(session, config.timezone, now, counters.CALLBACKS,
                       kind.partition(".")[2])
        if outcome is Outcome.reached:
            return f"slot {slot_id}: reached"
        sent = await tell_slot_lost(session, config, now, slot, "no_answer",
                                    machine=services.engine.machine)
        told = "told now" if sent else "told when their quiet hours end"
        return f"slot {slot_id}: no answer; the person is {told} and offered another time"

    if slot_id < 1:
        fail("ID must be a slot id", EXIT_USAGE)
    typer.echo(in_transaction(work))
