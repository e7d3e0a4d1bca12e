"""Render the README screenshots from the notebooks' own output with headless Chromium.

    uv run python scripts/make_screenshots.py    # needs `chromium` (apt-get install chromium)

Executes ``notebooks/02_sources_and_retrievers.ipynb`` in a fresh kernel (this
interpreter), takes the ``text/html`` output of the cells tagged ``screenshot-session`` and
``screenshot-assembly``, wraps each in a page and screenshots it to ``docs/*.png``. Not
run by the test suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "02_sources_and_retrievers.ipynb"
DOCS = ROOT / "docs"
SHOTS = {  # cell tag -> (image name, window height)
    "screenshot-session": ("session-view", 1250),
    "screenshot-assembly": ("assembly-view", 900),
}
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="margin:16px;background:#fff">{body}</body></html>
"""


def execute(path: Path) -> nbformat.NotebookNode:
    """Run the notebook in a kernel on this interpreter (a temp kernelspec, found first)."""
    root = Path(tempfile.mkdtemp(prefix="ctx-memory-kernel-"))
    spec = root / "kernels" / "ctx-memory-screenshots"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    os.environ["JUPYTER_PATH"] = str(root)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="ctx-memory-screenshots",
        timeout=240,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    shutil.rmtree(root, ignore_errors=True)
    return nb


def html_output(nb: nbformat.NotebookNode, tag: str) -> str:
    """The ``text/html`` output of the cell tagged ``tag``."""
    for cell in nb.cells:
        if tag in cell.metadata.get("tags", []):
            for output in cell.outputs:
                html = output.get("data", {}).get("text/html")
                if html:
                    return "".join(html) if isinstance(html, list) else str(html)
    msg = f"no HTML output in the cell tagged {tag!r} of {NOTEBOOK.name}"
    raise SystemExit(msg)


def screenshot(page: Path, image: Path, height: int) -> None:
    """Render ``page`` with headless Chromium into ``image`` (1100 px wide)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        msg = "chromium not found: apt-get install -y chromium"
        raise SystemExit(msg)
    with tempfile.TemporaryDirectory(prefix="ctx-memory-chromium-") as profile:
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--screenshot={image}",
                f"--window-size=1100,{height}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
        )


def main() -> None:
    """Execute the notebook and write every screenshot."""
    DOCS.mkdir(exist_ok=True)
    nb = execute(NOTEBOOK)
    with tempfile.TemporaryDirectory(prefix="ctx-memory-pages-") as pages:
        for tag, (name, height) in SHOTS.items():
            page = Path(pages) / f"{name}.html"
            page.write_text(PAGE.format(title=name, body=html_output(nb, tag)), encoding="utf-8")
            image = DOCS / f"{name}.png"
            screenshot(page, image, height)
            print(f"wrote {image.relative_to(ROOT)} from {NOTEBOOK.name} [{tag}]")


if __name__ == "__main__":
    main()
