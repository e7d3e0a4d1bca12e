"""The session document: typed models, validation and LangChain message conversion.

A session is one JSON object::

    {
      "system_prompt": str | null,
      "metadata": {session_id, created_at, timestamp, mode, current_url, user_timezone,
                   user_time, token_count, token_encoding, message_count, ...extra},
      "fetched_context": {source_type: [ {source_type, content, url, timestamp,
                                          extracted_data, token_count}, ... ]},
      "conversation_history": [ {role, content, timestamp, metadata, token_count,
                                 ...LangChain fields}, ... ],
      "shared": {free-form JSON}
    }

Everything here is pure: no I/O, no locks, no event loop. The hot path (appending a
message) builds plain dicts with the functions below; the pydantic models validate whole
documents on import and describe the shape for users and type checkers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import time
from datetime import UTC, datetime, tzinfo
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from ctx_memory.errors import (
    DocumentImportError,
    InvalidMessageError,
    InvalidRoleError,
    InvalidSessionIdError,
    NotSerializableError,
    ValidationError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

_orjson_dumps: Callable[[Any], bytes] | None
try:
    from orjson import dumps as _orjson
except ImportError:  # pragma: no cover - a dependency on CPython; PyPy has no wheel
    _orjson_dumps = None
else:
    _orjson_dumps = _orjson


__all__ = [
    "DOCUMENT_FORMAT_VERSION",
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_MESSAGE_ID_LENGTH",
    "MAX_SESSION_ID_LENGTH",
    "POSITION_LIMIT",
    "MIN_INT",
    "ROLES",
    "ContextMode",
    "FetchedItem",
    "MessageRecord",
    "Role",
    "SessionDocument",
    "SessionMetadata",
    "check_json_native",
    "check_content_blocks",
    "check_key",
    "check_message_id",
    "check_position",
    "check_text",
    "dumps",
    "dumps_validated",
    "exported",
    "fingerprint",
    "now_iso",
    "parse_document",
    "record_to_message",
    "message_to_record",
    "utc_iso",
    "validate_record",
    "validate_role",
    "validate_session_id",
]

DOCUMENT_FORMAT_VERSION = 1
"""Version of the exported session document (its ``format_version`` key).

Documents without the key were exported before it existed and are version 1. A document
of a newer version is refused by :func:`parse_document` with a message saying so.
"""

MAX_SESSION_ID_LENGTH = 256
MAX_MESSAGE_ID_LENGTH = 512
"""The longest message id a store keeps (every store: PostgreSQL indexes ids in a btree
whose rows hold at most 2,704 bytes)."""
POSITION_LIMIT = 2**31 - 1
"""Positions, counts and limits beyond this are read as this (no history is that long;
PostgreSQL's positions are 32-bit integers)."""
"""Longest accepted session id, in characters."""

MAX_DEPTH = 100
"""Deepest nesting of dicts and lists in a stored value (a top-level dict is depth 1)."""


MAX_INT = 2**63 - 1
"""Largest integer a stored value may hold (signed 64-bit, as every store keeps it)."""

MIN_INT = -(2**63)
"""Smallest integer a stored value may hold."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_BAD_ID_CHAR = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")

Role = Literal["user", "assistant", "system", "tool"]
ROLES: frozenset[str] = frozenset({"user", "assistant", "system", "tool"})

_LC_TYPE_TO_ROLE = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
_ROLE_ALIASES = {
    "human": "user",
    "ai": "assistant",
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
}
# Optional LangChain fields kept on a stored message when they are set.
_LC_FIELDS = (
    "name",
    "id",
    "tool_calls",
    "invalid_tool_calls",
    "usage_metadata",
    "tool_call_id",
    "artifact",
    "status",
    "additional_kwargs",
    "response_metadata",
)


class ContextMode(str, Enum):
    """How the app is answering in a session (seed 001)."""

    NORMAL = "normal"
    THINKING = "thinking"
    RESEARCH = "research"

    def __str__(self) -> str:
        return self.value


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string with offset.

    The same clock and the same text as ``datetime.now(UTC).isoformat()``, at half the
    cost (see :func:`utc_iso`): every write reads the clock once.
    """
    return utc_iso(time.time_ns() // 1000)


def utc_iso(micros: int) -> str:
    """A Unix time in whole microseconds as ``datetime.isoformat()`` writes it in UTC.

    ``2026-01-02T03:04:05.000006+00:00``; at a whole second the fraction is left out, as
    ``isoformat`` does. The date and the time of day are formatted once a second.
    """
    seconds, fraction = divmod(micros, 1_000_000)
    whole = _whole_second(seconds)
    return f"{whole}.{fraction:06d}+00:00" if fraction else f"{whole}+00:00"


@functools.lru_cache(maxsize=2)
def _whole_second(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a Unix time in seconds, in UTC."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().removesuffix("+00:00")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    """Compact, deterministic-enough JSON used for everything ctx_memory stores."""
    return _ENCODER.encode(value)  # one encoder: json.dumps builds one per call


def _not_json(value: object) -> Any:
    msg = f"Object of type {type(value).__name__} is not JSON serializable"
    raise TypeError(msg)


# ``dumps`` sets up a C encoder on every call, which costs more than encoding a short
# message or header. For values already validated (every value JSON-native, nesting
# bounded: no cycle) one C encoder with the same options and no cycle check is built
# once; the text is the same as ``dumps`` gives.
_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)  # None without _json
_C_ENCODER = (
    _C_MAKE_ENCODER(
        None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    if _C_MAKE_ENCODER is not None
    else None
)


def _dumps_c(value: Any) -> str:
    if _C_ENCODER is None:  # no C accelerator (not CPython)
        return dumps(value)
    return "".join(_C_ENCODER(value, 0))


def dumps_validated(value: Any) -> str:
    """:func:`dumps` of a validated value (JSON-native, acyclic), built faster.

    For the hot paths: a record being appended, a session's init header. orjson encodes
    it (a short message in a quarter of a microsecond, eight times faster than the
    standard library's C encoder); the text parses to the same value as :func:`dumps`
    gives, and is the same text but for how a float with an exponent is written
    (``1e16`` for ``1e+16``). Whatever orjson declines (an integer beyond 64 bits, a
    subclass of ``float``) goes through the standard encoder, and so does a text with a
    ``null`` in it, which is where orjson would have written a NaN or an infinity that
    validation missed: the standard encoder refuses those, as :func:`dumps` does.
    """
    if _orjson_dumps is not None:
        try:
            text = _orjson_dumps(value)
        except TypeError:  # orjson.JSONEncodeError is one
            pass
        else:
            if b"null" not in text:
                return text.decode()
    return _dumps_c(value)


def validate_session_id(session_id: object, *, existing: bool = False) -> str:
    """Return ``session_id`` if it is acceptable, else raise.

    Any printable characters are allowed (stores escape them); the id must be a non-blank
    string of at most :data:`MAX_SESSION_ID_LENGTH` characters, valid Unicode (no lone
    surrogates) and free of control characters (U+0000 to U+001F and U+007F).

    With ``existing`` (reading, clearing or deleting a session, which creates nothing),
    control characters are let through, so a session stored under such an id by an
    earlier version can still be read, exported and deleted.

    Raises:
        InvalidSessionIdError: The id is not a string, blank, too long, or contains a
            control character or a lone surrogate.
    """
    if not isinstance(session_id, str):
        msg = f"session id must be a str, got {type(session_id).__name__}"
        raise InvalidSessionIdError(msg)
    if not session_id.strip():
        msg = "session id must not be empty or blank"
        raise InvalidSessionIdError(msg)
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        msg = (
            f"session id is {len(session_id)} characters long; the limit is {MAX_SESSION_ID_LENGTH}"
        )
        raise InvalidSessionIdError(msg)
    bad = (_SURROGATE if existing else _BAD_ID_CHAR).search(session_id)
    if bad is not None:
        kind = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        msg = (
            f"session id {session_id!r} contains {kind} ({bad.group()!r} at index "
            f"{bad.start()}); use printable characters"
        )
        raise InvalidSessionIdError(msg)
    return session_id


def validate_role(role: object) -> Role:
    """Normalise a role (``human``/``ai`` accepted as aliases) or raise InvalidRoleError."""
    if isinstance(role, Enum):
        role = role.value
    normalised = _ROLE_ALIASES.get(role) if isinstance(role, str) else None
    if normalised is None:
        msg = f"unknown role {role!r}: expected one of user, assistant, system, tool"
        raise InvalidRoleError(msg)
    return cast("Role", normalised)


def check_json_native(value: Any, path: str = "value", *, max_depth: int = MAX_DEPTH) -> None:
    """Raise NotSerializableError unless every store can keep ``value`` exactly.

    Accepted: dict (with str keys), list, tuple, str, int, finite float, bool and None,
    within the limits every store shares: nesting at most :data:`MAX_DEPTH` containers
    deep, integers within the signed 64-bit range (:data:`MIN_INT`..:data:`MAX_INT`), and
    strings (keys included) that are valid Unicode (no lone surrogates, which UTF-8 cannot
    encode). The error names the dotted path of the first offending value.
    """
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if item is None or isinstance(item, (str, int, float)):
            problem = _scalar_problem(item)
            if problem:
                raise NotSerializableError(where, f"{where} {problem}")
            continue
        if isinstance(item, (dict, list, tuple)) and depth >= max_depth:
            msg = f"{where} is nested more than {max_depth} levels deep"
            raise NotSerializableError(where, msg)
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    msg = (
                        f"{where} has a key {key!r} of type {type(key).__name__}; keys must be str"
                    )
                    raise NotSerializableError(where, msg)
                if _SURROGATE.search(key) is not None:
                    msg = f"{where} has a key holding a lone surrogate, which is not valid Unicode"
                    raise NotSerializableError(where, msg)
                stack.append((f"{where}.{key}", sub, depth + 1))
            continue
        if isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", sub, depth + 1) for i, sub in enumerate(item))
            continue
        msg = (
            f"{where} is a {type(item).__name__}, which is not JSON-serialisable "
            "(use str, int, float, bool, None, list or dict)"
        )
        raise NotSerializableError(where, msg)


def _scalar_problem(item: str | float | None) -> str:
    """Why a JSON scalar cannot be stored exactly (``""`` when it can)."""
    if isinstance(item, str):
        return (
            "holds a lone surrogate, which is not valid Unicode" if _SURROGATE.search(item) else ""
        )
    if item is None or isinstance(item, bool):
        return ""
    if isinstance(item, int):
        return "" if MIN_INT <= item <= MAX_INT else "is an integer outside the signed 64-bit range"
    return "" if math.isfinite(item) else f"is {item!r}, which JSON cannot represent"


def check_key(value: object, path: str, *, optional: bool = False) -> None:
    """:func:`check_text`, and no NUL character: for text every store keys or compares by.

    PostgreSQL's text cannot hold U+0000, so no store accepts it in a message id, a source
    type or a listing's prefix or cursor (the content of messages and items may hold it).
    """
    check_text(value, path, optional=optional)
    if isinstance(value, str) and "\x00" in value:
        msg = f"{path} holds a NUL character (U+0000), which no store keeps in a key"
        raise ValidationError(msg)


def check_message_id(value: object, path: str, *, new: bool = False) -> str:
    """Return ``value`` if it can name a stored message, else raise InvalidMessageError.

    A non-empty str of valid Unicode without NUL; with ``new`` (an id being stored), at
    most :data:`MAX_MESSAGE_ID_LENGTH` characters. A lookup takes any length (it finds
    nothing where no such id can be stored).
    """
    if not isinstance(value, str) or not value:
        msg = f"{path} must be a non-empty str, got {value!r}"
        raise InvalidMessageError(path, msg)
    if new and len(value) > MAX_MESSAGE_ID_LENGTH:
        msg = f"{path} is {len(value)} characters long; the limit is {MAX_MESSAGE_ID_LENGTH}"
        raise InvalidMessageError(path, msg)
    if "\x00" in value:
        msg = f"{path} holds a NUL character (U+0000), which no store keeps in an id"
        raise InvalidMessageError(path, msg)
    if _SURROGATE.search(value) is not None:
        msg = f"{path} holds a lone surrogate, which is not valid Unicode"
        raise InvalidMessageError(path, msg)
    return value


def check_position(value: object, path: str, *, minimum: int | None = None) -> int:
    """``value`` as a position, count or limit: an int (not a bool), at least ``minimum``.

    Beyond :data:`POSITION_LIMIT` either way it is read as that limit, which every store
    can take and which means the same as the value (all of the history).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{path} must be an int, got {type(value).__name__}"
        raise ValidationError(msg)
    if minimum is not None and value < minimum:
        msg = f"{path} must be at least {minimum}, got {value}"
        raise ValidationError(msg)
    return max(-POSITION_LIMIT, min(value, POSITION_LIMIT))


def check_content_blocks(content: list[Any], path: str) -> None:
    """Raise InvalidMessageError unless each item of a content list is a str or a dict."""
    for index, block in enumerate(content):
        if not isinstance(block, (str, dict)):
            where = f"{path}[{index}]"
            msg = f"{where} must be a str or a content block (a dict), got {type(block).__name__}"
            raise InvalidMessageError(where, msg)


def check_text(value: object, path: str, *, optional: bool = False) -> None:
    """Raise ValidationError unless ``value`` is a str of valid Unicode (or None if optional)."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        expected = "a str or None" if optional else "a str"
        msg = f"{path} must be {expected}, got {type(value).__name__}"
        raise ValidationError(msg)
    if _SURROGATE.search(value) is not None:
        msg = f"{path} holds a lone surrogate, which is not valid Unicode"
        raise NotSerializableError(path, msg)


_NOT_ZONES = frozenset({"localtime", "posixrules"})


def time_zone(name: str) -> tzinfo | None:
    """The IANA time zone ``name`` names, or ``None`` if the zone database has no such zone.

    Every way a name can fail to load is ``None``: unknown (``Not/AZone``), malformed
    (``../x``), a directory of the database (``Europe``), a name too long for a file name.
    So are the files a system's zone directory holds beside the zones, which the ``tzdata``
    package does not (a name means the same zone on every host): ``localtime`` (the
    server's own zone), ``posixrules`` and the ``posix/`` and ``right/`` copies.
    """
    from zoneinfo import ZoneInfo  # noqa: PLC0415 - rarely needed

    if name in _NOT_ZONES or name.startswith(("posix/", "right/")):
        return None
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return None


@functools.cache
def _have_zone_database() -> bool:
    return time_zone("UTC") is not None


def check_time_zone(value: object, path: str) -> None:
    """Raise ValidationError unless ``value`` is None, ``""`` or a zone the database knows.

    Without any zone database (``tzdata`` not installed where the system has none) every
    name would fail, so then any text passes and is ignored where a local time is shown.
    """
    check_text(value, path, optional=True)
    if value and _have_zone_database() and time_zone(str(value)) is None:
        msg = f"{path}: unknown time zone {value!r}; expected an IANA name such as 'Europe/Paris'"
        raise ValidationError(msg)


def fingerprint(source_type: str, url: str | None, content: str) -> str:
    """A stable identity for a fetched item, used to deduplicate sources."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (source_type, url or "", content):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


# --------------------------------------------------------------------------- models


class MessageRecord(BaseModel):
    """One stored conversation message."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str | list[str | dict[str, Any]]
    timestamp: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    token_count: int = Field(default=0, ge=0)
    name: str | None = None
    id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    invalid_tool_calls: list[dict[str, Any]] | None = None
    usage_metadata: dict[str, Any] | None = None
    tool_call_id: str | None = None
    artifact: Any = None
    status: str | None = None
    additional_kwargs: dict[str, Any] | None = None
    response_metadata: dict[str, Any] | None = None


class FetchedItem(BaseModel):
    """One piece of fetched material (a search result, scraped page text, ...)."""

    model_config = ConfigDict(extra="allow")

    source_type: str = Field(min_length=1)
    content: str
    url: str | None = None
    timestamp: str
    extracted_data: dict[str, Any] = Field(default_factory=dict)
    token_count: int = Field(default=0, ge=0)


class SessionMetadata(BaseModel):
    """The ``metadata`` section; extra keys set by the caller are kept."""

    model_config = ConfigDict(extra="allow", use_enum_values=True)

    session_id: str
    created_at: str
    timestamp: str
    mode: ContextMode = ContextMode.NORMAL
    current_url: str | None = None
    user_timezone: str | None = None
    user_time: str | None = None
    token_count: int = Field(default=0, ge=0)
    token_encoding: str = "o200k_base"
    message_count: int = Field(default=0, ge=0)


class SessionDocument(BaseModel):
    """A whole session document, as exported and imported."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = Field(default=1, ge=1, strict=True)
    system_prompt: str | None = None
    metadata: SessionMetadata
    fetched_context: dict[str, list[FetchedItem]] = Field(default_factory=dict)
    conversation_history: list[MessageRecord] = Field(default_factory=list)
    shared: dict[str, Any] = Field(default_factory=dict)


def exported(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` as exported: its ``format_version`` first, then the session's parts."""
    return {"format_version": DOCUMENT_FORMAT_VERSION, **document}


def _check_document_values(data: Mapping[str, Any]) -> None:
    """:func:`check_json_native` on each part of a document, as deep as its writes allow.

    A write checks the value it is given (:data:`MAX_DEPTH` deep from that value): a
    ``set_context`` value sits one level below ``shared``, message metadata one below
    its record, an item's ``extracted_data`` one below the item. So each record, item
    and ``shared`` may hold one level more than :data:`MAX_DEPTH` from its own root,
    and a session's export imports again.
    """
    deeper = MAX_DEPTH + 1
    rest = dict(data)
    check_json_native(rest.pop("metadata", None), "document.metadata")  # as its writes
    check_json_native(rest.pop("shared", None), "document.shared", max_depth=deeper)
    history = rest.pop("conversation_history", None)
    if isinstance(history, list):
        for i, record in enumerate(history):
            check_json_native(record, f"document.conversation_history[{i}]", max_depth=deeper)
    else:
        check_json_native(history, "document.conversation_history")
    fetched = rest.pop("fetched_context", None)
    if isinstance(fetched, dict):
        for source_type, items in fetched.items():
            where = f"document.fetched_context.{source_type}"
            if not isinstance(source_type, str) or not isinstance(items, list):
                check_json_native({source_type: items}, "document.fetched_context")
                continue
            for i, item in enumerate(items):
                check_json_native(item, f"{where}[{i}]", max_depth=deeper)
    else:
        check_json_native(fetched, "document.fetched_context")
    check_json_native(rest, "document")


def parse_document(data: str | bytes | Mapping[str, Any]) -> SessionDocument:
    """Validate a session document from JSON text or a mapping.

    Raises:
        DocumentImportError: Malformed JSON, or a field of the wrong shape (the message
            and ``.field`` name the first offending field).
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            msg = f"session document is not valid JSON: {e}"
            raise DocumentImportError("", msg) from e
    if not isinstance(data, dict):
        msg = f"session document must be a JSON object, got {type(data).__name__}"
        raise DocumentImportError("", msg)
    try:
        _check_document_values(data)
    except NotSerializableError as e:
        raise DocumentImportError(e.path.removeprefix("document."), str(e)) from e
    version = data.get("format_version", 1)
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and version > DOCUMENT_FORMAT_VERSION
    ):
        msg = (
            f"session document has format_version {version}, newer than this ctx_memory"
            f" reads ({DOCUMENT_FORMAT_VERSION}): upgrade ctx_memory to import it"
        )
        raise DocumentImportError("format_version", msg)
    try:
        document = SessionDocument.model_validate(data)
    except PydanticValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        msg = f"invalid session document at {field or '<root>'}: {first['msg']}"
        raise DocumentImportError(field, msg) from e
    for index, record in enumerate(document.conversation_history):
        problem = _rebuild_problem(record.model_dump(exclude_none=True))
        if problem is not None:
            field = f"conversation_history.{index}.{problem[0]}"
            msg = f"invalid session document at {field}: {problem[1]}"
            raise DocumentImportError(field, msg)
    for source_type, items in document.fetched_context.items():
        try:
            check_key(source_type, "source_type")  # as add_fetched_context refuses it
        except ValidationError as e:
            field = f"fetched_context.{source_type!r}"
            raise DocumentImportError(field, f"invalid session document at {field}: {e}") from e
        for index, item in enumerate(items):
            if item.source_type != source_type:
                field = f"fetched_context.{source_type}.{index}.source_type"
                msg = (
                    f"invalid session document at {field}: item of type "
                    f"{item.source_type!r} filed under {source_type!r}"
                )
                raise DocumentImportError(field, msg)
    return document


# --------------------------------------------------------------------------- LangChain


def message_to_record(
    message: BaseMessage,
    *,
    timestamp: str,
    token_count: int = 0,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Turn a LangChain message into a stored message dict, losslessly.

    Chunks (``AIMessageChunk``) are stored as the message they add up to.

    Raises:
        InvalidRoleError: The message type has no role here (e.g. a ChatMessage with
            role ``"critic"``).
        NotSerializableError: A field holds a value that is not JSON-native.
    """
    role: str | None
    if isinstance(message, ChatMessage):
        role = validate_role(message.role)
    else:
        role = _LC_TYPE_TO_ROLE.get(message.type.removesuffix("Chunk").lower())
        if role is None and isinstance(message, AIMessageChunk):
            role = "assistant"
        if role is None:
            msg = f"cannot store a {type(message).__name__} (type {message.type!r})"
            raise InvalidRoleError(msg)
    record: dict[str, Any] = {
        "role": role,
        "content": message.content,
        "timestamp": timestamp,
        "metadata": dict(metadata or {}),
        "token_count": token_count,
    }
    for field in _LC_FIELDS:
        value = getattr(message, field, None)
        if value is None or (field != "status" and value in ({}, [])):
            continue
        if field == "status" and value == "success":
            continue  # ToolMessage default
        if field in ("tool_calls", "invalid_tool_calls"):
            value = [dict(call) for call in value]
        elif field == "usage_metadata":
            value = _plain(value)
        record[field] = value
    check_json_native(record, "message")
    return record


def _plain(value: Any) -> Any:
    """Deep-convert TypedDicts and tuples into plain dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record_to_message(record: Mapping[str, Any]) -> BaseMessage:
    """Rebuild the LangChain message a stored message dict came from."""
    role = record["role"]
    fields: dict[str, Any] = {"content": record["content"]}
    for key in ("name", "id", "additional_kwargs", "response_metadata"):
        if record.get(key) is not None:
            fields[key] = record[key]
    if role == "user":
        return HumanMessage(**fields)
    if role == "system":
        return SystemMessage(**fields)
    if role == "assistant":
        for key in ("tool_calls", "invalid_tool_calls", "usage_metadata"):
            if record.get(key) is not None:
                fields[key] = record[key]
        return AIMessage(**fields)
    if role == "tool":
        fields["tool_call_id"] = record.get("tool_call_id") or ""
        if record.get("artifact") is not None:
            fields["artifact"] = record["artifact"]
        fields["status"] = record.get("status") or "success"
        return ToolMessage(**fields)
    msg = f"stored message has unknown role {role!r}"
    raise InvalidRoleError(msg)


_RECORD_FIELDS = frozenset(MessageRecord.model_fields)


def validate_record(record: Mapping[str, Any], where: str = "message") -> None:
    """Raise unless ``record`` is a stored message dict every store and LangChain accept.

    Checks the fields (no unknown ones, each of its documented type), the value limits of
    :func:`check_json_native`, and that :func:`record_to_message` can rebuild the
    LangChain message (so malformed ``tool_calls`` are refused here, not on a later read).

    Raises:
        InvalidMessageError: An unknown or malformed field (``.path`` names it).
        NotSerializableError: A value beyond the limits (``.path`` names it).
        InvalidRoleError: The role is not user, assistant, system or tool.
    """
    unknown = sorted(str(key) for key in record if key not in _RECORD_FIELDS)
    if unknown:
        known = ", ".join(sorted(_RECORD_FIELDS))
        msg = f"{where}.{unknown[0]} is not a message field (known fields: {known})"
        raise InvalidMessageError(f"{where}.{unknown[0]}", msg)
    check_json_native(dict(record), where)
    validate_role(record.get("role"))
    if isinstance(content := record.get("content"), list):
        check_content_blocks(content, f"{where}.content")
    try:
        MessageRecord.model_validate(record)
    except PydanticValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        path = f"{where}.{field}" if field else where
        msg = f"{path}: {first['msg']}"
        raise InvalidMessageError(path, msg) from None
    problem = _rebuild_problem(record)
    if problem is not None:
        field, detail = problem
        path = f"{where}.{field}"
        raise InvalidMessageError(path, f"{path}: LangChain cannot rebuild the message: {detail}")


def _rebuild_problem(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why :func:`record_to_message` fails on ``record`` (the field, the reason), or None."""
    try:
        record_to_message(record)
    except PydanticValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "content"
        return field, first["msg"]
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        calls = ("tool_calls", "invalid_tool_calls", "usage_metadata")
        fields = [f for f in calls if record.get(f)]
        return (fields[0] if fields else "content"), str(e)
    return None
