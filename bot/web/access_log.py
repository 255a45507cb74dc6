"""The access log of ``relais serve``, without secrets.

aiohttp's default access log writes the request line with its query string: a media link's
``sig``/``exp`` (a working link for 7 days) and Meta's ``hub.verify_token`` would sit in
every log file. This logger writes the path and only the *names* of the query parameters
(``/media/12?exp&sig``), never their values.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


def safe_target(request: BaseRequest) -> str:
    """The request's path and parameter names, values left out."""
    names = list(dict.fromkeys(request.query.keys()))
    if not names:
        return request.path
    return request.path + "?" + "&".join(names)


class SafeAccessLogger(AbstractAccessLogger):
    """One line per request: address, method, path (no query values), status, size, time."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %s %.3fs',
            request.remote or "-", request.method, safe_target(request),
            request.version.major, request.version.minor, response.status,
            response.body_length, time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
