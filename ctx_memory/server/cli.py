"""``ctx-memory serve``: run the HTTP service with uvicorn on the configured store.

Importing this module imports neither FastAPI nor uvicorn, so the ``ctx-memory`` command
works without the ``server`` extra; ``serve`` imports them when it runs and raises
``ImportError`` naming ``ctx-memory[server]`` when they are missing.

Without keys in settings the service needs none, and then it listens on loopback only:
``--host 0.0.0.0`` without ``SERVER_API_KEYS`` / ``SERVER_ADMIN_KEYS`` is refused unless
``SERVER_AUTH = "off"`` says an open service is meant. Nothing printed shows a key or a
password, and the access log masks credentials a client put in a URL
(:mod:`ctx_memory.server.access_log`).

``serve`` binds its address before it says it is serving: an address in use (or a host
that does not resolve) is one ``error:`` line and exit code 1, and uvicorn then serves on
the sockets bound.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import socket
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ctx_memory.config import Settings
    from ctx_memory.manager import ContextManager

__all__ = ["http_url", "is_loopback", "listen", "serve"]


class LogLevel(enum.StrEnum):
    """uvicorn's log levels (an unknown one is a usage error, before the server starts)."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"
    TRACE = "trace"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (pure)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def http_url(host: str, port: int, root_path: str = "") -> str:
    """``http://host:port/root`` with an IPv6 address in brackets (pure)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{root_path}"


def listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Sockets listening on ``host:port``, one per address the host resolves to.

    As asyncio's ``create_server`` (which uvicorn calls with a host and port) binds them:
    ``SO_REUSEADDR`` on POSIX, IPv6 sockets IPv6 only; with port 0, the port the first
    one got for the others.

    Raises:
        OSError: The host does not resolve, or an address is in use or not ours to bind.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):  # once each, in order
            if port == 0 and sockets:
                bind_to = (address[0], sockets[0].getsockname()[1], *address[2:])
            else:
                bind_to = address
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(bind_to)
            sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _settings_and_manager(ctx: typer.Context) -> tuple[Settings, ContextManager | None]:
    """The settings the global options select, or the embedded manager's."""
    from ctx_memory.cli import _Options  # noqa: PLC0415 - the CLI imports this module
    from ctx_memory.config import load_settings  # noqa: PLC0415
    from ctx_memory.manager import ContextManager  # noqa: PLC0415

    root = ctx.find_root().obj
    if isinstance(root, ContextManager):
        return root.settings, root
    options = root if isinstance(root, _Options) else _Options()
    return (options.settings() if options.overrides() else load_settings()), None


def _refuse_newer_data(settings: Settings, manager: ContextManager | None) -> None:
    """Raise ``StoreVersionError`` if the store holds data of a newer ctx_memory.

    Every request would fail, so the service does not start. A store unreachable now is
    no reason not to: requests get 503 until it is back.
    """
    from ctx_memory.errors import StoreError, StoreVersionError  # noqa: PLC0415
    from ctx_memory.manager import ContextManager  # noqa: PLC0415

    check = manager if manager is not None else ContextManager(settings=settings)
    try:
        check.session_exists("ctx-memory-serve")
    except StoreVersionError:
        raise
    except StoreError:
        pass
    finally:
        if check is not manager:
            check.close()


def serve(
    ctx: typer.Context,
    *,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0: every interface; needs keys).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers/--no-proxy-headers",
            help="Trust X-Forwarded-For/-Proto from --forwarded-allow-ips (behind a proxy).",
        ),
    ] = False,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(help="Proxy addresses whose X-Forwarded-* headers are trusted."),
    ] = None,
    root_path: Annotated[
        str, typer.Option(help="The path prefix a proxy serves the app under, e.g. /ctx.")
    ] = "",
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="uvicorn's log level.")
    ] = LogLevel.INFO,
) -> None:
    """Serve seed 001's endpoints, the /v1 API and the inspector (docs/server.md)."""
    try:
        import uvicorn  # noqa: PLC0415 - the server extra

        from ctx_memory.server import access_log  # noqa: PLC0415
        from ctx_memory.server.app import auth_enabled, create_app  # noqa: PLC0415
    except ImportError as e:
        from ctx_memory._extras import missing_extra  # noqa: PLC0415

        raise missing_extra("server", "ctx-memory serve", e) from e
    from ctx_memory.cli import _fail_with  # noqa: PLC0415
    from ctx_memory.cli._output import _fail, printable  # noqa: PLC0415
    from ctx_memory.errors import CtxMemoryError  # noqa: PLC0415

    try:
        settings, manager = _settings_and_manager(ctx)
        auth = auth_enabled(settings)
        if not auth and settings.server_auth != "off" and not is_loopback(host):
            _fail(
                f"refusing to serve on {host} without keys: set SERVER_API_KEYS and"
                ' SERVER_ADMIN_KEYS (docs/server.md), or SERVER_AUTH = "off" for an open'
                " service",
                code=2,
            )
        app = create_app(manager, settings)
        if not auth:  # one tenant, on the configured store: refuse what it cannot read
            _refuse_newer_data(settings, manager)
    except CtxMemoryError as e:
        _fail_with(e)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        root_path=root_path,
        log_level=log_level.value,
        reload=False,
    )  # configures uvicorn's loggers: the filter goes on after
    access_log.install()
    try:
        sockets = listen(host, port, config.backlog)
    except OSError as e:
        _fail(f"cannot listen on {http_url(host, port)}: {e.strerror or e}")
    tenants = len({entry.tenant for entry in settings.server_api_keys})
    who = (
        f"keys required ({tenants} tenant(s), {len(settings.server_admin_keys)} admin key(s))"
        if auth
        else "no keys (one open tenant)"
    )
    bound = int(sockets[0].getsockname()[1])
    typer.echo(
        printable(
            f"ctx_memory: serving the {settings.backend} store, {who}, chat model"
            f" {settings.server_chat_model!r}, on {http_url(host, bound)}"
            " (/docs: the API, /inspector: the inspector)"
            + (f"; behind the proxy at {root_path}" if root_path else "")
        ),
        err=True,
    )
    uvicorn.Server(config).run(sockets=sockets)
