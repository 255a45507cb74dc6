"""Any text, in any state, gets a reply (or joins the person's open ticket) and never
breaks a step. Hypothesis drives people through random mixes of real and random inputs."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot.app import Services, open_services
from bot.storage.models import Contact, Message
from tests.helpers.db import make_settings
from tests.helpers.dialog import Dialog

KNOWN = ["bonjour", "1", "2", "3", "deux", "aide", "menu", "langue", "stop", "start",
         "oui", "non", "/start", "annuler", "oublier", "10", "0", "stop svp", "AIDE!"]
inputs = st.one_of(st.sampled_from(KNOWN), st.text(max_size=40))


async def _check(services: Services, who: str, script: list[str]) -> None:
    dialog = Dialog(services, who=who)
    for text in script:
        sent = await dialog.send(text)
        async with services.sessions() as session:
            message = await session.scalar(select(Message).order_by(Message.id.desc()).limit(1))
            contact = await session.get(Contact, message.contact_id)
        assert message.step_error is None, message.step_error
        assert message.handled_at is not None
        if contact.opted_out_at is None and text.strip():
            assert sent or message.ticket_id is not None, (script, text)


def test_any_text_in_any_state_gets_an_answer(db_url):
    loop = asyncio.new_event_loop()
    services = loop.run_until_complete(open_services(make_settings(db_url), migrate=False))
    people = itertools.count()

    @settings(max_examples=40, deadline=None)
    @given(script=st.lists(inputs, min_size=1, max_size=8))
    def run(script: list[str]) -> None:
        loop.run_until_complete(_check(services, f"p{next(people)}", script))

    try:
        run()
    finally:
        loop.run_until_complete(services.close())
        loop.close()
