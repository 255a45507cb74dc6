"""Run the real ``relais serve`` application in-process on a real port, for end-to-end
tests: webhooks in, outbox workers and scheduler running, provider fakes out. Also the
Twilio side of it (``twilio_app``, signed ``post``) and reading the running app's database."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from bot.app import Services
from bot.channels import twilio as tw
from bot.core.config import Settings
from bot.web.app import SERVICES, create_app
from tests.fakes.signing import TWILIO_SIGNATURE_HEADER, twilio_signature
from tests.fakes.twilio import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilio
from tests.helpers import waiting
from tests.helpers.db import make_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Running:
    url: str  # equals settings.public_url: what providers sign
    settings: Settings
    services: Services
    http: ClientSession

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll until ``condition()`` is true (workers run in the background)."""
        await waiting.wait_for(condition, timeout)


@web.middleware
async def drain_after_webhooks(request: web.Request, handler: Any) -> web.StreamResponse:
    """Once a webhook is stored (what its answer means), the inbox is processed before the
    answer leaves: what the inbox worker of ``relais serve`` does in the background, made
    deterministic, so a test (or a fake provider's callback) reads the outcome right after."""
    response = await handler(request)
    if request.method == "POST" and request.path.startswith("/webhooks/"):
        await request.app[SERVICES].drain_inbox()
    return response


@asynccontextmanager
async def serving(db_url: str, *, workers: bool = True, inbox: str = "drain",
                  **overrides: object) -> AsyncIterator[Running]:
    """``relais serve`` with settings ``overrides`` (e.g. ``twilio_api_url=fake.url``).

    ``workers``: the outbox worker and scheduler run. ``inbox``: ``drain`` processes the
    inbox right after each webhook is stored (``drain_after_webhooks``); ``background``
    lets the app's own inbox worker do it, as in production (tests wait for the outcome);
    ``off`` stores webhooks and processes nothing (``relais serve --no-workers``)."""
    assert inbox in ("drain", "background", "off"), inbox
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    overrides.setdefault("public_url", url)
    settings = make_settings(db_url, port=port, **overrides)
    app = create_app(settings, workers=workers, inbox_workers=inbox == "background")
    if inbox == "drain":
        app.middlewares.append(drain_after_webhooks)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        async with ClientSession() as http:
            yield Running(url=url, settings=settings, services=app[SERVICES], http=http)
    finally:
        await server.close()


async def query(running: Running, statement: Any) -> list[Any]:
    """The rows ``statement`` selects, in the running app's database."""
    async with running.services.sessions() as session:
        return list((await session.scalars(statement)).all())


async def count(running: Running, model: Any, *where: Any) -> int:
    async with running.services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where))
                   or 0)


# -- Twilio ---------------------------------------------------------------------------------

TWILIO_SENDER = "+33757000100"
TWILIO_SMS: dict[str, Any] = {
    "twilio_account_sid": TEST_ACCOUNT_SID,
    "twilio_auth_token": TEST_AUTH_TOKEN,
    "twilio_sms_from": TWILIO_SENDER,
}


@asynccontextmanager
async def twilio_app(
    db_url: str, fake: FakeTwilio | None = None, **overrides: Any
) -> AsyncIterator[Running]:
    """``relais serve`` with Twilio SMS configured, sending to ``fake`` when given."""
    settings = {**TWILIO_SMS, **overrides}
    if fake is not None:
        settings.setdefault("twilio_api_url", fake.url)
    async with serving(db_url, **settings) as running:
        yield running


def sign(params: dict[str, str], url: str, token: str = TEST_AUTH_TOKEN) -> dict[str, str]:
    return {TWILIO_SIGNATURE_HEADER: twilio_signature(token, url, params)}


async def post(
    running: Running,
    params: dict[str, str],
    path: str = tw.INBOUND_PATH,
    *,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """POST ``params`` form-encoded, signed for the public URL unless ``headers`` is given."""
    if headers is None:
        headers = sign(params, running.settings.base_url + path)
    async with running.http.post(running.url + path, data=params, headers=headers) as resp:
        return resp.status, await resp.text()
