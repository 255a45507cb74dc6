"""A fake provider: a real aiohttp server on 127.0.0.1 that records and misbehaves on demand.

The real client code (twilio-python, python-telegram-bot, aiohttp) runs unchanged against it
(see aiohttp's ``examples/fake_server.py``). Subclasses declare the provider's routes.

- Every request is recorded in ``requests`` (method, path, query, headers, parsed body, time).
- A request no route claims, or one the real provider would refuse as malformed (a bug in
  the code under test), is also recorded in ``unexpected``: tests assert it stays empty.
- ``fail_next(kind, count=1, **opts)`` queues failures, consumed by the next matching
  send requests. Generic kinds: "429", "500", "timeout" (answer after ``delay`` seconds,
  longer than the client's timeout) and "reset" (drop the connection). Common options:
  ``route`` (fail another route than the send routes), ``to`` (only this recipient),
  ``deliver=True`` with "timeout"/"reset" (the provider did send the message, only the
  answer is lost: the case that makes blind retries send twice), ``deferred=True`` with a
  provider error (answer success now; the error comes later in a status callback/webhook).
- ``rate_limit`` (messages/s over a sliding 1 s window of accepted sends): above it the
  fake answers the provider's real throttling error and counts it in ``throttled``.
- Successful sends are normalised in ``sent`` (see ``SentMessage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self, TypedDict
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

GENERIC_KINDS = frozenset({"429", "500", "timeout", "reset"})
DEFAULT_TIMEOUT_DELAY = 30.0
RECORD_KEY = web.RequestKey("fake_record", object)

FormValue = str | list[str]


class SentMessage(TypedDict):
    """A message the fake accepted, in provider-neutral terms."""

    id: str  # the provider's id (Twilio sid, wamid, Telegram message_id)
    to: str  # recipient as the client sent it (E.164, "whatsapp:+33…", digits, chat id)
    kind: str  # "text", "interactive", "template", "photo", "image", "voice", …
    text: str | None  # body, caption or interactive body
    media: list[str]  # media URLs / ids / "upload:<filename>"
    choices: list[dict[str, str]]  # buttons / list rows / inline buttons: {"id", "title"}
    raw: dict[str, Any]  # the parsed payload as received
    time: float  # clock() when accepted
    error: dict[str, Any] | None  # deferred failure, to report in a later status


@dataclass
class UploadedFile:
    """A file part of a multipart request."""

    filename: str | None
    content_type: str
    content: bytes

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass
class RecordedRequest:
    """One request as the fake received it.

    ``body`` is the parsed JSON, or the form as a dict (a name sent once maps to a str,
    a repeated name to a list of str), or None. ``raw`` is empty for multipart bodies
    (their fields are in ``body`` and their files in ``files``).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: Any
    raw: bytes
    time: float
    route: str | None = None
    files: dict[str, UploadedFile] = field(default_factory=dict)
    status: int | None = None

    @property
    def form(self) -> dict[str, FormValue]:
        return self.body if isinstance(self.body, dict) else {}


@dataclass
class Failure:
    """A queued failure; ``remaining`` counts the requests it still applies to."""

    kind: str
    remaining: int
    route: str | None = None
    to: str | None = None
    opts: dict[str, Any] = field(default_factory=dict)

    def matches(self, route: str | None, to: str | None, send_routes: frozenset[str]) -> bool:
        if self.route is None:
            if route not in send_routes:
                return False
        elif self.route != route:
            return False
        return self.to is None or self.to == to


Succeed = Callable[[Failure | None], web.StreamResponse]


def collapse_pairs(pairs: list[tuple[str, str]]) -> dict[str, FormValue]:
    """Form pairs to a dict: a name sent once maps to its value, a repeated one to a list."""
    form: dict[str, FormValue] = {}
    for name, value in pairs:
        current = form.get(name)
        if current is None:
            form[name] = value
        elif isinstance(current, list):
            current.append(value)
        else:
            form[name] = [current, value]
    return form


def as_list(value: FormValue | None) -> list[str]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def first(value: Any) -> Any:
    """The first value of a form field (repeated fields are lists)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(data, ensure_ascii=False),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class FakeServer:
    """Base fake provider. Use ``async with FakeX() as fake:`` or ``start()``/``stop()``."""

    failure_kinds: ClassVar[frozenset[str]] = GENERIC_KINDS
    send_routes: ClassVar[frozenset[str]] = frozenset()
    default_retry_after: ClassVar[int | None] = 1

    def __init__(
        self,
        *,
        rate_limit: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_limit = rate_limit
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self.unexpected: list[RecordedRequest] = []
        self.sent: list[SentMessage] = []
        self.throttled = 0
        self._failures: list[Failure] = []
        self._window: deque[float] = deque()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Self:
        app = web.Application(middlewares=[self._record_middleware])
        self.setup_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._unmatched)
        # handler_cancellation: a client that gives up cancels the sleeping "timeout" handler.
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._closing.clear()
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, no trailing slash."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._port}"

    def setup_routes(self, app: web.Application) -> None:
        """Add the provider's routes (subclasses); name them after ``send_routes``."""

    def clear(self) -> None:
        """Forget recorded requests, sends, throttling and queued failures."""
        self.requests.clear()
        self.unexpected.clear()
        self.sent.clear()
        self.throttled = 0
        self._failures.clear()
        self._window.clear()

    # ------------------------------------------------------------------ failures

    def fail_next(
        self,
        kind: str,
        count: int = 1,
        *,
        route: str | None = None,
        to: str | None = None,
        **opts: Any,
    ) -> None:
        """Queue ``count`` failures of ``kind`` for the next matching requests.

        By default they apply to send routes only; ``route`` names another route (see the
        subclass), ``to`` restricts them to one recipient. Failures are consumed in the
        order they were queued.
        """
        if kind not in self.failure_kinds:
            known = ", ".join(sorted(self.failure_kinds))
            raise ValueError(f"unknown failure kind {kind!r} for {type(self).__name__}: {known}")
        if count < 1:
            raise ValueError("count must be >= 1")
        self._failures.append(Failure(kind, count, route, to, dict(opts)))

    @property
    def pending_failures(self) -> list[Failure]:
        """Failures queued but not consumed yet."""
        return list(self._failures)

    def take_failure(self, route: str | None, to: str | None) -> Failure | None:
        for failure in self._failures:
            if failure.matches(route, to, self.send_routes):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure
        return None

    def failure_response(
        self, kind: str, opts: dict[str, Any], *, to: str | None = None
    ) -> web.StreamResponse:
        """The provider's answer for a provider-specific or "429"/"500" failure to ``to``."""
        if kind == "429":
            return json_response(
                {"error": "Too Many Requests"},
                status=429,
                headers=self.retry_after_headers(opts.get("retry_after")),
            )
        return json_response({"error": "Internal Server Error"}, status=500)

    def throttle_response(self, retry_after: int) -> web.StreamResponse:
        """The provider's answer when ``rate_limit`` is exceeded."""
        return self.failure_response("429", {"retry_after": retry_after})

    def retry_after_headers(self, retry_after: int | None) -> dict[str, str]:
        value = self.default_retry_after if retry_after is None else retry_after
        return {} if value is None else {"Retry-After": str(value)}

    # ------------------------------------------------------------------ request handling

    async def respond(
        self, request: web.Request, *, to: str | None, succeed: Succeed
    ) -> web.StreamResponse:
        """Apply queued failures and the rate ceiling, else call ``succeed(None)``.

        ``succeed(failure)`` must record the message in ``sent`` and build the success
        answer; it receives the failure when it is ``deferred``.
        """
        record = self.record_of(request)
        is_send = record.route in self.send_routes
        failure = self.take_failure(record.route, to)
        if failure is not None:
            return await self._apply_failure(request, failure, succeed, to, is_send)
        if is_send and self._over_rate():
            self.throttled += 1
            return self.throttle_response(self._retry_after())
        return self._accept(succeed, None, is_send)

    async def _apply_failure(
        self,
        request: web.Request,
        failure: Failure,
        succeed: Succeed,
        to: str | None,
        is_send: bool,
    ) -> web.StreamResponse:
        opts = failure.opts
        if failure.kind == "timeout":
            answer = self._accept(succeed, None, is_send) if opts.get("deliver") else None
            await self.sleep(float(opts.get("delay", DEFAULT_TIMEOUT_DELAY)))
            if answer is not None:  # a client that waited long enough gets the real answer
                return answer
            return self.failure_response("500", {}, to=to)
        if failure.kind == "reset":
            if opts.get("deliver"):
                self._accept(succeed, None, is_send)
            return self.reset_connection(request)
        if opts.get("deferred"):
            return self._accept(succeed, failure, is_send)
        return self.failure_response(failure.kind, opts, to=to)

    def _accept(
        self, succeed: Succeed, failure: Failure | None, is_send: bool
    ) -> web.StreamResponse:
        if is_send:
            self._window.append(self.clock())
        return succeed(failure)

    def _over_rate(self) -> bool:
        if self.rate_limit is None:
            return False
        now = self.clock()
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        return len(self._window) + 1 > self.rate_limit

    def _retry_after(self) -> int:
        if not self._window:
            return 1
        return max(1, math.ceil(self._window[0] + 1.0 - self.clock()))

    async def sleep(self, delay: float) -> None:
        """Sleep, but wake up when the server stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    def reset_connection(self, request: web.Request) -> web.StreamResponse:
        """Drop the connection with a TCP RST; the client sees a reset / disconnect."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    linger = struct.pack("ii", 1, 0)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            transport.abort()
        return web.Response(status=500)  # never reaches the client

    def mark_unexpected(self, request: web.Request) -> None:
        record = self.record_of(request)
        if record not in self.unexpected:
            self.unexpected.append(record)

    @staticmethod
    def record_of(request: web.Request) -> RecordedRequest:
        record = request[RECORD_KEY]
        assert isinstance(record, RecordedRequest)
        return record

    def requests_to(self, route: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.route == route]

    async def _unmatched(self, request: web.Request) -> web.StreamResponse:
        self.mark_unexpected(request)
        return self.not_found_response(request)

    def not_found_response(self, request: web.Request) -> web.StreamResponse:
        return json_response(
            {"error": f"no route for {request.method} {request.path}"}, status=404
        )

    @web.middleware
    async def _record_middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Any],
    ) -> web.StreamResponse:
        record = await self._record(request)
        request[RECORD_KEY] = record
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        record.status = response.status
        return response

    async def _record(self, request: web.Request) -> RecordedRequest:
        route = request.match_info.route.name
        body: Any = None
        raw = b""
        files: dict[str, UploadedFile] = {}
        if request.content_type == "multipart/form-data":
            body, files = await self._read_multipart(request)
        elif request.body_exists:
            raw = await request.read()
            body = self._parse(request.content_type, raw)
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=body,
            raw=raw,
            time=self.clock(),
            route=route,
            files=files,
        )
        self.requests.append(record)
        return record

    @staticmethod
    def _parse(content_type: str, raw: bytes) -> Any:
        text = raw.decode("utf-8", "replace")
        if content_type == "application/x-www-form-urlencoded":
            return collapse_pairs(parse_qsl(text, keep_blank_values=True))
        try:
            return json.loads(text)
        except ValueError:
            return None

    @staticmethod
    async def _read_multipart(
        request: web.Request,
    ) -> tuple[dict[str, FormValue], dict[str, UploadedFile]]:
        fields: list[tuple[str, str]] = []
        files: dict[str, UploadedFile] = {}
        data = await request.post()
        for name, value in data.items():
            if isinstance(value, web.FileField):
                files[name] = UploadedFile(value.filename, value.content_type, value.file.read())
            else:
                fields.append((name, str(value)))
        return collapse_pairs(fields), files
