"""A private PostgreSQL server on a free loopback port, for the tests and the benchmark.

``initdb`` in a temp dir, then ``pg_ctl start``; no Docker, nothing system-wide. PostgreSQL
refuses to run as root, so when this process is root the data directory is handed to the
``postgres`` system user (Debian's ``postgresql`` package creates it) and every server
command runs as that user through ``runuser``. The superuser ``postgres`` has a password
and TCP connections must give it (``scram-sha-256``), so every URL the tests use carries a
secret that must never be printed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["PASSWORD", "PostgresServer", "find_bin_dir", "free_port"]

PASSWORD = "pg-Secr3t-4f9a"
"""The superuser's password on every server this module starts."""

# Fast and small: the data is thrown away after the run.
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (PATH, then Debian's layout)."""
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server in ``directory`` (its data, socket and log), on a loopback port.

    Args:
        directory: Created if missing; owned by ``postgres`` when running as root.
        settings: Extra ``name=value`` server settings (``postgresql.conf``).
        port: A fixed port (default: a free one).
    """

    def __init__(
        self, directory: Path, settings: tuple[str, ...] = FAST, *, port: int | None = None
    ) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            msg = "initdb/pg_ctl not found (install Debian's postgresql package)"
            raise RuntimeError(msg)
        self.bin = bin_dir
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = port or free_port()
        self.settings = (
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={directory}",
            "shared_preload_libraries=pg_stat_statements",
            "max_connections=200",
            *settings,
        )
        self._initialised = False
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The superuser's URL (password included: keep it out of output)."""
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, *args: str | Path) -> list[str]:
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return command

    def _run(self, *args: str | Path) -> None:
        run = subprocess.run(
            self._as_owner(*args), capture_output=True, text=True, timeout=120, check=False
        )
        if run.returncode != 0:
            msg = f"{Path(str(args[0])).name} failed ({run.returncode}): {run.stderr[-2000:]}"
            raise RuntimeError(msg)

    def init(self) -> None:
        """``initdb`` (UTF-8, C locale, the superuser's password from a file)."""
        pwfile = self.directory / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.directory, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            self.bin / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
        )
        pwfile.unlink()
        self._initialised = True

    def start(self) -> PostgresServer:
        """Start the server (``initdb`` first, once) and wait until it accepts connections."""
        if not self._initialised:
            self.init()
        options = " ".join(f"-c {s}" for s in self.settings) + f" -p {self.port}"
        self._run(
            self.bin / "pg_ctl",
            "start",
            "-D",
            self.data,
            "-l",
            self.log,
            "-w",
            "-t",
            "60",
            "-o",
            options,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    msg = f"PostgreSQL on port {self.port} did not start; see {self.log}"
                    raise RuntimeError(msg) from None
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>`` (``immediate`` is a crash: no checkpoint)."""
        if (self.data / "postmaster.pid").exists():
            self._run(self.bin / "pg_ctl", "stop", "-D", self.data, "-m", mode, "-w", "-t", "60")
