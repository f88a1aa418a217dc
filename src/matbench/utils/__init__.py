"""Small helpers shared across the package (kept light: no torch; the CLI's help path imports
this package)."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path


def cache_root(name: str) -> Path:
    """``$MATBENCH_CACHE_DIR/<name>``, else ``~/.cache/matbench/<name>``: the one root of
    matbench's caches (dataset indexes, CLI help)."""
    root = os.environ.get("MATBENCH_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "matbench"
    return base / name


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's content, read in 16 MiB blocks; remembered per path, size and
    modification time (a weight file checked by several models is read once)."""
    stat = Path(path).stat()
    return _sha256_file(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256_file(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()
