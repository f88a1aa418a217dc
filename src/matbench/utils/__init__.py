"""Small helpers shared across the package (kept light: no torch; the CLI's help path imports
this package)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(name: str) -> Path:
    """``$MATBENCH_CACHE_DIR/<name>``, else ``~/.cache/matbench/<name>``: the one root of
    matbench's caches (dataset indexes, CLI help)."""
    root = os.environ.get("MATBENCH_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "matbench"
    return base / name
