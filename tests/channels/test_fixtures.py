"""The inbound webhook fixtures stay well-formed and consistent with their payloads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from telegram import Update

from tests.fakes import whatsapp as wa
from tests.fakes.twilio import sms_segments

HERE = Path(__file__).parent
FIXTURES = sorted(HERE.glob("*/*.json"))
OUTCOMES = {"written", "duplicate", "ignored", "rejected"}
STATUSES = {"sent", "delivered", "read", "failed"}
MESSAGE_KEYS = {"kind", "address", "text", "provider_id", "choice_id", "media"}
OPTIONAL_MESSAGE_KEYS = {"profile_name", "location", "shared_phone", "start_payload"}
PHONE = r"\+(33[67]\d{8}|262(692|693)\d{6})"
ADDRESS = re.compile(rf"^((sms|whatsapp):{PHONE}|telegram:-?\d+)$")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_every_provider_has_fixtures() -> None:
    assert {path.parent.name for path in FIXTURES} == {"twilio", "whatsapp", "telegram"}
    assert len(FIXTURES) >= 25


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
def test_fixture_shape(path: Path) -> None:
    data = load(path)
    assert set(data) == {"description", "request", "expect"}
    assert isinstance(data["description"], str) and data["description"]
    request = data["request"]
    assert request["method"] == "POST"
    expected_type = {
        "twilio": "application/x-www-form-urlencoded",
        "whatsapp": "application/json",
        "telegram": "application/json",
    }[path.parent.name]
    assert request["content_type"] == expected_type
    assert isinstance(request["body"], dict)
    expect = data["expect"]
    assert expect["outcome"] in OUTCOMES
    if expect["outcome"] in ("ignored", "rejected"):
        assert expect["events"] == [] and expect["reason"]
    for event in expect["events"]:
        if event["kind"] == "message":
            assert MESSAGE_KEYS <= event.keys() <= MESSAGE_KEYS | OPTIONAL_MESSAGE_KEYS
            assert ADDRESS.match(event["address"]), event["address"]
            assert event["text"] is None or event["text"]
            for media in event["media"]:
                assert set(media) == {"content_type", "ref"} and "/" in media["content_type"]
            if "shared_phone" in event:
                assert re.fullmatch(PHONE, event["shared_phone"])
        else:
            assert event["kind"] == "status"
            assert set(event) == {"kind", "provider_id", "status", "error_code"}
            assert event["status"] in STATUSES
            assert event["error_code"] is None or isinstance(event["error_code"], str)


@pytest.mark.parametrize(
    "path", [p for p in FIXTURES if p.parent.name == "twilio"], ids=fixture_id
)
def test_twilio_fixture_consistency(path: Path) -> None:
    data = load(path)
    form = data["request"]["body"]
    assert all(isinstance(value, str) for value in form.values())
    assert form["AccountSid"].startswith("AC") and form["ApiVersion"] == "2010-04-01"
    events = data["expect"]["events"]
    if "MessageStatus" in form:
        [event] = events
        assert event["provider_id"] == form["MessageSid"]
        assert ("ErrorCode" in form) == (event["error_code"] is not None)
        return
    count = int(form["NumMedia"])
    urls = [form[f"MediaUrl{i}"] for i in range(count)]
    assert not any(
        name.startswith("MediaUrl") and name not in {f"MediaUrl{i}" for i in range(count)}
        for name in form
    )
    [event] = events
    assert event["provider_id"] == form["MessageSid"] == form["SmsSid"]
    assert [m["ref"] for m in event["media"]] == urls
    assert [m["content_type"] for m in event["media"]] == [
        form[f"MediaContentType{i}"] for i in range(count)
    ]
    assert form["MessageSid"].startswith("MM" if count else "SM")
    whatsapp = form["From"].startswith("whatsapp:")
    assert event["address"] == ("whatsapp:" if whatsapp else "sms:") + form["From"].split(":")[-1]
    if whatsapp:
        assert form["To"].startswith("whatsapp:") and form["WaId"] == form["From"][10:]
    else:
        assert form["NumSegments"] == str(sms_segments(form["Body"]))


@pytest.mark.parametrize(
    "path", [p for p in FIXTURES if p.parent.name == "whatsapp"], ids=fixture_id
)
def test_whatsapp_fixture_consistency(path: Path) -> None:
    data = load(path)
    body = data["request"]["body"]
    assert body["object"] == "whatsapp_business_account"
    assert json.loads(wa.encode(body)) == body
    message_ids, status_ids = [], []
    for entry in body["entry"]:
        for change in entry["changes"]:
            assert change["field"] == "messages"
            value = change["value"]
            assert value["messaging_product"] == "whatsapp"
            assert value["metadata"]["phone_number_id"] == wa.TEST_PHONE_NUMBER_ID
            for message in value.get("messages", []):
                assert message["type"] in message or message["type"] == "unsupported"
                assert message["id"].startswith("wamid.")
                message_ids.append(message["id"])
            status_ids += [status["id"] for status in value.get("statuses", [])]
    events = data["expect"]["events"]
    if data["expect"]["outcome"] == "written":
        assert [e["provider_id"] for e in events if e["kind"] == "message"] == message_ids
        assert [e["provider_id"] for e in events if e["kind"] == "status"] == status_ids


@pytest.mark.parametrize(
    "path", [p for p in FIXTURES if p.parent.name == "telegram"], ids=fixture_id
)
def test_telegram_fixture_parses_with_ptb(path: Path) -> None:
    data = load(path)
    body = data["request"]["body"]
    update = Update.de_json(body, bot=None)
    assert update is not None and update.update_id == body["update_id"]
    kinds = [key for key in body if key != "update_id"]
    assert len(kinds) == 1
    if data["expect"]["outcome"] == "written":
        [event] = data["expect"]["events"]
        assert update.effective_chat is not None
        assert event["address"] == f"telegram:{update.effective_chat.id}"
        assert event["provider_id"] == str(body["update_id"])
        if update.callback_query is not None:
            assert event["choice_id"] == update.callback_query.data
