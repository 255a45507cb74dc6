"""Fake Twilio Programmable Messaging REST API (SMS and WhatsApp over Twilio).

Point twilio-python at it with ``client.api.base_url = fake.url`` (read by
``Domain.absolute_url`` on every request; do not set edge/region, they rewrite the host).

Routes (``{A}`` = ``/2010-04-01/Accounts/{AccountSid}``), all with HTTP Basic auth
(account sid + auth token, or an API key sid + secret from ``api_keys``):

- ``POST {A}/Messages.json`` (route "messages.create", the send route): form fields To,
  From or MessagingServiceSid, Body, MediaUrl (repeatable), StatusCallback, ContentSid,
  ContentVariables… Answers 201 with the message resource JSON twilio-python parses.
- ``GET {A}/Messages/{MessageSid}.json`` ("messages.fetch").
- ``GET {A}/Messages/{MessageSid}/Media/{MediaSid}`` ("media.fetch"): the bytes added
  with ``add_media``; with ``redirect_media=True`` a 307 to ``/media-cdn/{MediaSid}``
  (unauthenticated), like Twilio's redirect to its CDN. ``…/{MediaSid}.json``: metadata.
  ``DELETE …/Media/{MediaSid}.json`` ("media.delete"): 204, the file is gone.

Failure kinds for ``fail_next``: "unsubscribed" (21610), "invalid_to" (21211), "landline"
(21614), "window" (63016), "429" (HTTP 429, 20429), "500" (20500), "auth" (401, 20003),
"timeout", "reset", and "error" (``code=``, ``status=400``, ``message=``). A provider
error with ``deferred=True`` answers 201 and is reported by ``status_callback_params``
(Twilio reports 63016 and the 30xxx codes that way, in the status callback).

Requests Twilio would refuse as malformed (no To, no From/MessagingServiceSid, no Body/
MediaUrl/ContentSid, Body over 1,600 chars, From/To on different channels, another
account's path) answer Twilio's 400/404 error and are recorded in ``unexpected``.
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from tests.fakes.base import (
    GENERIC_KINDS,
    Failure,
    FakeServer,
    SentMessage,
    as_list,
    first,
    json_response,
)
from tests.fakes.signing import twilio_signature

TEST_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TEST_AUTH_TOKEN = "5f9c2e1ab7d84c0e9f3a6b2d1c8e7f40"
API_VERSION = "2010-04-01"
ACCOUNT_PATH = "/2010-04-01/Accounts/{account_sid}"
MAX_BODY = 1600

# kind -> (HTTP status, Twilio error code, message)
ERRORS: dict[str, tuple[int, int, str]] = {
    "unsubscribed": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "invalid_to": (400, 21211, "The 'To' number {to} is not a valid phone number."),
    "landline": (400, 21614, "'To' number is not a valid mobile number"),
    "window": (
        400,
        63016,
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template.",
    ),
    "429": (429, 20429, "Too Many Requests"),
    "500": (500, 20500, "An internal server error has occurred"),
    "auth": (401, 20003, "Authenticate"),
}

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def sms_segments(body: str) -> int:
    """Segments Twilio bills for ``body`` (GSM-7 160/153, else UCS-2 70/67)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body):
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def new_sid(prefix: str) -> str:
    """A Twilio sid: two letters and 32 hex digits (SM…, MM…, ME…)."""
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime) -> str:
    """Twilio's date format: ``Tue, 10 Jun 2025 08:15:02 +0000``."""
    return format_datetime(moment.astimezone(UTC).replace(tzinfo=UTC))


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class FakeTwilio(FakeServer):
    """Fake Twilio REST API; see the module docstring."""

    failure_kinds: ClassVar[frozenset[str]] = GENERIC_KINDS | frozenset(ERRORS) | {"error"}
    send_routes: ClassVar[frozenset[str]] = frozenset({"messages.create"})
    default_retry_after: ClassVar[int | None] = None  # Twilio documents no Retry-After

    def __init__(
        self,
        account_sid: str = TEST_ACCOUNT_SID,
        auth_token: str = TEST_AUTH_TOKEN,
        *,
        api_keys: dict[str, str] | None = None,
        redirect_media: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.api_keys = dict(api_keys or {})
        self.redirect_media = redirect_media
        self.messages: dict[str, dict[str, Any]] = {}  # sid -> message resource JSON
        self.media: dict[str, tuple[bytes, str, str]] = {}  # sid -> (content, type, msg sid)

    # ------------------------------------------------------------------ routes

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post(
            f"{ACCOUNT_PATH}/Messages.json", self._create_message, name="messages.create"
        )
        app.router.add_get(
            ACCOUNT_PATH + "/Messages/{message_sid}/Media/{media_sid}",
            self._fetch_media,
            name="media.fetch",
        )
        app.router.add_get(
            ACCOUNT_PATH + "/Messages/{message_sid:[A-Za-z0-9]+}.json",
            self._fetch_message,
            name="messages.fetch",
        )
        app.router.add_get("/media-cdn/{media_sid}", self._media_cdn, name="media.cdn")
        app.router.add_delete(
            ACCOUNT_PATH + "/Messages/{message_sid}/Media/{media_sid}",
            self._delete_media,
            name="media.delete",
        )

    # ------------------------------------------------------------------ helpers for tests

    def add_media(
        self, content: bytes, content_type: str = "image/jpeg", *, message_sid: str | None = None
    ) -> str:
        """Store media as Twilio does for an inbound MMS/WhatsApp; return its MediaUrl."""
        message_sid = message_sid or new_sid("MM")
        media_sid = new_sid("ME")
        self.media[media_sid] = (content, content_type, message_sid)
        return f"{self.url}{self._account_path()}/Messages/{message_sid}/Media/{media_sid}"

    def status_callback_params(
        self,
        message: SentMessage | str,
        status: str = "delivered",
        *,
        error_code: int | str | None = None,
        extra: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """The form Twilio POSTs to the message's StatusCallback for ``status``.

        For "failed"/"undelivered", ``error_code`` defaults to the deferred failure's code.
        """
        sid = message if isinstance(message, str) else message["id"]
        resource = self.messages[sid]
        if error_code is None and status in ("failed", "undelivered"):
            sent = next((m for m in self.sent if m["id"] == sid), None)
            if sent is not None and sent["error"] is not None:
                error_code = sent["error"]["code"]
        params = {
            "SmsSid": sid,
            "SmsStatus": status,
            "MessageStatus": status,
            "To": resource["to"],
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "From": resource["from"] or "",
            "ApiVersion": API_VERSION,
        }
        if resource["messaging_service_sid"]:
            params["MessagingServiceSid"] = resource["messaging_service_sid"]
        if resource["to"].startswith("whatsapp:"):
            params["ChannelPrefix"] = "whatsapp"
            params["ChannelToAddress"] = resource["to"].removeprefix("whatsapp:")
        elif status == "delivered":
            params["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        params.update(extra or {})
        return params

    def status_callback_url(self, message: SentMessage | str) -> str | None:
        sid = message if isinstance(message, str) else message["id"]
        sent = next(m for m in self.sent if m["id"] == sid)
        return first(sent["raw"].get("StatusCallback"))

    async def send_status_callback(
        self,
        message: SentMessage | str,
        status: str = "delivered",
        *,
        error_code: int | str | None = None,
        url: str | None = None,
        signature_url: str | None = None,
    ) -> int:
        """POST a signed status callback to the message's StatusCallback (or ``url``).

        ``signature_url`` is the URL to sign when it differs from the one posted to (the
        public URL behind a proxy). Returns the HTTP status Relais answered.
        """
        target = url or self.status_callback_url(message)
        if target is None:
            raise ValueError("the message has no StatusCallback; pass url=")
        params = self.status_callback_params(message, status, error_code=error_code)
        signature = twilio_signature(self.auth_token, signature_url or target, params)
        async with aiohttp.ClientSession() as session:
            headers = {"X-Twilio-Signature": signature, "I-Twilio-Idempotency-Token": "fake"}
            async with session.post(target, data=params, headers=headers) as response:
                await response.read()
                return response.status

    # ------------------------------------------------------------------ failures

    def failure_response(
        self, kind: str, opts: dict[str, Any], *, to: str | None = None
    ) -> web.StreamResponse:
        if kind == "error":
            status = int(opts.get("status", 400))
            code = int(opts["code"])
            message = str(opts.get("message", f"Error {code}"))
        else:
            status, code, message = ERRORS[kind]
            message = message.format(to=(to or "").removeprefix("whatsapp:"))
        headers = self.retry_after_headers(opts.get("retry_after")) if status == 429 else {}
        return json_response(error_body(status, code, message), status=status, headers=headers)

    # ------------------------------------------------------------------ handlers

    def _account_path(self) -> str:
        return ACCOUNT_PATH.format(account_sid=self.account_sid)

    def _authorized(self, request: web.Request) -> bool:
        credentials = basic_credentials(request)
        if credentials is None:
            return False
        user, password = credentials
        if user == self.account_sid:
            return secrets.compare_digest(password, self.auth_token)
        return user in self.api_keys and secrets.compare_digest(password, self.api_keys[user])

    def _auth_error(self) -> web.Response:
        return json_response(error_body(401, 20003, "Authenticate"), status=401)

    def _not_found(self, request: web.Request, *, unexpected: bool) -> web.Response:
        if unexpected:
            self.mark_unexpected(request)
        message = f"The requested resource {request.path} was not found"
        return json_response(error_body(404, 20404, message), status=404)

    def not_found_response(self, request: web.Request) -> web.StreamResponse:
        return self._not_found(request, unexpected=False)

    def _bad_request(self, request: web.Request, code: int, message: str) -> web.Response:
        self.mark_unexpected(request)
        return json_response(error_body(400, code, message), status=400)

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._auth_error()
        if request.match_info["account_sid"] != self.account_sid:
            return self._not_found(request, unexpected=True)
        form = self.record_of(request).form
        to = first(form.get("To"))
        sender = first(form.get("From"))
        service = first(form.get("MessagingServiceSid"))
        body = first(form.get("Body")) or ""
        if not to:
            return self._bad_request(request, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return self._bad_request(request, 21603, "A 'From' phone number is required.")
        if not body and not form.get("MediaUrl") and not form.get("ContentSid"):
            return self._bad_request(request, 21602, "Message body is required.")
        if len(body) > MAX_BODY:
            message = "The concatenated message body exceeds the 1600 character limit."
            return self._bad_request(request, 21617, message)
        if sender and sender.startswith("whatsapp:") != to.startswith("whatsapp:"):
            message = "Invalid From and To pair. From and To should be of the same channel."
            return self._bad_request(request, 21910, message)

        def succeed(failure: Failure | None) -> web.StreamResponse:
            return self._accept_message(form, failure)

        return await self.respond(request, to=to, succeed=succeed)

    def _accept_message(self, form: dict[str, Any], failure: Failure | None) -> web.Response:
        media = as_list(form.get("MediaUrl"))
        to = first(form["To"])
        sender = first(form.get("From"))
        service = first(form.get("MessagingServiceSid"))
        body = first(form.get("Body")) or ""
        sid = new_sid("MM" if media else "SM")
        now = rfc2822(datetime.now(UTC))
        whatsapp = to.startswith("whatsapp:")
        resource: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": "1" if whatsapp or media else str(sms_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {
                "media": f"{self._account_path()}/Messages/{sid}/Media.json",
            },
            "to": to,
            "uri": f"{self._account_path()}/Messages/{sid}.json",
        }
        self.messages[sid] = resource
        error = None
        if failure is not None:
            status, code, message = ERRORS.get(failure.kind, (400, 0, ""))
            code = int(failure.opts.get("code", code))
            error = {"code": code, "message": failure.opts.get("message", message)}
        self.sent.append(
            SentMessage(
                id=sid,
                to=to,
                kind="media" if media else ("content" if form.get("ContentSid") else "text"),
                text=body or None,
                media=media,
                choices=[],
                raw=dict(form),
                time=self.clock(),
                error=error,
            )
        )
        return json_response(resource, status=201)

    async def _fetch_message(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._auth_error()
        resource = self.messages.get(request.match_info["message_sid"])
        if request.match_info["account_sid"] != self.account_sid or resource is None:
            return self._not_found(request, unexpected=False)
        return await self.respond(request, to=None, succeed=lambda _: json_response(resource))

    async def _fetch_media(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._auth_error()
        media_sid = request.match_info["media_sid"]
        metadata = media_sid.endswith(".json")
        media_sid = media_sid.removesuffix(".json")
        stored = self.media.get(media_sid)
        if request.match_info["account_sid"] != self.account_sid or stored is None:
            return self._not_found(request, unexpected=False)
        content, content_type, message_sid = stored

        def succeed(_: Failure | None) -> web.StreamResponse:
            if metadata:
                return json_response(self._media_resource(media_sid, content_type, message_sid))
            if self.redirect_media:
                raise web.HTTPTemporaryRedirect(f"{self.url}/media-cdn/{media_sid}")
            return web.Response(body=content, content_type=content_type)

        return await self.respond(request, to=None, succeed=succeed)

    async def _delete_media(self, request: web.Request) -> web.StreamResponse:
        """``DELETE …/Media/{MediaSid}.json``: 204, the file is gone (404 when unknown)."""
        if not self._authorized(request):
            return self._auth_error()
        media_sid = request.match_info["media_sid"].removesuffix(".json")
        if request.match_info["account_sid"] != self.account_sid or media_sid not in self.media:
            return self._not_found(request, unexpected=False)

        def succeed(_: Failure | None) -> web.StreamResponse:
            self.media.pop(media_sid, None)
            return web.Response(status=204)

        return await self.respond(request, to=None, succeed=succeed)

    async def _media_cdn(self, request: web.Request) -> web.StreamResponse:
        stored = self.media.get(request.match_info["media_sid"])
        if stored is None:
            return web.Response(status=404, text="NoSuchKey")
        content, content_type, _ = stored
        return web.Response(body=content, content_type=content_type)

    def _media_resource(self, media_sid: str, content_type: str, message_sid: str) -> dict:
        now = rfc2822(datetime.now(UTC))
        base = f"{self._account_path()}/Messages/{message_sid}/Media/{media_sid}"
        return {
            "account_sid": self.account_sid,
            "content_type": content_type,
            "date_created": now,
            "date_updated": now,
            "parent_sid": message_sid,
            "sid": media_sid,
            "uri": f"{base}.json",
        }


def inbound_params(
    from_: str,
    body: str,
    *,
    to: str = "+33757000100",
    account_sid: str = TEST_ACCOUNT_SID,
    message_sid: str | None = None,
    media: list[tuple[str, str]] | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """An inbound SMS (or WhatsApp, with ``whatsapp:`` addresses) webhook form.

    ``media`` lists (url, content type) pairs. ``extra`` adds or overrides parameters
    (ProfileName, WaId, ButtonPayload…).
    """
    media = media or []
    sid = message_sid or new_sid("MM" if media else "SM")
    params = {
        "ToCountry": "FR",
        "ToState": "",
        "SmsMessageSid": sid,
        "NumMedia": str(len(media)),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "FR",
        "To": to,
        "ToZip": "",
        "NumSegments": str(sms_segments(body)),
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": API_VERSION,
    }
    for index, (url, content_type) in enumerate(media):
        params[f"MediaUrl{index}"] = url
        params[f"MediaContentType{index}"] = content_type
    if from_.startswith("whatsapp:"):
        params["WaId"] = from_.removeprefix("whatsapp:+")
        params["MessageType"] = "image" if media else "text"
        for name in ("ToCountry", "ToState", "ToCity", "ToZip"):
            params.pop(name)
        for name in ("FromCountry", "FromState", "FromCity", "FromZip"):
            params.pop(name)
    params.update(extra or {})
    return params
