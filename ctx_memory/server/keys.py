"""API keys, tenants and rate limits of the HTTP service: pure logic, no web framework.

A key is a random string the operator hands to a client; settings hold only its SHA-256
(``SERVER_API_KEYS``, each bound to a tenant; ``SERVER_ADMIN_KEYS`` for the inspector).
:class:`KeyRing` answers "whose key is this?" by the digest of the key presented;
:class:`TokenBucket` is the per-key rate limit. :func:`new_api_key` makes a key, and
``python -m ctx_memory.server.keys [TENANT] [--admin]`` prints a new key once with the
settings line holding its hash.

Nothing else here prints, logs or keeps a key: only digests are stored and compared.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.config import Settings

__all__ = [
    "DEFAULT_TENANT",
    "KeyRing",
    "Principal",
    "TokenBucket",
    "check_tenant",
    "hash_api_key",
    "new_api_key",
]

DEFAULT_TENANT = "default"
"""The one tenant of a server that runs without keys (``SERVER_AUTH`` off)."""

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_KEY_PREFIX = "ctxm_"


def hash_api_key(key: str) -> str:
    """The hex SHA-256 of a key's UTF-8 text: what ``SERVER_API_KEYS`` holds.

    Example:
        .. code-block:: python

            from ctx_memory.server.keys import hash_api_key

            assert len(hash_api_key("ctxm_example")) == 64
    """
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_api_key() -> str:
    """A new random API key (256 bits from :mod:`secrets`, URL-safe, ``ctxm_`` prefix)."""
    return _KEY_PREFIX + secrets.token_urlsafe(32)


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name (1-64 letters, digits, ``_``, ``-``).

    Raises:
        ValueError: It is not.
    """
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        msg = "a tenant is 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        raise ValueError(msg)
    return tenant


@dataclass(frozen=True)
class Principal:
    """Who made a request: a tenant's API key, an admin key, or anyone (auth off).

    Attributes:
        tenant: The tenant whose sessions the request sees (``None`` for an admin key,
            which names the tenant per request).
        admin: An admin key (the inspector, analytics, any tenant).
        key_id: The first 12 hex digits of the key's hash: enough to tell keys apart in
            logs and rate limits, useless to an attacker. ``"anonymous"`` with auth off.
    """

    tenant: str | None
    admin: bool
    key_id: str


class KeyRing:
    """The configured keys, looked up by the hash of the key a request presents.

    Args:
        api_keys: ``(sha256 hex, tenant)`` pairs.
        admin_keys: SHA-256 hex digests of admin keys.
    """

    def __init__(self, api_keys: list[tuple[str, str]], admin_keys: list[str]) -> None:
        self._api = {digest: check_tenant(tenant) for digest, tenant in api_keys}
        self._admin = frozenset(admin_keys)
        self.tenants: tuple[str, ...] = tuple(sorted(set(self._api.values())))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The keys of ``SERVER_API_KEYS`` and ``SERVER_ADMIN_KEYS``."""
        return cls(
            [(entry.sha256, entry.tenant) for entry in settings.server_api_keys],
            list(settings.server_admin_keys),
        )

    def __bool__(self) -> bool:
        return bool(self._api or self._admin)

    def __repr__(self) -> str:
        return f"KeyRing(api_keys={len(self._api)}, admin_keys={len(self._admin)})"

    def identify(self, key: str) -> Principal | None:
        """The principal a key stands for, or ``None`` for an unknown key.

        Keys are found by the SHA-256 of what the request presents, so the time a lookup
        takes depends on that digest, never on how much of a real key was guessed.
        """
        if not key or len(key) > 512:
            return None
        digest = hash_api_key(key)
        if digest in self._admin:
            return Principal(None, admin=True, key_id=digest[:12])
        tenant = self._api.get(digest)
        if tenant is None:
            return None
        return Principal(tenant, admin=False, key_id=digest[:12])


class TokenBucket:
    """A token bucket per key: ``rate`` requests a second on average, bursts of ``burst``.

    Thread-safe; memory is bounded by forgetting the least recently seen keys beyond
    ``max_keys``.

    Args:
        rate: Tokens added per second (``0``: no limit).
        burst: Bucket size.
        clock: Monotonic clock (tests pass their own).
        max_keys: Keys remembered at most.

    Example:
        .. code-block:: python

            from ctx_memory.server.keys import TokenBucket

            now = [0.0]
            bucket = TokenBucket(rate=1.0, burst=2, clock=lambda: now[0])
            assert [bucket.take("k") for _ in range(3)] == [0.0, 0.0, 1.0]
            now[0] = 1.0
            assert bucket.take("k") == 0.0
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for ``key``: ``0.0`` if allowed, else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                wait, tokens = 0.0, tokens - 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)  # re-inserted: the dict is LRU-ordered
            if len(self._buckets) > self._max_keys:
                del self._buckets[next(iter(self._buckets))]
        return wait


def _main(argv: list[str]) -> int:
    """``python -m ctx_memory.server.keys [TENANT] [--admin]``: a new key and its line.

    ``--help`` describes it; an unknown option or a second tenant is an error (exit 2),
    not a key for the default tenant.
    """
    import argparse  # noqa: PLC0415 - the command line only

    parser = argparse.ArgumentParser(
        prog="python -m ctx_memory.server.keys",
        description="Make a new API key; print it once and the settings line with its SHA-256.",
    )
    parser.add_argument("tenant", nargs="?", default=DEFAULT_TENANT, help="the key's tenant")
    parser.add_argument("--admin", action="store_true", help="an admin key (every tenant)")
    args = parser.parse_args(argv)  # exits 2 on a usage error, 0 after --help
    admin, tenant = bool(args.admin), str(args.tenant)
    try:
        check_tenant(tenant)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    key = new_api_key()
    digest = hash_api_key(key)
    out = sys.stdout.write
    out("API key (give it to the client; it is shown once and stored nowhere):\n")
    out(f"  {key}\n")
    out("settings.toml ([ctx_memory] table):\n")
    if admin:
        out(f'  SERVER_ADMIN_KEYS = ["{digest}"]\n')
    else:
        out(f'  SERVER_API_KEYS = [{{ tenant = "{tenant}", sha256 = "{digest}" }}]\n')
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
