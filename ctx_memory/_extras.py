"""The ``ImportError`` an optional adapter raises when its extra is not installed.

:mod:`ctx_memory.middleware` needs the ``agents`` extra and :mod:`ctx_memory.classic` the
``classic`` extra. Each imports its extra's package at module level and, when that fails,
raises :func:`missing_extra`'s error, whose message names the commands that add the
extra however ctx_memory itself was installed: from a package index, from a checkout
with pip (or ``uv add``), or in the checkout's own uv environment. When ctx_memory was
installed from a local directory (PEP 610 ``direct_url.json``) or runs from a checkout,
the commands carry that directory's path.

Example:
    .. code-block:: python

        from ctx_memory._extras import missing_extra

        try:
            from langchain.agents.middleware import AgentMiddleware
        except ImportError as e:
            raise missing_extra("agents", __name__, e) from e
"""

from __future__ import annotations

import json
import re
import shlex
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["install_commands", "missing_extra"]

DISTRIBUTION = "ctx-memory"
PLACEHOLDER = "/path/to/ctx_memory"  # shown when ctx_memory did not come from a checkout


def _quoted(arg: str) -> str:
    """Quote a shell argument that holds ``[extra]`` (a glob in zsh) so any shell takes it."""
    return f'"{arg}"' if not re.search(r'["$`\\]', arg) else shlex.quote(arg)


def checkout_dir() -> Path | None:
    """The local directory ctx_memory was installed from, or runs from, if any.

    Returns:
        The directory of ``pyproject.toml`` for an install from a local directory (pip's
        or uv's ``direct_url.json``, editable or not) or for a checkout on ``sys.path``
        with nothing installed; None for an install from an index or a wheel file.
    """
    try:
        dist = distribution(DISTRIBUTION)
    except PackageNotFoundError:
        root = Path(__file__).resolve().parent.parent
        return root if (root / "pyproject.toml").is_file() else None
    raw = dist.read_text("direct_url.json")
    if not raw:
        return None
    try:
        direct = json.loads(raw)
    except ValueError:
        return None
    url = urlparse(str(direct.get("url", "")))
    if url.scheme != "file" or "dir_info" not in direct:
        return None  # an archive or VCS URL: no directory to point at
    return Path(unquote(url.path))


def requirement_of(extra: str) -> str | None:
    """The requirement an extra adds, from the installed metadata (e.g. ``langchain<2,>=1.0``)."""
    try:
        requires = distribution(DISTRIBUTION).requires or []
    except PackageNotFoundError:
        return None
    marker = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    found = [r.split(";", 1)[0].strip() for r in requires if marker.search(r)]
    return ", ".join(found) or None


def install_commands(extra: str, checkout: Path | None) -> list[tuple[str, str]]:
    """The commands that install ``extra``, each with where it applies.

    Args:
        extra: The extra's name, e.g. ``"agents"``.
        checkout: The ctx_memory checkout to name, or None for a placeholder path.

    Returns:
        ``(command, where)`` pairs: from a package index, from a checkout with pip (and
        the ``uv add`` equivalent), and in the checkout's own ``.venv`` with ``uv sync``.
    """
    path = str(checkout) if checkout is not None else PLACEHOLDER
    return [
        (f"pip install {_quoted(f'{DISTRIBUTION}[{extra}]')}", "from a package index"),
        (
            f"pip install -e {_quoted(f'{path}[{extra}]')}",
            f"from a checkout (with uv: uv add --editable {shlex.quote(path)} --extra {extra})",
        ),
        (
            f"cd {shlex.quote(path)} && uv sync --extra {extra}",
            "the checkout's own .venv (`make install` there adds every extra)",
        ),
    ]


def missing_extra(extra: str, module: str, cause: BaseException | None = None) -> ImportError:
    """Build the ``ImportError`` for a module whose optional extra is not installed.

    Args:
        extra: The extra that provides the missing package, e.g. ``"agents"``.
        module: The module that needs it, e.g. ``"ctx_memory.middleware"``.
        cause: The original ``ImportError``; its message is quoted (it tells a missing
            package from one too old to have the name imported).

    Returns:
        The error to raise (``raise missing_extra(...) from e``), with ``name`` set to the
        module that needs the extra.
    """
    requirement = requirement_of(extra)
    needs = f"the {extra!r} extra" + (f" ({requirement})" if requirement else "")
    why = f": {cause}" if cause is not None else ""
    commands = install_commands(extra, checkout_dir())
    width = max(len(command) for command, _ in commands)
    lines = [f"  {command:<{width}}  # {where}" for command, where in commands]
    msg = f"{module} needs {needs}{why}. Install it with one of:\n" + "\n".join(lines)
    return ImportError(msg, name=module)
