"""Shared fixtures: real Redis servers (single and a 3-master cluster), PostgreSQL, every store.

``REDIS_URL`` / ``REDIS_CLUSTER_URL`` point at servers you run yourself; otherwise the
suite starts ``redis-server`` from ``PATH`` on free loopback ports in a temp dir. When
``redis-server`` is missing the Redis tests fail under ``CI=true`` and are skipped
(with the reason) elsewhere. PostgreSQL likewise (the block at the end): ``POSTGRES_URL``,
else a server the suite starts with ``initdb`` / ``pg_ctl`` (``tests/pg_server.py``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.cluster

from ctx_memory.stores.memory import InMemoryStore
from ctx_memory.stores.redis import RedisStore
from ctx_memory.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from ctx_memory.stores.base import BaseStore

STORE_KINDS = ["memory", "sqlite", "redis", "cluster", "postgres"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _no_redis(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the Redis tests must run; install redis-server)")
    pytest.skip(reason)


def _redis_major() -> int:
    exe = shutil.which("redis-server")
    if exe is None:
        return 0
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    version = out.split("v=", 1)[1].split(".", 1)[0] if "v=" in out else "0"
    return int(version) if version.isdigit() else 0


# Fault tests stall the server with DEBUG SLEEP, which Redis 7 enables only on request.
_DEBUG_COMMAND = ("--enable-debug-command", "yes") if _redis_major() >= 7 else ()


def free_port() -> int:
    """A free loopback port whose cluster-bus twin (port + 10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return int(port)
    msg = "no free port pair found"
    raise RuntimeError(msg)


class RedisServer:
    """One ``redis-server`` process on a loopback port, in its own directory."""

    def __init__(self, directory: Path, *extra: str, port: int | None = None) -> None:
        self.directory = directory
        self.extra = extra
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        assert exe is not None
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "no", *_DEBUG_COMMAND, *self.extra]
        log = self.directory / "redis.log"
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    msg = f"redis-server on port {self.port} did not start; see {log}"
                    raise RuntimeError(msg) from None
                time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL (a crash), then wait for the process to be gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def _require_redis() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        _no_redis("redis-server/redis-cli not on PATH and REDIS_URL not set")


@pytest.fixture(scope="session")
def redis_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisServer]]:
    """Start extra private ``redis-server`` processes (stopped at the end of the session)."""
    started: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        _require_redis()
        server = RedisServer(tmp_path_factory.mktemp("redis"), *extra).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server_factory: Callable[..., RedisServer]) -> str:
    """URL of a single Redis server for the whole session."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    return redis_server_factory().url


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of one node of a 3-master Redis Cluster for the whole session."""
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    _require_redis()
    nodes = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield nodes[0].url
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def cluster_factory() -> Callable[..., list[RedisServer]]:
    """:func:`start_cluster`, for a test that needs a cluster of its own (the caller stops
    its nodes)."""
    _require_redis()
    return start_cluster


def start_cluster(
    root: Path, *, replicas: int = 0, node_timeout_ms: int = 5000
) -> list[RedisServer]:
    """A 3-master Redis Cluster (``replicas`` per master) in ``root``, at cluster_state:ok.

    The caller stops the nodes. ``nodes[0]`` is a master.
    """
    nodes = [
        RedisServer(
            root / f"n{i}",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
        )
        for i in range(3 * (1 + replicas))
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in nodes],
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for node in nodes:
            client = redis.Redis(port=node.port)
            while client.cluster("info")["cluster_state"] != "ok":
                if time.monotonic() > deadline:
                    msg = "the test Redis Cluster did not reach cluster_state:ok"
                    raise RuntimeError(msg)
                time.sleep(0.05)
            while (
                client.info("replication")["role"] == "slave"
                and client.info("replication").get("master_link_status") != "up"
            ):  # a replica that never synced would not take over from its master
                if time.monotonic() > deadline:
                    msg = "a replica of the test Redis Cluster did not sync"
                    raise RuntimeError(msg)
                time.sleep(0.05)
            client.close()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


@pytest.fixture
def key_prefix() -> str:
    """A key prefix unique to this test."""
    return f"t{uuid.uuid4().hex[:12]}"


def _cleanup(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for key in keys:
        client.delete(key)
    client.close()


@pytest.fixture
def make_store(
    request: pytest.FixtureRequest, key_prefix: str, tmp_path: Path
) -> Iterator[Callable[..., BaseStore]]:
    """Build stores of the parametrised kind (``memory|sqlite|redis|cluster``).

    Stores built by one test share their data (same Redis prefix, same SQLite file), like
    several processes on one backend; all of it is removed after the test.
    """
    kind: str = request.param
    made: list[BaseStore] = []
    cleanup: list[Callable[[], None]] = []
    url = ""
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        cleanup.append(lambda: _cleanup(redis.Redis.from_url(url), key_prefix))
    elif kind == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        cleanup.append(lambda: _cleanup(redis.cluster.RedisCluster.from_url(url), key_prefix))
    elif kind == "postgres":  # the PostgreSQL block below: one schema per test
        return (yield from _postgres_stores(request, made))

    def make(**kwargs: Any) -> BaseStore:
        store: BaseStore
        if kind == "memory":
            store = InMemoryStore(**kwargs)
        elif kind == "sqlite":
            store = SqliteStore(str(tmp_path / "ctx.sqlite3"), **kwargs)
        else:
            store = RedisStore(url, cluster=kind == "cluster", key_prefix=key_prefix, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
    for clean in cleanup:
        clean()


@pytest.fixture
def store(make_store: Callable[..., BaseStore]) -> BaseStore:
    """A fresh store of the parametrised kind, no TTL, no session limit."""
    return make_store()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``make_store`` (and so ``store``) over every kind of store.

    A test narrows the kinds with ``@pytest.mark.stores("redis", "cluster")``.
    """
    if "make_store" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        kinds = list(marker.args) if marker else STORE_KINDS
        marks = {
            "redis": pytest.mark.redis,
            "cluster": pytest.mark.cluster,
            "postgres": pytest.mark.postgres,
        }
        metafunc.parametrize(
            "make_store",
            [pytest.param(k, id=k, marks=[marks[k]] if k in marks else []) for k in kinds],
            indirect=True,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stores(*kinds): run a store-parametrised test on these kinds only"
    )


@pytest.fixture
def manager_factory(make_store: Callable[..., BaseStore]) -> Callable[..., Any]:
    """Build ``ContextManager(store=<parametrised store>, **settings)`` objects.

    ``manager_factory(ttl_seconds=1, max_sessions=2, **setting_overrides)``; the token
    counter is approximate unless a test asks otherwise, so no tiktoken data is needed.
    """
    from ctx_memory.manager import ContextManager

    made: list[Any] = []

    def build(
        *, ttl_seconds: float | None = None, max_sessions: int | None = None, **overrides: Any
    ) -> Any:
        store = make_store(ttl_seconds=ttl_seconds, max_sessions=max_sessions)
        overrides.setdefault("token_counter", "approximate")
        cm = ContextManager(store=store, **overrides)
        made.append(cm)
        return cm

    return build  # stores are closed by make_store


# ---------------------------------------------------------------- Redis Sentinel

SENTINEL_SERVICE = "ctxmaster"


class SentinelServer(RedisServer):
    """One Redis Sentinel process (``redis-sentinel``, or ``redis-server --sentinel``)."""

    def __init__(self, directory: Path, config: str) -> None:
        super().__init__(directory)
        self.config = config

    def start(self) -> SentinelServer:
        conf = self.directory / "sentinel.conf"  # Sentinel rewrites it: one per process
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n{self.config}")
        exe = shutil.which("redis-sentinel")
        args = [exe, str(conf)] if exe else [shutil.which("redis-server"), str(conf), "--sentinel"]
        log = self.directory / "sentinel.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen([str(a) for a in args], stdout=out, stderr=out)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    msg = f"Redis Sentinel on port {self.port} did not start; see {log}"
                    raise RuntimeError(msg) from None
                time.sleep(0.02)


class SentinelSetup:
    """A master, a replica and three sentinels watching them, on loopback ports.

    The data servers require ``password``, the sentinels ``sentinel_password``; ``url``
    reaches the master through all three sentinels.
    """

    password = "m-pw-7f3a"
    sentinel_password = "s-pw-91c2"

    def __init__(self, root: Path) -> None:
        auth = ("--requirepass", self.password, "--masterauth", self.password)
        self.master = RedisServer(root / "master", *auth)
        self.replica = RedisServer(
            root / "replica", *auth, "--replicaof", "127.0.0.1", str(self.master.port)
        )
        config = (
            f'requirepass "{self.sentinel_password}"\n'
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master.port} 2\n"
            f'sentinel auth-pass {SENTINEL_SERVICE} "{self.password}"\n'
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 3000\n"
        )
        self.sentinels = [SentinelServer(root / f"sentinel{i}", config) for i in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return (
            f"redis+sentinel://:{self.password}@{hosts}/{SENTINEL_SERVICE}/0"
            f"?sentinel_password={self.sentinel_password}"
        )

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        port = self.sentinels[index].port
        return redis.Redis(port=port, password=self.sentinel_password, socket_timeout=5)

    def data_client(self, server: RedisServer) -> redis.Redis:
        return redis.Redis(port=server.port, password=self.password, socket_timeout=5)

    def master_port(self, index: int = 0) -> int:
        """The master's port as sentinel ``index`` reports it."""
        with self.sentinel_client(index) as client:
            _, port = client.sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
        return int(port)

    def wait_until(self, done: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                logs = [s.directory / "sentinel.log" for s in self.sentinels]
                msg = f"timed out waiting until {what}; see {logs}"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def ready(self) -> bool:
        """Every sentinel sees the master up, the replica and the two other sentinels."""
        for index in range(len(self.sentinels)):
            with self.sentinel_client(index) as client:
                state = client.sentinel_master(SENTINEL_SERVICE)
            if (
                state["num-slaves"] < 1
                or state["num-other-sentinels"] < len(self.sentinels) - 1
                or state["is_sdown"]
                or state["is_odown"]
            ):
                return False
        with self.data_client(self.master) as client:
            return bool(client.info("replication").get("connected_slaves", 0) >= 1)

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        with self.sentinel_client() as client:
            mode = client.info("server").get("redis_mode")
        if mode != "sentinel":
            _no_redis(f"no Redis Sentinel: the server runs in {mode} mode; install redis-sentinel")
        self.wait_until(self.ready, "the sentinels watch the master, its replica and each other")
        return self

    def stop(self) -> None:
        for server in [*self.sentinels, self.master, self.replica]:
            server.kill()  # a master waits for its replicas on SIGTERM: nothing to keep


@pytest.fixture
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A fresh master + replica + three sentinels for this test (tests fail over)."""
    _require_redis()  # redis-sentinel if installed, else redis-server --sentinel (same binary)
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel"))
    try:
        yield setup.start()
    finally:
        setup.stop()


# ---------------------------------------------------------------- PostgreSQL
# One server for the whole session (POSTGRES_URL, else started here), one schema per test.
# Missing PostgreSQL fails the tests under CI=true (scripts/ensure-postgres.sh installs it)
# and skips them elsewhere. Fault tests start private servers they can stop and restart.


def _no_postgres(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run; install postgresql)")
    pytest.skip(reason)


def _require_postgres() -> None:
    from pg_server import find_bin_dir

    if find_bin_dir() is None:
        _no_postgres(
            "initdb/pg_ctl not found (PATH, /usr/lib/postgresql/*/bin) and POSTGRES_URL not set"
        )


@pytest.fixture(scope="session")
def postgres_server_factory() -> Iterator[Callable[..., Any]]:
    """Start private PostgreSQL servers (stopped and removed at the end of the session).

    Each runs in a fresh ``/tmp/ctx-pg-*`` directory (pytest's own temp dirs are private to
    root, and the server runs as the ``postgres`` user when the tests run as root).
    """
    import tempfile
    from pathlib import Path

    from pg_server import PostgresServer

    started: list[Any] = []

    def start(*settings: str, durable: bool = False) -> Any:
        """A server; ``durable``: fsync and synchronous commit on (crash tests)."""
        _require_postgres()
        from pg_server import FAST

        directory = Path(tempfile.mkdtemp(prefix="ctx-pg-"))
        server = PostgresServer(directory, (*(() if durable else FAST), *settings))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        try:
            server.stop("immediate")
        finally:
            shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server_factory: Callable[..., Any]) -> str:
    """URL of one PostgreSQL server for the whole session (it holds a password)."""
    url = os.environ.get("POSTGRES_URL")
    if url:
        return url
    return str(postgres_server_factory().url)


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema name unique to this test, dropped after it."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _postgres_stores(
    request: pytest.FixtureRequest, made: list[BaseStore]
) -> Iterator[Callable[..., BaseStore]]:
    """``make_store``'s body for ``postgres``: stores on one schema of the session's server."""
    from ctx_memory.stores.postgres import PostgresStore

    url = request.getfixturevalue("postgres_url")
    schema = request.getfixturevalue("pg_schema")

    def make(**kwargs: Any) -> BaseStore:
        kwargs.setdefault("pool_size", 4)
        store = PostgresStore(url, schema=schema, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture(autouse=True)
def _tracing_off_after_each_test() -> Iterator[None]:
    """A test (or an example) that turns ctx_memory.tracing on leaves it off for the next."""
    yield
    from ctx_memory import tracing

    tracing.uninstrument()
