"""``relais slots``: open callback slots, list them, cancel one, record how a call went."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli.common import EXIT_USAGE, console, fail, safe
from bot.cli.root import app
from bot.cli.staff import NotFound, Usage, check_address, execute
from bot.clock import Clock
from bot.config import Settings

slots_app = typer.Typer(help="Phone callback slots.", no_args_is_help=True)
app.add_typer(slots_app, name="slots")


class Outcome(StrEnum):
    reached = "reached"
    no_answer = "no-answer"


def _local(moment: datetime, tz: str) -> str:
    return moment.astimezone(ZoneInfo(tz)).isoformat()


@slots_app.command("open")
def open_(
    start: str = typer.Argument(..., help="ISO 8601, e.g. 2030-03-05T14:00 (RELAIS_TIMEZONE) "
                                          "or 2030-03-05T14:00+04:00"),
    count: int = typer.Option(1, "--count", min=1, max=200, help="How many slots"),
    minutes: int = typer.Option(30, "--minutes", min=5, max=480, help="Minutes each"),
    mediator: str | None = typer.Option(None, "--mediator", help="The staff member who calls"),
) -> None:
    """Open COUNT back-to-back slots of MINUTES from START, one person each."""
    from bot import slots
    from bot.staff import find_staff

    target = check_address(mediator) if mediator else None

    async def work(session: AsyncSession, config: Settings) -> list[Any]:
        try:
            begin = slots.parse_start(start, config.timezone)
        except ValueError as exc:
            raise Usage(f"START: {exc}") from None
        now = Clock().now()
        if begin <= now:
            raise Usage(f"START is in the past: {_local(begin, config.timezone)}")
        mediator_id = None
        if target is not None:
            member = await find_staff(session, target)
            if member is None:
                raise NotFound(f"--mediator: no staff member at {target} (relais staff add)")
            mediator_id = member.id
        opened = await slots.open_slots(session, begin, count=count, minutes=minutes, now=now,
                                        mediator_id=mediator_id)
        return [(s.id, _local(s.start_at, config.timezone)) for s in opened]

    for slot_id, at in execute(work):
        typer.echo(f"opened slot {slot_id}: {at} ({minutes} min)")


@slots_app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="One JSON array on stdout"),
    everything: bool = typer.Option(False, "--all", help="Past slots too"),
) -> None:
    """Slots from today on (and booked ones still waiting for an outcome)."""
    from bot import slots

    async def work(session: AsyncSession, config: Settings) -> tuple[list[Any], str]:
        rows = await slots.list_slots(session, Clock().now(), config.timezone, everything)
        return rows, config.timezone

    rows, tz = execute(work)
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
    table = Table("id", "start", "min", "status", "mediator", "person", "phone")
    for r in rows:
        status = f"{r.status} ({r.outcome})" if r.outcome else r.status
        table.add_row(str(r.id), _local(r.start_at, tz), str(r.minutes), safe(status),
                      safe(r.mediator_name or r.mediator), safe(r.person), safe(r.phone))
    console().print(table)


@slots_app.command("cancel")
def cancel(slot_id: int = typer.Argument(..., metavar="ID", help="The slot id")) -> None:
    """Cancel a slot; a person who booked it is told and offered other times."""
    from bot import counters, events, slots
    from bot.flows.callbacks import tell_slot_lost

    async def work(session: AsyncSession, config: Settings) -> str:
        now = Clock().now()
        try:
            slot, was_booked = await slots.cancel(session, slot_id)
        except (LookupError, slots.SlotError) as exc:
            raise NotFound(str(exc)) from None
        if not was_booked:
            return f"cancelled slot {slot_id} (nobody had booked it)"
        events.record(session, "callback.cancelled", now, value={"by": "staff"})
        counters.count(session, config.timezone, now, counters.CALLBACKS, "cancelled")
        sent = await tell_slot_lost(session, config, now, slot, "cancelled")
        told = "told now" if sent else "told when their quiet hours end"
        return f"cancelled slot {slot_id}; the person is {told} and offered other times"

    typer.echo(execute(work))


@slots_app.command("done")
def done(
    slot_id: int = typer.Argument(..., metavar="ID", help="The slot id"),
    outcome: Outcome = typer.Option(..., "--outcome", help="reached or no-answer"),
    as_: str | None = typer.Option(
        None, "--as", help="The staff member recording it: the slot's mediator or a "
                           "coordinator (without it: the operator)"),
) -> None:
    """Record how the call went, once it has begun; after no answer the person is offered
    another time. With --as, only the slot's mediator or a coordinator may."""
    from bot import counters, events, slots
    from bot.flows.callbacks import tell_slot_lost
    from bot.staff import find_staff

    acting = check_address(as_) if as_ else None

    async def work(session: AsyncSession, config: Settings) -> str:
        now = Clock().now()
        staff = None
        if acting is not None:
            staff = await find_staff(session, acting)
            if staff is None:
                raise Usage(f"--as: no staff member at {acting} (relais staff add)")
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
        sent = await tell_slot_lost(session, config, now, slot, "no_answer")
        told = "told now" if sent else "told when their quiet hours end"
        return f"slot {slot_id}: no answer; the person is {told} and offered another time"

    if slot_id < 1:
        fail("ID must be a slot id", EXIT_USAGE)
    typer.echo(execute(work))
