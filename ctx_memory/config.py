"""Settings: read once, validated into a typed object.

Sources, lowest precedence first:

1. defaults (below);
2. the ``[ctx_memory]`` table of ``settings.toml`` then of ``.secrets.toml`` in the
   working directory (key by key: a key in ``.secrets.toml`` wins, the others stay);
3. ``CTX_MEMORY_*`` environment variables (``CTX_MEMORY_MAX_SESSIONS=500``; values are
   parsed as TOML, so ``true``, ``42`` and ``1.5`` have their types);
4. explicit keyword arguments to :func:`load_settings` / ``ContextManager(...)``.

The settings files are the app's too, so ctx_memory reads nothing of them but its own
table: an app's top-level ``REDIS_URL`` or ``STORE`` is never taken for ours. A file with
ctx_memory keys at its top level and no ``[ctx_memory]`` table in either file was written
for an earlier version: that is a :class:`~ctx_memory.errors.ConfigurationError` saying
to move them (or, if they are the app's own, to add an empty table), never a silent
switch to other settings.

This is the only module that reads the environment. Files are read with Dynaconf's TOML
reader and values go through Dynaconf's value parser (``@int``, ``@format`` tokens), but
no Dynaconf settings object is built: an app's own ``*_FOR_DYNACONF`` and ``DYNACONF_*``
variables configure the app's Dynaconf, never ours. Every mistake fails at load with a
``ConfigurationError`` naming the key: a wrong type or value (and where it was set), a
boolean for a number, an unknown key in the table, the environment or the arguments (with
a did-you-mean), a file that is not TOML (its path and line, nothing of its content).

``MAX_SESSIONS`` and ``SESSION_EXPIRATION_SECONDS`` left unset depend on the store: the
in-memory store keeps at most 100 sessions for an hour (it lives in one process's memory),
SQLite and Redis keep any number of sessions for 30 days, so a persistent store never
evicts a user's session because others arrived. A value set in a file, the environment or
a keyword applies to every store.
"""

from __future__ import annotations

import os
import re
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationInfo,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError

from ctx_memory._store_urls import (
    BUILTIN_STORES,
    POSTGRES_SCHEMES,
    REDIS_SCHEMES,
    postgres_url_problem,
    redact_url,
    redis_url_problem,
    store_name_problem,
    url_secrets,
    validate_postgres_url,
    validate_redis_url,
)
from ctx_memory.errors import ConfigurationError
from ctx_memory.stores._gc import MIN_GC_INTERVAL_SECONDS
from ctx_memory.stores.base import MAX_TTL_SECONDS

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BUILTIN_STORES",
    "ENV_PREFIX",
    "MEMORY_MAX_SESSIONS",
    "MEMORY_TTL_SECONDS",
    "NAMESPACE",
    "PERSISTENT_TTL_SECONDS",
    "POSTGRES_SCHEMES",
    "REDIS_SCHEMES",
    "SETTINGS_FILES",
    "ApiKey",
    "Settings",
    "load_settings",
    "masked",
    "redact_url",
    "setting_differences",
    "url_secrets",
    "validate_postgres_url",
    "validate_redis_url",
    "with_overrides",
]

ENV_PREFIX = "CTX_MEMORY"
SETTINGS_FILES = ("settings.toml", ".secrets.toml")
NAMESPACE = "ctx_memory"
"""The table of the settings files that holds ctx_memory's settings: ``[ctx_memory]``."""

MEMORY_MAX_SESSIONS = 100
"""``MAX_SESSIONS`` of the in-memory store when the setting is not given."""

MEMORY_TTL_SECONDS = 3600.0
"""``SESSION_EXPIRATION_SECONDS`` of the in-memory store when the setting is not given."""

PERSISTENT_TTL_SECONDS = 30 * 86_400.0
"""``SESSION_EXPIRATION_SECONDS`` of SQLite and Redis when the setting is not given."""

_SECRET_URL_KEYS = ("redis_url", "postgres_url")
_SECRET_VALUE_KEYS = ("server_api_keys", "server_admin_keys", "server_cookie_secret")
"""Settings whose wrong value may be a secret itself (a raw API key where its SHA-256 goes)."""
_SECRET_SHAPES = ("server_chat_model_kwargs",)
"""Settings whose value holds secrets (an ``api_key``): a wrong one is not quoted."""
_SECRET_KWARG = re.compile(
    r"key|secret|password|passwd|credential|auth|(?:^|[_-])token(?:$|[_-])", re.IGNORECASE
)
"""Names of ``SERVER_CHAT_MODEL_KWARGS`` entries masked in ``repr(settings)``."""


def masked(name: str, value: Any) -> Any:
    """A setting's value as shown (``repr``, differences): passwords and credentials masked."""
    if name in _SECRET_URL_KEYS and isinstance(value, str):
        return redact_url(value)
    if name == "server_chat_model_kwargs":
        return _masked_kwargs(value)
    return value


def _masked_kwargs(value: Any) -> Any:
    """``value`` with credential-named entries masked, at any depth (headers included)."""
    if isinstance(value, dict):
        return {
            k: "***" if _SECRET_KWARG.search(str(k)) else _masked_kwargs(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_masked_kwargs(v) for v in value)
    return value


# --------------------------------------------------------------------------- settings


def _backend_of(data: dict[str, Any]) -> str:
    return "redis" if data.get("use_redis_caching") else str(data.get("store", "memory"))


def _default_max_sessions(data: dict[str, Any]) -> int | None:
    return MEMORY_MAX_SESSIONS if _backend_of(data) == "memory" else None


def _default_ttl(data: dict[str, Any]) -> float:
    return MEMORY_TTL_SECONDS if _backend_of(data) == "memory" else PERSISTENT_TTL_SECONDS


# --------------------------------------------------------------------------- server settings
# The HTTP service's settings (``ctx_memory.server``, ``ctx-memory serve``): the SERVER_*
# keys of the Settings class below, documented in docs/server.md. Only the server reads them.

_TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_SHA256_PATTERN = r"^[0-9a-f]{64}$"


class ApiKey(BaseModel):
    """One API key of the HTTP service: its SHA-256 and the tenant it opens.

    The key itself is never stored: ``sha256`` is the hex SHA-256 of its UTF-8 text
    (:func:`ctx_memory.server.keys.hash_api_key`). A tenant is 1-64 letters, digits,
    ``_`` or ``-`` (it becomes part of the store's key prefix or file name).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(pattern=_TENANT_PATTERN)
    sha256: str = Field(pattern=_SHA256_PATTERN)


def _prefix_problem(value: str) -> str | None:
    if "{" in value or "}" in value:
        return f"must not contain '{{' or '}}' (hash tags), got {value!r}"
    return None


def _sqlite_path_problem(value: str) -> str | None:
    if not value.strip():  # SQLite would open a temporary database, gone at exit
        return "must name a database file (or ':memory:'), got an empty path"
    return None


def _encoding_problem(value: str) -> str | None:
    import tiktoken  # noqa: PLC0415 - the names are known offline, no download

    if value not in tiktoken.list_encoding_names():
        known = ", ".join(sorted(tiktoken.list_encoding_names()))
        return f"unknown tiktoken encoding {value!r} (known: {known})"
    return None


_VALUE_PROBLEMS: dict[str, Callable[[str], str | None]] = {
    "redis_key_prefix": _prefix_problem,
    "sqlite_path": _sqlite_path_problem,
    "token_encoding": _encoding_problem,
}


class Settings(BaseModel):
    """Every ctx_memory setting, validated. Field names are the keys in lower case.

    ``store`` is the ``STORE`` setting as given; :attr:`backend` is the store a manager
    opens: the seed's ``USE_REDIS_CACHING=true`` makes it ``redis`` whatever ``STORE``
    says. ``max_sessions`` and ``session_expiration_seconds`` not given take the default
    of that backend (see the module docstring); whether they were given is in
    ``model_fields_set``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    store: str = "memory"
    use_redis_caching: StrictBool = False
    time_based_expiration: StrictBool = True
    session_expiration_seconds: float = Field(
        default_factory=_default_ttl, ge=0, le=MAX_TTL_SECONDS, allow_inf_nan=False
    )
    garbage_collection: StrictBool = True
    gc_interval_seconds: float = Field(
        default=60.0, ge=MIN_GC_INTERVAL_SECONDS, le=MAX_TTL_SECONDS, allow_inf_nan=False
    )
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

    # ------------------------------------------------------------- PostgreSQL
    # POSTGRES_* keys: read by ctx_memory.stores.postgres (docs/stores.md, "PostgreSQL").
    postgres_url: str = "postgresql://localhost:5432/postgres"
    postgres_schema: str = "ctx_memory"
    postgres_pool_size: int = Field(default=10, ge=1)
    postgres_connect_timeout: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    postgres_publish_events: StrictBool = False

    @field_validator("postgres_pool_size", "postgres_connect_timeout", mode="before")
    @classmethod
    def _no_bools_for_postgres_numbers(cls, value: object) -> object:
        if isinstance(value, bool):
            msg = "must be a number, not a boolean"
            raise ValueError(msg)
        return value

    @field_validator("postgres_url")
    @classmethod
    def _check_postgres_url(cls, value: str) -> str:
        problem = postgres_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("postgres_schema")
    @classmethod
    def _check_postgres_schema(cls, value: str) -> str:
        from ctx_memory.stores._postgres_sql import schema_name_problem  # noqa: PLC0415

        problem = schema_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        problem = store_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    # ------------------------------------------------------------- the HTTP service
    # SERVER_* keys: read by ctx_memory.server only (docs/server.md says what each does).
    server_auth: Literal["auto", "on", "off"] = "auto"
    server_api_keys: tuple[ApiKey, ...] = ()
    server_admin_keys: tuple[Annotated[str, Field(pattern=_SHA256_PATTERN)], ...] = ()
    server_cookie_secret: SecretStr | None = None
    server_cors_origins: tuple[str, ...] = ()
    server_max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    server_max_webtext_bytes: int = Field(default=1024 * 1024, gt=0)
    server_rate_limit_per_minute: float = Field(default=600.0, ge=0, allow_inf_nan=False)
    server_rate_limit_burst: int = Field(default=60, ge=1)
    server_chat_model: str = Field(default="fake", min_length=1)
    server_chat_model_kwargs: dict[str, Any] = Field(default_factory=dict)
    server_max_tokens: int = Field(default=8000, gt=0)
    server_retriever: str = Field(default="fake", min_length=1)
    server_retriever_k: int = Field(default=5, ge=1)
    server_agent_tools: tuple[str, ...] = ()
    server_tracing: StrictBool = True

    @field_validator(
        "server_max_body_bytes",
        "server_max_webtext_bytes",
        "server_rate_limit_per_minute",
        "server_rate_limit_burst",
        "server_max_tokens",
        "server_retriever_k",
        mode="before",
    )
    @classmethod
    def _no_bools_for_server_numbers(cls, value: object) -> object:
        if isinstance(value, bool):
            msg = "must be a number, not a boolean"
            raise ValueError(msg)
        return value

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

    @field_validator("redis_key_prefix", "sqlite_path", "token_encoding")
    @classmethod
    def _check_named_value(cls, value: str | None, info: ValidationInfo) -> str | None:
        problem = None if value is None else _VALUE_PROBLEMS[str(info.field_name)](value)
        if problem is not None:
            raise ValueError(problem)
        if info.field_name == "sqlite_path" and value is not None:
            return os.path.expanduser(value)  # "~/sessions.db" as a shell would read it
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        problem = redis_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("server_api_keys")
    @classmethod
    def _a_key_opens_one_tenant(cls, keys: tuple[ApiKey, ...]) -> tuple[ApiKey, ...]:
        """A key opens one tenant: listed for two, it would open only one, silently.

        Positions are named, never the hashes.
        """
        tenants: dict[str, tuple[int, str]] = {}
        for index, key in enumerate(keys):
            at, tenant = tenants.setdefault(key.sha256, (index, key.tenant))
            if tenant != key.tenant:
                msg = (
                    f"entry {index} (tenant {key.tenant!r}) has the key of entry {at} "
                    f"(tenant {tenant!r}): a key opens one tenant"
                )
                raise ValueError(msg)
        return keys

    @field_validator("server_admin_keys")
    @classmethod
    def _admin_keys_are_no_tenants(
        cls, digests: tuple[str, ...], info: ValidationInfo
    ) -> tuple[str, ...]:
        """A tenant's key among the admin keys would open every tenant."""
        tenants = {key.sha256: key.tenant for key in info.data.get("server_api_keys") or ()}
        for index, digest in enumerate(digests):
            if digest in tenants:
                msg = (
                    f"entry {index} is also the key of tenant {tenants[digest]!r} in "
                    "SERVER_API_KEYS: an admin key opens every tenant, a tenant's key one"
                )
                raise ValueError(msg)
        return digests

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
            yield key, (masked(key, value) if key is not None else value)


_KEYS = frozenset(name.upper() for name in Settings.model_fields)
_FILE_KEY = "SETTINGS_FILE"


class _Source(NamedTuple):
    """Where a value was read: ``[ctx_memory] of /app/settings.toml``, an env variable."""

    where: str
    secret: bool = False  # never echo the value (it came from ``.secrets.toml``)


def _hint(name: str, spell: Callable[[str], str]) -> str:
    close = get_close_matches(name.upper(), sorted(_KEYS), n=1)
    if close:
        return f"did you mean {spell(close[0])}?"
    return f"the settings are {', '.join(spell(key) for key in sorted(_KEYS))}"


def _unknown_keys(
    names: list[str], where: str, spell: Callable[[str], str] = str
) -> ConfigurationError:
    """The error for keys that are no setting, each with its did-you-mean."""
    listed = "; ".join(f"{spell(name)} ({_hint(name, spell)})" for name in names)
    return ConfigurationError(names[0].upper(), f"not a ctx_memory setting in {where}: {listed}")


def _toml_problem(error_text: str, text: str) -> str:
    """``Invalid value at line 3, column 9`` from the parser's message.

    The parser's messages quote at most one character or a key name, never a value.
    """
    reason, _, where = error_text.rpartition(" (at ")
    where = where.removesuffix(")")
    if where == "end of document":
        where = f"line {text.count(chr(10)) + 1} (the end of the file)"
    return f"{reason or error_text} at {where}"


def _read_toml(path: Path) -> dict[str, Any] | None:
    """The TOML document in ``path``, ``None`` if there is no such file.

    Raises:
        ConfigurationError: The file cannot be read, is not UTF-8 or not TOML; the message
            names the file and line, quotes nothing of it and chains no parser error.
    """
    from dynaconf.vendor import tomllib  # noqa: PLC0415 - Dynaconf's reader, also on 3.10

    problem: str
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        problem = f"cannot read {path}: {e.strerror or type(e).__name__}"
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            problem = f"{path} is not UTF-8 text (byte {e.start}, line {line})"
        else:
            try:
                document: dict[str, Any] = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                problem = f"{path} is not valid TOML: {_toml_problem(str(e), text)}"
            else:
                return document
    # Raised here, outside every ``except``: no parser error (which may quote the file) is
    # chained, and the traceback ends in this module.
    raise ConfigurationError(_FILE_KEY, problem)


def _namespace(document: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The ``[ctx_memory]`` table of a settings document (any case), if it has one."""
    names = [name for name in document if name.lower() == NAMESPACE]
    if not names:
        return None
    if len(names) > 1:
        msg = f"{path} has both [{names[0]}] and [{names[1]}]: keep one [{NAMESPACE}] table"
        raise ConfigurationError(_FILE_KEY, msg)
    table = document[names[0]]
    if not isinstance(table, dict):
        msg = f"{names[0]} in {path} must be a table ([{NAMESPACE}]), got {type(table).__name__}"
        raise ConfigurationError(_FILE_KEY, msg)
    return table


def _parsed(value: Any, key: str, source: _Source, *, from_env: bool) -> Any:
    """``value`` through Dynaconf's value parser (env text as TOML, ``@int``/``@format``)."""
    from dynaconf.utils.parse_conf import (  # noqa: PLC0415 - keep import time low for the CLI
        Lazy,
        boolean_fix,
        parse_conf_data,
    )

    if not isinstance(value, str):
        return value
    # Dynaconf's parser reads AUTO_CAST_FOR_DYNACONF from here before the app's environment.
    box: dict[str, Any] = {"AUTO_CAST_FOR_DYNACONF": True}
    try:
        parsed = parse_conf_data(
            boolean_fix(value) if from_env else value, tomlfy=from_env, box_settings=box
        )
        return parsed(box) if isinstance(parsed, Lazy) else parsed
    except Exception as e:  # noqa: BLE001 - whatever the token does, it is the user's value
        failure = type(e).__name__
    raise ConfigurationError(key, f"its Dynaconf token failed ({failure}) in {source.where}")


def _top_level_keys(found: list[tuple[Path, list[str]]]) -> ConfigurationError:
    """The error for settings files written for versions that read top-level keys."""
    where = "; ".join(f"{', '.join(keys)} at the top level of {path}" for path, keys in found)
    msg = (
        f"{where}: ctx_memory reads only its [{NAMESPACE}] table (top-level keys belong to"
        f" your app). Move ctx_memory's settings under a [{NAMESPACE}] table; if these keys"
        f" are your app's own, add an empty [{NAMESPACE}] table to say so"
    )
    return ConfigurationError(found[0][1][0], msg)


def _from_files(root: Path) -> dict[str, tuple[Any, _Source]]:
    """The ``[ctx_memory]`` tables of the settings files, later files winning key by key."""
    found: dict[str, tuple[Any, _Source]] = {}
    has_table = False
    top_level: list[tuple[Path, list[str]]] = []  # our keys outside [ctx_memory]
    for file_name in SETTINGS_FILES:
        path = root / file_name
        document = _read_toml(path)
        if document is None:
            continue
        ours = sorted(name.upper() for name in document if name.upper() in _KEYS)
        if ours:
            top_level.append((path, ours))
        table = _namespace(document, path)
        if table is None:
            continue
        has_table = True
        source = _Source(f"[{NAMESPACE}] of {path}", secret=file_name == ".secrets.toml")
        unknown = sorted(name for name in table if name.upper() not in _KEYS)
        if unknown:
            raise _unknown_keys(unknown, source.where)
        seen: dict[str, str] = {}
        for name, value in table.items():
            key = name.upper()
            if key in seen:
                msg = f"given twice in {source.where} ({seen[key]} and {name})"
                raise ConfigurationError(key, msg)
            seen[key] = name
            found[key.lower()] = (_parsed(value, key, source, from_env=False), source)
    if top_level and not has_table:
        raise _top_level_keys(top_level)
    return found


def _from_environment() -> dict[str, tuple[Any, _Source]]:
    """The ``CTX_MEMORY_*`` variables, each value parsed as Dynaconf parses env values."""
    prefix = f"{ENV_PREFIX}_"
    names = sorted(name for name in os.environ if name.startswith(prefix))
    unknown = [name.removeprefix(prefix) for name in names]
    unknown = [key for key in unknown if key not in _KEYS]
    if unknown:
        raise _unknown_keys(unknown, "the environment", lambda key: f"{prefix}{key}")
    found: dict[str, tuple[Any, _Source]] = {}
    for name in names:
        key = name.removeprefix(prefix)
        source = _Source(name)
        found[key.lower()] = (_parsed(os.environ[name], key, source, from_env=True), source)
    return found


def _configuration_error(
    error: PydanticValidationError, sources: dict[str, _Source]
) -> ConfigurationError:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    key = field.upper() or "<settings>"
    message = str(first["msg"]).removeprefix("Value error, ")
    shown = first.get("input")
    source = sources.get(field)
    if not field:
        got = "the settings, not shown"  # all of them: secrets among them
    elif (source is not None and source.secret) or field in _SECRET_VALUE_KEYS + _SECRET_SHAPES:
        got = f"a {type(shown).__name__}, not shown"  # a raw key or a credential
    elif field in _SECRET_URL_KEYS and not isinstance(shown, str):
        got = f"a {type(shown).__name__}, not shown"  # a list or table of URLs: not masked
    elif field in _SECRET_URL_KEYS and "://" not in shown:
        got = "a value that is not a URL, not shown"  # a "key=value" string: nothing to mask by
    elif isinstance(shown, str) and (field in _SECRET_URL_KEYS or "://" in shown):
        got = repr(redact_url(shown))  # a URL where a name goes too (STORE=redis://…)
    elif "@" in repr(shown) or "://" in repr(shown):  # user:password@host, or in a list
        got = f"a {type(shown).__name__} holding '@' or '://', not shown"
    else:
        got = repr(shown)
    where = f", in {source.where}" if source is not None else ""
    return ConfigurationError(key, f"{message} (got {got}{where})")


def _validated(values: dict[str, Any], sources: dict[str, _Source] | None = None) -> Settings:
    try:
        return Settings(**values)
    except PydanticValidationError as e:
        error = _configuration_error(e, sources or {})
    # Raised outside the ``except``: pydantic's error quotes the raw input (a password in
    # REDIS_URL), so it must be neither the cause nor the context of ours.
    raise error


def _checked_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(key for key in overrides if key.upper() not in _KEYS)
    if unknown:
        raise _unknown_keys(unknown, "the arguments", str.lower)
    return {k.lower(): v for k, v in overrides.items() if v is not None}


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """A copy of ``settings`` with ``overrides`` applied and validated (no file is read).

    Values ``settings`` took from the defaults stay defaults: overriding ``store`` gives
    the new store's ``MAX_SESSIONS`` / ``SESSION_EXPIRATION_SECONDS`` unless they were set.
    """
    given = settings.model_dump(include=settings.model_fields_set)
    return _validated({**given, **_checked_overrides(overrides)})


def setting_differences(current: Settings, other: Settings) -> list[tuple[str, str]]:
    """``(KEY, "KEY=value (asked other value)")`` for each setting that differs.

    Redis URLs are shown through :func:`redact_url`.
    """
    mine, theirs = current.model_dump(), other.model_dump()

    def shown(name: str, value: object) -> str:
        return repr(masked(name, value))

    return [
        (name.upper(), f"{name.upper()}={shown(name, value)} (asked {shown(name, theirs[name])})")
        for name, value in mine.items()
        if value != theirs[name]
    ]


def load_settings(*, root: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the settings files and the environment, apply ``overrides`` and validate.

    Only the ``[ctx_memory]`` table of ``settings.toml`` / ``.secrets.toml`` is read: the
    files' top-level keys belong to the app (see the module docstring).

    Args:
        root: Directory holding ``settings.toml`` / ``.secrets.toml`` (default: the
            working directory).
        **overrides: Explicit values by setting name (case-insensitive); they win over
            files and environment. ``None`` values are ignored.

    Raises:
        ConfigurationError: A file is not valid TOML (names the file and line), a key is
            unknown (with a did-you-mean), a value has the wrong type or range (names the
            key and where it was set), or a file has ctx_memory keys at its top level and
            no ``[ctx_memory]`` table anywhere.
    """
    found = {
        **_from_files(Path(root) if root is not None else Path.cwd()),
        **_from_environment(),
    }
    explicit = _checked_overrides(overrides)
    values = {key: value for key, (value, _) in found.items()}
    sources = {key: source for key, (_, source) in found.items() if key not in explicit}
    return _validated({**values, **explicit}, sources)
