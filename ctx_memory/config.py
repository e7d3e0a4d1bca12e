"""Settings: read once with Dynaconf, validated into a typed object.

Sources, lowest precedence first:

1. defaults (below);
2. ``settings.toml`` then ``.secrets.toml`` in the working directory (top-level keys);
3. ``CTX_MEMORY_*`` environment variables (``CTX_MEMORY_MAX_SESSIONS=500``; values are
   parsed as TOML, so ``true``, ``42`` and ``1.5`` have their types);
4. explicit keyword arguments to :func:`load_settings` / ``ContextManager(...)``.

This is the only module that reads the environment. A wrong type or value fails at load
with :class:`~ctx_memory.errors.ConfigurationError` naming the key.

``MAX_SESSIONS`` and ``SESSION_EXPIRATION_SECONDS`` left unset depend on the store: the
in-memory store keeps at most 100 sessions for an hour (it lives in one process's memory),
SQLite and Redis keep any number of sessions for 30 days, so a persistent store never
evicts a user's session because others arrived. A value set in a file, the environment or
a keyword applies to every store.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic import ValidationError as PydanticValidationError

from ctx_memory.errors import ConfigurationError
from ctx_memory.stores.base import MAX_TTL_SECONDS

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "ENV_PREFIX",
    "MEMORY_MAX_SESSIONS",
    "MEMORY_TTL_SECONDS",
    "PERSISTENT_TTL_SECONDS",
    "SETTINGS_FILES",
    "Settings",
    "load_settings",
    "redact_url",
    "url_secrets",
    "validate_redis_url",
    "with_overrides",
]

ENV_PREFIX = "CTX_MEMORY"
SETTINGS_FILES = ("settings.toml", ".secrets.toml")

MEMORY_MAX_SESSIONS = 100
"""``MAX_SESSIONS`` of the in-memory store when the setting is not given."""

MEMORY_TTL_SECONDS = 3600.0
"""``SESSION_EXPIRATION_SECONDS`` of the in-memory store when the setting is not given."""

PERSISTENT_TTL_SECONDS = 30 * 86_400.0
"""``SESSION_EXPIRATION_SECONDS`` of SQLite and Redis when the setting is not given."""

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

# --------------------------------------------------------------------------- URLs

# A query parameter whose name mentions a secret (``password=``, ``ssl_password=``...):
# its value runs to the next ``&`` (``#`` and ``?`` included, whatever a parser makes of
# them), so nothing of it survives.
_SECRET_PARAM = re.compile(r"([?&][^=&]*(?:pass|secret|token|auth)[^=&]*=)([^&]*)", re.IGNORECASE)
_DB_PATH = re.compile(r"/?(?:\d+/?)?")
_ENCODE_HINT = (
    "percent-encode '/', '?', '#' and '@' in a user name or password (%2F, %3F, %23, %40)"
)


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***`` (safe to log or print).

    Masks the password of the user-info part (``redis://user:***@host``), up to the last
    ``@``, so an unencoded ``/``, ``?``, ``#`` or ``@`` in it is masked too; and the value
    of any query parameter naming a secret (``?password=***``). Works on malformed URLs
    and on text without ``://`` as well: it never parses, so it never fails.

    Example:
        .. code-block:: python

            from ctx_memory.config import redact_url

            assert redact_url("redis://:p/a#s@h:6379/0") == "redis://:***@h:6379/0"
            assert redact_url("redis://h/0?password=pw") == "redis://h/0?password=***"
    """
    text = _SECRET_PARAM.sub(r"\1***", str(url))
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    at = rest.rfind("@")
    if at < 0:
        return text
    userinfo, host = rest[:at], rest[at + 1 :]
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}@{host}"


def url_secrets(url: str) -> list[str]:
    """The passwords a URL holds (as written and percent-decoded), longest first.

    What :func:`redact_url` masks, for scrubbing text that may quote them (a client
    library's error message).
    """
    text = str(url)
    found = [m.group(2) for m in _SECRET_PARAM.finditer(text)]
    rest = text.partition("://")[2] or text
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        found.append(rest[:at].split(":", 1)[1])
    secrets = {s for value in found for s in (value, unquote(value), unquote_plus(value)) if s}
    return sorted(secrets, key=len, reverse=True)


def _redis_url_problem(url: str) -> str | None:  # noqa: PLR0911 - one return per fault
    """What is wrong with a Redis URL (worded for ``invalid setting REDIS_URL: ...``)."""
    if not url.startswith(REDIS_SCHEMES):
        return "must start with redis://, rediss:// or unix:// (e.g. redis://localhost:6379/0)"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "must not contain spaces or control characters"
    if "#" in url:
        return f"holds a '#' (a URL fragment means nothing to Redis); {_ENCODE_HINT}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"has no valid host and port; {_ENCODE_HINT}"
    if "@" in parts.path or "@" in parts.query:
        return f"holds an '@' after the host; {_ENCODE_HINT}"
    if parts.scheme == "unix":
        if not parts.path:
            return "unix:// needs a socket path, e.g. unix:///run/redis/redis.sock"
    elif not _DB_PATH.fullmatch(parts.path):
        return "the path must be a database number, e.g. redis://localhost:6379/0"
    if port == 0:
        return "the port must be a number from 1 to 65535"
    return _query_problem(parts.query) if parts.query else None


def _query_problem(query: str) -> str | None:
    """A query parameter redis-py would refuse when connecting (its value is not shown)."""
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS  # noqa: PLC0415 - rarely needed

    parsers: dict[str, Callable[[str], object]] = dict(URL_QUERY_ARGUMENT_PARSERS)  # type: ignore[arg-type]
    for name, values in parse_qs(query, keep_blank_values=True).items():
        parser = parsers.get(name)
        if parser is None or not values:
            continue
        try:
            parser(values[0])
        except (TypeError, ValueError):
            return f"query parameter {name!r} has an invalid value"
    return None


def validate_redis_url(url: object) -> str:
    """Return ``url`` if redis-py will read it as the server it names, else raise.

    Accepts ``redis://``, ``rediss://`` and ``unix://`` URLs. Refuses anything redis-py
    would misread: no scheme, a ``#``, an ``@`` after the host (an unencoded ``/`` or ``?``
    in a password), a port or database that is not a number, a bad known query value.

    Raises:
        ConfigurationError: Names ``REDIS_URL``; the message shows the URL only through
            :func:`redact_url` and chains no other exception.
    """
    if not isinstance(url, str):
        raise ConfigurationError("REDIS_URL", f"must be a string, got {type(url).__name__}")
    problem = _redis_url_problem(url)
    if problem is not None:
        raise ConfigurationError("REDIS_URL", f"{problem} (got {redact_url(url)!r})")
    return url


# --------------------------------------------------------------------------- settings


def _backend_of(data: dict[str, Any]) -> str:
    return "redis" if data.get("use_redis_caching") else str(data.get("store", "memory"))


def _default_max_sessions(data: dict[str, Any]) -> int | None:
    return MEMORY_MAX_SESSIONS if _backend_of(data) == "memory" else None


def _default_ttl(data: dict[str, Any]) -> float:
    return MEMORY_TTL_SECONDS if _backend_of(data) == "memory" else PERSISTENT_TTL_SECONDS


class Settings(BaseModel):
    """Every ctx_memory setting, validated. Field names are the keys in lower case.

    ``store`` is the effective backend: the seed's ``USE_REDIS_CACHING=true`` selects
    ``redis`` whatever ``STORE`` says. ``max_sessions`` and ``session_expiration_seconds``
    not given take the default of that backend (see the module docstring); whether they
    were given is in ``model_fields_set``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    store: Literal["memory", "sqlite", "redis"] = "memory"
    use_redis_caching: StrictBool = False
    time_based_expiration: StrictBool = True
    session_expiration_seconds: float = Field(
        default_factory=_default_ttl, ge=0, le=MAX_TTL_SECONDS, allow_inf_nan=False
    )
    garbage_collection: StrictBool = True
    gc_interval_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    async_operations: StrictBool = True
    event_emission: StrictBool = True
    max_sessions: int | None = Field(default_factory=_default_max_sessions, ge=0)
    redis_url: str = "redis://localhost:6379/0"
    redis_key_prefix: str = Field(default="ctx_memory", min_length=1)
    redis_max_retries: int = Field(default=3, ge=0)
    redis_socket_timeout: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    redis_publish_events: StrictBool = False
    redis_cluster: StrictBool = False
    sqlite_path: str = "ctx_memory.sqlite3"
    default_model: str = "gpt-4o-mini"
    token_encoding: str | None = None
    token_counter: Literal["tiktoken", "approximate"] = "tiktoken"

    @field_validator(
        "session_expiration_seconds",
        "gc_interval_seconds",
        "max_sessions",
        "redis_max_retries",
        "redis_socket_timeout",
        mode="before",
    )
    @classmethod
    def _no_bools(cls, value: object) -> object:
        if isinstance(value, bool):
            msg = "must be a number, not a boolean"
            raise ValueError(msg)
        return value

    @field_validator("max_sessions")
    @classmethod
    def _zero_is_unlimited(cls, value: int | None) -> int | None:
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        problem = _redis_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def backend(self) -> str:
        """The store actually used (``USE_REDIS_CACHING`` wins)."""
        return "redis" if self.use_redis_caching else self.store

    @property
    def ttl_seconds(self) -> float | None:
        """The session TTL, or ``None`` when time-based expiration is off."""
        if not self.time_based_expiration or not self.session_expiration_seconds:
            return None
        return self.session_expiration_seconds

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, (redact_url(value) if key == "redis_url" else value)


_KEYS = {name.upper() for name in Settings.model_fields}


def _from_dynaconf(root: Path) -> dict[str, Any]:
    from dynaconf import Dynaconf  # noqa: PLC0415 - keep import time low for the CLI

    dyn = Dynaconf(
        envvar_prefix=ENV_PREFIX,
        settings_files=[str(root / name) for name in SETTINGS_FILES],
        environments=False,
        load_dotenv=False,
        merge_enabled=False,
    )
    values: dict[str, Any] = {}
    failure: str | None = None
    try:
        for key in _KEYS:
            value = dyn.get(key)
            if value is not None:
                values[key.lower()] = value
    except Exception as e:  # noqa: BLE001 - a broken settings file, whatever the parser says
        # Only the error's type and position: its text may quote the file (a password).
        where = re.search(r"line \d+, column \d+", str(e))
        failure = f"cannot read {' / '.join(SETTINGS_FILES)} in {root}: {type(e).__name__}" + (
            f" at {where.group()}" if where else ""
        )
    if failure is not None:  # raised here, so no parser error (which may quote it) is chained
        raise ConfigurationError("SETTINGS_FILE", failure)
    unknown = sorted(
        name.removeprefix(f"{ENV_PREFIX}_")
        for name in os.environ
        if name.startswith(f"{ENV_PREFIX}_") and name.removeprefix(f"{ENV_PREFIX}_") not in _KEYS
    )
    if unknown:
        key = unknown[0]
        known = ", ".join(sorted(_KEYS))
        raise ConfigurationError(key, f"{ENV_PREFIX}_{key} is not a ctx_memory setting ({known})")
    return values


def _configuration_error(error: PydanticValidationError) -> ConfigurationError:
    first = error.errors()[0]
    key = str(first["loc"][0]).upper() if first["loc"] else "<settings>"
    message = str(first["msg"]).removeprefix("Value error, ")
    shown = first.get("input")
    if key == "REDIS_URL" and isinstance(shown, str):
        shown = redact_url(shown)
    return ConfigurationError(key, f"{message} (got {shown!r})")


def _validated(values: dict[str, Any]) -> Settings:
    try:
        return Settings(**values)
    except PydanticValidationError as e:
        error = _configuration_error(e)
    # Raised outside the ``except``: pydantic's error quotes the raw input (a password in
    # REDIS_URL), so it must be neither the cause nor the context of ours.
    raise error


def _checked_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    for key in overrides:
        if key.upper() not in _KEYS:
            raise ConfigurationError(key.upper(), "is not a ctx_memory setting")
    return {k.lower(): v for k, v in overrides.items() if v is not None}


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """A copy of ``settings`` with ``overrides`` applied and validated (no file is read).

    Values ``settings`` took from the defaults stay defaults: overriding ``store`` gives
    the new store's ``MAX_SESSIONS`` / ``SESSION_EXPIRATION_SECONDS`` unless they were set.
    """
    given = settings.model_dump(include=settings.model_fields_set)
    return _validated({**given, **_checked_overrides(overrides)})


def load_settings(*, root: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read settings files and environment, apply ``overrides`` and validate.

    Args:
        root: Directory holding ``settings.toml`` / ``.secrets.toml`` (default: the
            working directory).
        **overrides: Explicit values by setting name (case-insensitive); they win over
            files and environment. ``None`` values are ignored.

    Raises:
        ConfigurationError: A key is unknown, or a value has the wrong type or range.
    """
    values = _from_dynaconf(Path(root) if root is not None else Path.cwd())
    return _validated({**values, **_checked_overrides(overrides)})
