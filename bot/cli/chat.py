"""``relais chat``: talk to the bot in the terminal, same engine and database.

Ctrl-D (or Ctrl-C) leaves at once, even while the bot is answering. No log line is ever
printed inside the conversation: warnings are kept and shown on stderr once it is over."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console

from bot.cli.common import NOISY, fail, plain, run_app, safe, settings
from bot.core.types import Outbound

console = Console(highlight=False)
NAME = re.compile(r"[A-Za-z0-9_.-]+")
PROMPT = "vous> "


def _default_name() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "moi"
    return re.sub(r"[^A-Za-z0-9_.-]", "", name) or "moi"


def _name(given: str | None) -> str:
    if given is None:
        return _default_name()
    name = given.strip()
    if name.lower().startswith("terminal:"):
        name = name[len("terminal:"):]
    if not NAME.fullmatch(name):
        fail(f"--as: {given!r} is not a terminal name (letters, digits, '.', '_' and '-', "
             "or terminal:NAME)")
    return name


def chat(
    name: str = typer.Option(None, "--as", help="Who you are: a name, or terminal:NAME."),
    lang: str = typer.Option(None, "--lang", help="Your language (fr, en…)."),
) -> None:
    """Talk to the bot as a citizen, in this terminal."""
    who = _name(name)
    config = settings()
    with _logs_kept() as kept:
        try:
            run_app(lambda services: _chat(services, who, lang), config=config, log_level=None)
        finally:
            for line in kept:  # outside the conversation
                sys.stderr.write(line + "\n")


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(plain(self.format(record)))


@contextlib.contextmanager
def _logs_kept() -> Iterator[list[str]]:
    """Logging that never writes to the terminal: WARNING and above are kept, to be shown
    when the conversation is over."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    keep = _Keep()
    root.handlers[:] = [keep]
    root.setLevel(logging.WARNING)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        yield keep.lines
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])


def _show(message: Outbound, text: str) -> None:
    console.print()
    for line in text.splitlines():
        console.print(f"[bold cyan]relais>[/] {safe(line)}" if line else "", markup=True,
                      soft_wrap=True)


class _Input:
    """The person's lines, read in a daemon thread (leaving never waits for it). On a
    terminal, while the bot answers, what is typed is watched too: Ctrl-D then leaves at
    once, and lines typed ahead are kept for after the answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ahead: list[str] = []
        self.eof = asyncio.Event()
        self.tty = sys.stdin.isatty()

    def read(self) -> asyncio.Future[str | None]:
        """The next line, or None at the end of the input."""
        future: asyncio.Future[str | None] = self.loop.create_future()
        if self.ahead:
            future.set_result(self.ahead.pop(0))
            return future
        if self.eof.is_set():
            future.set_result(None)
            return future

        def done(value: str | None) -> None:
            if not future.done():
                future.set_result(value)

        def reader() -> None:
            try:
                line: str | None = input(PROMPT)
            except (EOFError, OSError, ValueError):
                line = None
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self.loop.call_soon_threadsafe(done, line)

        threading.Thread(target=reader, name="relais-chat-input", daemon=True).start()
        return future

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """While the bot answers (terminal only): Ctrl-D sets ``eof``."""
        if not self.tty:
            yield
            return
        fd = sys.stdin.fileno()

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            text = data.decode("utf-8", "replace")
            # b"" is Ctrl-D in canonical mode; typed just after a line readline read (the
            # terminal still raw), Ctrl-D arrives as the character itself.
            text, ctrl_d, _rest = text.partition("\x04")
            self.ahead.extend(text.splitlines())
            if not data or ctrl_d:
                self.eof.set()
                self.loop.remove_reader(fd)

        try:
            self.loop.add_reader(fd, readable)
        except (NotImplementedError, ValueError, OSError):
            yield
            return
        try:
            yield
        finally:
            self.loop.remove_reader(fd)


async def _first(*awaitables: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks[1:]:  # the first is the caller's to cancel or keep
            if not task.done():
                task.cancel()


async def _chat(services: Any, who: str, lang: str | None) -> None:
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    from sqlalchemy import select

    from bot.channels.terminal import TerminalChannel
    from bot.core.i18n import normalise_language
    from bot.core.types import Inbound
    from bot.storage.models import Address, Contact

    loop = asyncio.get_running_loop()
    services.registry.add(TerminalChannel(_show))
    worker = services.outbox_worker(only_to=who, poll_interval=1.0)
    scheduler = services.scheduler()
    lock = asyncio.Lock()
    if lang:
        async with services.sessions() as session, session.begin():
            contact = await session.scalar(
                select(Contact).join(Address, Address.contact_id == Contact.id).where(
                    Address.channel == "terminal", Address.external_id == who
                )
            )
            if contact is not None:
                contact.language = normalise_language(lang)

    async def drain() -> None:
        async with lock:
            await scheduler.run_due()
            while await worker.drain_once():
                pass

    async def background() -> None:  # mediators' replies arriving while we wait
        while True:
            await asyncio.sleep(1.0)
            await drain()

    async def answer(line: str) -> None:
        await services.engine.handle(
            Inbound("terminal", f"terminal:{who}", line, language_hint=lang)
        )
        await drain()

    typed = _Input(loop)
    leave = asyncio.Event()  # Ctrl-C: leave as on Ctrl-D
    saved_tty = _tty_state()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, leave.set)
    console.print(f"[dim]Relais chat as terminal:{safe(who)}. Type a message; Ctrl-D to "
                  "leave.[/]")
    poller = asyncio.create_task(background())
    try:
        while not leave.is_set():
            pending = typed.read()
            await _first(pending, leave.wait())
            if not pending.done():
                break  # Ctrl-C at the prompt
            line = pending.result()
            if line is None:
                break
            if not line.strip():
                continue
            task = asyncio.create_task(answer(line))
            with typed.watching():
                await _first(task, typed.eof.wait(), leave.wait())
            if not task.done():  # leaving while the bot answers: at once
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                break
            task.result()
            if typed.eof.is_set() and not typed.ahead:
                break
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await poller
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
        _restore_tty(saved_tty)
    console.print()
    console.print("[dim]Au revoir.[/]")


def _tty_state() -> Any:
    try:
        import termios

        return termios.tcgetattr(sys.stdin.fileno())
    except Exception:  # not a terminal, or no termios
        return None


def _restore_tty(state: Any) -> None:
    """Readline may be waiting for a line in its thread when we leave: give the terminal
    back as it was."""
    if state is None:
        return
    with contextlib.suppress(Exception):
        import termios

        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, state)
