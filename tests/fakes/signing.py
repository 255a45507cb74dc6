"""Signatures providers put on the webhooks they send, to sign requests in tests.

- Twilio: ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL + each parameter name
  followed by its value, names sorted)), exactly as twilio-python's
  ``RequestValidator.compute_signature`` (repeated names: values sorted, duplicates once).
  The URL is the full public URL Twilio requested, query string included. JSON bodies
  are signed through the URL: ``?bodySHA256=<hex sha256 of the body>`` and no params.
  twilio-python ≥ 9.x also knows HMAC-SHA256 signatures, announced by the
  ``X-Twilio-Webhooks-Signature-Settings: key=…,algorithm=HMAC_SHA256`` header.
- Meta (WhatsApp Cloud API): ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret,
  raw body bytes)>``.
- Telegram signs nothing: it sends the ``secret_token`` given to setWebhook back in
  ``X-Telegram-Bot-Api-Secret-Token``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping

TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
META_SIGNATURE_HEADER = "X-Hub-Signature-256"
TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

_TWILIO_HASHES = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}

TwilioParams = Mapping[str, str | Iterable[str]] | Iterable[tuple[str, str]]


def _twilio_values(params: TwilioParams) -> dict[str, set[str]]:
    pairs: Iterable[tuple[str, str | Iterable[str]]]
    pairs = params.items() if isinstance(params, Mapping) else params
    values: dict[str, set[str]] = {}
    for name, value in pairs:
        bucket = values.setdefault(name, set())
        if isinstance(value, str):
            bucket.add(value)
        else:
            bucket.update(value)
    return values


def twilio_signature(
    auth_token: str,
    url: str,
    params: TwilioParams | None = None,
    *,
    algorithm: str = "HMAC_SHA1",
) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a form POST of ``params`` to ``url``.

    ``params`` is a mapping (a value may be a list for a repeated name) or (name, value)
    pairs. Pass nothing for a JSON body: sign ``url`` carrying ``bodySHA256``.
    """
    payload = url
    for name, values in sorted(_twilio_values(params or {}).items()):
        for value in sorted(values):
            payload += name + value
    digest = hmac.new(
        auth_token.encode("utf-8"), payload.encode("utf-8"), _TWILIO_HASHES[algorithm.upper()]
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def twilio_body_sha256(body: bytes) -> str:
    """Hex SHA-256 of a JSON webhook body, for the ``bodySHA256`` query parameter."""
    return hashlib.sha256(body).hexdigest()


def meta_signature(app_secret: str, raw_body: bytes) -> str:
    """``X-Hub-Signature-256`` for a Meta webhook body: ``sha256=<hex>``."""
    digest = hmac.new(app_secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"
