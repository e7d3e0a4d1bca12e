"""The Dockerfile is linted: hadolint when it is installed, and these checks always.

No image is built here (CI has no Docker daemon): the file is parsed and held to what a
reviewer would ask of it (a pinned base, a non-root user, a health check, the server
extra, ``ctx-memory serve`` on every interface, sources that exist).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "a continuation line runs off the end"
    pairs = []
    for line in logical:
        word, _, rest = line.strip().partition(" ")
        pairs.append((word.upper(), rest.strip()))
    return pairs


def test_hadolint_when_installed() -> None:
    """hadolint on the file; without hadolint the tests below are the lint (never a skip)."""
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        return
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_instruction_is_known() -> None:
    known = {"FROM", "ENV", "WORKDIR", "COPY", "ARG", "RUN", "USER", "EXPOSE", "HEALTHCHECK",
             "ENTRYPOINT", "CMD", "LABEL"}  # fmt: skip
    assert {word for word, _ in instructions()} <= known


def test_the_base_image_is_pinned_python_311_slim() -> None:
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert len(froms) == 1
    image = froms[0].split()[0]
    name, _, tag = image.partition(":")
    assert name == "python"
    assert tag.startswith("3.11")
    assert "slim" in tag
    assert tag != "latest"
    assert re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), "a full version, not a moving tag"


def test_it_runs_as_a_non_root_user() -> None:
    steps = instructions()
    users = [rest for word, rest in steps if word == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    last_user = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    last_run = max(i for i, (word, _) in enumerate(steps) if word == "RUN")
    assert last_user > last_run  # nothing runs as root after the switch... and the app doesn't


def test_it_has_a_healthcheck_on_the_service() -> None:
    (check,) = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
    assert "CMD" in check
    assert "/healthz" in check
    assert "--interval" in check


def test_it_installs_the_server_extra_and_serves_on_every_interface() -> None:
    steps = instructions()
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    extras = re.search(r'"\.\[([a-z,]+)\]"', runs)
    assert extras is not None
    assert {"server", "postgres"} <= set(extras.group(1).split(","))
    assert "--no-cache-dir" in runs
    entrypoint = json.loads(next(rest for word, rest in steps if word == "ENTRYPOINT"))
    command = json.loads(next(rest for word, rest in steps if word == "CMD"))
    assert entrypoint + command[:1] == ["ctx-memory", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    exposed = next(rest for word, rest in steps if word == "EXPOSE")
    assert command[command.index("--port") + 1] == exposed


def test_copied_sources_exist() -> None:
    for word, rest in instructions():
        if word == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
