"""The docs build's hooks: examples marked to run are executed (a failing one fails the build),
and Sphinx roles of docstrings render as plain code."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGE = SimpleNamespace(file=SimpleNamespace(src_path="python.md"))


def test_examples_run_and_show_their_output() -> None:
    hooks = _hooks()
    text = "Intro\n\n<!-- run -->\n```python\nprint(6 * 7)\n```\n\nAfter\n"
    out = hooks.on_page_markdown(text, PAGE, None, None)
    assert "```text\n42\n```" in out and "<!-- run -->" not in out
    broken = "<!-- run -->\n```python\nraise SystemExit('boom')\n```\n"
    with pytest.raises(RuntimeError, match="python.md: the example failed"):
        hooks.on_page_markdown(broken, PAGE, None, None)


def test_roles_render_as_code() -> None:
    hooks = _hooks()
    html = "see :class:<code>~matbench.tasks.base.BaseTask</code> and :func:<code>a.b</code>"
    assert hooks.on_page_content(html, PAGE, None, None) == (
        "see <code>BaseTask</code> and <code>a.b</code>"
    )


def test_python_usage_page_has_a_runnable_example() -> None:
    text = (ROOT / "docs" / "python.md").read_text()
    assert "<!-- run -->\n```python\n" in text and "matbench.load(" in text
    assert "python.md" in (ROOT / "mkdocs.yml").read_text()
