"""The README's two commands on a fresh machine: nothing but ``make`` and ``python3``.

``make`` must not rely on a uv, a Python or a cache of the developer's: a checkout (the
files a clone would hold) is run with ``env -i HOME=<empty dir> PATH=/usr/sbin:/usr/bin:
/sbin:/bin``, as a new user on Debian would. There ``make demo`` must bootstrap uv
(``scripts/bootstrap_uv.py``: no pip, no venv module), build ``.venv`` on the system's
python3 and print the demo; ``make install redis`` (the whole of ``make test`` before
pytest) must do the same and find Redis. CI runs the whole ``make test`` that way
(``.ci/run``), so the suite is not run a second time from here.

The bootstrap itself is tested offline against a package index served on loopback.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BARE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
UV_PINNED = "0.13.9"  # the Makefile's UV_VERSION


def _load_bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bootstrap_uv", ROOT / "scripts/bootstrap_uv.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bootstrap_uv"] = module  # NamedTuple needs its module importable
    spec.loader.exec_module(module)
    return module


bootstrap_uv = _load_bootstrap()
Machine = bootstrap_uv.Machine
WheelFile = bootstrap_uv.WheelFile


# ---------------------------------------------------------------- the wheel for this machine

# uv 0.13.9's files on PyPI, as its simple index lists them.
UV_FILES = [
    "uv-0.13.9-py3-none-linux_armv6l.whl",
    "uv-0.13.9-py3-none-macosx_10_12_x86_64.whl",
    "uv-0.13.9-py3-none-macosx_11_0_arm64.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_armv7l.manylinux2014_armv7l.musllinux_1_1_armv7l.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_i686.manylinux2014_i686.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_ppc64le.manylinux2014_ppc64le.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_s390x.manylinux2014_s390x.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
    "uv-0.13.9-py3-none-manylinux_2_31_riscv64.musllinux_1_1_riscv64.whl",
    "uv-0.13.9-py3-none-musllinux_1_1_i686.whl",
    "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl",
    "uv-0.13.9-py3-none-win32.whl",
    "uv-0.13.9-py3-none-win_amd64.whl",
    "uv-0.13.9.tar.gz",
    "uv-0.13.8-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
]


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        (
            Machine("linux", "x86_64", "glibc", (2, 36)),  # Debian 12
            "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        ),
        (
            Machine("linux", "aarch64", "glibc", (2, 36)),  # the newer baseline wins
            "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
        ),
        (
            Machine("linux", "aarch64", "glibc", (2, 27)),  # too old for manylinux_2_28
            "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
        ),
        (
            Machine("linux", "x86_64", "musl", (0, 0)),  # Alpine
            "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl",
        ),
        (Machine("darwin", "arm64", "", (0, 0)), "uv-0.13.9-py3-none-macosx_11_0_arm64.whl"),
        (Machine("darwin", "x86_64", "", (0, 0)), "uv-0.13.9-py3-none-macosx_10_12_x86_64.whl"),
    ],
)
def test_pick_wheel_takes_the_build_for_the_machine(machine: Any, expected: str) -> None:
    files = [WheelFile(name, f"https://files.example/{name}", "0" * 64) for name in UV_FILES]
    assert bootstrap_uv.pick_wheel(files, "0.13.9", machine).filename == expected


@pytest.mark.parametrize(
    "machine",
    [
        Machine("linux", "x86_64", "glibc", (2, 12)),  # older than manylinux2014
        Machine("linux", "sparc64", "glibc", (2, 36)),
        Machine("freebsd14", "x86_64", "", (0, 0)),
    ],
)
def test_pick_wheel_refuses_a_machine_no_wheel_runs_on(machine: Any) -> None:
    files = [WheelFile(name, f"https://files.example/{name}", None) for name in UV_FILES]
    with pytest.raises(bootstrap_uv.BootstrapError, match=r"no uv 0\.13\.9 wheel"):
        bootstrap_uv.pick_wheel(files, "0.13.9", machine)


def test_this_machine_is_described_in_wheel_tag_terms() -> None:
    machine = bootstrap_uv.this_machine()
    if sys.platform.startswith("linux"):
        assert machine.system == "linux"
        assert machine.libc in ("glibc", "musl")
        if machine.libc == "glibc":
            assert machine.glibc >= (2, 17)
    assert machine.arch
    assert machine.arch == machine.arch.lower()


def test_parse_index_reads_json_and_html_pages() -> None:
    page = "https://index.example/simple/uv/"
    as_json = json.dumps(
        {
            "files": [
                {"filename": "uv-1-py3-none-any.whl", "url": "../../f/uv-1.whl",
                 "hashes": {"sha256": "ab" * 32}},
                {"filename": "uv-1.tar.gz", "url": "https://cdn.example/uv-1.tar.gz", "hashes": {}},
            ]
        }
    ).encode()  # fmt: skip
    files = bootstrap_uv.parse_index(as_json, "application/vnd.pypi.simple.v1+json", page)
    assert files == [
        WheelFile("uv-1-py3-none-any.whl", "https://index.example/f/uv-1.whl", "ab" * 32),
        WheelFile("uv-1.tar.gz", "https://cdn.example/uv-1.tar.gz", None),
    ]
    as_html = (
        b'<html><body><a href="../../f/uv-1-py3-none-any.whl#sha256=' + b"cd" * 32 + b'">'
        b"uv-1-py3-none-any.whl</a><br/><a href='/f/uv-1.tar.gz'>uv-1.tar.gz</a></body></html>"
    )
    files = bootstrap_uv.parse_index(as_html, "text/html", page)
    assert files == [
        WheelFile(
            "uv-1-py3-none-any.whl", "https://index.example/f/uv-1-py3-none-any.whl", "cd" * 32
        ),
        WheelFile("uv-1.tar.gz", "https://index.example/f/uv-1.tar.gz", None),
    ]


# ------------------------------------------------------ the bootstrap against a local index

FAKE_VERSION = "9.9.9"


def _platform_tag() -> str:
    machine = bootstrap_uv.this_machine()
    if machine.libc == "glibc":
        return f"manylinux_2_17_{machine.arch}"
    if machine.libc == "musl":
        return f"musllinux_1_1_{machine.arch}"
    return f"macosx_11_0_{machine.arch}"


def _fake_wheel() -> tuple[str, bytes]:
    """A uv wheel whose ``uv`` is a shell script that reports FAKE_VERSION."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for exe in ("uv", "uvx"):
            script = f"#!/bin/sh\necho '{exe} {FAKE_VERSION} (fake)'\n"
            wheel.writestr(f"uv-{FAKE_VERSION}.data/scripts/{exe}", script)
        wheel.writestr(f"uv-{FAKE_VERSION}.dist-info/METADATA", "Name: uv\n")
    return f"uv-{FAKE_VERSION}-py3-none-{_platform_tag()}.whl", buffer.getvalue()


class LocalIndex:
    """A PEP 691/503 simple index for ``uv`` on a loopback port; counts wheel downloads."""

    def __init__(self, *, html: bool = False, sha256: str | None = None) -> None:
        self.filename, self.wheel = _fake_wheel()
        digest = sha256 or hashlib.sha256(self.wheel).hexdigest()
        if html:
            link = f'<a href="/files/{self.filename}#sha256={digest}">{self.filename}</a>'
            self.page, self.page_type = f"<html><body>{link}</body></html>".encode(), "text/html"
        else:
            body = {"files": [{"filename": self.filename, "url": f"/files/{self.filename}",
                               "hashes": {"sha256": digest}}]}  # fmt: skip
            self.page = json.dumps(body).encode()
            self.page_type = "application/vnd.pypi.simple.v1+json"
        self.downloads = 0
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/simple/uv/":
                    body, kind = index.page, index.page_type
                elif self.path == f"/files/{index.filename}":
                    index.downloads += 1
                    body, kind = index.wheel, "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def __enter__(self) -> LocalIndex:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_pip_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the tests on the index: the pip fallback would go to the real one."""

    def refuse(version: str, into: Path) -> Path:
        raise bootstrap_uv.BootstrapError("pip fallback disabled by the test")

    monkeypatch.setattr(bootstrap_uv, "download_with_pip", refuse)
    monkeypatch.delenv("UV_INDEX_URL", raising=False)


@pytest.mark.usefixtures("no_pip_fallback")
@pytest.mark.parametrize("html", [False, True], ids=["json-index", "html-index"])
def test_bootstrap_installs_uv_from_the_index_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, html: bool
) -> None:
    dest = tmp_path / ".tools" / "bin"
    with LocalIndex(html=html) as index:
        monkeypatch.setenv("UV_DEFAULT_INDEX", index.url)
        uv = bootstrap_uv.bootstrap(dest, FAKE_VERSION)
        assert uv == dest / "uv"
        assert index.downloads == 1
        for exe in ("uv", "uvx"):
            assert (dest / exe).stat().st_mode & stat.S_IXUSR
        out = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=True)
        assert out.stdout.startswith(f"uv {FAKE_VERSION}")
        # the directory ignores itself, so a checkout stays clean
        assert (dest / ".gitignore").read_text().splitlines()[-1] == "*"
        # the pinned version is there: nothing is downloaded again
        assert bootstrap_uv.bootstrap(dest, FAKE_VERSION) == uv
        assert index.downloads == 1
    assert not list(dest.glob(".*.partial"))


@pytest.mark.usefixtures("no_pip_fallback")
def test_bootstrap_refuses_a_wheel_whose_sha256_does_not_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "bin"
    with LocalIndex(sha256="0" * 64) as index:
        monkeypatch.setenv("UV_DEFAULT_INDEX", index.url)
        with pytest.raises(bootstrap_uv.BootstrapError, match="does not match") as caught:
            bootstrap_uv.bootstrap(dest, FAKE_VERSION)
        assert index.downloads == 1
    assert "pip fallback disabled" in str(caught.value)  # the fallback was tried, too
    assert not (dest / "uv").exists()


def test_bootstrap_command_line_says_what_to_do_when_it_cannot_install(tmp_path: Path) -> None:
    # Nothing listens on port 9 and the version does not exist: both routes fail.
    env = {
        "PATH": BARE_PATH,
        "HOME": str(tmp_path),
        "UV_DEFAULT_INDEX": "http://127.0.0.1:9/simple",
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bootstrap_uv.py"), str(tmp_path / "bin"), "0.0.0.1"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "could not install uv 0.0.0.1" in done.stderr
    assert "make UV=/path/to/uv" in done.stderr
    assert not (tmp_path / "bin" / "uv").exists()


# -------------------------------------------------------------- the Makefile and its scripts


def test_make_refuses_a_uv_that_is_not_there(tmp_path: Path) -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "uv", f"UV={tmp_path}/missing-uv"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"UV={tmp_path}/missing-uv is not an executable" in done.stderr


def test_ensure_redis_names_the_apt_command_when_it_cannot_install() -> None:
    # A PATH with no redis, an apt-get that must not run, and a sudo that wants a password,
    # for a user who is not root (root runs the script as nobody; the script comes on stdin
    # and the PATH dir is world-readable, so nobody needs no access to the checkout).
    with tempfile.TemporaryDirectory() as tmp:
        bin_dir = Path(tmp)
        bin_dir.chmod(0o755)
        for tool in ("sort", "tr", "id"):
            found = shutil.which(tool)
            assert found, tool
            (bin_dir / tool).symlink_to(found)
        for fake, code in (
            ("apt-get", "echo apt-get must not run >&2; exit 99"),
            ("sudo", "exit 1"),
        ):
            (bin_dir / fake).write_text(f"#!/bin/sh\n{code}\n")
            (bin_dir / fake).chmod(0o755)
        nobody: dict[str, Any] = (
            {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
        )
        done = subprocess.run(
            ["/bin/bash", "-s"], input=(ROOT / "scripts/ensure-redis.sh").read_text(),
            env={"PATH": str(bin_dir)}, cwd=tmp, capture_output=True, text=True, timeout=60,
            check=False, **nobody,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "sudo apt-get install redis-server redis-tools" in done.stderr
    assert "must not run" not in done.stderr


# ------------------------------------------------ the README's commands on a bare machine


def _checkout_files() -> list[str]:
    """What a clone of this work tree would hold: tracked and new, not ignored, files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return sorted({name for name in listed.split("\0") if name and (ROOT / name).is_file()})


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A copy of the checkout beside a ``shared/`` dir (as CI lays it) and an empty HOME.

    Removed afterwards: HOME ends up holding uv's cache of every locked package.
    """
    base = tmp_path_factory.mktemp("fresh-machine")
    work = base / "ctx_memory"
    for name in _checkout_files():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, work / name)
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    if cache:  # the Makefile looks for ../shared/tiktoken-cache on offline machines
        (base / "shared").mkdir()
        (base / "shared" / "tiktoken-cache").symlink_to(Path(cache).resolve())
    home = base / "home"
    home.mkdir()
    yield {"work": work, "home": home}
    shutil.rmtree(base, ignore_errors=True)


def _bare_make(checkout: dict[str, Any], *targets: str) -> subprocess.CompletedProcess[str]:
    """``make TARGETS`` as the README's reader runs it on a fresh machine."""
    command = ["env", "-i", f"HOME={checkout['home']}", f"PATH={BARE_PATH}", "make", *targets]
    return subprocess.run(
        command, cwd=checkout["work"], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=1500, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_make_demo_on_a_bare_path_and_an_empty_home(fresh_checkout: dict[str, Any]) -> None:
    assert shutil.which("make", path=BARE_PATH), "the machine needs make"
    assert shutil.which("python3", path=BARE_PATH), "the machine needs python3"
    done = _bare_make(fresh_checkout, "demo")
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    # the demo printed its output: seed 001's flow, the chat loop, the stats
    assert "Messages for the LLM API" in done.stdout
    assert "Chat loop (ContextualChat" in done.stdout
    stats = json.loads(done.stdout[done.stdout.rindex("Memory stats:") + len("Memory stats:") :])
    assert stats["message_count"] >= 4
    work = fresh_checkout["work"]
    if shutil.which("uv", path=BARE_PATH) is None:  # the case of a fresh Debian
        assert f"installing uv {UV_PINNED}" in done.stderr
        assert (work / ".tools" / "bin" / "uv").is_file()
    # .venv is built on a Python found on the bare PATH (Debian's python3), not downloaded
    venv_cfg = dict(
        line.split(" = ", 1) for line in (work / ".venv" / "pyvenv.cfg").read_text().splitlines()
    )
    assert venv_cfg["home"] in BARE_PATH.split(":"), venv_cfg


@pytest.mark.slow
def test_make_test_prerequisites_on_a_bare_path(fresh_checkout: dict[str, Any]) -> None:
    # `make test` is `install redis` then pytest; CI runs all of it this way (.ci/run).
    assert shutil.which("make", path=BARE_PATH), "the machine needs make"
    done = _bare_make(fresh_checkout, "install", "redis")
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    work = fresh_checkout["work"]
    for tool in ("pytest", "ruff", "mypy"):
        assert (work / ".venv" / "bin" / tool).is_file(), tool
    assert shutil.which("redis-server", path=BARE_PATH)
    assert shutil.which("redis-cli", path=BARE_PATH)
