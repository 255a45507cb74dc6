"""WhatsApp through Meta's Cloud API (Graph API): webhooks in, messages out.

Active when ``RELAIS_WHATSAPP_TOKEN`` and ``RELAIS_WHATSAPP_PHONE_NUMBER_ID`` are set; it then
serves the ``whatsapp`` channel instead of WhatsApp over Twilio (``bot.channels.ADAPTERS``
order). This module knows only ``bot.core``: what it receives goes to the application's
``InboundSink`` (``Hub.sink``), what it opens is returned in an ``Opened``.

- ``GET /webhooks/whatsapp``: Meta's subscription check (``hub.verify_token`` compared in
  constant time with ``RELAIS_WHATSAPP_VERIFY_TOKEN``; ``hub.challenge`` echoed).
- ``POST /webhooks/whatsapp``: ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with
  ``RELAIS_WHATSAPP_APP_SECRET``) is checked on the bytes received, before anything is
  parsed. Each ``messages`` change may carry messages (handed to the sink, which dedupes
  on the message ``id``) and statuses (mapped onto a ``StatusUpdate``: a failure with
  131047 / 131026 is ``WINDOW_CLOSED`` / ``UNDELIVERABLE``, which the application follows
  up). Once stored the answer is 200: Meta retries anything else for days.
- Sending: reply buttons (≤ 3 choices with short titles), a list (≤ 10 choices), else a
  numbered text; ``Outbound.kind == "template"`` sends the approved template. Meta's error
  codes map onto the closed ``Failure`` set (``classify``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import Any

import aiohttp
from aiohttp import web

from bot.core import sms
from bot.core.addresses import AddressError
from bot.core.channel import (
    MAX_BODY,
    AdapterSpec,
    BadInput,
    Failure,
    Hub,
    Opened,
    Route,
    SendError,
    SendResult,
    StatusUpdate,
    Verdict,
    checked_inbound,
    clean_error,
)
from bot.core.config import Settings
from bot.core.i18n import N_, Translator
from bot.core.render import numbered
from bot.core.types import Choice, Inbound, Media, Outbound, safe_text

log = logging.getLogger("relais.channels.whatsapp")

NAME = "whatsapp"
PROVIDER = "meta"
WEBHOOK_PATH = "/webhooks/whatsapp"
SIGNATURE_HEADER = "X-Hub-Signature-256"
CALL_TIMEOUT = 15.0

# Meta's limits (Cloud API "Interactive messages" and "Text messages" references).
MAX_TEXT = 4096
MAX_INTERACTIVE_BODY = 1024
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_ROWS = 10
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_LIST_BUTTON = 20
MAX_CAPTION = 1024
ELLIPSIS = "..."
LIST_BUTTON_MSGID = N_("Choose")  # the button that opens a list; translated per person

# Error codes (https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes).
AUTH_CODES = frozenset({190})
THROTTLE_PAUSES = {4: 5.0, 80007: 5.0, 130429: 1.0, 131048: 60.0}  # seconds, no Retry-After
PAIR_RATE_CODE = 131056
PAIR_RATE_PAUSE = 6.0  # about one message every 6 s to the same person
WINDOW_CLOSED_CODE = 131047
UNDELIVERABLE_CODE = 131026
RETRYABLE_CODES = frozenset({1, 2, 131000, 131016})
INBOUND_MEDIA = ("image", "audio", "voice", "document", "video", "sticker")
STATUS_FAILURES = {WINDOW_CLOSED_CODE: Failure.WINDOW_CLOSED,
                   UNDELIVERABLE_CODE: Failure.UNDELIVERABLE}
_WA_ID = re.compile(r"^\d{6,15}$")


class MalformedWebhook(ValueError):
    """A signed body that is not a WhatsApp webhook we can read."""


# ---------------------------------------------------------------------------------- settings


def missing_credentials(settings: Settings) -> list[str]:
    """The variables still needed to send through the Cloud API."""
    missing = []
    if not settings.whatsapp_token:
        missing.append("RELAIS_WHATSAPP_TOKEN")
    if not settings.whatsapp_phone_number_id:
        missing.append("RELAIS_WHATSAPP_PHONE_NUMBER_ID")
    return missing


def enabled(settings: Settings) -> bool:
    return not missing_credentials(settings)


def status(settings: Settings) -> list[dict[str, Any]]:
    """The Cloud API channel's state, for ``relais channels``."""
    missing = missing_credentials(settings)
    reason: str | None = None
    if missing:
        reason = " and ".join(missing) + " not set"
    elif not settings.whatsapp_app_secret:
        reason = "RELAIS_WHATSAPP_APP_SECRET not set: incoming webhooks are refused"
    elif not settings.whatsapp_verify_token:
        reason = "RELAIS_WHATSAPP_VERIFY_TOKEN not set: Meta cannot verify the webhook"
    return [{
        "channel": NAME,
        "provider": PROVIDER,
        "enabled": not missing,
        "reason": reason,
        "webhook_url": f"{settings.base_url}{WEBHOOK_PATH}",
    }]


# ---------------------------------------------------------------------------------- sending


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, at a word boundary when one is near, with "..."."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + ELLIPSIS


def recipient(to: str) -> str:
    """Meta's ``to``: the number in digits (an E.164 ``+33…`` or ``whatsapp:+33…``)."""
    return to.removeprefix(f"{NAME}:").strip().lstrip("+")


def _fits_buttons(text: str, choices: tuple[Choice, ...]) -> bool:
    titles = [c.label.strip() for c in choices]
    return (
        1 <= len(choices) <= MAX_BUTTONS
        and all(1 <= len(t) <= MAX_BUTTON_TITLE for t in titles)
        and len(set(titles)) == len(titles)
        and len({c.id for c in choices}) == len(choices)
        and 1 <= len(text) <= MAX_INTERACTIVE_BODY
    )


def _fits_list(text: str, choices: tuple[Choice, ...]) -> bool:
    return (
        1 <= len(choices) <= MAX_ROWS
        and all(c.label.strip() for c in choices)
        and len({c.id for c in choices}) == len(choices)
        and 1 <= len(text) <= MAX_INTERACTIVE_BODY
    )


def _row(choice: Choice) -> dict[str, str]:
    label = " ".join(choice.label.split())
    row = {"id": choice.id, "title": shorten(label, MAX_ROW_TITLE)}
    if len(label) > MAX_ROW_TITLE:
        row["description"] = shorten(label, MAX_ROW_DESCRIPTION)
    return row


def render(message: Outbound, settings: Settings) -> list[dict[str, Any]]:
    """The Cloud API payloads for one outbox row, in sending order."""
    base: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": recipient(message.to),
    }
    if message.kind == "template":
        if not settings.whatsapp_template:
            raise SendError(Failure.FAILED, "RELAIS_WHATSAPP_TEMPLATE is not set")
        language = settings.whatsapp_template_lang or message.language
        return [{**base, "type": "template", "template": {
            "name": settings.whatsapp_template, "language": {"code": language}}}]
    text = message.text.strip()
    payloads: list[dict[str, Any]] = []
    if message.media_url:
        kind = _media_kind(message.media_type)
        media: dict[str, Any] = {"link": message.media_url}
        if text and not message.choices and kind in ("image", "document", "video") \
                and len(text) <= MAX_CAPTION:
            media["caption"] = text
            text = ""
        payloads.append({**base, "type": kind, kind: media})
    choices = message.choices
    if choices and _fits_buttons(text, choices):
        buttons = [{"type": "reply", "reply": {"id": c.id, "title": c.label.strip()}}
                   for c in choices]
        payloads.append({**base, "type": "interactive", "interactive": {
            "type": "button", "body": {"text": text}, "action": {"buttons": buttons}}})
        return payloads
    if choices and _fits_list(text, choices):
        button = shorten(Translator(message.language)(LIST_BUTTON_MSGID), MAX_LIST_BUTTON)
        payloads.append({**base, "type": "interactive", "interactive": {
            "type": "list", "body": {"text": text},
            "action": {"button": button, "sections": [{"rows": [_row(c) for c in choices]}]},
        }})
        return payloads
    for part in sms.split(numbered(text, choices), MAX_TEXT):
        payloads.append({**base, "type": "text", "text": {"body": part, "preview_url": False}})
    if not payloads:
        raise SendError(Failure.FAILED, "nothing to send (empty text)")
    return payloads


def _media_kind(content_type: str | None) -> str:
    major = (content_type or "").split("/")[0]
    return {"image": "image", "audio": "audio", "video": "video"}.get(major, "document")


def _retry_after(header: str | None) -> float | None:
    try:
        value = float(header) if header else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 else None


def classify(status: int, data: Any, retry_after: str | None = None) -> SendError:
    """Map a Graph API error answer onto the closed ``Failure`` set."""
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    raw_code = error.get("code")
    code: int | None = raw_code if isinstance(raw_code, int) else None
    if code is None and isinstance(raw_code, str) and raw_code.isdigit():
        code = int(raw_code)
    message = str(error.get("message") or f"HTTP {status}")
    details = error.get("error_data", {}).get("details") if isinstance(
        error.get("error_data"), dict) else None
    reason = f"{message}: {details}" if details else message
    shown = code if code is not None else status
    header_pause = _retry_after(retry_after)
    if code in AUTH_CODES or status == 401:
        return SendError(Failure.AUTH, reason, code=shown)
    if code == PAIR_RATE_CODE:
        return SendError(Failure.THROTTLED, reason, code=code, scope="person",
                         retry_after=header_pause or PAIR_RATE_PAUSE)
    if code in THROTTLE_PAUSES or status == 429:
        pause = THROTTLE_PAUSES.get(code or 0, THROTTLE_PAUSES[4])
        return SendError(Failure.THROTTLED, reason, code=shown,
                         retry_after=header_pause or pause)
    if code == WINDOW_CLOSED_CODE:
        return SendError(Failure.WINDOW_CLOSED, reason, code=code)
    if code == UNDELIVERABLE_CODE:
        return SendError(Failure.UNDELIVERABLE, reason, code=code)
    if code in RETRYABLE_CODES or status >= 500 or error.get("is_transient") is True:
        return SendError(Failure.RETRYABLE, reason, code=shown)
    # 131050 (the person stopped marketing messages), 100, 131009, 132000-132016 (template
    # problems) and anything else: permanent, kept with Meta's code and message.
    return SendError(Failure.FAILED, reason, code=shown)


class WhatsAppCloud:
    """The ``whatsapp`` channel through the Cloud API. One HTTP session, closed by ``close``."""

    name = NAME
    rate_by_segments = False

    def __init__(self, settings: Settings, *, timeout: float = CALL_TIMEOUT) -> None:
        assert settings.whatsapp_token and settings.whatsapp_phone_number_id
        self.settings = settings
        self.rate: float | None = settings.whatsapp_rate
        self.call_timeout = timeout
        self.api_url = settings.whatsapp_api_url.rstrip("/")
        self.messages_url = f"{self.api_url}/{settings.whatsapp_phone_number_id}/messages"
        self._headers = {"Authorization": f"Bearer {settings.whatsapp_token}"}
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0)),
            raise_for_status=False,
        )

    async def close(self) -> None:
        await self.http.close()

    async def send(self, message: Outbound) -> SendResult:
        first: str | None = None
        for payload in render(message, self.settings):
            provider_id = await self._post(payload)
            first = first or provider_id
        return SendResult(provider_id=first)

    async def _post(self, payload: dict[str, Any]) -> str | None:
        try:
            async with self.http.post(
                self.messages_url, json=payload, headers=self._headers
            ) as response:
                body = await response.read()
                code, retry_after = response.status, response.headers.get("Retry-After")
        except TimeoutError:
            raise SendError(Failure.RETRYABLE, "WhatsApp Cloud API timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SendError(Failure.RETRYABLE,
                            f"WhatsApp Cloud API connection error: {type(exc).__name__}") from None
        data = _json(body)
        if not 200 <= code < 300:
            raise classify(code, data, retry_after)
        try:
            return str(data["messages"][0]["id"])
        except (KeyError, IndexError, TypeError):
            log.warning("WhatsApp accepted a message without returning its id (HTTP %s)", code)
            return None

    async def fetch_media(self, ref: str) -> tuple[bytes, str]:
        """A media id from a webhook → its bytes and MIME type (two bearer-token GETs)."""
        info = await self._get(f"{self.api_url}/{ref}")
        data = _json(info[0])
        url = data.get("url") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise SendError(Failure.FAILED, f"no download URL for media {ref}")
        content, content_type = await self._get(url)
        mime = data.get("mime_type") if isinstance(data.get("mime_type"), str) else None
        return content, mime or content_type

    async def _get(self, url: str) -> tuple[bytes, str]:
        try:
            async with self.http.get(url, headers=self._headers) as response:
                body = await response.read()
                if not 200 <= response.status < 300:
                    raise classify(response.status, _json(body),
                                   response.headers.get("Retry-After"))
                return body, response.content_type
        except TimeoutError:
            raise SendError(Failure.RETRYABLE, "WhatsApp media download timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SendError(Failure.RETRYABLE,
                            f"WhatsApp media connection error: {type(exc).__name__}") from None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------- inbound


def _address(wa_id: Any) -> str | None:
    digits = str(wa_id or "").lstrip("+")
    return f"{NAME}:+{digits}" if _WA_ID.match(digits) else None


def location_text(location: dict[str, Any]) -> str:
    """A short description: "lat,long name, address"."""
    where = ", ".join(str(location[key]).strip() for key in ("name", "address")
                      if isinstance(location.get(key), str) and location[key].strip())
    point = f"{location.get('latitude')},{location.get('longitude')}"
    return f"{point} {where}" if where else point


def parse_message(
    message: dict[str, Any], profiles: dict[str, str]
) -> Inbound | str:
    """One webhook message → an ``Inbound``, or the reason it is ignored."""
    address = _address(message.get("from"))
    provider_id = message.get("id")
    kind = message.get("type")
    if address is None or not isinstance(provider_id, str) or not provider_id:
        return "no sender or id"
    common: dict[str, Any] = {
        "channel": NAME, "address": address, "provider_id": provider_id,
        "profile_name": profiles.get(str(message.get("from")).lstrip("+")),
    }
    content = message.get(kind) if isinstance(kind, str) else None
    content = content if isinstance(content, dict) else {}
    if kind == "text":
        body = content.get("body")
        return Inbound(text=body, **common) if isinstance(body, str) else "text without body"
    if kind == "interactive":
        reply_kind = content.get("type")
        reply = content.get(reply_kind) if reply_kind in ("button_reply", "list_reply") else None
        if not isinstance(reply, dict) or not reply.get("id"):
            return f"interactive {reply_kind}"
        return Inbound(text=str(reply.get("title") or ""), choice_id=str(reply["id"]), **common)
    if kind == "button":  # quick reply of a template
        payload = content.get("payload")
        if not payload:
            return "button without payload"
        return Inbound(text=str(content.get("text") or ""), choice_id=str(payload), **common)
    if kind in INBOUND_MEDIA:
        media_id = content.get("id")
        if not media_id:
            return f"{kind} without id"
        mime = str(content.get("mime_type") or "application/octet-stream")
        caption = content.get("caption") if isinstance(content.get("caption"), str) else None
        extra: dict[str, Any] = {}
        if kind == "voice" or content.get("voice") is True:
            extra["voice"] = True
        if isinstance(content.get("filename"), str):
            extra["filename"] = content["filename"]
        media = Media(content_type=mime, ref=str(media_id), caption=caption)
        return Inbound(text=caption or "", media=(media,), extra=extra, **common)
    if kind == "location":
        if "latitude" not in content or "longitude" not in content:
            return "location without coordinates"
        location = {key: content.get(key) for key in ("latitude", "longitude", "name",
                                                      "address")}
        return Inbound(text=location_text(content), extra={"location": location}, **common)
    return f"unsupported message type {kind!r}"


def _status_error(entry: dict[str, Any]) -> tuple[str | None, str | None]:
    errors = entry.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    error = errors[0]
    code = error.get("code")
    details = error.get("error_data", {}).get("details") if isinstance(
        error.get("error_data"), dict) else None
    reason = str(error.get("message") or error.get("title") or "")
    if details:
        reason = f"{reason}: {details}" if reason else str(details)
    return clean_error(code, reason)  # no NUL or surrogate, fits the outbox columns


def _changes(payload: Any) -> list[dict[str, Any]]:
    """The ``value`` of every ``messages`` change, in order; MalformedWebhook otherwise."""
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        raise MalformedWebhook("no entry list")
    values = []
    for entry in payload["entry"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("changes", []), list):
            raise MalformedWebhook("an entry without a changes list")
        for change in entry.get("changes", []):
            if not isinstance(change, dict):
                raise MalformedWebhook("a change that is not an object")
            if change.get("field") != "messages":
                log.info("whatsapp webhook: %r change ignored", change.get("field"))
                continue
            value = change.get("value")
            if not isinstance(value, dict):
                raise MalformedWebhook("a messages change without a value")
            for key in ("messages", "statuses", "contacts"):
                if not isinstance(value.get(key, []), list):
                    raise MalformedWebhook(f"{key} is not a list")
            if "metadata" in value and not isinstance(value["metadata"], dict):
                raise MalformedWebhook("metadata is not an object")
            for message in value.get("messages", []):
                _check_message(message)
            for entry in value.get("statuses", []):
                _check_status(entry)
            values.append(value)
    return values


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _check_message(message: Any) -> None:
    """MalformedWebhook when a message lacks what Meta always sends (``from``, ``id``,
    ``type``) or when a kind we handle carries the wrong types. Kinds we do not handle
    (reaction, unsupported, system…) are left for ``parse_message`` to ignore."""
    if not isinstance(message, dict):
        raise MalformedWebhook("a message that is not an object")
    for key in ("from", "id", "type"):
        if not _text(message.get(key)):
            raise MalformedWebhook(f"a message without {key!r}")
    kind = message["type"]
    if kind not in ("text", "interactive", "button", "location", *INBOUND_MEDIA):
        return
    content = message.get(kind)
    if not isinstance(content, dict):
        raise MalformedWebhook(f"a {kind} message without its {kind!r} object")
    if kind == "text" and not isinstance(content.get("body"), str):
        raise MalformedWebhook("a text message whose body is not a string")
    if kind == "interactive":
        reply = content.get(content.get("type")) if isinstance(content.get("type"), str) \
            else None
        if content.get("type") in ("button_reply", "list_reply") and (
                not isinstance(reply, dict) or not _text(reply.get("id"))):
            raise MalformedWebhook("an interactive reply without an id")
    if kind == "button" and not isinstance(content.get("payload", ""), str):
        raise MalformedWebhook("a button whose payload is not a string")
    if kind in INBOUND_MEDIA and not _text(content.get("id")):
        raise MalformedWebhook(f"a {kind} message without a media id")
    if kind == "location" and not (_number(content.get("latitude"))
                                   and _number(content.get("longitude"))):
        raise MalformedWebhook("a location without coordinates")
    for key in ("caption", "mime_type", "filename", "text", "title"):
        if key in content and content[key] is not None and not isinstance(content[key], str):
            raise MalformedWebhook(f"a {kind} message whose {key} is not a string")


def _check_status(entry: Any) -> None:
    """MalformedWebhook when a status lacks its ``id`` or ``status`` (an unknown status
    value is ignored later, not refused)."""
    if not isinstance(entry, dict):
        raise MalformedWebhook("a status that is not an object")
    for key in ("id", "status"):
        if not _text(entry.get(key)):
            raise MalformedWebhook(f"a status without {key!r}")
    if "errors" in entry and not isinstance(entry["errors"], list):
        raise MalformedWebhook("status errors is not a list")


def status_update(entry: dict[str, Any]) -> StatusUpdate | None:
    """One webhook status as a ``StatusUpdate``; None when it is of a kind we do not
    handle (ignored). A failure whose code is not one we know goes with ``failure=None``
    (the application records ``Failure.FAILED``)."""
    provider_id, state = entry.get("id"), entry.get("status")
    if not isinstance(provider_id, str) or safe_text(provider_id) != provider_id \
            or state not in ("sent", "delivered", "read", "failed"):  # not an id of ours
        log.info("whatsapp status %r ignored", str(state)[:40])
        return None
    code, reason = _status_error(entry)
    failure = None
    if state == "failed" and code is not None and code.isdigit():
        failure = STATUS_FAILURES.get(int(code))
    return StatusUpdate(channel=NAME, provider_id=provider_id, status=state,
                        error_code=code, error_reason=reason, failure=failure)


async def handle_changes(hub: Hub, values: list[dict[str, Any]]) -> dict[str, int]:
    """Hand every message and status of the ``messages`` changes to the application."""
    counts = {"written": 0, "duplicate": 0, "ignored": 0, "statuses": 0}
    for value in values:
        metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
        number = metadata.get("phone_number_id")
        if number is not None and str(number) != hub.settings.whatsapp_phone_number_id:
            log.info("whatsapp webhook for another phone number id (%s) ignored", number)
            counts["ignored"] += 1
            continue
        profiles = {
            str(c.get("wa_id")): str(c["profile"]["name"])
            for c in value.get("contacts", [])
            if isinstance(c, dict) and isinstance(c.get("profile"), dict)
            and isinstance(c["profile"].get("name"), str)
        }
        for message in value.get("messages", []):
            parsed = parse_message(message, profiles) if isinstance(message, dict) \
                else "not an object"
            if isinstance(parsed, str):
                log.info("whatsapp message %s ignored: %s",
                         message.get("id") if isinstance(message, dict) else "?", parsed)
                counts["ignored"] += 1
                continue
            try:
                outcome = await hub.sink.message(checked_inbound(parsed))
            except (AddressError, BadInput) as exc:  # that message only; the rest goes on
                log.info("whatsapp message %s ignored: %s", parsed.provider_id, exc)
                counts["ignored"] += 1
                continue
            log.info("whatsapp message %s (%s): %s", parsed.provider_id, message.get("type"),
                     outcome)
            counts[outcome] = counts.get(outcome, 0) + 1
        for entry in value.get("statuses", []):
            update = status_update(entry) if isinstance(entry, dict) else None
            if update is None:
                counts["ignored"] += 1
                continue
            await hub.sink.status(update)
            counts["statuses"] += 1
    for _ in range(counts["ignored"]):
        hub.sink.count(NAME, "ignored")
    return counts


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


async def verify_subscription(request: web.Request, hub: Hub) -> web.Response:
    expected = hub.settings.whatsapp_verify_token
    if not expected:
        log.warning("whatsapp subscription check refused: RELAIS_WHATSAPP_VERIFY_TOKEN not set")
        raise web.HTTPNotFound(text="WhatsApp webhook not configured")
    query = request.query
    if query.get("hub.mode") != "subscribe" or not _same(query.get("hub.verify_token", ""),
                                                         expected):
        log.warning("whatsapp subscription check refused: wrong mode or verify token")
        raise web.HTTPForbidden(text="verification failed")
    log.info("whatsapp webhook subscription verified")
    return web.Response(text=query.get("hub.challenge", ""), content_type="text/plain")


async def receive(request: web.Request, hub: Hub) -> web.Response:
    settings = hub.settings
    missing = missing_credentials(settings)
    if not settings.whatsapp_app_secret:
        missing.append("RELAIS_WHATSAPP_APP_SECRET")
    if missing:
        log.warning("whatsapp webhook refused: %s not set", " and ".join(missing))
        raise web.HTTPNotFound(text="WhatsApp webhook not configured")
    assert settings.whatsapp_app_secret
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY,
                                            actual_size=request.content_length)
    raw = await request.read()  # 413 past the app's client_max_size
    expected = "sha256=" + hmac.new(settings.whatsapp_app_secret.encode("utf-8"), raw,
                                    hashlib.sha256).hexdigest()
    given = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not given.startswith("sha256=") or not _same(given[:7] + given[7:].lower(), expected):
        log.warning("whatsapp webhook refused: %s signature",
                    "wrong" if given else "missing")
        raise web.HTTPForbidden(text="invalid signature")
    try:
        values = _changes(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # MalformedWebhook is a ValueError
        log.warning("whatsapp webhook refused: malformed body (%s)", exc)
        raise web.HTTPBadRequest(text="malformed body") from None
    # Meta signs the raw bytes: the same signature means the same body, so a seen signature
    # is a provider retry (deduplicated on the message ids) and REPLAY cannot happen unless
    # SHA-256 breaks; recorded anyway, like every signed webhook.
    verdict = await hub.sink.seen(PROVIDER, expected, hashlib.sha256(raw).hexdigest())
    if verdict is Verdict.REPLAY:
        hub.sink.count(NAME, "replay")
        log.warning("whatsapp webhook refused (403): signature already used by another body")
        raise web.HTTPForbidden(text="signature already used by another request")
    counts = await handle_changes(hub, values)
    log.debug("whatsapp webhook: %s", ", ".join(f"{v} {k}" for k, v in counts.items() if v)
             or "nothing to do")
    return web.json_response({"status": "ok"})


# ---------------------------------------------------------------------------------- setup


async def open_channel(settings: Settings) -> Opened | None:
    """The Cloud API channel, when its credentials are set (one log line otherwise)."""
    missing = missing_credentials(settings)
    if missing:
        log.info("whatsapp (Cloud API) disabled: %s not set", " and ".join(missing))
        return None
    channel = WhatsAppCloud(settings)
    if settings.twilio_whatsapp_from:
        log.info("whatsapp goes through the Cloud API (RELAIS_WHATSAPP_TOKEN set), "
                 "not through Twilio")
    log.info("whatsapp enabled: Cloud API, phone number id %s, webhook %s%s",
             settings.whatsapp_phone_number_id, settings.base_url, WEBHOOK_PATH)
    if not settings.whatsapp_app_secret:
        log.warning("RELAIS_WHATSAPP_APP_SECRET not set: incoming WhatsApp webhooks are refused")
    # closed even once an auth failure took the channel out of the registry
    return Opened(channels=[channel], close=channel.close, state=channel)


SPEC = AdapterSpec(
    name=NAME,
    open=open_channel,
    routes=(Route("GET", WEBHOOK_PATH, verify_subscription),
            Route("POST", WEBHOOK_PATH, receive)),
    status=status,
)
