"""Exceptions raised by ctx_memory.

Every error the package raises on purpose derives from :class:`CtxMemoryError`, so
``except CtxMemoryError`` catches them all. Input errors are raised *before* anything
is written: a rejected call leaves the session exactly as it was.

The tree::

    CtxMemoryError
    ├── ConfigurationError          a setting has a wrong type or value (names the key)
    ├── ValidationError             bad input, rejected before any write (also ValueError)
    │   ├── InvalidSessionIdError   empty, over-long or non-string session id
    │   ├── InvalidRoleError        a role outside user|assistant|system|tool
    │   ├── NotSerializableError    a value no store can keep exactly (names the path): not
    │   │                           JSON-native, a lone surrogate, an int beyond 64 bits,
    │   │                           nested deeper than 100 levels
    │   ├── InvalidMessageError     a message dict with an unknown field or a malformed one
    │   ├── SharedStateTooLargeError  ``shared`` would exceed its size limit (1 MiB of JSON)
    │   ├── UntokenizableTextError  text tiktoken cannot count (a run of about a million spaces)
    │   ├── InvalidTTLError         a negative or non-numeric TTL
    │   └── DocumentImportError     malformed JSON or a wrong shape on import (names the field)
    ├── SessionNotFoundError        an operation that needs an existing session (also KeyError)
    ├── MessageNotFoundError        no message of the session has that id (also KeyError)
    ├── RequestBodyNotReadError     a sync helper needs a Starlette body: use its async twin
    ├── TokenizerError              a tiktoken encoding cannot be loaded (names the remedies)
    ├── BudgetExceededError         system prompt + question alone exceed the token budget
    └── StoreError                  the backend failed
        ├── StoreUnavailableError   the backend is unreachable (names the URL, hides the password)
        └── StoreVersionError       the stored data is of a newer format version: upgrade
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "ConfigurationError",
    "CtxMemoryError",
    "DocumentImportError",
    "InvalidMessageError",
    "InvalidRoleError",
    "InvalidSessionIdError",
    "InvalidTTLError",
    "MessageNotFoundError",
    "NotSerializableError",
    "RequestBodyNotReadError",
    "SessionExistsError",
    "SessionNotFoundError",
    "SharedStateTooLargeError",
    "StoreError",
    "StoreUnavailableError",
    "StoreVersionError",
    "UntokenizableTextError",
    "TokenizerError",
    "ValidationError",
]


class CtxMemoryError(Exception):
    """Base class of every error ctx_memory raises on purpose."""


class ConfigurationError(CtxMemoryError, ValueError):
    """A configuration value has the wrong type or an invalid value.

    Attributes:
        key: The setting's name, e.g. ``"MAX_SESSIONS"``.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"invalid setting {key}: {message}")


class ValidationError(CtxMemoryError, ValueError):
    """Input was rejected before anything was written."""


class InvalidSessionIdError(ValidationError):
    """A session id is empty, too long or not a string."""


class InvalidRoleError(ValidationError):
    """A message role is not one of ``user``, ``assistant``, ``system``, ``tool``."""


class NotSerializableError(ValidationError):
    """A value cannot be stored exactly by every store.

    Not JSON-native (a set, a datetime, NaN), a string with a lone surrogate, an integer
    outside the signed 64-bit range, or dicts/lists nested more than 100 levels deep.

    Attributes:
        path: Where in the value the offending object sits, e.g. ``"shared.details.when"``.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


class InvalidMessageError(ValidationError):
    """A message has an unknown field, or a field LangChain cannot rebuild it from.

    Attributes:
        path: Where the offending field sits, e.g. ``"messages[2].tool_calls"``.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


class UntokenizableTextError(ValidationError):
    """tiktoken could not count a text: its pre-tokenising regex gives up on it.

    A run of about a million spaces makes tiktoken's Rust core fail (a stack overflow,
    raised as a ``PanicException`` that derives from ``BaseException``). The text's count
    cannot be exact, so the message, source or prompt part holding it is refused; nothing
    was written.

    Attributes:
        length: The text's length in characters.
        encoding: The tiktoken encoding that failed.
    """

    def __init__(self, length: int, encoding: str, detail: str) -> None:
        self.length = length
        self.encoding = encoding
        super().__init__(
            f"tiktoken ({encoding}) cannot tokenize a text of {length:,} characters "
            f"(a very long run of spaces?): {detail}"
        )


class SharedStateTooLargeError(ValidationError):
    """A write would make the session's ``shared`` state larger than its limit.

    Every store keeps ``shared`` as one JSON text that a merge reads and rewrites whole, so
    its size is bounded (:data:`ctx_memory.stores.base.MAX_SHARED_BYTES`): a merge never
    blocks a Redis server for long. Nothing was written.

    Attributes:
        size: The UTF-8 size in bytes the ``shared`` JSON would have had.
        limit: The limit in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.path = "shared"
        self.size = size
        self.limit = limit
        super().__init__(
            f"shared would be {size} bytes of JSON; the limit is {limit} bytes "
            "(keep large material in fetched context or your own storage)"
        )


class InvalidTTLError(ValidationError):
    """A TTL is negative or not a number."""


class DocumentImportError(ValidationError):
    """An imported session document is malformed JSON or has the wrong shape.

    Attributes:
        field: The dotted path of the first offending field (``""`` for the whole document).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class SessionExistsError(DocumentImportError):
    """An import without ``overwrite`` found the session there (checked as it writes)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        msg = f"session {session_id!r} already exists (pass overwrite=True to replace it)"
        super().__init__("metadata.session_id", msg)


class SessionNotFoundError(CtxMemoryError, KeyError):
    """The session does not exist (or has expired)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(session_id)

    def __str__(self) -> str:
        return f"session {self.session_id!r} does not exist (never created, deleted or expired)"


class MessageNotFoundError(CtxMemoryError, KeyError):
    """No message of the session has this id (or the session does not exist)."""

    def __init__(self, session_id: str, message_id: str) -> None:
        self.session_id = session_id
        self.message_id = message_id
        super().__init__(message_id)

    def __str__(self) -> str:
        return f"session {self.session_id!r} has no message with id {self.message_id!r}"


class RequestBodyNotReadError(CtxMemoryError, RuntimeError):
    """A sync request helper needs a Starlette/FastAPI body that only ``await`` can read.

    Call the helper's async twin (``aget_session_id``, ``aprepare_request``, ...) from an
    ``async def`` endpoint, or declare the body in the endpoint so FastAPI reads it first.
    """


class TokenizerError(CtxMemoryError):
    """A tiktoken encoding could not be loaded."""


class BudgetExceededError(CtxMemoryError, ValueError):
    """The parts of a prompt that are never dropped do not fit the token budget."""


class StoreError(CtxMemoryError):
    """The storage backend failed."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The storage backend cannot be reached.

    The message names the backend's address with any password replaced by ``***``.
    """


class StoreVersionError(StoreError):
    """The store holds data of a newer format version than this ctx_memory reads.

    A SQLite file, a PostgreSQL schema or Redis data under a key prefix written by a newer
    release: nothing is read or written, and trying again cannot help. The message names
    the version found, the one understood and what to do (upgrade ctx_memory, or use
    another file, schema or key prefix).
    """
