"""``relais broadcast``: preview, send, schedule, list, status and cancel news to a segment.

A segment is chosen with ``--tag`` (repeatable), ``--language``, ``--postcode`` (a prefix:
``59`` is the Nord département) and ``--channel``; several filters combine with AND. The
text comes from ``--text`` (one text for everyone) or ``--file`` (YAML, one text per
language, French as the fallback). ``send`` and ``schedule`` print the broadcast id alone on
stdout (the rest goes to stderr), so ``ID=$(relais broadcast send … --yes)`` works.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    WHEN_WIDTH,
    NotFound,
    Usage,
    check_address,
    fail,
    plain,
    run_app,
    safe,
    settings,
    when,
)
from bot.core.clock import Clock
from bot.core.config import Settings
from bot.domain import broadcasts as bc

T = TypeVar("T")

broadcast_app = typer.Typer(help="News to a group of people.", no_args_is_help=True)

REASON_LABELS = {
    "no_address": "no address",
    "stop": "said STOP",
    "no_consent": "no consent to news",
    "blocked": "address blocked by the provider",
    "landline": "landline (no SMS)",
    "suppressed": "forgotten after STOP",
    "weekly_cap": "weekly limit reached",
}

TAG = typer.Option(None, "--tag",
                   help="People with this tag (repeat it: people with all of the tags).")
LANGUAGE = typer.Option(None, "--language", help="People with this language (fr, en…).")
POSTCODE = typer.Option(None, "--postcode",
                        help="People whose postcode starts with this (59 is the Nord).")
CHANNEL = typer.Option(None, "--channel",
                       help="People reached on this channel: sms, whatsapp or telegram.")
TEXT = typer.Option(None, "--text", help="The text, the same for everyone.")
FILE = typer.Option(None, "--file",
                    help="A YAML file with one text per language (fr is needed).")
TEST = typer.Option(None, "--test", help="Send only to this address, to check the text.")
YES = typer.Option(False, "--yes", help="Do not ask for confirmation.")
ID = typer.Argument(..., metavar="ID", help="The broadcast number.")

Missing = NotFound  # nobody to send to: exit 1


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True, emoji=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _inputs(
    tags: list[str] | None, language: str | None, postcode: str | None, channel: str | None,
    text: str | None, file: Path | None, test: str | None,
) -> tuple[bc.Segment, dict[str, str], str | None]:
    try:
        segment = bc.make_segment(tags or (), language, postcode, channel)
        content = None
        if file is not None:
            try:
                content = file.read_text(encoding="utf-8-sig")
            except OSError as exc:
                raise bc.BroadcastError(f"--file: cannot read {file}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise bc.BroadcastError(f"--file: {file} is not UTF-8 text") from None
        texts = bc.make_texts(text, content)
    except bc.BroadcastError as exc:
        fail(str(exc), EXIT_USAGE)
    target = None
    if test is not None:
        target = check_address(test, "--test")
        if target.startswith("terminal:"):
            fail("--test: a terminal address cannot receive broadcasts", EXIT_USAGE)
    return segment, texts, target


def _execute(work: Callable[[Any, Settings], Awaitable[T]],
             config: Settings | None = None) -> T:
    """``run_app`` with ``work(services, settings)``; the broadcast errors as exit codes."""

    async def go(services: Any) -> T:
        try:
            return await work(services, services.settings)
        except bc.BroadcastError as exc:
            raise Usage(str(exc)) from None
        except bc.NotFound as exc:
            raise NotFound(str(exc)) from None

    return run_app(go, config=config)


def _channels_missing(data: dict[str, Any], config: Settings, target: str | None) -> None:
    """Refuse at once (exit 2) when some recipients are on a channel Relais cannot send
    on: their messages would wait for ever."""
    from bot.cli.channels import channel_problem

    if target is not None:
        problem = channel_problem(config, target.partition(":")[0])
        if problem is not None:
            raise Usage(f"--test: {problem}")
        return
    people: dict[str, int] = {}
    for row in data["by_channel_language"]:
        people[row["channel"]] = people.get(row["channel"], 0) + row["recipients"]
    problems = {channel: channel_problem(config, channel) for channel in sorted(people)}
    off = {channel: problem for channel, problem in problems.items() if problem}
    if not off:
        return
    reachable = [channel for channel in people if channel not in off]
    hint = (f"; or leave them out with --channel {reachable[0]}" if len(reachable) == 1
            else "")
    raise Usage("; ".join(f"{people[c]:,} recipient(s) on {c}: {p}" for c, p in off.items())
                + hint)


def _confirm(question: str, yes: bool) -> None:
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm(question, err=True):
        fail("nothing sent", EXIT_NOT_FOUND)


# -- printing -------------------------------------------------------------------------------


def _n(value: int) -> str:
    return f"{value:,}"


def print_preview(data: dict[str, Any], console: Console) -> None:
    who = data["test_address"] or bc.Segment.from_json(data["segment"]).describe()
    console.print(Text(f"Broadcast to {plain(who)}", style="bold"))
    console.print(f"Recipients: [bold]{_n(data['recipients'])}[/bold]")
    if data["by_channel_language"]:
        table = Table("channel", "language", "people", box=None, pad_edge=False)
        for row in data["by_channel_language"]:
            table.add_row(safe(row["channel"]), safe(row["language"]), _n(row["recipients"]))
        console.print(table)
    console.print(f"Left out: [bold]{_n(data['excluded_total'])}[/bold]")
    for reason, count in data["excluded"].items():
        if count:
            console.print(f"  {REASON_LABELS[reason]}: {_n(count)}")
    if data["in_quiet_hours"]:
        console.print(f"In their quiet hours now: {_n(data['in_quiet_hours'])} "
                      "(they get it when their quiet hours end)")
    for item in data["texts"]:
        console.print(
            f"\n[bold]{safe(item['language'])}[/bold] text, to {_n(item['recipients'])} people "
            f"({_n(item['sms_recipients'])} by SMS): {item['sms_segments']} SMS segment(s), "
            f"{item['encoding']}"
        )
        console.print("\n".join(plain(line) for line in item["text"].splitlines()),
                      markup=False, emoji=False)
    console.print(
        f"\nSMS segments: {_n(data['sms_segments'])}; estimated cost: "
        f"{data['estimated_cost']:,.2f} ({data['sms_segment_price']} per segment)"
    )


def print_status(data: dict[str, Any], console: Console, tz: str) -> None:
    who = data["test_address"] or bc.Segment.from_json(data["segment"]).describe()
    console.print(f"[bold]Broadcast {data['id']}[/bold] to {safe(who)}: {data['status']}")
    for label, key in (("created", "created_at"), ("scheduled for", "scheduled_at"),
                       ("started", "started_at"), ("finished", "finished_at")):
        if data[key]:
            console.print(f"  {label}: {when(data[key], tz)}")
    table = Table("recipients", "queued", "sent", "delivered", "read", "failed", "cancelled",
                  "replied", box=None, pad_edge=False)
    table.add_row(*(_n(data[k]) for k in ("recipients", "queued", "sent", "delivered", "read",
                                          "failed", "cancelled", "replied")))
    console.print(table)
    if data["held"]:
        console.print(f"Waiting for the person to write on WhatsApp: {_n(data['held'])}")
    for failure in data["failures"]:
        code = f" {failure['code']}" if failure["code"] else ""
        console.print(plain(f"  failed ({failure['failure'] or '?'}{code}): "
                            f"{failure['reason'] or ''} x{_n(failure['count'])}"),
                      markup=False, emoji=False)
    left = {k: v for k, v in data["excluded"].items() if v}
    if left:
        console.print("Left out: " + ", ".join(f"{REASON_LABELS[k]} {_n(v)}"
                                               for k, v in left.items()))


# -- commands ---------------------------------------------------------------------------------


@broadcast_app.command("preview")
def preview(
    tag: list[str] = TAG, language: str = LANGUAGE, postcode: str = POSTCODE,
    channel: str = CHANNEL, text: str = TEXT, file: Path = FILE, test: str = TEST,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Who would get it, who is left out and why, each language's text, and the SMS
    cost."""
    segment, texts, target = _inputs(tag, language, postcode, channel, text, file, test)

    async def work(services: Any, config: Settings) -> dict[str, Any]:
        async with services.sessions() as session:
            result = await bc.preview(session, segment, texts, config, Clock().now(),
                                      test_address=target)
        return result.as_json(config)

    data = _execute(work)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False))
    else:
        print_preview(data, _out())


def _start(
    segment: bc.Segment, texts: dict[str, str], target: str | None, yes: bool,
    at_text: str | None,
) -> None:
    err = _err()

    async def work(services: Any, config: Settings) -> tuple[int, int, str | None]:
        now = Clock().now()
        at = _parse_when(at_text, config.timezone) if at_text is not None else None
        async with services.sessions() as session:
            data = (await bc.preview(session, segment, texts, config, now,
                                     test_address=target)).as_json(config)
        if at is None and not data["recipients"]:
            raise Missing(f"nobody to send to ({data['excluded_total']} left out); "
                          "see relais broadcast preview")
        _channels_missing(data, config, target)
        if not yes and sys.stdin.isatty():
            print_preview(data, err)
            on = f" on {when(at, config.timezone)}" if at else ""
            _confirm(f"Send to {data['recipients']:,} people{on}?", yes)
        async with services.sessions() as session, session.begin():
            broadcast = await bc.create(session, segment, texts, now, at=at,
                                        test_address=target)
            broadcast_id = broadcast.id
        if at is not None:
            return broadcast_id, data["recipients"], when(at, config.timezone)
        written = await _enqueue(services, broadcast_id, config, data["recipients"], err)
        return broadcast_id, written, None

    broadcast_id, count, scheduled = _execute(work)
    typer.echo(str(broadcast_id))
    if scheduled is not None:
        err.print(f"broadcast {broadcast_id} scheduled for {scheduled} "
                  f"({count:,} people if it were now)")
    else:
        err.print(f"broadcast {broadcast_id}: {count:,} messages queued "
                  f"(relais broadcast status {broadcast_id})")


async def _enqueue(services: Any, broadcast_id: int, config: Settings, expected: int,
                   err: Console) -> int:
    if not err.is_terminal:
        return await bc.enqueue_all(services.sessions, broadcast_id, config, Clock())
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("queueing"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("queue", total=max(expected, 1))
        return await bc.enqueue_all(services.sessions, broadcast_id, config, Clock(),
                                    progress=lambda n: bar.advance(task, n))


def _parse_when(text: str, tz: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Usage(f"--at: expected a date and time like 2030-03-05T14:00, got {text!r}"
                    ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return moment


@broadcast_app.command("send")
def send(
    tag: list[str] = TAG, language: str = LANGUAGE, postcode: str = POSTCODE,
    channel: str = CHANNEL, text: str = TEXT, file: Path = FILE, test: str = TEST,
    yes: bool = YES,
) -> None:
    """Send now (people in their quiet hours get it when those end). Prints the id."""
    segment, texts, target = _inputs(tag, language, postcode, channel, text, file, test)
    _start(segment, texts, target, yes, None)


@broadcast_app.command("schedule")
def schedule(
    at: str = typer.Option(..., "--at", help="When to send: 2030-03-05T14:00 (in "
                                             "RELAIS_TIMEZONE) or with an offset, "
                                             "2030-03-05T14:00+04:00."),
    tag: list[str] = TAG, language: str = LANGUAGE, postcode: str = POSTCODE,
    channel: str = CHANNEL, text: str = TEXT, file: Path = FILE, test: str = TEST,
    yes: bool = YES,
) -> None:
    """Send at a given time (the recipients are chosen then). Prints the id."""
    segment, texts, target = _inputs(tag, language, postcode, channel, text, file, test)
    _start(segment, texts, target, yes, at)


@broadcast_app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array on stdout."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000,
                              help="How many to show, newest first."),
) -> None:
    """Broadcasts, newest first."""

    async def work(services: Any, config: Settings) -> list[dict[str, Any]]:
        async with services.sessions() as session:
            return await bc.listing(session, limit)

    config = settings()
    rows = _execute(work, config)
    tz = config.timezone
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no broadcasts yet")
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("id", no_wrap=True, justify="right")
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True, min_width=WHEN_WIDTH)
    table.add_column("scheduled", no_wrap=True)
    table.add_column("to", overflow="fold", ratio=1)
    table.add_column("recipients", no_wrap=True, justify="right")
    for row in rows:
        table.add_row(str(row["id"]), row["status"], when(row["created_at"], tz),
                      when(row["scheduled_at"], tz),
                      safe(f"test {row['test_address']}" if row["test_address"]
                           else bc.Segment.from_json(row["segment"]).describe()),
                      _n(row["recipients"]))
    _out().print(table)


@broadcast_app.command("status")
def status(
    broadcast_id: int = ID,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """How many are queued, sent, delivered, read, failed (with the reasons), and replied
    within 48 hours."""

    async def work(services: Any, config: Settings) -> dict[str, Any]:
        async with services.sessions() as session:
            broadcast = await bc.get(session, broadcast_id)
            return await bc.describe(session, broadcast, Clock().now())

    config = settings()
    data = _execute(work, config)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False))
    else:
        print_status(data, _out(), config.timezone)


@broadcast_app.command("cancel")
def cancel(broadcast_id: int = ID) -> None:
    """Stop a broadcast: messages not sent yet are cancelled."""

    async def work(services: Any, config: Settings) -> int:
        async with services.sessions() as session, session.begin():
            return await bc.cancel(session, broadcast_id, Clock().now())

    count = _execute(work)
    typer.echo(f"broadcast {broadcast_id} cancelled: {count:,} unsent messages cancelled")
