"""Fake Telegram Bot API.

python-telegram-bot: ``Bot(token, base_url=f"{fake.url}/bot",
base_file_url=f"{fake.url}/file/bot")``. PTB posts ``application/x-www-form-urlencoded``
with object values JSON-encoded (``reply_markup``, ``allowed_updates``…), or multipart when
it uploads a file; JSON bodies and GET query strings are accepted too. Method names are
case-insensitive, as at Telegram. Answers use Telegram's envelope: ``{"ok": true,
"result": …}`` / ``{"ok": false, "error_code": N, "description": "…"}`` with HTTP status N.

Routes: ``/bot{token}/{method}`` (the route name recorded is the canonical method name)
and ``/file/bot{token}/{file_path}``. A malformed token gets 404 "Not Found" (recorded in
``unexpected``), a well-formed wrong one 401 "Unauthorized". Methods: getMe, sendMessage,
sendPhoto, sendVoice, sendDocument, sendAudio, sendVideo (send routes), answerCallbackQuery,
sendChatAction, editMessageText, editMessageReplyMarkup, setWebhook, getWebhookInfo,
deleteWebhook, getUpdates (409 while a webhook is set), getFile, setMyCommands,
getMyCommands. Any other method: 404 and ``unexpected``.

Failure kinds for ``fail_next``: "blocked" (403 "Forbidden: bot was blocked by the user"),
"deactivated" (403 "Forbidden: user is deactivated"), "chat_not_found" (400 "Bad Request:
chat not found"), "429" (429 with ``parameters.retry_after``, option ``retry_after``),
"500", "auth" (401), "timeout", "reset", and "error" (``status=``, ``description=``,
``parameters=``). ``route="answerCallbackQuery"`` (any method name) targets other methods;
``to="<chat id>"`` one chat.

Requests Telegram would refuse (empty text, text over 4,096 chars, caption over 1,024,
callback_data over 64 bytes, bad parse_mode, missing chat_id/file) answer its 400 and are
recorded in ``unexpected``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from tests.fakes.base import (
    GENERIC_KINDS,
    Failure,
    FakeServer,
    SentMessage,
    UploadedFile,
    first,
    json_response,
)
from tests.fakes.signing import TELEGRAM_SECRET_HEADER

TEST_TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{30,}$")
SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
PARSE_MODES = frozenset({"HTML", "Markdown", "MarkdownV2"})
JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "allowed_updates",
        "entities",
        "caption_entities",
        "link_preview_options",
        "reply_parameters",
        "commands",
        "scope",
    }
)
MEDIA_FIELDS = {
    "sendPhoto": "photo",
    "sendVoice": "voice",
    "sendDocument": "document",
    "sendAudio": "audio",
    "sendVideo": "video",
}
SEND_METHODS = frozenset({"sendMessage", *MEDIA_FIELDS})
UNPARSABLE = "__unparsable__"
# Update types Telegram sends when allowed_updates is empty (all but these).
NOT_SENT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

# kind -> (HTTP status, description)
ERRORS: dict[str, tuple[int, str]] = {
    "blocked": (403, "Forbidden: bot was blocked by the user"),
    "deactivated": (403, "Forbidden: user is deactivated"),
    "chat_not_found": (400, "Bad Request: chat not found"),
    "500": (500, "Internal Server Error"),
    "auth": (401, "Unauthorized"),
}

Params = dict[str, Any]


@dataclass
class TelegramFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes
    mime_type: str | None = None


def error_body(status: int, description: str, parameters: dict | None = None) -> dict:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def ok(result: Any, description: str | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": True, "result": result}
    if description:
        body["description"] = description
    return json_response(body)


class BadRequest(Exception):
    """A request Telegram refuses with 400; the code under test has a bug."""


class FakeTelegram(FakeServer):
    """Fake Telegram Bot API; see the module docstring."""

    failure_kinds: ClassVar[frozenset[str]] = GENERIC_KINDS | frozenset(ERRORS) | {"error"}
    send_routes: ClassVar[frozenset[str]] = SEND_METHODS
    default_retry_after: ClassVar[int | None] = 1

    def __init__(
        self,
        token: str = TEST_TOKEN,
        *,
        username: str = "relais_test_bot",
        first_name: str = "Relais",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.token = token
        self.bot_user = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": first_name,
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.webhook: dict[str, Any] | None = None  # url, secret_token, allowed_updates…
        self.callback_answers: list[Params] = []
        self.chat_actions: list[Params] = []
        self.edits: list[Params] = []
        self.commands: list[dict[str, str]] = []
        self.files: dict[str, TelegramFile] = {}
        self.chats: dict[str, dict[str, Any]] = {}  # chat id -> Chat object to answer
        self._message_id = 1000
        self._update_id = 500_000_000
        self._methods: dict[str, Callable[[Params, dict[str, UploadedFile]], Any]] = {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            **{name: partial(self._send_media, field) for name, field in MEDIA_FIELDS.items()},
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "editMessageText": self._edit_message,
            "editMessageReplyMarkup": self._edit_message,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "deleteWebhook": self._delete_webhook,
            "getUpdates": self._get_updates,
            "getFile": self._get_file,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": lambda params, files: self.commands,
        }
        self._canonical = {name.lower(): name for name in self._methods}

    # ------------------------------------------------------------------ routes

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._api, name="bot.api")
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._download, name="bot.file")

    # ------------------------------------------------------------------ helpers for tests

    def add_file(
        self,
        content: bytes,
        *,
        file_path: str | None = None,
        file_id: str | None = None,
        mime_type: str | None = None,
    ) -> str:
        """Make a file available to getFile / download (an inbound photo, voice…)."""
        file_id = file_id or "AgACAgQAAxkBAAI" + secrets.token_urlsafe(24)
        file_path = file_path or f"documents/file_{len(self.files)}.bin"
        self.files[file_id] = TelegramFile(
            file_id, "AQAD" + secrets.token_urlsafe(9), file_path, content, mime_type
        )
        return file_id

    def next_update_id(self) -> int:
        self._update_id += 1
        return self._update_id

    async def push_update(self, update: dict[str, Any]) -> int | None:
        """POST ``update`` to the webhook set with setWebhook, as Telegram does.

        Returns the HTTP status, or None when Telegram would not send this update type
        (``allowed_updates``).
        """
        if self.webhook is None or not self.webhook.get("url"):
            raise RuntimeError("no webhook set: call setWebhook first")
        kind = next(key for key in update if key != "update_id")
        allowed = self.webhook.get("allowed_updates") or []
        if (allowed and kind not in allowed) or (not allowed and kind in NOT_SENT_BY_DEFAULT):
            return None
        headers = {"Content-Type": "application/json"}
        if self.webhook.get("secret_token"):
            headers[TELEGRAM_SECRET_HEADER] = self.webhook["secret_token"]
        body = json.dumps(update, ensure_ascii=False).encode("utf-8")
        async with aiohttp.ClientSession() as session:
            async with session.post(self.webhook["url"], data=body, headers=headers) as response:
                await response.read()
                return response.status

    # ------------------------------------------------------------------ failures

    def failure_response(
        self, kind: str, opts: dict[str, Any], *, to: str | None = None
    ) -> web.StreamResponse:
        if kind == "429":
            retry_after = int(opts.get("retry_after") or self.default_retry_after or 1)
            description = f"Too Many Requests: retry after {retry_after}"
            body = error_body(429, description, {"retry_after": retry_after})
            return json_response(body, status=429)
        if kind == "error":
            status = int(opts.get("status", 400))
            description = str(opts.get("description", "Bad Request"))
            return json_response(
                error_body(status, description, opts.get("parameters")), status=status
            )
        status, description = ERRORS[kind]
        return json_response(error_body(status, description), status=status)

    # ------------------------------------------------------------------ dispatch

    def _token_problem(self, request: web.Request, token: str) -> web.Response | None:
        if not TOKEN_RE.match(token):
            self.mark_unexpected(request)
            return json_response(error_body(404, "Not Found"), status=404)
        if not secrets.compare_digest(token, self.token):
            return json_response(error_body(401, "Unauthorized"), status=401)
        return None

    async def _api(self, request: web.Request) -> web.StreamResponse:
        record = self.record_of(request)
        problem = self._token_problem(request, request.match_info["token"])
        if problem is not None:
            return problem
        method = self._canonical.get(request.match_info["method"].lower())
        if method is None:
            self.mark_unexpected(request)
            return json_response(error_body(404, "Not Found"), status=404)
        record.route = method
        params = self._params(request)
        files = record.files
        handler = self._methods[method]
        try:
            self._validate(method, params, files)
        except BadRequest as exc:
            self.mark_unexpected(request)
            return json_response(error_body(400, f"Bad Request: {exc}"), status=400)
        to = str(params["chat_id"]) if "chat_id" in params else None

        def succeed(failure: Failure | None) -> web.StreamResponse:
            try:
                result = handler(params, files)
            except BadRequest as exc:
                return json_response(error_body(400, f"Bad Request: {exc}"), status=400)
            if isinstance(result, web.StreamResponse):
                return result
            return ok(result)

        return await self.respond(request, to=to, succeed=succeed)

    def _params(self, request: web.Request) -> Params:
        record = self.record_of(request)
        params: Params = dict(record.query)
        if isinstance(record.body, dict):
            params.update({name: first(value) for name, value in record.body.items()})
        for name in JSON_FIELDS & params.keys():
            if isinstance(params[name], str):
                try:
                    params[name] = json.loads(params[name])
                except ValueError:
                    params[name] = {UNPARSABLE: params[name]}
        return params

    # ------------------------------------------------------------------ validation

    def _validate(self, method: str, params: Params, files: dict[str, UploadedFile]) -> None:
        if method in SEND_METHODS or method in ("sendChatAction", "editMessageText"):
            if params.get("chat_id") in (None, "") and "inline_message_id" not in params:
                raise BadRequest("chat_id is empty")
        if method in ("sendMessage", "editMessageText"):
            text = params.get("text")
            if not text or not str(text).strip():
                raise BadRequest("message text is empty")
            if len(str(text)) > MAX_TEXT:
                raise BadRequest("message is too long")
        if method in MEDIA_FIELDS:
            field = MEDIA_FIELDS[method]
            if self._media_value(params, files, field) is None:
                raise BadRequest(f"there is no {field} in the request")
            if len(str(params.get("caption") or "")) > MAX_CAPTION:
                raise BadRequest("message caption is too long")
        parse_mode = params.get("parse_mode")
        if parse_mode not in (None, "") and parse_mode not in PARSE_MODES:
            raise BadRequest(f"unsupported parse_mode {parse_mode}")
        if "reply_markup" in params:
            keyboard_problem(params["reply_markup"])
        if method == "answerCallbackQuery":
            if not params.get("callback_query_id"):
                raise BadRequest(
                    "query is too old and response timeout expired or query ID is invalid"
                )
            if len(str(params.get("text") or "")) > 200:
                raise BadRequest("MESSAGE_TOO_LONG")
        if method == "setWebhook":
            secret = params.get("secret_token")
            if secret not in (None, "") and not SECRET_RE.match(str(secret)):
                raise BadRequest("secret token contains unallowed characters")
        if method == "getFile" and not params.get("file_id"):
            raise BadRequest("file_id is empty")

    # ------------------------------------------------------------------ methods

    def _get_me(self, params: Params, files: dict[str, UploadedFile]) -> dict[str, Any]:
        return self.bot_user

    def _chat(self, chat_id: Any) -> dict[str, Any]:
        key = str(chat_id)
        if key in self.chats:
            return self.chats[key]
        if not re.fullmatch(r"-?\d+", key):
            raise BadRequest("chat not found")
        if key.startswith("-100"):
            return {"id": int(key), "title": "Groupe", "type": "supergroup"}
        if key.startswith("-"):
            return {"id": int(key), "title": "Groupe", "type": "group"}
        return {"id": int(key), "first_name": "Camille", "type": "private"}

    def _message(self, chat_id: Any, **content: Any) -> dict[str, Any]:
        self._message_id += 1
        message = {
            "message_id": self._message_id,
            "from": self.bot_user,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
        }
        message.update({key: value for key, value in content.items() if value is not None})
        return message

    def _record_sent(
        self, kind: str, message: dict[str, Any], params: Params, media: list[str]
    ) -> None:
        self.sent.append(
            SentMessage(
                id=str(message["message_id"]),
                to=str(params["chat_id"]),
                kind=kind,
                text=params.get("text") or params.get("caption"),
                media=media,
                choices=keyboard_choices(params.get("reply_markup")),
                raw=params,
                time=self.clock(),
                error=None,
            )
        )

    def _send_message(self, params: Params, files: dict[str, UploadedFile]) -> dict[str, Any]:
        markup = params.get("reply_markup")
        inline = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        message = self._message(params["chat_id"], text=params["text"], reply_markup=inline)
        self._record_sent("text", message, params, [])
        return message

    def _media_value(
        self, params: Params, files: dict[str, UploadedFile], field: str
    ) -> str | UploadedFile | None:
        if field in files:
            return files[field]
        value = params.get(field)
        if isinstance(value, str) and value.startswith("attach://"):
            return files.get(value.removeprefix("attach://"))
        return value if isinstance(value, str) and value else None

    def _send_media(
        self, field: str, params: Params, files: dict[str, UploadedFile]
    ) -> dict[str, Any]:
        value = self._media_value(params, files, field)
        assert value is not None
        mime_type: str | None = None
        if isinstance(value, UploadedFile):
            ref = f"upload:{value.filename}"
            file_id = self.add_file(
                value.content,
                file_path=f"{field}s/file_{len(self.files)}_{value.filename}",
                mime_type=value.content_type,
            )
            params = {
                **params,
                field: {
                    "filename": value.filename,
                    "content_type": value.content_type,
                    "size": value.size,
                },
            }
            size, mime_type, filename = value.size, value.content_type, value.filename
        else:
            ref = value
            file_id = value
            if value.startswith(("http://", "https://")):
                file_id = "BQACAgQAAxkDAAI" + secrets.token_urlsafe(16)
            size, filename = 12_345, value.rsplit("/", 1)[-1]
        media = {
            "file_id": file_id,
            "file_unique_id": "AgAD" + secrets.token_urlsafe(6),
            "file_size": size,
        }
        content: Any
        if field == "photo":
            content = [
                {**media, "width": 90, "height": 90},
                {**media, "width": 320, "height": 320},
            ]
        elif field == "document":
            content = {**media, "file_name": filename, "mime_type": mime_type or "application/pdf"}
        elif field == "video":
            content = {**media, "width": 640, "height": 360, "duration": 1}
        else:
            content = {
                **media,
                "duration": int(params.get("duration") or 1),
                "mime_type": mime_type or "audio/ogg",
            }
        markup = params.get("reply_markup")
        inline = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        message = self._message(
            params["chat_id"],
            caption=params.get("caption"),
            reply_markup=inline,
            **{field: content},
        )
        self._record_sent(field, message, params, [ref])
        return message

    def _answer_callback_query(self, params: Params, files: dict[str, UploadedFile]) -> bool:
        self.callback_answers.append(params)
        return True

    def _send_chat_action(self, params: Params, files: dict[str, UploadedFile]) -> bool:
        self.chat_actions.append(params)
        return True

    def _edit_message(self, params: Params, files: dict[str, UploadedFile]) -> Any:
        self.edits.append(params)
        if "inline_message_id" in params:
            return True
        markup = params.get("reply_markup")
        message = self._message(
            params["chat_id"], text=params.get("text") or "…", reply_markup=markup or None
        )
        message["message_id"] = int(params.get("message_id") or message["message_id"])
        message["edit_date"] = int(time.time())
        return message

    def _set_webhook(self, params: Params, files: dict[str, UploadedFile]) -> web.Response:
        url = params.get("url") or ""
        if not url:
            self.webhook = None
            return ok(True, "Webhook was deleted")
        self.webhook = {
            "url": url,
            "secret_token": params.get("secret_token"),
            "allowed_updates": params.get("allowed_updates"),
            "max_connections": int(params.get("max_connections") or 40),
            "drop_pending_updates": str(params.get("drop_pending_updates")).lower() == "true",
        }
        return ok(True, "Webhook was set")

    def _get_webhook_info(self, params: Params, files: dict[str, UploadedFile]) -> dict:
        if self.webhook is None:
            return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        info: dict[str, Any] = {
            "url": self.webhook["url"],
            "has_custom_certificate": False,
            "pending_update_count": 0,
            "max_connections": self.webhook["max_connections"],
            "ip_address": "127.0.0.1",
        }
        if self.webhook["allowed_updates"]:
            info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    def _delete_webhook(self, params: Params, files: dict[str, UploadedFile]) -> web.Response:
        existed = self.webhook is not None
        self.webhook = None
        return ok(True, "Webhook was deleted" if existed else "Webhook is already deleted")

    def _get_updates(self, params: Params, files: dict[str, UploadedFile]) -> Any:
        if self.webhook is not None:
            description = (
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first"
            )
            return json_response(error_body(409, description), status=409)
        return []

    def _get_file(self, params: Params, files: dict[str, UploadedFile]) -> dict[str, Any]:
        stored = self.files.get(str(params["file_id"]))
        if stored is None:
            raise BadRequest("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "file_path": stored.file_path,
        }

    def _set_my_commands(self, params: Params, files: dict[str, UploadedFile]) -> bool:
        self.commands = list(params.get("commands") or [])
        return True

    async def _download(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if not TOKEN_RE.match(token) or not secrets.compare_digest(token, self.token):
            return json_response(error_body(404, "Not Found"), status=404)
        path = request.match_info["file_path"]
        stored = next((f for f in self.files.values() if f.file_path == path), None)
        if stored is None:
            self.mark_unexpected(request)
            return json_response(error_body(404, "Not Found"), status=404)
        content_type = stored.mime_type or "application/octet-stream"

        def succeed(_: Failure | None) -> web.StreamResponse:
            return web.Response(body=stored.content, content_type=content_type)

        return await self.respond(request, to=None, succeed=succeed)


def keyboard_problem(markup: Any) -> None:
    """Raise BadRequest where Telegram would refuse ``reply_markup``."""
    if not isinstance(markup, dict) or UNPARSABLE in markup:
        raise BadRequest("can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is None:
        return
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise BadRequest(
            'field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
        )
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                raise BadRequest("can't parse inline keyboard button: Text is empty")
            data = button.get("callback_data")
            if data is not None:
                if not 1 <= len(str(data).encode("utf-8")) <= MAX_CALLBACK_DATA:
                    raise BadRequest("BUTTON_DATA_INVALID")
            elif len(button) == 1:
                raise BadRequest(
                    "can't parse inline keyboard button: Text buttons are "
                    "unallowed in the inline keyboard"
                )


def keyboard_choices(markup: Any) -> list[dict[str, str]]:
    """The buttons of an inline or reply keyboard as ``{"id", "title"}``."""
    if not isinstance(markup, dict):
        return []
    choices: list[dict[str, str]] = []
    for row in markup.get("inline_keyboard") or []:
        for button in row:
            choice = {"id": str(button.get("callback_data", "")), "title": button["text"]}
            if "url" in button:
                choice["url"] = button["url"]
            choices.append(choice)
    for row in markup.get("keyboard") or []:
        for button in row:
            text = button if isinstance(button, str) else button.get("text", "")
            choices.append({"id": text, "title": text})
    return choices


# ---------------------------------------------------------------------- update builders


def user(user_id: int = 612345678, first_name: str = "Camille", **extra: Any) -> dict:
    return {
        "id": user_id,
        "is_bot": False,
        "first_name": first_name,
        "language_code": "fr",
        **extra,
    }


def text_update(
    chat_id: int,
    text: str,
    *,
    update_id: int = 1,
    message_id: int = 1,
    date: int | None = None,
    from_: dict | None = None,
) -> dict[str, Any]:
    """A private-chat text message update."""
    sender = from_ or user(chat_id)
    message: dict[str, Any] = {
        "message_id": message_id,
        "from": sender,
        "chat": {"id": chat_id, "first_name": sender["first_name"], "type": "private"},
        "date": date or int(time.time()),
        "text": text,
    }
    if text.startswith("/"):
        command = text.split(" ", 1)[0]
        message["entities"] = [{"offset": 0, "length": len(command), "type": "bot_command"}]
    return {"update_id": update_id, "message": message}


def callback_update(
    chat_id: int,
    data: str,
    *,
    update_id: int = 1,
    query_id: str | None = None,
    message: dict | None = None,
    from_: dict | None = None,
) -> dict[str, Any]:
    """A callback_query update (an inline button pressed under ``message``)."""
    sender = from_ or user(chat_id)
    return {
        "update_id": update_id,
        "callback_query": {
            "id": query_id or str(secrets.randbelow(10**18)),
            "from": sender,
            "message": message
            or {
                "message_id": 1,
                "chat": {"id": chat_id, "first_name": sender["first_name"], "type": "private"},
                "date": int(time.time()),
                "text": "…",
            },
            "chat_instance": "-7781234567890123456",
            "data": data,
        },
    }
