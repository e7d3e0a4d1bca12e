"""An access log with no credential in it: what ``ctx-memory serve`` logs of each request.

Keys go in headers (``Authorization: Bearer`` or ``X-API-Key``) and the service reads them
nowhere else, but a client may still put one in a URL (``?api_key=...``), and uvicorn's
access log writes the URL as it came. :func:`redact_url` masks the value of each query
parameter whose name says it carries a credential (its name, lowercased and without
punctuation, ends with ``key``, ``token``, ``secret``, ``password``, ``passwd``, ``pwd``,
``auth``, ``authorization``, ``credential(s)`` or ``signature``: ``api_key``, ``apiKey``,
``access_token``, ``client_secret``, ...), and anything shaped like one of the service's
keys (``ctxm_...``) anywhere in the URL. :class:`RedactCredentials` applies it to the
records of the ``uvicorn.access`` logger, and :func:`install` adds it there (``serve``
does). No web framework is imported.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from typing_extensions import override

__all__ = ["ACCESS_LOGGER", "MASK", "RedactCredentials", "install", "redact_url"]

ACCESS_LOGGER = "uvicorn.access"
"""The logger uvicorn writes its access log to."""

MASK = "***"
"""What a credential is replaced with."""

_CREDENTIAL_NAME = re.compile(
    r"(?:key|token|secret|password|passwd|pwd|auth|authorization|credentials?|signature)$"
)
_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_SERVICE_KEY = re.compile(r"ctxm_[A-Za-z0-9_\-]+")  # keys.new_api_key: ctxm_ + URL-safe
_SEPARATORS = re.compile(r"([&;])")


def _names_a_credential(name: str) -> bool:
    normal = _NOT_ALNUM.sub("", unquote_plus(name).lower())
    return _CREDENTIAL_NAME.search(normal) is not None


def redact_url(url: str) -> str:
    """``url`` (a path with its query string) with its credentials masked (pure).

    Example:
        .. code-block:: python

            from ctx_memory.server.access_log import redact_url

            logged = redact_url("/v1/sessions?api_key=s3cret&limit=5")
            assert logged == "/v1/sessions?api_key=***&limit=5"
    """
    path, mark, query = url.partition("?")
    if mark:
        pieces = []
        for piece in _SEPARATORS.split(query):
            name, equals, value = piece.partition("=")
            pieces.append(
                f"{name}={MASK}" if equals and value and _names_a_credential(name) else piece
            )
        url = path + mark + "".join(pieces)
    return _SERVICE_KEY.sub("ctxm_" + MASK, url)


class RedactCredentials(logging.Filter):
    """A logging filter masking credentials in each record's message and string arguments.

    uvicorn's access records carry the URL as an argument (``client``, ``method``,
    ``path?query``, ``http_version``, ``status``); the arguments keep their number and
    types, so uvicorn's formatter reads them as before.

    Example:
        .. code-block:: python

            import logging

            from ctx_memory.server.access_log import RedactCredentials

            record = logging.LogRecord(
                "uvicorn.access", logging.INFO, "app.py", 1, '%s - "%s %s HTTP/%s" %d',
                ("127.0.0.1:5000", "GET", "/v1/sessions?api_key=s3cret", "1.1", 401), None,
            )
            assert RedactCredentials().filter(record)
            assert "api_key=***" in record.getMessage()
            assert "s3cret" not in record.getMessage()
    """

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_url(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def install(logger_name: str = ACCESS_LOGGER) -> None:
    """Add :class:`RedactCredentials` to the logger (once, however often it is called)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactCredentials) for f in logger.filters):
        logger.addFilter(RedactCredentials())
