"""The aiohttp app in-process: health, metrics."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from bot.app import Services
from bot.core.clock import Clock
from bot.core.config import load_settings
from bot.engine import Engine
from bot.storage.db import make_engine, sessionmaker
from bot.web.app import create_app
from tests.helpers.dialog import Dialog


async def test_healthz_and_metrics_count_what_happened(services, settings):
    dialog = Dialog(services)
    await dialog.send("bonjour")
    async with TestClient(TestServer(create_app(settings, services=services,
                                                workers=False))) as client:
        health = await client.get("/healthz")
        assert health.status == 200
        text = await (await client.get("/metrics")).text()
    assert 'relais_inbound_total{channel="terminal",outcome="written"} 1.0' in text
    assert 'relais_outbound_total{channel="terminal",status="sent"} 1.0' in text
    assert 'relais_outbox_depth{status="queued"} 0.0' in text
    assert "relais_send_latency_seconds_bucket" in text


async def test_healthz_is_503_when_the_database_does_not_answer():
    settings = load_settings(env_file=None,
                             database_url="postgresql://postgres@127.0.0.1:9/nothing")
    db = make_engine(settings.database_url)
    sessions = sessionmaker(db)
    services = Services(settings=settings, db=db, sessions=sessions,
                        engine=Engine(sessions, settings), clock=Clock())
    async with TestClient(TestServer(create_app(settings, services=services,
                                                workers=False))) as client:
        response = await client.get("/healthz")
        assert response.status == 503
        metrics = await client.get("/metrics")
        assert metrics.status == 200
    await db.dispose()
