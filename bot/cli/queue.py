"""``relais queue``: the escalation queue from the command line, the same operations as the
staff chat commands. Commands that act take ``--as ADDRESS`` (a registered staff member);
read commands take ``--json``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli.common import (
    NotFound,
    Usage,
    acting_staff,
    check_address,
    console,
    fail,
    in_transaction,
    not_staff,
    plain,
    safe,
    settings,
    when,
)
from bot.core.clock import Clock
from bot.core.config import Settings

if TYPE_CHECKING:
    from bot.app import Services

queue_app = typer.Typer(help="The escalation queue.", no_args_is_help=True)

AS_HELP = "The staff member acting, by one of their addresses (sms:+33…, telegram:ID…)."
ID_HELP = "The ticket number."


def _iso(moment: datetime | None, tz: str) -> str | None:
    return None if moment is None else moment.astimezone(ZoneInfo(tz)).isoformat()


def _failed(error: Any) -> Exception:
    """A queue refusal as the CLI's one line (exit 1)."""
    who = f" by {plain(error.by.name)}" if getattr(error, "by", None) is not None else ""
    messages = {
        "not_found": f"no ticket {error.ticket_id}",
        "closed": f"ticket {error.ticket_id} is closed",
        "taken": f"ticket {error.ticket_id} was already taken{who}",
        "not_yours": f"ticket {error.ticket_id} is held{who}",
        "empty": "TEXT must not be empty",
        "not_urgent": f"ticket {error.ticket_id} is not urgent: --now is only for urgent "
                      "tickets (without it, the reply waits for the end of the person's quiet "
                      "hours)",
    }
    if error.code == "empty":
        return Usage(messages["empty"])
    return NotFound(messages.get(error.code, str(error)))


def _ticket_json(item: Any, now: datetime, tz: str) -> dict[str, Any]:
    ticket = item.ticket
    return {
        "id": ticket.id, "state": ticket.state, "priority": ticket.priority,
        "source": ticket.source, "topic": ticket.topic, "person": item.person,
        "first_name": item.first_name, "language": ticket.language,
        "channel": ticket.channel, "level": ticket.level,
        "created_at": _iso(ticket.created_at, tz), "taken_at": _iso(ticket.taken_at, tz),
        "closed_at": _iso(ticket.closed_at, tz),
        "waiting_minutes": int(item.waited(now).total_seconds() // 60),
        "mediator": item.mediator_address,
        "mediator_name": item.mediator.name if item.mediator else None,
        "outcome": ticket.outcome, "first_words": item.words,
    }


async def _entries_json(session: AsyncSession, config: Settings, entries: list[Any],
                        now: datetime, tz: str) -> list[dict[str, Any]]:
    from bot.core.i18n import Translator
    from bot.domain.media_links import media_link
    from bot.domain.tickets import queue

    english = Translator("en")
    out = []
    for entry in entries:
        media = [{"id": media_id, "content_type": content_type,
                  "url": await media_link(session, config.base_url, media_id, now)}
                 for media_id, content_type in entry.media]
        text = queue.note_text(english, entry.text) if entry.kind == "system" else entry.text
        out.append({"at": _iso(entry.at, tz), "kind": entry.kind, "who": entry.who,
                    "text": text, "media": media})
    return out


def _print_entries(rows: list[dict[str, Any]], tz: str) -> None:
    for row in rows:
        who = row["who"] or ("mediator" if row["kind"] == "out" else "Relais")
        mark = {"note": " [note]", "system": " [*]", "out": " >"}.get(row["kind"], "")
        typer.echo(f"{when(row['at'], tz)}{mark} {plain(who)}: {plain(row['text'])}")
        for media in row["media"]:
            typer.echo(f"    {plain(media['content_type'])}: {media['url']}")


# -- reading ------------------------------------------------------------------------------------


@queue_app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array on stdout."),
    everything: bool = typer.Option(False, "--all", help="Show closed tickets too."),
) -> None:
    """Open and taken tickets, most urgent first, then oldest first."""
    from bot.domain.tickets import queue

    async def work(session: AsyncSession, services: Services) -> list[dict[str, Any]]:
        config = services.settings
        now = Clock().now()
        states = (queue.OPEN, queue.TAKEN, queue.CLOSED) if everything else queue.ACTIVE
        items = await queue.list_tickets(session, states)
        return [_ticket_json(item, now, config.timezone) for item in items]

    rows = in_transaction(work)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        typer.echo("nobody is waiting")
        return
    table = Table()
    table.add_column("id", no_wrap=True, justify="right")
    table.add_column("priority", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("waiting", no_wrap=True, justify="right")
    table.add_column("person", overflow="fold", ratio=2)
    table.add_column("lang", no_wrap=True)
    table.add_column("channel", overflow="fold")
    table.add_column("mediator", overflow="fold", ratio=1)
    table.add_column("first words", overflow="fold", ratio=3)
    for r in rows:
        table.add_row(str(r["id"]), r["priority"], r["state"], f"{r['waiting_minutes']} min",
                      safe(f"{r['first_name'] or '?'} ({r['person'] or '-'})"),
                      safe(r["language"]), safe(r["channel"]), safe(r["mediator_name"]),
                      safe(r["first_words"] or f"[{r['source']}]"))
    console(piped_width=160).print(table)


@queue_app.command("show")
def show(
    ticket_id: int = typer.Argument(..., metavar="ID", help=ID_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """One ticket: the person, its last messages, notes, photos and voice notes (signed
    links), a booked callback."""
    from bot.domain.media_links import media_link
    from bot.domain.tickets import queue

    async def work(session: AsyncSession, services: Services) -> dict[str, Any]:
        config = services.settings
        now, tz = Clock().now(), config.timezone
        try:
            ticket = await queue.get_ticket(session, ticket_id)
        except queue.QueueError as error:
            raise _failed(error) from None
        data = _ticket_json(await queue.info(session, ticket), now, tz)
        entries = await queue.history(session, ticket)
        talk = [e for e in entries if e.kind in ("in", "out")][-10:]
        data["messages"] = await _entries_json(session, config, talk, now, tz)
        data["notes"] = await _entries_json(
            session, config, [e for e in entries if e.kind == "note"], now, tz)
        data["media"] = [
            {"id": m.id, "content_type": m.content_type, "created_at": _iso(m.created_at, tz),
             "url": await media_link(session, config.base_url, m.id, now)}
            for m in await queue.media_of(session, ticket)
        ]
        slot = await queue.pending_callback(session, ticket.contact_id)
        data["callback"] = None if slot is None else {
            "slot_id": slot.id, "start": _iso(slot.start_at, tz), "phone": slot.phone}
        return data

    config = settings()
    data = in_transaction(work, config=config)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    tz = config.timezone
    typer.echo(plain(
        f"#{data['id']} {data['priority']} {data['state']} - {data['first_name'] or '?'}"
        f" ({data['person']}, {data['language']}, level {data['level'] or '?'}) - "
        f"waiting {data['waiting_minutes']} min"
        + (f" - held by {data['mediator_name']}" if data["mediator_name"] else "")))
    if data["messages"]:
        typer.echo("messages:")
        _print_entries(data["messages"], tz)
    if data["notes"]:
        typer.echo("notes:")
        _print_entries(data["notes"], tz)
    if data["media"]:
        typer.echo("photos and voice notes:")
        for media in data["media"]:
            typer.echo(f"  {media['id']} {plain(media['content_type'])} {media['url']}")
    if data["callback"]:
        cb = data["callback"]
        typer.echo(f"callback booked: slot {cb['slot_id']} at {when(cb['start'], tz)} "
                   f"({plain(cb['phone'])})")


@queue_app.command("history")
def history(
    ticket_id: int = typer.Argument(..., metavar="ID", help=ID_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array on stdout."),
) -> None:
    """Everything about a ticket, in order: messages, answers, notes, hand-overs."""
    from bot.domain.tickets import queue

    async def work(session: AsyncSession, services: Services) -> list[dict[str, Any]]:
        config = services.settings
        try:
            ticket = await queue.get_ticket(session, ticket_id)
        except queue.QueueError as error:
            raise _failed(error) from None
        entries = await queue.history(session, ticket)
        return await _entries_json(session, config, entries, Clock().now(), config.timezone)

    config = settings()
    rows = in_transaction(work, config=config)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    _print_entries(rows, config.timezone)


# -- acting -------------------------------------------------------------------------------------


def _act(as_: str, action: Any) -> str:
    """Run ``action(session, config, now, staff)`` for the staff member ``--as``."""
    from bot.domain.tickets import queue

    acting = check_address(as_, "--as")

    async def work(session: AsyncSession, services: Services) -> str:
        config = services.settings
        staff = await acting_staff(session, acting)
        try:
            return await action(session, config, Clock().now(), staff)
        except queue.QueueError as error:
            raise _failed(error) from None

    return in_transaction(work)


def _undelivered(done: Any) -> str:
    return "" if done.delivered else " (the person cannot get messages now: STOP or blocked)"


@queue_app.command("take")
def take(ticket_id: int = typer.Argument(..., metavar="ID", help=ID_HELP),
         as_: str = typer.Option(..., "--as", help=AS_HELP)) -> None:
    """Take a ticket: the person is told who answers (first name only)."""
    from bot.domain.tickets import commands

    async def action(session: AsyncSession, config: Settings, now: datetime, staff: Any) -> str:
        done = await commands.take(session, config, now, ticket_id, staff)
        verb = "already held" if done.already else "took"
        return f"{verb} #{ticket_id} as {plain(staff.name)}{_undelivered(done)}"

    typer.echo(_act(as_, action))


@queue_app.command("reply")
def reply(ticket_id: int = typer.Argument(..., metavar="ID", help=ID_HELP),
          text: str = typer.Argument(..., metavar="TEXT",
                                     help="The reply, as the person will read it."),
          as_: str = typer.Option(..., "--as", help=AS_HELP),
          now_: bool = typer.Option(False, "--now",
                                    help="Send now, even in the person's quiet hours "
                                         "(urgent tickets only).")) -> None:
    """Answer the person (an open ticket is taken first). In their quiet hours, unless they
    wrote in the last hour, the reply waits for the end of them (--now: an urgent ticket's
    reply goes at once)."""
    from bot.domain.tickets import commands

    async def action(session: AsyncSession, config: Settings, now: datetime, staff: Any) -> str:
        from bot.cli.channels import channel_problem
        from bot.domain.tickets import queue

        problem = channel_problem(config, (await queue.get_ticket(session, ticket_id)).channel)
        if problem is not None:  # the reply would wait for ever
            raise Usage(f"cannot reply to #{ticket_id}: {problem}")
        done = await commands.reply(session, config, now, ticket_id, staff, text, urgent=now_)
        took = f"took #{ticket_id}; " if done.took else ""
        if done.held_until is not None and done.delivered:
            now_hint = "; --now sends it at once" if done.ticket.priority == "urgent" else ""
            return (f"{took}reply to #{ticket_id} held until "
                    f"{when(done.held_until, config.timezone)} (the person's quiet hours"
                    f"{now_hint})")
        sent = "queued to go now (urgent)" if now_ else "queued"
        return f"{took}reply to #{ticket_id} {sent}{_undelivered(done)}"

    typer.echo(_act(as_, action))


@queue_app.command("note")
def note(ticket_id: int = typer.Argument(..., metavar="ID", help=ID_HELP),
         text: str = typer.Argument(..., metavar="TEXT", help="The note, for staff only."),
         as_: str = typer.Option(..., "--as", help=AS_HELP)) -> None:
    """An internal note: the person never sees it."""
    from bot.domain.tickets import commands

    async def action(session: AsyncSession, config: Settings, now: datetime, staff: Any) -> str:
        await commands.note(session, now, ticket_id, staff, text)
        return f"note added to #{ticket_id}"

    typer.echo(_act(as_, action))


@queue_app.command("release")
def release(ticket_id: int = typer.Argument(..., metavar="ID", help=ID_HELP),
            as_: str = typer.Option(..., "--as", help=AS_HELP)) -> None:
    """Put a ticket you hold back in the queue."""
    from bot.domain.tickets import commands

    async def action(session: AsyncSession, config: Settings, now: datetime, staff: Any) -> str:
        done = await commands.release(session, config, now, ticket_id, staff)
        return f"#{ticket_id} was not taken" if done.already else f"#{ticket_id} is back in " \
            "the queue"

    typer.echo(_act(as_, action))


@queue_app.command("transfer")
def transfer(ticket_id: int = typer.Argument(..., metavar="ID", help=ID_HELP),
             address: str = typer.Argument(..., metavar="ADDRESS",
                                           help="The colleague's address."),
             as_: str = typer.Option(..., "--as", help=AS_HELP)) -> None:
    """Pass a ticket to another staff member, who is told at once."""
    from bot.domain.tickets import commands

    target_address = check_address(address, "ADDRESS")

    async def action(session: AsyncSession, config: Settings, now: datetime, staff: Any) -> str:
        from bot.domain.staff import find_staff

        target = await find_staff(session, target_address)
        if target is None:
            raise NotFound(not_staff(target_address, "ADDRESS"))
        done = await commands.transfer(session, config, now, ticket_id, staff, target)
        if done.already:
            return f"#{ticket_id} already belongs to {plain(target.name)}"
        duty = "" if target.on_duty else f" ({plain(target.name)} is off duty)"
        return f"#{ticket_id} passed to {plain(target.name)}{duty}"

    typer.echo(_act(as_, action))


@queue_app.command("close")
def close(ticket_id: int = typer.Argument(..., metavar="ID", help=ID_HELP),
          outcome: str | None = typer.Option(
              None, "--outcome", help="How it ended, a number or a word of the list: "
              "1 resolved, 2 referred, 3 appointment, 4 callback, 5 no-answer, 6 not-needed, "
              "7 other."),
          note: str | None = typer.Option(None, "--note",
                                          help="Free text, kept as a note on the ticket."),
          as_: str = typer.Option(..., "--as", help=AS_HELP)) -> None:
    """Close a ticket with its outcome; the person is asked whether we helped."""
    from bot.domain.tickets import commands, outcomes

    if outcomes.outcome_of(outcome or "") is None:
        given = f"unknown outcome {outcome!r}" if outcome else "missing"
        fail(f"--outcome: {given}; one of {outcomes.described()} (free text goes in --note)")

    async def action(session: AsyncSession, config: Settings, now: datetime, staff: Any) -> str:
        done = await commands.close(session, config, now, ticket_id, staff, outcome, note)
        return f"#{ticket_id} was already closed" if done.already else f"closed #{ticket_id}"

    typer.echo(_act(as_, action))
