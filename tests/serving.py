"""Run the real ``relais serve`` application in-process on a real port, for end-to-end
tests: webhooks in, outbox workers and scheduler running, provider fakes out."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from bot.config import Settings
from bot.services import Services
from bot.web.app import SERVICES, create_app
from tests.conftest import make_settings


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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def serving(db_url: str, *, workers: bool = True, **overrides: object
                  ) -> AsyncIterator[Running]:
    """``relais serve`` with settings ``overrides`` (e.g. ``twilio_api_url=fake.url``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    overrides.setdefault("public_url", url)
    settings = make_settings(db_url, port=port, **overrides)
    app = create_app(settings, workers=workers)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        async with ClientSession() as http:
            yield Running(url=url, settings=settings, services=app[SERVICES], http=http)
    finally:
        await server.close()
