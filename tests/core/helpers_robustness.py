"""Building blocks of the hostile-input cases: editing fake data, bad files, a memory limit."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    """Rewrite a JSON file with ``change(data)`` (which may edit in place and return None).
    NaN is written as the non-standard ``NaN`` literal, as Python's json module does."""
    data = json.loads(path.read_text())
    out = change(data)
    path.write_text(json.dumps(data if out is None else out))


def edit_json_gz(path: Path, change: Callable[[Any], Any]) -> None:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    out = change(data)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(data if out is None else out, f)


def png_bomb(path: Path, width: int = 60_000, height: int = 60_000) -> Path:
    """A tiny, valid PNG header announcing ``width`` x ``height`` grey pixels (a
    decompression bomb: a few bytes on disk, gigabytes once decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * 16  # the data stops early: only the header matters
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row))
        + chunk(b"IEND", b"")
    )
    return path


def jpeg_bomb(source: Path, path: Path, width: int = 60_000, height: int = 60_000) -> Path:
    """A copy of the JPEG ``source`` whose frame header claims ``width`` x ``height``."""
    data = bytearray(source.read_bytes())
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            break
    else:
        raise AssertionError(f"{source} has no SOF0/SOF2 frame header")
    path.write_bytes(bytes(data))
    return path


def run_limited(
    code: str, headroom_mb: int = 1500, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python whose address space may grow by at most ``headroom_mb``
    once ``code``'s imports (its first paragraph) are done: an unbounded allocation fails
    there (MemoryError, or a crash) instead of exhausting the machine."""
    imports, _, body = textwrap.dedent(code).strip().partition("\n\n")
    script = "\n".join(
        [
            imports,
            "import resource",
            "_vm = next(int(l.split()[1]) for l in open('/proc/self/status') "
            "if l.startswith('VmSize:')) * 1024",
            f"_limit = _vm + {headroom_mb} * 1024 * 1024",
            "resource.setrlimit(resource.RLIMIT_AS, (_limit, _limit))",
            body,
        ]
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
