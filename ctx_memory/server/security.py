"""Who is asking, and which tenant's sessions they see: the service's FastAPI dependencies.

A request presents its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
(never in the URL, where proxies log it); the inspector's pages also take the signed cookie
its login form sets. :func:`principal` resolves the key (401 for a missing or unknown one),
applies the per-key rate limit (429 with ``Retry-After``) and :func:`tenant_manager` gives
the route the tenant's :class:`~ctx_memory.manager.ContextManager`: an API key's own
tenant (asking for another is a 403), or for an admin key the tenant named by the
``tenant`` query parameter.

The inspector cookie holds no key: ``<expiry>.<key id>.<HMAC-SHA256>`` signed with
``SERVER_COOKIE_SECRET`` (else a random secret per process, so set it when several
processes serve one inspector). It is refused once expired or once its admin key is no
longer configured.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ctx_memory.manager import ContextManager
from ctx_memory.server.keys import DEFAULT_TENANT, Principal

if TYPE_CHECKING:
    from ctx_memory.server.app import ServerState

__all__ = [
    "STORE_VERSION_DETAIL",
    "COOKIE_NAME",
    "ServiceError",
    "admin_principal",
    "api_key_scheme",
    "bearer_scheme",
    "principal",
    "sign_cookie",
    "tenant_manager",
    "verify_cookie",
]

STORE_VERSION_DETAIL = (
    "the session store holds data written by a newer ctx_memory; upgrade ctx_memory "
    "(the server log names the store and the versions)"
)
"""What a client is told when the store refuses data of a newer version (HTTP 500)."""

COOKIE_NAME = "ctxm_inspector"
COOKIE_SECONDS = 8 * 3600

bearer_scheme = HTTPBearer(auto_error=False, description="An API key or an admin key.")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key.")


@dataclass
class ServiceError(Exception):
    """An error the service answers with its own status and JSON body.

    Attributes:
        status: HTTP status.
        error: A stable machine-readable code (``unauthorized``, ``rate_limited``...).
        detail: What went wrong, for a human.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    status: int
    error: str
    detail: str
    headers: dict[str, str] | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.error}: {self.detail}"


def state_of(request: Request) -> ServerState:
    """The service's state (set by :func:`~ctx_memory.server.create_app`)."""
    state: ServerState = request.app.state.ctx_memory
    return state


# --------------------------------------------------------------------------- cookie


def sign_cookie(secret: bytes, key_id: str, *, now: float | None = None) -> str:
    """A signed inspector cookie for the admin key ``key_id`` (pure)."""
    expiry = int((time.time() if now is None else now) + COOKIE_SECONDS)
    payload = f"{expiry}.{key_id}"
    signature = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{signature}"


def verify_cookie(secret: bytes, value: str, *, now: float | None = None) -> str | None:
    """The key id of a valid, unexpired cookie, else ``None`` (pure)."""
    parts = value.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    expiry, key_id, signature = parts
    expected = hmac.new(secret, f"{expiry}.{key_id}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return None
    if int(expiry) < (time.time() if now is None else now):
        return None
    return key_id


# --------------------------------------------------------------------------- dependencies


def _unauthorized(detail: str) -> ServiceError:
    return ServiceError(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def _inspector_page(request: Request) -> bool:
    root = str(request.scope.get("root_path") or "")
    path = str(request.scope.get("path") or "")
    path = path.removeprefix(root) if root and path.startswith(root) else path
    return path == "/inspector" or path.startswith("/inspector/")


def _identify(request: Request, key: str | None) -> Principal:
    state = state_of(request)
    if not state.auth:
        return Principal(DEFAULT_TENANT, admin=True, key_id="anonymous")
    if key:
        found = state.keys.identify(key)
        if found is None:
            raise _unauthorized("unknown API key")
        return found
    # The inspector's login cookie opens its pages only: the API takes keys in headers.
    cookie = request.cookies.get(COOKIE_NAME) if _inspector_page(request) else None
    if cookie:
        key_id = verify_cookie(state.cookie_secret, cookie)
        if key_id is not None and key_id in state.admin_key_ids:
            return Principal(None, admin=True, key_id=key_id)
    raise _unauthorized(
        "an API key is needed: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    )


def _rate_limit(request: Request, who: Principal) -> None:
    state = state_of(request)
    client = request.client.host if request.client else "-"
    bucket_key = who.key_id if who.key_id != "anonymous" else f"ip:{client}"
    wait = state.bucket.take(bucket_key)
    if wait > 0:
        retry = str(max(1, math.ceil(wait)))
        msg = f"rate limit exceeded for this key; retry in {retry} s"
        raise ServiceError(429, "rate_limited", msg, {"Retry-After": retry})


async def principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The principal of a request (401 without a valid key, 429 over its rate)."""
    key = bearer.credentials if bearer is not None else api_key
    who = _identify(request, key)
    _rate_limit(request, who)
    return who


async def admin_principal(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """The principal of a request that needs an admin key (403 for a tenant's key)."""
    if not who.admin:
        raise ServiceError(403, "forbidden", "this needs an admin key")
    return who


def resolve_tenant(state: ServerState, who: Principal, asked: str | None) -> str:
    """The tenant a request works on (pure; raises :class:`ServiceError`)."""
    if not state.auth:
        if asked not in (None, DEFAULT_TENANT):
            raise ServiceError(404, "unknown_tenant", "no such tenant")
        return DEFAULT_TENANT
    if who.admin:
        if asked is None:
            if len(state.tenants.names) == 1:
                return state.tenants.names[0]
            msg = "an admin key names the tenant: add ?tenant=<name>"
            raise ServiceError(400, "tenant_required", msg)
        if asked not in state.tenants:
            raise ServiceError(404, "unknown_tenant", "no such tenant")
        return asked
    assert who.tenant is not None
    if asked is not None and asked != who.tenant:
        raise ServiceError(403, "forbidden", "this key opens its own tenant only")
    return who.tenant


async def tenant_manager(
    request: Request,
    who: Annotated[Principal, Depends(principal)],
    tenant: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Admin keys only: the tenant to work on (an API key has its own).",
        ),
    ] = None,
) -> ContextManager:
    """The manager of the request's tenant."""
    state = state_of(request)
    name = resolve_tenant(state, who, tenant)
    request.state.ctx_memory_tenant = name
    return state.tenants.get(name)


Manager = Annotated[ContextManager, Depends(tenant_manager)]
"""A route parameter: the tenant's manager."""
