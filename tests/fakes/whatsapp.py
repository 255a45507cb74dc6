"""Fake WhatsApp Cloud API (Meta Graph API), plus builders for its webhooks.

Routes, all with ``Authorization: Bearer <token>`` (else 401, Graph error code 190):

- ``POST /{version}/{phone_number_id}/messages`` (route "messages", the send route): the
  JSON body is validated against Meta's rules (messaging_product "whatsapp"; type text |
  interactive button (1–3 reply buttons, titles 1–20 chars, unique titles and ids) |
  interactive list (1–10 rows in all, row title ≤ 24, description ≤ 72, button ≤ 20,
  section titles when several sections) | template | image/audio/document/video/sticker
  (``id`` xor ``link``) | location | reaction; body text ≤ 1,024 for interactive, ≤ 4,096
  for text). An invalid payload gets 400 with Graph error code 100 and ``error_data.details``
  naming the rule, and is recorded in ``unexpected``. Read receipts (``{"status": "read",
  "message_id": …}``) answer ``{"success": true}`` and are kept in ``read_receipts``.
- ``POST /{version}/{phone_number_id}/media`` ("media.upload", multipart ``file``).
- ``GET /{version}/{media_id}`` ("media.info") → ``{"url": "{fake.url}/media-download/
  {media_id}", "mime_type", "sha256", "file_size", "id", "messaging_product"}``.
- ``GET /media-download/{media_id}`` ("media.download", bearer auth too) → the bytes.

Failure kinds for ``fail_next``, each in Meta's error shape (``{"error": {"message":
"(#code) title", "type": "OAuthException", "code", "error_data": {"messaging_product",
"details"}, "fbtrace_id"}}``): "window" 131047, "undeliverable" 131026, "pair_rate"
131056, "throughput" 130429, "500" 131000 (HTTP 500), "auth" 190 (HTTP 401), "429"
(HTTP 429, code 4 "Application request limit reached"), "timeout", "reset", and "error"
(``code=``, ``status=400``, ``title=``, ``details=``).

HTTP status: Meta documents 400 for 131047, 131026, 131056 and 130429 (build on ``code``,
not on the HTTP status); 429 appears only for the Graph API call-rate code 4 in older
documentation. The ``rate_limit`` ceiling therefore answers 400/130429 by default
(``throttle_status=429`` to change it). 131047 and 131026 mostly arrive later as a
``failed`` status: ``fail_next("window", deferred=True)`` answers success and keeps the
error on ``sent[-1]["error"]`` for ``status(...)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from tests.fakes.base import (
    GENERIC_KINDS,
    Failure,
    FakeServer,
    SentMessage,
    json_response,
)
from tests.fakes.signing import META_SIGNATURE_HEADER, meta_signature

TEST_TOKEN = "EAAGfakeTOKENforRelaisTests0123456789"
TEST_PHONE_NUMBER_ID = "106540352242922"
TEST_DISPLAY_NUMBER = "33757000100"
TEST_WABA_ID = "102290129340398"
VERSION_PATTERN = r"v\d+\.\d+"

MAX_TEXT = 4096
MAX_INTERACTIVE_BODY = 1024
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_ROWS = 10
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_LIST_BUTTON = 20
MAX_SECTION_TITLE = 24
MAX_HEADER_FOOTER = 60
MAX_CAPTION = 1024
MEDIA_TYPES = frozenset({"image", "audio", "document", "video", "sticker"})

# kind -> (HTTP status, code, title, details)
ERRORS: dict[str, tuple[int, int, str, str]] = {
    "window": (
        400,
        131047,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    ),
    "undeliverable": (
        400,
        131026,
        "Message Undeliverable",
        "Message failed to send because the recipient is not a WhatsApp user, has not "
        "accepted the latest terms, or uses an old WhatsApp version.",
    ),
    "pair_rate": (
        400,
        131056,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    "throughput": (
        400,
        130429,
        "Rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number in a short period of time.",
    ),
    "500": (
        500,
        131000,
        "Something went wrong",
        "Message failed to send due to an unknown error.",
    ),
    "429": (429, 4, "Application request limit reached", "Too many API calls."),
}


class InvalidPayload(Exception):
    """A payload Meta refuses with code 100; the message is ``error_data.details``."""


def fbtrace_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


def graph_error(
    status: int,
    code: int,
    title: str,
    details: str | None = None,
    *,
    type_: str = "OAuthException",
) -> web.Response:
    error: dict[str, Any] = {
        "message": title if code == 190 else f"(#{code}) {title}",
        "type": type_,
        "code": code,
    }
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = fbtrace_id()
    return json_response({"error": error}, status=status)


def new_wamid(to: str) -> str:
    """A plausible message id: ``wamid.`` + base64 of a protobuf-like blob."""
    blob = b"\x15\x02\x00\x11\x18\x12" + to.encode() + secrets.token_hex(10).upper().encode()
    return "wamid." + base64.b64encode(b"\x18\x0b" + blob).decode()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _check_length(label: str, value: Any, maximum: int, *, minimum: int = 1) -> None:
    if not isinstance(value, str) or not minimum <= len(value) <= maximum:
        size = len(value) if isinstance(value, str) else "missing"
        raise InvalidPayload(
            f"{label} length invalid ({size}). Min length: {minimum}, Max length: {maximum}"
        )


def validate_message(payload: Any) -> None:
    """Raise InvalidPayload where the Cloud API would refuse ``payload``."""
    if not isinstance(payload, dict):
        raise InvalidPayload("The request body must be a JSON object")
    if payload.get("messaging_product") != "whatsapp":
        raise InvalidPayload("The parameter messaging_product is required and must be 'whatsapp'")
    if payload.get("recipient_type", "individual") != "individual":
        raise InvalidPayload("recipient_type must be 'individual'")
    if not re.fullmatch(r"\+?\d{6,15}", _text(payload.get("to"))):
        raise InvalidPayload("The parameter to is required and must be a phone number")
    kind = payload.get("type", "text")
    if kind == "text":
        text = payload.get("text")
        if not isinstance(text, dict):
            raise InvalidPayload("The parameter text['body'] is required.")
        _check_length("Text body", text.get("body"), MAX_TEXT)
    elif kind == "interactive":
        validate_interactive(payload.get("interactive"))
    elif kind == "template":
        template = payload.get("template")
        if not isinstance(template, dict) or not _text(template.get("name")):
            raise InvalidPayload("The parameter template['name'] is required.")
        language = template.get("language")
        if not isinstance(language, dict) or not _text(language.get("code")):
            raise InvalidPayload("The parameter template['language']['code'] is required.")
        if not isinstance(template.get("components", []), list):
            raise InvalidPayload("template['components'] must be an array")
    elif kind in MEDIA_TYPES:
        media = payload.get(kind)
        if not isinstance(media, dict) or ("id" in media) == ("link" in media):
            raise InvalidPayload(f"Param {kind} must contain exactly one of id or link")
        if "caption" in media:
            if kind not in ("image", "document", "video"):
                raise InvalidPayload(f"Param {kind}['caption'] is not allowed for {kind}")
            _check_length("Caption", media["caption"], MAX_CAPTION)
    elif kind == "location":
        location = payload.get("location")
        if not isinstance(location, dict) or not {"latitude", "longitude"} <= location.keys():
            raise InvalidPayload("Param location requires latitude and longitude")
    elif kind == "reaction":
        reaction = payload.get("reaction")
        if not isinstance(reaction, dict) or not _text(reaction.get("message_id")):
            raise InvalidPayload("Param reaction['message_id'] is required")
    else:
        raise InvalidPayload(f"Unsupported message type {kind!r}")


def validate_interactive(interactive: Any) -> None:
    if not isinstance(interactive, dict):
        raise InvalidPayload("The parameter interactive is required.")
    body = interactive.get("body")
    if not isinstance(body, dict):
        raise InvalidPayload("The parameter interactive['body'] is required.")
    _check_length("Body text", body.get("text"), MAX_INTERACTIVE_BODY)
    header = interactive.get("header")
    if isinstance(header, dict) and header.get("type") == "text":
        _check_length("Header text", header.get("text"), MAX_HEADER_FOOTER)
    footer = interactive.get("footer")
    if footer is not None:
        _check_length(
            "Footer text",
            footer.get("text") if isinstance(footer, dict) else None,
            MAX_HEADER_FOOTER,
        )
    action = interactive.get("action")
    if not isinstance(action, dict):
        raise InvalidPayload("The parameter interactive['action'] is required.")
    kind = interactive.get("type")
    if kind == "button":
        validate_buttons(action.get("buttons"))
    elif kind == "list":
        validate_list(action)
    elif kind == "cta_url":
        parameters = action.get("parameters")
        if not isinstance(parameters, dict) or not _text(parameters.get("url")):
            raise InvalidPayload("action['parameters']['url'] is required for cta_url")
    else:
        raise InvalidPayload(f"Invalid interactive type {kind!r}")


def validate_buttons(buttons: Any) -> None:
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= MAX_BUTTONS:
        count = len(buttons) if isinstance(buttons, list) else 0
        raise InvalidPayload(f"Buttons count invalid ({count}). Min: 1, Max: {MAX_BUTTONS}")
    titles: set[str] = set()
    ids: set[str] = set()
    for button in buttons:
        reply = button.get("reply") if isinstance(button, dict) else None
        if button.get("type") != "reply" or not isinstance(reply, dict):
            raise InvalidPayload("Each button must be {'type': 'reply', 'reply': {id, title}}")
        _check_length("Button title", reply.get("title"), MAX_BUTTON_TITLE)
        _check_length("Button id", reply.get("id"), 256)
        if reply["title"] in titles:
            raise InvalidPayload(f"Button title {reply['title']!r} is not unique")
        if reply["id"] in ids:
            raise InvalidPayload(f"Button id {reply['id']!r} is not unique")
        titles.add(reply["title"])
        ids.add(reply["id"])


def validate_list(action: dict[str, Any]) -> None:
    _check_length("List button text", action.get("button"), MAX_LIST_BUTTON)
    sections = action.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= MAX_ROWS:
        raise InvalidPayload("Sections count invalid. Min: 1, Max: 10")
    rows = [row for section in sections for row in (section.get("rows") or [])]
    if not 1 <= len(rows) <= MAX_ROWS:
        raise InvalidPayload(f"Total row count invalid ({len(rows)}). Min: 1, Max: {MAX_ROWS}")
    for section in sections:
        if not section.get("rows"):
            raise InvalidPayload("Each section needs at least one row")
        if len(sections) > 1 or "title" in section:
            _check_length("Section title", section.get("title"), MAX_SECTION_TITLE)
    ids: set[str] = set()
    for row in rows:
        _check_length("Row title", row.get("title"), MAX_ROW_TITLE)
        _check_length("Row id", row.get("id"), 200)
        if "description" in row:
            _check_length("Row description", row["description"], MAX_ROW_DESCRIPTION, minimum=0)
        if row["id"] in ids:
            raise InvalidPayload(f"Row id {row['id']!r} is not unique")
        ids.add(row["id"])


def message_text(payload: dict[str, Any]) -> str | None:
    kind = payload.get("type", "text")
    if kind == "text":
        return payload["text"]["body"]
    if kind == "interactive":
        return payload["interactive"]["body"]["text"]
    if kind in MEDIA_TYPES:
        return payload[kind].get("caption")
    if kind == "template":
        return payload["template"]["name"]
    return None


def message_choices(payload: dict[str, Any]) -> list[dict[str, str]]:
    if payload.get("type") != "interactive":
        return []
    interactive = payload["interactive"]
    action = interactive["action"]
    if interactive["type"] == "button":
        return [{"id": b["reply"]["id"], "title": b["reply"]["title"]} for b in action["buttons"]]
    if interactive["type"] == "list":
        return [
            {"id": row["id"], "title": row["title"]}
            for section in action["sections"]
            for row in section["rows"]
        ]
    return []


class FakeWhatsApp(FakeServer):
    """Fake WhatsApp Cloud API; see the module docstring."""

    failure_kinds: ClassVar[frozenset[str]] = GENERIC_KINDS | frozenset(ERRORS) | {"auth", "error"}
    send_routes: ClassVar[frozenset[str]] = frozenset({"messages"})
    default_retry_after: ClassVar[int | None] = None

    def __init__(
        self,
        token: str = TEST_TOKEN,
        phone_number_id: str = TEST_PHONE_NUMBER_ID,
        *,
        throttle_status: int = 400,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.token = token
        self.phone_number_id = phone_number_id
        self.throttle_status = throttle_status
        self.read_receipts: list[dict[str, Any]] = []
        self.media: dict[str, tuple[bytes, str]] = {}  # media id -> (content, mime type)

    # ------------------------------------------------------------------ routes

    def setup_routes(self, app: web.Application) -> None:
        version = "/{version:" + VERSION_PATTERN + "}"
        app.router.add_post(
            f"{version}/{{phone_number_id}}/messages", self._messages, name="messages"
        )
        app.router.add_post(
            f"{version}/{{phone_number_id}}/media", self._upload, name="media.upload"
        )
        app.router.add_get(f"{version}/{{media_id}}", self._media_info, name="media.info")
        app.router.add_get("/media-download/{media_id}", self._download, name="media.download")

    # ------------------------------------------------------------------ helpers for tests

    def add_media(
        self, content: bytes, mime_type: str = "image/jpeg", media_id: str | None = None
    ) -> str:
        """Store inbound media (what a user sent); return its media id for the webhook."""
        media_id = media_id or str(10**15 + secrets.randbelow(9 * 10**15))
        self.media[media_id] = (content, mime_type)
        return media_id

    async def post_webhook(self, url: str, payload: dict[str, Any], app_secret: str) -> int:
        """POST ``payload`` to ``url`` as Meta does (escaped bytes, X-Hub-Signature-256)."""
        body = encode(payload)
        headers = {
            "Content-Type": "application/json",
            META_SIGNATURE_HEADER: meta_signature(app_secret, body),
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

    # ------------------------------------------------------------------ failures

    def failure_response(
        self, kind: str, opts: dict[str, Any], *, to: str | None = None
    ) -> web.StreamResponse:
        if kind == "auth":
            return self._auth_error()
        if kind == "error":
            return graph_error(
                int(opts.get("status", 400)),
                int(opts["code"]),
                str(opts.get("title", "Error")),
                opts.get("details"),
            )
        status, code, title, details = ERRORS[kind]
        return graph_error(status, code, title, details)

    def throttle_response(self, retry_after: int) -> web.StreamResponse:
        status, code, title, details = ERRORS["throughput"]
        return graph_error(self.throttle_status, code, title, details)

    # ------------------------------------------------------------------ handlers

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token, self.token)

    def _auth_error(self) -> web.Response:
        return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")

    def _unknown_object(self, request: web.Request, object_id: str, verb: str) -> web.Response:
        self.mark_unexpected(request)
        title = (
            f"Unsupported {verb} request. Object with ID '{object_id}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this "
            "operation"
        )
        return graph_error(400, 100, title, type_="GraphMethodException")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._auth_error()
        if request.match_info["phone_number_id"] != self.phone_number_id:
            return self._unknown_object(request, request.match_info["phone_number_id"], "post")
        payload = self.record_of(request).body
        if isinstance(payload, dict) and payload.get("status") == "read":
            if not payload.get("message_id") or payload.get("messaging_product") != "whatsapp":
                self.mark_unexpected(request)
                return graph_error(400, 100, "Invalid parameter", "message_id is required")
            self.read_receipts.append(payload)
            return json_response({"success": True})
        try:
            validate_message(payload)
        except InvalidPayload as exc:
            self.mark_unexpected(request)
            return graph_error(400, 100, "Invalid parameter", str(exc))
        to = str(payload["to"])

        def succeed(failure: Failure | None) -> web.StreamResponse:
            return self._accept_message(payload, failure)

        return await self.respond(request, to=to, succeed=succeed)

    def _accept_message(self, payload: dict[str, Any], failure: Failure | None) -> web.Response:
        to = str(payload["to"])
        wamid = new_wamid(to.lstrip("+"))
        kind = payload.get("type", "text")
        error = None
        if failure is not None:
            _, code, title, details = ERRORS.get(failure.kind, (400, 0, "", ""))
            error = {
                "code": int(failure.opts.get("code", code)),
                "title": failure.opts.get("title", title),
                "message": failure.opts.get("title", title),
                "error_data": {"details": failure.opts.get("details", details)},
            }
        media = []
        if kind in MEDIA_TYPES:
            media = [payload[kind].get("id") or payload[kind].get("link")]
        self.sent.append(
            SentMessage(
                id=wamid,
                to=to,
                kind=kind,
                text=message_text(payload),
                media=media,
                choices=message_choices(payload),
                raw=payload,
                time=self.clock(),
                error=error,
            )
        )
        message: dict[str, Any] = {"id": wamid}
        if kind == "template":
            message["message_status"] = "accepted"
        return json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [message],
            }
        )

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._auth_error()
        record = self.record_of(request)
        upload = record.files.get("file")
        if upload is None or record.form.get("messaging_product") != "whatsapp":
            self.mark_unexpected(request)
            return graph_error(
                400,
                100,
                "Invalid parameter",
                "multipart fields file and messaging_product are required",
            )
        mime_type = str(record.form.get("type") or upload.content_type)
        media_id = self.add_media(upload.content, mime_type)
        return await self.respond(
            request, to=None, succeed=lambda _: json_response({"id": media_id})
        )

    async def _media_info(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._auth_error()
        media_id = request.match_info["media_id"]
        stored = self.media.get(media_id)
        if stored is None:
            return self._unknown_object(request, media_id, "get")
        content, mime_type = stored
        info = {
            "messaging_product": "whatsapp",
            "url": f"{self.url}/media-download/{media_id}",
            "mime_type": mime_type,
            "sha256": hashlib.sha256(content).hexdigest(),
            "file_size": len(content),
            "id": media_id,
        }
        return await self.respond(request, to=None, succeed=lambda _: json_response(info))

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._auth_error()
        stored = self.media.get(request.match_info["media_id"])
        if stored is None:
            self.mark_unexpected(request)
            return web.Response(status=404)
        content, mime_type = stored

        def succeed(_: Failure | None) -> web.StreamResponse:
            return web.Response(body=content, content_type=mime_type.split(";")[0])

        return await self.respond(request, to=None, succeed=succeed)


# ---------------------------------------------------------------------- webhook builders


def encode(payload: dict[str, Any]) -> bytes:
    """The bytes Meta would POST: compact JSON, non-ASCII as lowercase ``\\uXXXX``, ``\\/``.

    Verify signatures on these raw bytes: re-encoding the parsed JSON gives other bytes.
    """
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def sign(body_bytes: bytes, app_secret: str) -> str:
    """``X-Hub-Signature-256`` for ``body_bytes``: ``sha256=<hex>``."""
    return meta_signature(app_secret, body_bytes)


def envelope(*values: dict[str, Any], waba_id: str = TEST_WABA_ID) -> dict[str, Any]:
    """One entry with one "messages" change per value."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": waba_id, "changes": [{"value": value, "field": "messages"} for value in values]}
        ],
    }


def change_value(
    *,
    messages: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    contacts: list[dict[str, Any]] | None = None,
    phone_number_id: str = TEST_PHONE_NUMBER_ID,
    display_phone_number: str = TEST_DISPLAY_NUMBER,
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
    }
    if contacts:
        value["contacts"] = contacts
    if messages:
        value["messages"] = messages
    if statuses:
        value["statuses"] = statuses
    return value


def _inbound(
    from_: str,
    content: dict[str, Any],
    *,
    id: str | None,
    name: str,
    timestamp: int | None,
    context_id: str | None = None,
) -> dict[str, Any]:
    wa_id = from_.lstrip("+")
    message: dict[str, Any] = {
        "from": wa_id,
        "id": id or new_wamid(wa_id),
        "timestamp": str(timestamp or int(time.time())),
        **content,
    }
    if context_id:
        message["context"] = {"from": TEST_DISPLAY_NUMBER, "id": context_id}
    contacts = [{"profile": {"name": name}, "wa_id": wa_id}]
    return envelope(change_value(messages=[message], contacts=contacts))


def inbound_text(
    from_: str,
    text: str,
    id: str | None = None,
    *,
    name: str = "Camille Martin",
    timestamp: int | None = None,
) -> dict[str, Any]:
    return _inbound(
        from_, {"type": "text", "text": {"body": text}}, id=id, name=name, timestamp=timestamp
    )


def inbound_button_reply(
    from_: str,
    button_id: str,
    title: str,
    id: str | None = None,
    *,
    context_id: str | None = None,
    name: str = "Camille Martin",
    timestamp: int | None = None,
) -> dict[str, Any]:
    content = {
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": button_id, "title": title}},
    }
    return _inbound(from_, content, id=id, name=name, timestamp=timestamp, context_id=context_id)


def inbound_list_reply(
    from_: str,
    row_id: str,
    title: str,
    description: str | None = None,
    id: str | None = None,
    *,
    context_id: str | None = None,
    name: str = "Camille Martin",
    timestamp: int | None = None,
) -> dict[str, Any]:
    reply = {"id": row_id, "title": title}
    if description is not None:
        reply["description"] = description
    content = {"type": "interactive", "interactive": {"type": "list_reply", "list_reply": reply}}
    return _inbound(from_, content, id=id, name=name, timestamp=timestamp, context_id=context_id)


def inbound_image(
    from_: str,
    media_id: str,
    *,
    caption: str | None = None,
    mime_type: str = "image/jpeg",
    id: str | None = None,
    name: str = "Camille Martin",
    timestamp: int | None = None,
) -> dict[str, Any]:
    image: dict[str, Any] = {
        "mime_type": mime_type,
        "sha256": base64.b64encode(secrets.token_bytes(32)).decode(),
        "id": media_id,
    }
    if caption is not None:
        image["caption"] = caption
    return _inbound(
        from_, {"type": "image", "image": image}, id=id, name=name, timestamp=timestamp
    )


def status(
    id: str,
    status: str,
    errors: list[dict[str, Any]] | None = None,
    *,
    recipient_id: str = "33612345678",
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A status webhook (sent, delivered, read, failed) for message ``id``.

    ``errors`` takes Meta's entries (``{"code", "title", "message", "error_data":
    {"details"}}``); a fake ``sent`` entry's ``error`` fits as is.
    """
    entry: dict[str, Any] = {
        "id": id,
        "status": status,
        "timestamp": str(timestamp or int(time.time())),
        "recipient_id": recipient_id.lstrip("+"),
    }
    if status in ("sent", "delivered"):
        entry["pricing"] = {
            "billable": True,
            "pricing_model": "PMP",
            "category": "utility",
            "type": "regular",
        }
    if errors:
        entry["errors"] = errors
    return envelope(change_value(statuses=[entry]))
