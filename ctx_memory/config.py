"""Settings: read once with Dynaconf, validated into a typed object.

Sources, lowest precedence first:

1. defaults (below);
2. ``settings.toml`` then ``.secrets.toml`` in the working directory (top-level keys);
3. ``CTX_MEMORY_*`` environment variables (``CTX_MEMORY_MAX_SESSIONS=500``; values are
   parsed as TOML, so ``true``, ``42`` and ``1.5`` have their types);
4. explicit keyword arguments to :func:`load_settings` / ``ContextManager(...)``.

This is the only module that reads the environment. A wrong type or value fails at load
with :class:`~ctx_memory.errors.ConfigurationError` naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic import ValidationError as PydanticValidationError

from ctx_memory.errors import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "SETTINGS_FILES",
    "Settings",
    "load_settings",
    "redact_url",
    "with_overrides",
]

ENV_PREFIX = "CTX_MEMORY"
SETTINGS_FILES = ("settings.toml", ".secrets.toml")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log or print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Settings(BaseModel):
    """Every ctx_memory setting, validated. Field names are the keys in lower case.

    ``store`` is the effective backend: the seed's ``USE_REDIS_CACHING=true`` selects
    ``redis`` whatever ``STORE`` says.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    store: Literal["memory", "sqlite", "redis"] = "memory"
    use_redis_caching: StrictBool = False
    time_based_expiration: StrictBool = True
    session_expiration_seconds: float = Field(default=3600.0, ge=0)
    garbage_collection: StrictBool = True
    gc_interval_seconds: float = Field(default=60.0, gt=0)
    async_operations: StrictBool = True
    event_emission: StrictBool = True
    max_sessions: int | None = Field(default=100, ge=0)
    redis_url: str = "redis://localhost:6379/0"
    redis_key_prefix: str = Field(default="ctx_memory", min_length=1)
    redis_max_retries: int = Field(default=3, ge=0)
    redis_socket_timeout: float = Field(default=5.0, gt=0)
    redis_publish_events: StrictBool = False
    redis_cluster: StrictBool = False
    sqlite_path: str = "ctx_memory.sqlite3"
    default_model: str = "gpt-4o-mini"
    token_encoding: str | None = None
    token_counter: Literal["tiktoken", "approximate"] = "tiktoken"

    @field_validator("max_sessions")
    @classmethod
    def _zero_is_unlimited(cls, value: int | None) -> int | None:
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "unix"):
            msg = f"must start with redis://, rediss:// or unix://, got {redis_scheme(value)!r}"
            raise ValueError(msg)
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


def redis_scheme(url: str) -> str:
    """The scheme part of a URL, for error messages that must not echo secrets."""
    return url.split("://", 1)[0] + "://" if "://" in url else "<no scheme>"


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
    for key in _KEYS:
        value = dyn.get(key)
        if value is not None:
            values[key.lower()] = value
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


def _validated(values: dict[str, Any]) -> Settings:
    try:
        return Settings(**values)
    except PydanticValidationError as e:
        first = e.errors()[0]
        key = str(first["loc"][0]).upper() if first["loc"] else "<settings>"
        shown = first.get("input")
        if key == "REDIS_URL" and isinstance(shown, str):
            shown = redact_url(shown)
        raise ConfigurationError(key, f"{first['msg']} (got {shown!r})") from e


def _checked_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    for key in overrides:
        if key.upper() not in _KEYS:
            raise ConfigurationError(key.upper(), "is not a ctx_memory setting")
    return {k.lower(): v for k, v in overrides.items() if v is not None}


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """A copy of ``settings`` with ``overrides`` applied and validated (no file is read)."""
    return _validated({**settings.model_dump(), **_checked_overrides(overrides)})


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
