"""Telegram over the Bot API, with python-telegram-bot (no polling: webhook only).

In: ``POST /webhooks/telegram`` carries one Update, authenticated by the
``X-Telegram-Bot-Api-Secret-Token`` header (the secret given to setWebhook, compared in
constant time). Private-chat messages (text, ``/start``, photo, voice, audio, video,
document, contact, location) and inline-button presses become ``Inbound`` events for
``telegram:<chat id>``, deduplicated on ``update_id``; everything else is ignored.
Button presses are answered with ``answerCallbackQuery`` once stored (else the button spins).

Out: ``sendMessage`` with an inline keyboard (one button per row, ``callback_data`` = the
choice id), text split at 4,096 characters with the keyboard on the last part. Provider
errors map onto the closed ``Failure`` set. Media are fetched with ``getFile`` for staff:
the file URL holds the bot token, so it never leaves this module.

The adapter is ``SPEC``: ``open`` checks the token with getMe and returns the channel (its
``state``, whose ``bot`` the webhook uses); the webhook hands messages to ``hub.sink`` and a
person's own shared phone number as a ``phone_shared`` event. It imports only ``bot.core``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import re
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web
from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from bot.core import sms
from bot.core.addresses import AddressError, normalise_phone
from bot.core.channel import (
    PHONE_SHARED,
    AdapterSpec,
    ChannelEvent,
    Failure,
    Hub,
    Opened,
    Route,
    SendError,
    SendResult,
    checked_inbound,
)
from bot.core.config import Settings
from bot.core.types import Choice, Inbound, Media, Outbound

log = logging.getLogger("relais.channels.telegram")

NAME = "telegram"
WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ("message", "callback_query")
MAX_TEXT = 4096  # sendMessage text, in UTF-16 code units (Telegram counts those)
MAX_CALLBACK_DATA = 64  # bytes
CALL_TIMEOUT = 15.0
INIT_TIMEOUT = 20.0
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what setWebhook accepts as secret_token
SECRET_RE_TEXT = "1 to 256 characters among A-Z, a-z, 0-9, _ and -"
# BadRequest descriptions meaning the chat cannot be reached (PTB capitalises them).
UNREACHABLE = ("chat not found", "user not found", "peer_id_invalid", "chat_id is empty")


# -- the channel --------------------------------------------------------------------------


@dataclass
class TelegramChannel:
    """Sends on ``telegram:<chat id>`` addresses and fetches the files people send."""

    bot: Bot
    token: str
    rate: float | None = 30.0
    name: str = NAME
    rate_by_segments: bool = False
    call_timeout: float = CALL_TIMEOUT
    username: str | None = field(default=None)

    async def send(self, message: Outbound) -> SendResult:
        markup = keyboard(message.choices)
        parts = split_text(message.text)
        if not parts:
            raise SendError(Failure.FAILED, "empty message: Telegram refuses empty text")
        first_id: str | None = None
        for number, part in enumerate(parts, start=1):
            last = number == len(parts)
            try:
                sent = await self.bot.send_message(
                    chat_id=_chat_id(message.to), text=part,
                    reply_markup=markup if last else None,
                )
            except TelegramError as exc:
                raise send_error(exc, self.token) from None
            if first_id is None:
                first_id = str(sent.message_id)
        return SendResult(provider_id=first_id)

    async def fetch_media(self, ref: str) -> tuple[bytes, str | None]:
        """The bytes of a file a person sent (``file_id``), and its type when known."""
        try:
            file = await self.bot.get_file(ref)
            data = await file.download_as_bytearray()
        except BadRequest as exc:  # expired or unknown file_id, or over 20 MB
            log.warning("telegram file unavailable: %s", redact(exc.message, self.token))
            raise web.HTTPNotFound(text="this file is no longer available at Telegram") from None
        except TelegramError as exc:
            log.warning("telegram file download failed: %s", redact(str(exc), self.token))
            raise web.HTTPBadGateway(text="Telegram did not give the file; try again") from None
        return bytes(data), _content_type(file.file_path)

    async def close(self) -> None:
        await self.bot.shutdown()


def _chat_id(to: str) -> int | str:
    return int(to) if to.lstrip("-").isdigit() else to


def _content_type(path: str | None) -> str | None:
    guessed = mimetypes.guess_type(path or "")[0]
    return None if guessed in (None, "application/octet-stream") else guessed


def keyboard(choices: tuple[Choice, ...]) -> InlineKeyboardMarkup | None:
    """One button per row, ``callback_data`` = the choice id. Our ids are short; one over
    64 bytes is a bug in a flow: the row fails loudly rather than lose its buttons."""
    if not choices:
        return None
    rows = []
    for choice in choices:
        if not 1 <= len(choice.id.encode("utf-8")) <= MAX_CALLBACK_DATA:
            log.error("choice id %r is too long for Telegram's callback_data", choice.id[:80])
            raise SendError(
                Failure.FAILED,
                f"choice id {choice.id[:80]!r} does not fit Telegram's 64-byte callback_data",
            )
        rows.append([InlineKeyboardButton(choice.label or choice.id, callback_data=choice.id)])
    return InlineKeyboardMarkup(rows)


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """``text`` in parts Telegram accepts (≤ ``limit`` UTF-16 units), cut between paragraphs,
    lines or words."""
    if not text.strip():
        return []
    if sms.ucs2_units(text) <= limit:
        return [text]
    max_chars = limit
    while True:
        parts = sms.split(text, max_chars)
        if all(sms.ucs2_units(part) <= limit for part in parts):
            return parts
        max_chars -= max(1, limit // 16)  # surrogate pairs (emoji) count twice


def redact(text: str, token: str | None) -> str:
    """Never let the bot token (in API and file URLs, PTB messages) reach a log or a row."""
    if token:
        text = text.replace(token, "<token>")
    return text


def retry_seconds(exc: RetryAfter) -> float:
    """``retry_after`` in seconds: PTB 22 gives an int (deprecated) or a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value: Any = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def send_error(exc: TelegramError, token: str | None = None) -> SendError:
    """Map a python-telegram-bot exception onto the closed ``Failure`` set."""
    reason = redact(exc.message, token)
    if isinstance(exc, RetryAfter):
        return SendError(Failure.THROTTLED, reason, code=429, retry_after=retry_seconds(exc),
                         scope="channel")
    if isinstance(exc, Forbidden):  # blocked by the user, user deactivated, kicked
        return SendError(Failure.STOPPED, reason, code=403)
    if isinstance(exc, InvalidToken):
        return SendError(Failure.AUTH, reason, code=401)
    if isinstance(exc, BadRequest):
        lowered = reason.lower()
        if any(marker in lowered for marker in UNREACHABLE):
            return SendError(Failure.UNDELIVERABLE, reason, code=400)
        return SendError(Failure.FAILED, reason, code=400)
    if isinstance(exc, ChatMigrated):  # a group became a supergroup: not a private chat
        return SendError(Failure.UNDELIVERABLE, reason, code=400)
    if isinstance(exc, NetworkError):  # TimedOut, connection errors, 5xx
        return SendError(Failure.RETRYABLE, reason)
    return SendError(Failure.FAILED, reason)


# -- configuration ------------------------------------------------------------------------


def secret_problem(secret: str | None) -> str | None:
    """Why Telegram's setWebhook would refuse this secret token, or None."""
    if secret and not SECRET_RE.fullmatch(secret):
        return f"RELAIS_TELEGRAM_WEBHOOK_SECRET must be {SECRET_RE_TEXT}"
    return None


def file_url(api_url: str) -> str:
    """The file-download base matching an API base: ``…/bot`` → ``…/file/bot``."""
    if api_url.endswith("/bot"):
        return api_url.removesuffix("/bot") + "/file/bot"
    return api_url + "/file/bot"


def make_bot(settings: Settings) -> Bot:
    assert settings.telegram_token
    request = HTTPXRequest(connection_pool_size=64, read_timeout=10.0, write_timeout=10.0,
                           connect_timeout=5.0, pool_timeout=5.0)
    return Bot(settings.telegram_token, base_url=settings.telegram_api_url,
               base_file_url=file_url(settings.telegram_api_url), request=request)


async def open_channel(settings: Settings) -> Opened | None:
    """The Telegram channel, once getMe accepted the token (one log line otherwise). Its
    ``state`` is the ``TelegramChannel``: the webhook reads updates and answers button
    presses with its ``bot``."""
    token = settings.telegram_token
    if not token:
        log.info("telegram disabled: RELAIS_TELEGRAM_TOKEN not set")
        return None
    bot = make_bot(settings)
    try:
        await asyncio.wait_for(bot.initialize(), INIT_TIMEOUT)  # getMe checks the token
    except (TelegramError, TimeoutError, OSError) as exc:
        detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        log.error("telegram disabled: getMe failed at %s (%s)",
                  redact(settings.telegram_api_url, token), redact(detail, token))
        await bot.shutdown()
        return None
    channel = TelegramChannel(bot=bot, token=token, rate=settings.telegram_rate,
                              username=bot.username)
    if not settings.telegram_webhook_secret:
        log.warning("telegram: RELAIS_TELEGRAM_WEBHOOK_SECRET not set: sending works, "
                    "incoming updates are refused until it is set")
    log.info("telegram enabled as @%s", bot.username)
    # closed even once an auth failure took the channel out of the registry
    return Opened(channels=[channel], close=channel.close, state=channel)


def status(settings: Settings) -> list[dict[str, Any]]:
    """Telegram's state for ``relais channels`` (no network call)."""
    reason: str | None = None
    if not settings.telegram_token:
        reason = "RELAIS_TELEGRAM_TOKEN not set"
    elif not settings.telegram_webhook_secret:
        reason = "RELAIS_TELEGRAM_WEBHOOK_SECRET not set: incoming updates are refused"
    return [{
        "channel": NAME,
        "provider": "telegram",
        "enabled": bool(settings.telegram_token),
        "reason": reason,
        "webhook_url": f"{settings.base_url}{WEBHOOK_PATH}",
    }]


# -- inbound ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """What one update means: an Inbound to store, or why it is ignored."""

    inbound: Inbound | None = None
    ignored: str | None = None
    callback: CallbackQuery | None = None


class MalformedUpdate(ValueError):
    """A body that is not an Update we can read (400)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_user(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not _is_int(value.get("id")):
        raise MalformedUpdate(f"{where} without a numeric id")
    for key in ("first_name", "last_name", "username", "language_code"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise MalformedUpdate(f"{where}.{key} is not a string")


def _check_file(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("file_id"), str) \
            or not value["file_id"]:
        raise MalformedUpdate(f"{where} without a file_id")
    for key in ("width", "height", "file_size", "duration"):
        if value.get(key) is not None and not _is_int(value[key]):
            raise MalformedUpdate(f"{where}.{key} is not an integer")
    if value.get("mime_type") is not None and not isinstance(value["mime_type"], str):
        raise MalformedUpdate(f"{where}.mime_type is not a string")


def _check_message(message: Any, where: str = "message") -> None:
    """The fields of a message we read: required ones present, every one of the right type."""
    if not isinstance(message, dict):
        raise MalformedUpdate(f"{where} is not an object")
    if not _is_int(message.get("message_id")) or not _is_int(message.get("date")):
        raise MalformedUpdate(f"{where} without message_id or date")
    chat = message.get("chat")
    if not isinstance(chat, dict) or not _is_int(chat.get("id")) \
            or not isinstance(chat.get("type"), str):
        raise MalformedUpdate(f"{where}.chat without id or type")
    if message.get("from") is not None:
        _check_user(message["from"], f"{where}.from")
    for key in ("text", "caption"):
        if message.get(key) is not None and not isinstance(message[key], str):
            raise MalformedUpdate(f"{where}.{key} is not a string")
    if message.get("photo") is not None:
        if not isinstance(message["photo"], list) or not message["photo"]:
            raise MalformedUpdate(f"{where}.photo is not a list of sizes")
        for size in message["photo"]:
            _check_file(size, f"{where}.photo[]")
    for key in ("voice", "audio", "document", "video", "video_note"):
        if message.get(key) is not None:
            _check_file(message[key], f"{where}.{key}")
    contact = message.get("contact")
    if contact is not None and (not isinstance(contact, dict)
                                or not isinstance(contact.get("phone_number"), str)
                                or not isinstance(contact.get("first_name", ""), str)
                                or not (contact.get("user_id") is None
                                        or _is_int(contact["user_id"]))):
        raise MalformedUpdate(f"{where}.contact without a phone_number")
    location = message.get("location")
    if location is not None and (
            not isinstance(location, dict)
            or not all(isinstance(location.get(k), int | float)
                       and not isinstance(location.get(k), bool)
                       for k in ("latitude", "longitude"))):
        raise MalformedUpdate(f"{where}.location without coordinates")


def check_update(data: Any) -> None:
    """MalformedUpdate unless ``data`` is an Update whose parts we handle are well-formed.

    Only ``message`` and ``callback_query`` are read (``ALLOWED_UPDATES``); any other kind
    (edited_message, message_reaction, channel_post…) is ignored later, whatever its shape."""
    if not isinstance(data, dict) or not _is_int(data.get("update_id")):
        raise MalformedUpdate("not an Update object")
    if "message" in data:
        _check_message(data["message"])
    query = data.get("callback_query")
    if "callback_query" in data:
        if not isinstance(query, dict) or not isinstance(query.get("id"), str) \
                or not isinstance(query.get("chat_instance"), str):
            raise MalformedUpdate("callback_query without id or chat_instance")
        _check_user(query.get("from"), "callback_query.from")
        if query.get("data") is not None and not isinstance(query["data"], str):
            raise MalformedUpdate("callback_query.data is not a string")
        if query.get("message") is not None:
            _check_message(query["message"], "callback_query.message")


def parse_update(update: Update) -> Parsed:
    provider_id = str(update.update_id)
    if update.callback_query is not None:
        return _parse_callback(update.callback_query, provider_id)
    message = update.message
    if message is None:
        kinds = [key for key in update.to_dict() if key != "update_id"]
        return Parsed(ignored=f"{(kinds or ['unknown'])[0]} update")
    if message.chat.type != "private":
        return Parsed(ignored=f"{message.chat.type} chat")
    return _parse_message(message, provider_id)


def _parse_message(message: Message, provider_id: str) -> Parsed:
    text = message.text or message.caption or ""
    media: list[Media] = []
    extra: dict[str, Any] = {}
    caption = message.caption
    if message.photo:
        largest = max(message.photo, key=lambda size: (size.width * size.height,
                                                       size.file_size or 0))
        media.append(Media("image/jpeg", largest.file_id, caption))
    for item, default in (
        (message.voice, "audio/ogg"), (message.audio, "audio/mpeg"),
        (message.document, "application/octet-stream"), (message.video, "video/mp4"),
        (message.video_note, "video/mp4"),
    ):
        if item is not None:
            media.append(Media(getattr(item, "mime_type", None) or default, item.file_id,
                               caption))
    words = (message.text or "").split(maxsplit=1)
    if words and (words[0].lower() == "/start" or words[0].lower().startswith("/start@")):
        if len(words) > 1:  # a deep link: t.me/<bot>?start=<payload>
            extra["start_payload"] = words[1].strip()
    sender = message.from_user
    if message.contact is not None:
        phone = _own_phone(message)
        if phone is not None:
            extra["shared_phone"] = phone
        else:  # someone else's card: what the person sent, for the mediator to read
            card = message.contact
            name = " ".join(filter(None, (card.first_name, card.last_name)))
            text = f"{name}: {card.phone_number}" if name else card.phone_number
    if message.location is not None:
        extra["location"] = {"latitude": message.location.latitude,
                             "longitude": message.location.longitude}
    if not text and not media and not extra:
        return Parsed(ignored="unsupported message content")
    return Parsed(Inbound(
        channel=NAME, address=f"{NAME}:{message.chat.id}", text=text,
        provider_id=provider_id, media=tuple(media),
        profile_name=sender.first_name if sender else None,
        language_hint=sender.language_code if sender else None, extra=extra,
    ))


def _own_phone(message: Message) -> str | None:
    """The person's own number, E.164, when they shared their own contact card."""
    contact = message.contact
    sender = message.from_user
    if contact is None or sender is None or contact.user_id != sender.id:
        return None  # someone else's card: not this person's number
    raw = contact.phone_number.strip()
    try:
        return normalise_phone(raw if raw.startswith(("+", "0")) else "+" + raw)
    except AddressError:
        return None


def _parse_callback(query: CallbackQuery, provider_id: str) -> Parsed:
    message = query.message
    chat = message.chat if message is not None else None
    if chat is not None and chat.type != "private":
        return Parsed(ignored=f"{chat.type} chat", callback=query)
    if query.data is None:  # a game button
        return Parsed(ignored="callback without data", callback=query)
    chat_id = chat.id if chat is not None else query.from_user.id
    return Parsed(
        Inbound(
            channel=NAME, address=f"{NAME}:{chat_id}", text=_label(query) or query.data,
            provider_id=provider_id, choice_id=query.data,
            profile_name=query.from_user.first_name,
            language_hint=query.from_user.language_code,
        ),
        callback=query,
    )


def _label(query: CallbackQuery) -> str | None:
    """The label of the pressed button, from the keyboard of the message it was under."""
    markup = getattr(query.message, "reply_markup", None)
    for row in getattr(markup, "inline_keyboard", None) or ():
        for button in row:
            if button.callback_data == query.data:
                return button.text
    return None


async def webhook(request: web.Request, hub: Hub) -> web.Response:
    settings = hub.settings
    secret = settings.telegram_webhook_secret
    if not settings.telegram_token or not secret:
        missing = "TOKEN" if not settings.telegram_token else "WEBHOOK_SECRET"
        log.warning("telegram update refused: RELAIS_TELEGRAM_%s not set", missing)
        raise web.HTTPNotFound(text="telegram is not configured here")
    given = request.headers.get(SECRET_HEADER, "")
    # surrogateescape: a header with bytes that are not UTF-8 is a wrong secret (403)
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               secret.encode("utf-8")):
        log.warning("telegram update refused: %s secret token",
                    "wrong" if given else "missing")
        raise web.HTTPForbidden(text="wrong or missing secret token")
    raw = await request.read()  # over the app's 1 MiB limit: 413
    channel = hub.opened.state if hub.opened is not None else None
    bot = channel.bot if isinstance(channel, TelegramChannel) else None
    try:
        data = json.loads(raw)
        check_update(data)  # MalformedUpdate is a ValueError
        update = Update.de_json(data, bot)
        parsed = parse_update(update)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError,
            OverflowError) as exc:  # OverflowError: a huge duration or date
        reason = str(exc)[:120] if isinstance(exc, MalformedUpdate) else type(exc).__name__
        log.warning("telegram update refused (400): malformed body (%s)", reason)
        raise web.HTTPBadRequest(text="malformed update") from None
    if parsed.inbound is None:
        hub.sink.count(NAME, "ignored")
        log.info("telegram update %s ignored: %s", update.update_id, parsed.ignored)
    else:
        inbound = checked_inbound(parsed.inbound)  # BadInput: 400
        outcome = await hub.sink.message(inbound)  # the engine logs the outcome
        log.debug("telegram update %s: %s", update.update_id, outcome)
        phone = parsed.inbound.extra.get("shared_phone")
        if phone:  # a duplicate too: adding the sms: address is idempotent
            await hub.sink.event(ChannelEvent(NAME, inbound.address, PHONE_SHARED, phone))
    if parsed.callback is not None:
        await _answer(bot, parsed.callback, settings.telegram_token)
    return web.Response(status=200)


async def _answer(bot: Bot | None, query: CallbackQuery, token: str | None) -> None:
    """Stop the button's spinner. A failure here loses nothing: the press is stored."""
    if bot is None:
        log.warning("telegram callback %s not answered: channel disabled", query.id)
        return
    try:
        await bot.answer_callback_query(query.id)
    except TelegramError as exc:
        log.warning("answerCallbackQuery failed: %s", redact(exc.message, token))


SPEC = AdapterSpec(
    name=NAME,
    open=open_channel,
    routes=(Route("POST", WEBHOOK_PATH, webhook),),
    status=status,
)
