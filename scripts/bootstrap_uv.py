"""Install a pinned uv into a project-local directory with nothing but ``python3``.

    python3 scripts/bootstrap_uv.py .tools/bin 0.13.9

``make`` runs this when no ``uv`` is on ``PATH`` (nor in ``~/.local/bin``); it returns at
once when DEST already holds that version. Debian's own ``python3`` refuses
``pip install --user`` (PEP 668, "externally managed") and ships without ``venv`` /
``ensurepip`` unless ``python3-venv`` is installed, so this script needs neither: it reads
the uv release's file list from the package index (PyPI's JSON simple API, PEP 691, or the
HTML one, PEP 503), downloads the wheel built for this machine, checks its sha256 against
the index, and unpacks the ``uv`` and ``uvx`` executables that the wheel carries in its
``.data/scripts`` directory into DEST. Nothing is installed into any Python.

The index is ``$UV_DEFAULT_INDEX`` or ``$UV_INDEX_URL`` when set (the mirror uv itself is
told to use), else PyPI. If that fails and ``python3 -m pip`` works, ``pip download``
fetches the wheel instead, with pip's own configuration (``pip.conf`` mirrors, proxies).

Written for any python3 from 3.8 on: it runs before the project's environment exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

PYPI_SIMPLE = "https://pypi.org/simple"
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
TIMEOUT = 60  # seconds per request
EXECUTABLES = ("uv", "uvx")
# platform.machine() spellings -> the wheel tag's architecture
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64", "i386": "i686"}


class BootstrapError(Exception):
    """Something this script cannot work around; the message says what to do."""


class WheelFile(NamedTuple):
    """One file of the release as the index lists it."""

    filename: str
    url: str
    sha256: str | None


class Machine(NamedTuple):
    """What decides which uv wheel runs here."""

    system: str  # "linux", "darwin", ...
    arch: str  # wheel-tag spelling: x86_64, aarch64, ...
    libc: str  # "glibc", "musl" or "" (not Linux)
    glibc: tuple[int, int]  # (0, 0) unless glibc


def this_machine() -> Machine:
    """Describe the running machine in wheel-tag terms."""
    system = sys.platform
    if system.startswith("linux"):
        system = "linux"
    arch = platform.machine().lower()
    arch = ARCH_ALIASES.get(arch, arch)
    libc, glibc = "", (0, 0)
    if system == "linux":
        name, version = platform.libc_ver()
        if name == "glibc":
            parts = [int(p) for p in re.findall(r"\d+", version)[:2]]
            libc = "glibc"
            glibc = (parts[0], parts[1]) if len(parts) == 2 else (2, 17)
        else:
            libc = "musl"
    if system == "darwin" and arch == "aarch64":
        arch = "arm64"  # macOS wheels say arm64
    return Machine(system, arch, libc, glibc)


def platform_score(tag: str, machine: Machine) -> int | None:
    """How well a wheel platform tag fits the machine: None if it does not run here.

    Among the tags that run, a higher score is a more specific build (a newer glibc
    baseline), which is what pip and uv would pick too.
    """
    if machine.system == "linux" and machine.libc == "glibc":
        legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
        m = re.fullmatch(r"(manylinux\d+)_(.+)", tag)
        if m and m.group(1) in legacy and m.group(2) == machine.arch:
            needed = legacy[m.group(1)]
        else:
            m = re.fullmatch(r"manylinux_(\d+)_(\d+)_(.+)", tag)
            if not m or m.group(3) != machine.arch:
                return None
            needed = (int(m.group(1)), int(m.group(2)))
        return needed[0] * 1000 + needed[1] if needed <= machine.glibc else None
    if machine.system == "linux" and machine.libc == "musl":
        m = re.fullmatch(r"musllinux_(\d+)_(\d+)_(.+)", tag)
        return int(m.group(2)) if m and m.group(3) == machine.arch else None
    if machine.system == "darwin":
        m = re.fullmatch(r"macosx_(\d+)_(\d+)_(.+)", tag)
        if m and m.group(3) in (machine.arch, "universal2"):
            return 1 if m.group(3) == machine.arch else 0
    return None


def pick_wheel(files: list[WheelFile], version: str, machine: Machine) -> WheelFile:
    """The uv wheel of ``version`` that runs on ``machine``."""
    best: tuple[int, WheelFile] | None = None
    for f in files:
        name = f.filename
        if not (name.startswith(f"uv-{version}-") and name.endswith(".whl")):
            continue
        platforms = name[: -len(".whl")].split("-")[-1]
        scores = [platform_score(tag, machine) for tag in platforms.split(".")]
        score = max((s for s in scores if s is not None), default=None)
        if score is not None and (best is None or score > best[0]):
            best = (score, f)
    if best is None:
        msg = (
            f"the index lists no uv {version} wheel for {machine.system}/{machine.arch}"
            f"{'/' + machine.libc if machine.libc else ''}"
        )
        raise BootstrapError(msg)
    return best[1]


class _Anchors(HTMLParser):
    """Collects ``<a href>`` links of a PEP 503 project page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []  # (href, text)
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links.append((self._href, data.strip()))
            self._href = None


def parse_index(body: bytes, content_type: str, page_url: str) -> list[WheelFile]:
    """The files a project page lists, from its JSON (PEP 691) or HTML (PEP 503) form."""
    if "json" in content_type:
        data = json.loads(body)
        return [
            WheelFile(
                f["filename"],
                urllib.parse.urljoin(page_url, f["url"]),
                (f.get("hashes") or {}).get("sha256"),
            )
            for f in data.get("files", [])
        ]
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    files = []
    for href, text in parser.links:
        url, _, fragment = href.partition("#")
        digest = fragment[len("sha256=") :] if fragment.startswith("sha256=") else None
        filename = text or urllib.parse.unquote(url.rsplit("/", 1)[-1])
        files.append(WheelFile(filename, urllib.parse.urljoin(page_url, url), digest))
    return files


def _open(url: str) -> tuple[bytes, str]:
    if not url.startswith(("https://", "http://", "file://")):
        msg = f"refusing to fetch {url!r}: not an http(s) or file URL"
        raise BootstrapError(msg)
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})  # noqa: S310 - scheme checked
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - scheme checked
        return response.read(), response.headers.get("Content-Type", "")


def download_from_index(index: str, version: str, machine: Machine, into: Path) -> Path:
    """Download the wheel from a simple index and check its sha256; return its path."""
    page = index.rstrip("/") + "/uv/"
    body, content_type = _open(page)
    wheel = pick_wheel(parse_index(body, content_type, page), version, machine)
    if not wheel.sha256:
        msg = f"{page} gives no sha256 for {wheel.filename}; refusing an unchecked download"
        raise BootstrapError(msg)
    data, _ = _open(wheel.url)
    digest = hashlib.sha256(data).hexdigest()
    if digest != wheel.sha256:
        msg = f"{wheel.filename}: sha256 {digest} does not match the index's {wheel.sha256}"
        raise BootstrapError(msg)
    path = into / wheel.filename
    path.write_bytes(data)
    return path


def download_with_pip(version: str, into: Path) -> Path:
    """Let ``python3 -m pip download`` fetch the wheel (pip's own index settings apply)."""
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--dest", str(into), f"uv=={version}",
    ]  # fmt: skip
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    wheels = sorted(into.glob(f"uv-{version}-*.whl"))
    if result.returncode != 0 or not wheels:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        msg = f"pip download failed: {said[-1] if said else f'exit {result.returncode}'}"
        raise BootstrapError(msg)
    return wheels[0]


def unpack(wheel: Path, version: str, dest: Path) -> None:
    """Copy ``uv`` and ``uvx`` out of the wheel's scripts directory into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / ".gitignore").write_text("# written by scripts/bootstrap_uv.py\n*\n")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for exe in EXECUTABLES:
            member = f"uv-{version}.data/scripts/{exe}"
            if member not in names:
                msg = f"{wheel.name} has no {member}"
                raise BootstrapError(msg)
            partial = dest / f".{exe}.partial"
            with archive.open(member) as src, partial.open("wb") as out:
                shutil.copyfileobj(src, out)
            partial.chmod(0o755)
            partial.replace(dest / exe)  # atomic: a concurrent make sees old or new


def installed_version(uv: Path) -> str | None:
    """The version ``uv --version`` reports, or None if it does not run."""
    if not uv.is_file():
        return None
    try:
        out = subprocess.run(  # noqa: S603 - our own binary, fixed argv
            [str(uv), "--version"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"uv (\S+)", out)
    return m.group(1) if m else None


def bootstrap(dest: Path, version: str) -> Path:
    """Make ``dest/uv`` the pinned uv, downloading it if needed; return its path."""
    uv = dest / "uv"
    if installed_version(uv) == version:
        return uv
    print(f"installing uv {version} into {dest}", file=sys.stderr)
    index = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or PYPI_SIMPLE
    machine = this_machine()
    failures = []
    with tempfile.TemporaryDirectory(prefix="uv-bootstrap-") as tmp:
        wheel = None
        try:
            wheel = download_from_index(index, version, machine, Path(tmp))
        except (OSError, ValueError, BootstrapError) as e:  # URLError is an OSError
            failures.append(f"{index}: {e}")
        if wheel is None:
            try:
                wheel = download_with_pip(version, Path(tmp))
            except (OSError, BootstrapError) as e:
                failures.append(f"pip: {e}")
        if wheel is None:
            raise BootstrapError("; ".join(failures))
        unpack(wheel, version, dest)
    if installed_version(uv) != version:
        msg = f"{uv} was unpacked but `{uv} --version` does not report {version}"
        raise BootstrapError(msg)
    return uv


def main(argv: list[str]) -> int:
    """Command line: ``bootstrap_uv.py DEST VERSION``."""
    if len(argv) != 2:
        print("usage: python3 scripts/bootstrap_uv.py DEST_DIR UV_VERSION", file=sys.stderr)
        return 2
    dest, version = Path(argv[0]), argv[1]
    try:
        bootstrap(dest, version)
    except BootstrapError as e:
        print(
            f"error: could not install uv {version}: {e}\n"
            "Install uv yourself (https://docs.astral.sh/uv/getting-started/installation/, "
            "or `pipx install uv`) and run make again, or point make at it: make UV=/path/to/uv",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
