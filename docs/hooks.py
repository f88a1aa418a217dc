"""mkdocs hooks: run the examples of the docs, and render Sphinx roles of docstrings plainly.

- A ```` ```python ```` block right after a ``<!-- run -->`` line is executed (in a fresh
  Python process, in a temporary folder, offline) when the site is built; its output is shown
  below it, and an example that fails fails the build.
- Docstrings rendered by mkdocstrings may hold Sphinx roles (``:class:`~a.B```); they are
  shown as plain code (``B``) instead of raw role text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RUN_BLOCK = re.compile(r"<!-- run -->\s*\n```python\n(.*?)\n```\n", re.DOTALL)
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc):<code>(~?)([\w.]+)</code>")
ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, page: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"{page}: the example failed:\n{run.stderr[-3000:]}")
    return run.stdout.rstrip()


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001
    def replace(match: re.Match[str]) -> str:
        output = _run(match.group(1), page.file.src_path)
        shown = f"```python\n{match.group(1)}\n```\n"
        return shown + (f"\nOutput (run when this page was built):\n\n```text\n{output}\n```\n" if output else "")

    return RUN_BLOCK.sub(replace, markdown)


def on_page_content(html: str, page, config, files) -> str:  # noqa: ANN001
    return ROLE.sub(
        lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>",
        html,
    )
