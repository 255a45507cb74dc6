"""SMS and WhatsApp over Twilio, in one module (courier's ``twiml`` handler idea).

Webhooks (both signed with ``X-Twilio-Signature`` over ``RELAIS_PUBLIC_URL`` + the path, the
query string if any, and every form parameter received; with or without the port). Then
``MessageSid``/``SmsSid`` must be ``SM``/``MM`` + 32 hex digits, all equal (else 400), and
``AccountSid`` the configured account (400 when missing or malformed, 403 when another
one). Each signature is recorded for 48 h (``bot.domain.replay``): the same signature over other
fields (a reshaped, replayed request) gets 403 and changes nothing; the very same request
again is a provider retry, deduplicated as usual:

- ``POST /webhooks/twilio``: an inbound SMS or WhatsApp message. ``From=whatsapp:+33…`` is
  the address ``whatsapp:+33…``, any other ``From`` is ``sms:+33…``. Stored through the
  engine (deduplicated on ``MessageSid``), answered with an empty TwiML ``<Response/>``: the
  reply leaves later through the outbox and the REST API.
- ``POST /webhooks/twilio/status``: status callbacks, handed to the application as a
  ``StatusUpdate`` (moved forward only there): a failed SMS with 21610 is ``STOPPED``,
  30003/30005/30006 ``UNDELIVERABLE`` (21614/30006: a landline), a failed WhatsApp message
  with 63016 ``WINDOW_CLOSED``; what follows (a blocked address, the template or SMS) is the
  application's rule (``bot.delivery.policy``).

Sending goes through twilio-python's async client pointed at ``RELAIS_TWILIO_API_URL``.
SMS: numbered choices, ``sms.normalise``, bodies over 1,600 characters split at word
boundaries and sent as several messages in order. WhatsApp over Twilio: numbered text
(free-form buttons need Content API templates); ``Outbound.kind == "template"`` sends the
approved Content template ``RELAIS_WHATSAPP_TEMPLATE`` (an ``HX…`` sid) with no body.
Every Twilio error is mapped onto the closed ``Failure`` set.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.rest import Client

from bot.core import sms
from bot.core.addresses import AddressError, parse_address
from bot.core.channel import (
    MAX_BODY,
    AdapterSpec,
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
    form_fields,
)
from bot.core.config import Settings
from bot.core.render import numbered
from bot.core.types import TEMPLATE_KIND, Inbound, Media, Outbound

log = logging.getLogger("relais.channels.twilio")
# twilio-python logs every request at INFO (URLs, headers): keep that out of Relais's log.
_http_log = logging.getLogger("relais.channels.twilio.http")
_http_log.setLevel(logging.WARNING)

INBOUND_PATH = "/webhooks/twilio"
STATUS_PATH = "/webhooks/twilio/status"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY_CHARS = 1600  # Twilio refuses longer bodies (21617)
MAX_MEDIA = 10  # MediaUrl0..MediaUrl9
REQUEST_TIMEOUT = 10.0  # seconds for one REST call; the outbox allows call_timeout in all
CALL_TIMEOUT = 15.0
MEDIA_TIMEOUT = 30.0
DEFAULT_RETRY_AFTER = 1.0  # Twilio documents no Retry-After on 429
DAILY_LIMIT_PAUSE = 3600.0  # 63038: the sender's daily limit; try again much later

# Twilio error codes onto the closed Failure set.
THROTTLE_CODES = {20429, 63018}
DAILY_LIMIT_CODES = {63038}
STOPPED_CODES = {21610}
WINDOW_CODES = {63016}
# 63003: the WhatsApp channel could not find the To address.
UNDELIVERABLE_CODES = {21211, 21612, 21614, 30003, 30005, 30006, 63003}
AUTH_CODES = {20003}
LANDLINE_CODES = {"21614", "30006"}

PROVIDER = "twilio"  # the provider name of its seen signatures (``bot.domain.replay``)
# Twilio's ids: two letters and 32 hex digits; messages are SM… or MM… (errors 90001/90011).
MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-fA-F]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
SID_FIELDS = ("MessageSid", "SmsSid", "SmsMessageSid")

# Twilio MessageStatus -> Relais outbox status; the others (queued, accepted, scheduled,
# sending, receiving, received, canceled…) say nothing the outbox does not know already.
STATUS_MAP = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
}
ERROR_REASONS = {
    "21610": "the person unsubscribed (STOP) at Twilio",
    "21211": "invalid 'To' number",
    "21612": "the number cannot receive SMS",
    "21614": "not a mobile number",
    "30003": "handset unreachable",
    "30005": "unknown handset",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier",
    "30008": "unknown delivery error",
    "63003": "the WhatsApp channel could not find the number",
    "63016": "outside WhatsApp's 24 hour window",
}


# -- settings -------------------------------------------------------------------------------


def _credentials_missing(settings: Settings) -> list[str]:
    missing = []
    if not settings.twilio_account_sid:
        missing.append("RELAIS_TWILIO_ACCOUNT_SID")
    if not settings.twilio_auth_token:
        missing.append("RELAIS_TWILIO_AUTH_TOKEN")
    return missing


def sms_disabled_reason(settings: Settings) -> str | None:
    """Why SMS over Twilio is off, or None when it is on."""
    missing = _credentials_missing(settings)
    if not settings.twilio_sms_from:
        missing.append("RELAIS_TWILIO_SMS_FROM")
    return f"{', '.join(missing)} not set" if missing else None


def whatsapp_disabled_reason(settings: Settings) -> str | None:
    """Why WhatsApp over Twilio is off (the Cloud API takes precedence), or None."""
    if settings.whatsapp_token:
        return "RELAIS_WHATSAPP_TOKEN is set: WhatsApp goes through the Cloud API"
    missing = _credentials_missing(settings)
    if not settings.twilio_whatsapp_from:
        missing.append("RELAIS_TWILIO_WHATSAPP_FROM")
    return f"{', '.join(missing)} not set" if missing else None


def status(settings: Settings) -> list[dict[str, Any]]:
    """For ``relais channels``: the two channels this module serves."""
    url = settings.base_url + INBOUND_PATH
    rows = []
    for channel, reason in (
        ("sms", sms_disabled_reason(settings)),
        ("whatsapp", whatsapp_disabled_reason(settings)),
    ):
        rows.append({"channel": channel, "provider": "twilio", "enabled": reason is None,
                     "reason": reason, "webhook_url": url})
    return rows


# -- errors ---------------------------------------------------------------------------------


def failure_for(code: int | str | None, http_status: int | None = None) -> Failure:
    """The Failure kind of a Twilio error code (and HTTP status, for REST errors)."""
    try:
        number = int(code) if code is not None else None
    except ValueError:
        number = None
    if http_status == 401 or number in AUTH_CODES:
        return Failure.AUTH
    if http_status == 429 or number in THROTTLE_CODES or number in DAILY_LIMIT_CODES:
        return Failure.THROTTLED
    if number in STOPPED_CODES:
        return Failure.STOPPED
    if number in WINDOW_CODES:
        return Failure.WINDOW_CLOSED
    if number in UNDELIVERABLE_CODES:
        return Failure.UNDELIVERABLE
    if http_status is not None and http_status >= 500:
        return Failure.RETRYABLE
    return Failure.FAILED


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


class _Throttled(TwilioRestException):
    """A 429 answer, with the Retry-After the REST exception does not carry."""

    def __init__(self, status: int, uri: str, msg: str, code: int | None, method: str,
                 retry_after: float | None) -> None:
        super().__init__(status, uri, msg, code, method)
        self.retry_after = retry_after


def send_error(exc: TwilioRestException) -> SendError:
    """A REST error onto the closed set (keeping Twilio's code and message)."""
    code = exc.code if exc.code is not None else exc.status
    failure = failure_for(exc.code, exc.status)
    reason = f"Twilio {exc.status} ({code}): {exc.msg}"[:500]
    if failure is Failure.THROTTLED:
        retry_after = getattr(exc, "retry_after", None)
        if exc.code in DAILY_LIMIT_CODES:
            retry_after = max(retry_after or 0.0, DAILY_LIMIT_PAUSE)
        return SendError(failure, reason, code=code,
                         retry_after=retry_after or DEFAULT_RETRY_AFTER, scope="channel")
    return SendError(failure, reason, code=code, landline=str(code) in LANDLINE_CODES)


# -- the REST client ------------------------------------------------------------------------


class _HttpClient(AsyncTwilioHttpClient):
    """twilio-python's aiohttp client with a per-request timeout and Retry-After kept."""

    def __init__(self, timeout: float = REQUEST_TIMEOUT) -> None:
        super().__init__(pool_connections=True, logger=_http_log)
        self.request_timeout = timeout

    async def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        if auth is not None:  # as a header: aiohttp deprecates its ``auth`` parameter
            headers = {**(headers or {}), "Authorization": basic_auth(*auth)}
        response = await super().request(
            method, url, params=params, data=data, headers=headers, auth=None,
            timeout=timeout or self.request_timeout, allow_redirects=allow_redirects,
        )
        if response.status_code == 429:
            raise _throttled(method, url, response)
        return response


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic ``Authorization`` value (aiohttp drops it on cross-origin redirects)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _throttled(method: str, url: str, response: TwilioResponse) -> _Throttled:
    code: int | None = None
    message = "Too Many Requests"
    try:
        payload = json.loads(response.text)
        code = int(payload.get("code")) if payload.get("code") is not None else None
        message = str(payload.get("message") or message)
    except (ValueError, TypeError, AttributeError):
        pass
    headers: Mapping[str, str] = response.headers or {}
    return _Throttled(429, url, message, code or 20429, method,
                      parse_retry_after(headers.get("Retry-After")))


class TwilioClient:
    """One twilio-python client (one HTTP connection pool) for both channels."""

    def __init__(self, settings: Settings) -> None:
        assert settings.twilio_account_sid and settings.twilio_auth_token
        self.account_sid = settings.twilio_account_sid
        self.auth_token = settings.twilio_auth_token
        self.http = _HttpClient()
        self.rest = Client(self.account_sid, self.auth_token, http_client=self.http)
        self.rest.edge = None  # TWILIO_EDGE / TWILIO_REGION would rewrite the host
        self.rest.region = None
        self.rest.api.base_url = settings.twilio_api_url
        self.api_url = settings.twilio_api_url

    async def close(self) -> None:
        await self.http.close()


# -- the channel ----------------------------------------------------------------------------


def _prefixed(value: str, channel: str) -> str:
    return value if channel != "whatsapp" or value.startswith("whatsapp:") else (
        "whatsapp:" + value
    )


class TwilioChannel:
    """``sms`` or ``whatsapp`` over Twilio's Programmable Messaging API."""

    call_timeout = CALL_TIMEOUT

    def __init__(self, name: str, client: TwilioClient, settings: Settings) -> None:
        assert name in ("sms", "whatsapp")
        self.name = name
        self.client = client
        self.settings = settings
        if name == "sms":
            sender = settings.twilio_sms_from or ""
            self.rate: float | None = settings.twilio_rate
            self.rate_by_segments = True
        else:
            sender = settings.twilio_whatsapp_from or ""
            self.rate = settings.twilio_whatsapp_rate
            self.rate_by_segments = False
        self.sender: dict[str, str] = (
            {"messaging_service_sid": sender} if sender.startswith("MG")
            else {"from_": _prefixed(sender, name)}
        )
        self.status_callback = settings.base_url + STATUS_PATH

    def _bodies(self, message: Outbound) -> list[dict[str, Any]]:
        """The create() arguments that differ per request, in sending order."""
        if message.kind == TEMPLATE_KIND:
            if self.name != "whatsapp" or not self.settings.whatsapp_template:
                raise SendError(Failure.FAILED, "no RELAIS_WHATSAPP_TEMPLATE to send")
            return [{"content_sid": self.settings.whatsapp_template}]
        text = numbered(message.text, message.choices)
        if self.name == "sms":
            text = sms.normalise(text)
        bodies: list[dict[str, Any]] = [{"body": part} for part in sms.split(text,
                                                                           MAX_BODY_CHARS)]
        if message.media_url:
            if not bodies:
                bodies = [{}]
            bodies[0]["media_url"] = [message.media_url]
        if not bodies:
            raise SendError(Failure.FAILED, "nothing to send: empty text and no media")
        return bodies

    async def send(self, message: Outbound) -> SendResult:
        bodies = self._bodies(message)
        common = {"to": _prefixed(message.to, self.name), "status_callback": self.status_callback,
                  **self.sender}
        sids: list[str] = []
        segments = 0
        for index, extra in enumerate(bodies):
            try:
                created = await self.client.rest.messages.create_async(**common, **extra)
            except TwilioRestException as exc:
                error = send_error(exc)
            except (TimeoutError, aiohttp.ClientError) as exc:
                # The request may have reached Twilio (a lost answer): a retry can send the
                # message twice; Twilio's Messages API has no idempotency key to prevent it.
                error = SendError(Failure.RETRYABLE,
                                  f"Twilio unreachable: {type(exc).__name__}: {exc}"[:500])
            else:
                sids.append(str(created.sid))
                segments += int(created.num_segments or 1)
                continue
            if index:
                log.warning("outbox row %s: part %d of %d failed after %d sent; a retry "
                            "resends the whole message", message.id, index + 1, len(bodies),
                            index)
            raise error
        log.info("outbox row %s sent on %s over twilio (%d request(s))", message.id,
                 self.name, len(sids))
        return SendResult(provider_id=sids[0],
                          segments=segments if self.name == "sms" else None)

    async def fetch_media(self, ref: str) -> tuple[bytes, str]:
        """A MediaUrl's bytes (Basic auth; Twilio redirects to its CDN)."""
        if not _is_twilio_url(ref, self.client.api_url):
            raise web.HTTPNotFound(text="not a Twilio media URL")
        headers = {"Authorization": basic_auth(self.client.account_sid, self.client.auth_token)}
        timeout = aiohttp.ClientTimeout(total=MEDIA_TIMEOUT)
        session = self.client.http.session
        assert isinstance(session, aiohttp.ClientSession)
        try:
            async with session.get(ref, headers=headers, allow_redirects=True,
                                   timeout=timeout) as response:
                if response.status == 404:
                    raise web.HTTPNotFound(text="the media is no longer at Twilio")
                if response.status >= 400:
                    raise web.HTTPBadGateway(text=f"Twilio answered {response.status}")
                data = await response.read()
                return data, response.content_type
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise web.HTTPBadGateway(text=f"Twilio unreachable ({type(exc).__name__})") from exc


    async def delete_media(self, ref: str) -> None:
        """Delete a MediaUrl's file at Twilio (the Media resource) once Relais keeps its own
        copy; one already gone is fine."""
        match = _MEDIA_PATH.search(urlsplit(ref).path)
        if match is None or not _is_twilio_url(ref, self.client.api_url):
            raise SendError(Failure.FAILED, "not a Twilio media URL")
        account, message_sid, media_sid = match.groups()
        media = self.client.rest.api.v2010.accounts(account).messages(message_sid).media(
            media_sid)
        try:
            await media.delete_async()
        except TwilioRestException as exc:
            if exc.status != 404:
                raise send_error(exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SendError(Failure.RETRYABLE,
                            f"Twilio unreachable: {type(exc).__name__}") from None


_MEDIA_PATH = re.compile(r"/Accounts/([^/]+)/Messages/([^/]+)/Media/([^/.]+)$")


def _is_twilio_url(ref: str, api_url: str) -> bool:
    """Our credentials only go to Twilio (or the configured API base)."""
    parts, base = urlsplit(ref), urlsplit(api_url)
    if (parts.scheme, parts.netloc) == (base.scheme, base.netloc):
        return True
    host = parts.hostname or ""
    return parts.scheme == "https" and (host == "twilio.com" or host.endswith(".twilio.com"))


# -- webhooks -------------------------------------------------------------------------------


def _twiml() -> web.Response:
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


def _configured(settings: Settings, path: str) -> None:
    missing = _credentials_missing(settings)
    if missing:
        log.info("POST %s refused (404): %s not set", path, ", ".join(missing))
        raise web.HTTPNotFound(text="twilio is not configured")


async def _signed_form(request: web.Request, settings: Settings, path: str
                       ) -> tuple[MultiDictProxy[str], str]:
    """The form and the message sid, once the size, type and signature are checked (413,
    400, 403) and the sid is well-formed and the account is ours (400, 403). The handler
    then calls ``_not_replayed`` (403 for a signature seen over other fields)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        log.info("POST %s refused (413): body of %d bytes", path, request.content_length)
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY,
                                            actual_size=request.content_length)
    if request.content_type != FORM_TYPE:
        log.info("POST %s refused (400): content type %r", path, request.content_type)
        raise web.HTTPBadRequest(text="expected a form-encoded body")
    try:
        posted = await request.post()
    except web.HTTPRequestEntityTooLarge:
        log.info("POST %s refused (413): body over %d bytes", path, MAX_BODY)
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        log.info("POST %s refused (400): unreadable form (%s)", path, type(exc).__name__)
        raise web.HTTPBadRequest(text="unreadable form") from exc
    form = MultiDictProxy(MultiDict(
        (name, value) for name, value in posted.items() if isinstance(value, str)
    ))
    signature = request.headers.get(SIGNATURE_HEADER, "")
    url = settings.base_url + path
    if request.rel_url.raw_query_string:
        url += "?" + request.rel_url.raw_query_string
    algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
    assert settings.twilio_auth_token
    validator = RequestValidator(settings.twilio_auth_token)
    if not signature or not validator.validate(url, form, signature, algorithm):
        log.info("POST %s refused (403): %s X-Twilio-Signature", path,
                 "wrong" if signature else "no")
        raise web.HTTPForbidden(text="invalid signature")
    sid = _checked_ids(form, settings, path)
    return form, sid


def _checked_ids(form: MultiDictProxy[str], settings: Settings, path: str) -> str:
    """The message sid of a signed form: every sid field well-formed and equal (else 400),
    ``AccountSid`` present and well-formed (else 400) and the configured account (else 403).

    The format check alone refuses the known reshaping of a signed request
    (``MessageSid=<sid>NumMedia0`` without ``NumMedia``): no letter past ``f`` is hex."""
    sids = [value for name in SID_FIELDS for value in form.getall(name, [])]
    if not sids:
        log.info("POST %s refused (400): no MessageSid", path)
        raise web.HTTPBadRequest(text="MessageSid is required")
    if any(MESSAGE_SID.fullmatch(value) is None for value in sids) or len(set(sids)) != 1:
        log.info("POST %s refused (400): malformed MessageSid/SmsSid (%d characters)", path,
                 max(len(value) for value in sids))
        raise web.HTTPBadRequest(text="MessageSid must be SM or MM and 32 hex digits")
    accounts = form.getall("AccountSid", [])
    if len(accounts) != 1 or ACCOUNT_SID.fullmatch(accounts[0]) is None:
        log.info("POST %s refused (400): message %s with a missing or malformed AccountSid",
                 path, sids[0])
        raise web.HTTPBadRequest(text="AccountSid must be AC and 32 hex digits")
    assert settings.twilio_account_sid
    if accounts[0].lower() != settings.twilio_account_sid.lower():
        log.warning("POST %s refused (403): message %s for another Twilio account", path,
                    sids[0])
        raise web.HTTPForbidden(text="not this Twilio account")
    return sids[0]


async def _not_replayed(request: web.Request, hub: Hub,
                        form: MultiDictProxy[str], path: str, sid: str, channel: str
                        ) -> None:
    """Record the signature; 403 when it was seen before over other fields."""
    url = hub.settings.base_url + path
    if request.rel_url.raw_query_string:
        url += "?" + request.rel_url.raw_query_string
    verdict = await hub.sink.seen(PROVIDER, request.headers[SIGNATURE_HEADER],
                                  form_fields(url, form.items()))
    if verdict is Verdict.REPLAY:
        hub.sink.count(channel, "replay")
        log.warning("POST %s refused (403): message %s carries the signature of another "
                    "request (a replay)", path, sid)
        raise web.HTTPForbidden(text="signature already used by another request")
    if verdict is Verdict.RETRY:
        log.info("POST %s: message %s is a retry of a request already received", path, sid)


def _inbound_from_form(form: MultiDictProxy[str], sid: str) -> Inbound:
    sender = form.get("From", "").strip()
    if not sender:
        log.info("POST %s refused (400): message %s without From", INBOUND_PATH, sid)
        raise web.HTTPBadRequest(text="From is required")
    channel = "whatsapp" if sender.startswith("whatsapp:") else "sms"
    number = sender.removeprefix("whatsapp:")
    try:
        address = parse_address(f"{channel}:{number}")
    except AddressError as exc:
        log.info("POST %s refused (400): message %s from an unusable number", INBOUND_PATH,
                 sid)
        raise web.HTTPBadRequest(text=f"unusable From: {exc}") from exc
    media = []
    for index in range(MAX_MEDIA):
        url = form.get(f"MediaUrl{index}")
        if not url:
            continue
        content_type = form.get(f"MediaContentType{index}") or "application/octet-stream"
        media.append(Media(content_type=content_type, ref=url))
    payload = form.get("ButtonPayload") or None
    text = (form.get("ButtonText") or form.get("Body", "")) if payload else form.get("Body", "")
    return Inbound(
        channel=channel, address=str(address), text=text, provider_id=sid,
        choice_id=payload, media=tuple(media), profile_name=form.get("ProfileName") or None,
    )


async def inbound_webhook(request: web.Request, hub: Hub) -> web.Response:
    settings = hub.settings
    _configured(settings, INBOUND_PATH)
    form, sid = await _signed_form(request, settings, INBOUND_PATH)
    inbound = checked_inbound(_inbound_from_form(form, sid))  # BadInput: 400
    reason = (whatsapp_disabled_reason if inbound.channel == "whatsapp"
              else sms_disabled_reason)(settings)
    if reason is not None:
        log.info("POST %s refused (404): %s message %s while %s over twilio is off (%s)",
                 INBOUND_PATH, inbound.channel, inbound.provider_id, inbound.channel, reason)
        raise web.HTTPNotFound(text=f"{inbound.channel} over twilio is not enabled")
    await _not_replayed(request, hub, form, INBOUND_PATH, sid, inbound.channel)
    outcome = await hub.sink.message(inbound)
    log.info("twilio %s message %s: %s", inbound.channel, inbound.provider_id, outcome)
    return _twiml()


async def status_webhook(request: web.Request, hub: Hub) -> web.Response:
    settings = hub.settings
    _configured(settings, STATUS_PATH)
    form, sid = await _signed_form(request, settings, STATUS_PATH)
    twilio_status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    if not twilio_status:
        log.info("POST %s refused (400): no MessageStatus", STATUS_PATH)
        raise web.HTTPBadRequest(text="MessageSid and MessageStatus are required")
    whatsapp = (form.get("To", "").startswith("whatsapp:")
                or form.get("ChannelPrefix") == "whatsapp")
    channel = "whatsapp" if whatsapp else "sms"
    mapped = STATUS_MAP.get(twilio_status)
    if mapped is None:
        hub.sink.count(channel, "ignored")
        log.info("twilio status %s for %s: ignored", twilio_status[:40], sid)
        return _twiml()
    await _not_replayed(request, hub, form, STATUS_PATH, sid, channel)
    code, _ = clean_error(form.get("ErrorCode"), None)  # no NUL, fits its column
    failure = failure_for(code) if mapped == "failed" else None
    reason = None
    if code is not None:
        reason = f"Twilio {twilio_status} ({code}): {ERROR_REASONS.get(code, 'see error code')}"
    await hub.sink.status(StatusUpdate(
        channel=channel, provider_id=sid, status=mapped, error_code=code, error_reason=reason,
        failure=failure, landline=code in LANDLINE_CODES,
    ))
    return _twiml()


# -- the adapter ----------------------------------------------------------------------------


async def open_channels(settings: Settings) -> Opened | None:
    """SMS and WhatsApp over Twilio, each when its settings are there (one log line when
    not); both share one REST client."""
    missing = _credentials_missing(settings)
    if missing:
        log.info("sms and whatsapp over twilio disabled: %s not set", ", ".join(missing))
        return None
    reasons = {"sms": sms_disabled_reason(settings),
               "whatsapp": whatsapp_disabled_reason(settings)}
    for name, reason in reasons.items():
        if reason is not None:
            log.info("%s over twilio disabled: %s", name, reason)
    enabled = [name for name, reason in reasons.items() if reason is None]
    if not enabled:
        return None
    client = TwilioClient(settings)
    log.info("twilio enabled for %s (webhook %s%s)", ", ".join(enabled), settings.base_url,
             INBOUND_PATH)
    return Opened(channels=[TwilioChannel(name, client, settings) for name in enabled],
                  close=client.close, state=client)


SPEC = AdapterSpec(
    name=PROVIDER,
    open=open_channels,
    routes=(Route("POST", INBOUND_PATH, inbound_webhook),
            Route("POST", STATUS_PATH, status_webhook)),
    status=status,
)
