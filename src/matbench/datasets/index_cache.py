"""Cached dataset indexes: built once, then loaded in a moment by later runs and other ranks.

Building an index (parsing a 1 GB LVIS JSON, reading every DMS label map) is the slow part of
starting a run. :func:`cached_index` keeps the result in a cache folder as plain NumPy arrays
(``.npy`` files, loaded memory-mapped: the page cache holds one copy that every rank and
loader worker of the machine shares) plus a small JSON of metadata.

An index is identified by

- the reader's **settings** (a JSON-able dict: the reader's name, version, options), and
- the **SHA-256 of every source file** it is built from (annotation JSON, sidecar, label maps).

A changed file is a new key: the index is rebuilt. So that later runs do not re-read gigabytes
only to hash them, each cache slot keeps a manifest of ``(size, mtime_ns) → SHA-256`` of its
sources; a file whose size and modification time are unchanged is not hashed again.

Under DDP, rank 0 builds (or finds) the index while the other ranks wait, then they load it;
if rank 0 fails, every rank raises its error. A file lock also serialises independent
processes (two runs started at once) on the same cache folder; a rank that cannot see rank 0's
cache folder (node-local disks) builds its own copy, under the same lock.

The cache folder is ``$MATBENCH_CACHE_DIR/index`` (default ``~/.cache/matbench/index``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from matbench.results import atomic_write_text
from matbench.utils import cache_root, sha256_file
from matbench.utils.distributed import world_and_rank

#: Bumped when the on-disk layout of every index changes.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$MATBENCH_CACHE_DIR/index``, else ``~/.cache/matbench/index``."""
    return cache_root("index")


def resolve_cache_dir(cache_dir: str | Path | None) -> Path | None:
    """``"auto"`` → :func:`default_cache_dir`; None → no cache; a path → that folder."""
    if cache_dir is None:
        return None
    if str(cache_dir) == "auto":
        return default_cache_dir()
    return Path(cache_dir).expanduser()


# -- arrays of strings ----------------------------------------------------------------------------
def pack_strings(values: Sequence[str]) -> dict[str, np.ndarray]:
    """Strings as one UTF-8 byte blob and ``len + 1`` offsets (no Python object per string)."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
    return {"blob": blob, "offsets": offsets}


class StringTable(Sequence[str]):
    """Read-only sequence over :func:`pack_strings` arrays."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob = blob
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return bytes(self.blob[start:end]).decode("utf-8")


# -- the index ------------------------------------------------------------------------------------
@dataclass
class Index:
    """A built index: named NumPy arrays plus JSON-able metadata."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    #: Where it was loaded from (None for an index that was not cached).
    path: Path | None = None
    #: True when it was read from the cache rather than built by this process.
    loaded: bool = False

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in self.arrays.items():
            if array.dtype == object:
                raise TypeError(f"index array '{name}' has dtype object: not cacheable")
            np.save(folder / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        (folder / "meta.json").write_text(json.dumps(self.meta), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> Index:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        return cls(MappedArrays(folder), meta, path=folder, loaded=True)


class MappedArrays(dict):
    """The arrays of an index folder, memory-mapped read-only. Pickled (for a ``spawn``
    loader worker, or another process), it travels as the folder's path and is mapped again
    on arrival: no process receives a copy of the data."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        super().__init__(
            (path.stem, np.load(path, mmap_mode="r", allow_pickle=False))
            for path in sorted(self.folder.glob("*.npy"))
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (MappedArrays, (str(self.folder),))


# -- source digests -------------------------------------------------------------------------------
def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def source_digests(paths: Sequence[Path], manifest_path: Path | None) -> list[str]:
    """SHA-256 of each file, reusing a manifest's digest where size and mtime are unchanged;
    the manifest is rewritten when something was hashed."""
    known: dict[str, Any] = {}
    if manifest_path is not None and manifest_path.is_file():
        try:
            known = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            known = {}
    digests, changed = [], False
    for path in paths:
        name = str(Path(path).resolve())
        stat = _stat_key(Path(name))
        entry = known.get(name)
        if entry is not None and entry[:2] == stat:
            digests.append(entry[2])
            continue
        digest = sha256_file(Path(name))
        known[name] = [*stat, digest]
        digests.append(digest)
        changed = True
    if changed and manifest_path is not None:
        atomic_write_text(manifest_path, json.dumps(known))
    return digests


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _digest(payload: Any, length: int = 24) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class IndexBuildError(RuntimeError):
    """Rank 0 could not build an index (its error is in the message)."""


# -- the cache ------------------------------------------------------------------------------------
def _find_or_build(
    cache_dir: Path,
    name: str,
    settings: Mapping[str, Any],
    sources: Sequence[Path],
    build: Callable[[], Index],
    fingerprint: str | None = None,
) -> Index:
    slot = (
        cache_dir
        / name
        / _digest({"settings": settings, "sources": [str(Path(p).resolve()) for p in sources]}, 16)
    )
    try:
        slot.mkdir(parents=True, exist_ok=True)
        (slot / ".lock").touch()
    except OSError as err:
        warnings.warn(
            f"index cache folder '{cache_dir}' is not writable ({err}): the {name} index is "
            "built without caching (set MATBENCH_CACHE_DIR or index_cache)",
            stacklevel=3,
        )
        return build()
    with _file_lock(slot / ".lock"):
        digests = source_digests(sources, slot / "sources.json")
        key = _digest(
            {"format": CACHE_FORMAT, "name": name, "settings": settings, "sha256": digests}
            | ({"fingerprint": fingerprint} if fingerprint is not None else {})
        )
        folder = slot / key
        if (folder / "meta.json").is_file():
            return Index.load(folder)
        index = build()
        tmp = Path(tempfile.mkdtemp(dir=slot, prefix=".build-"))
        try:
            index.save(tmp)
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (folder / "meta.json").is_file():
                raise
            # another machine sharing the folder (without working locks) stored it first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # Other keys of this slot are indexes of older file contents: drop them.
        for old in slot.iterdir():
            if old.is_dir() and old.name != key and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        loaded = Index.load(folder)
        loaded.loaded = False
        return loaded


def cached_index(
    name: str,
    settings: Mapping[str, Any],
    sources: Sequence[str | Path],
    build: Callable[[], Index],
    cache_dir: str | Path | None = "auto",
    fingerprint: str | None = None,
) -> Index:
    """The index of ``sources`` under ``settings``: loaded from the cache, or built and stored.

    Args:
        name: Reader name (a folder of the cache).
        settings: Everything besides the sources' content that changes the index.
        sources: The files the index is built from; their SHA-256 is part of the key.
        build: Builds the index (called at most once per key and machine).
        cache_dir: Cache folder; ``"auto"`` for :func:`default_cache_dir`; None builds
            without caching.
        fingerprint: A digest of inputs that are not files to hash (e.g. the names, sizes
            and modification times of a folder tree's files): part of the key, so a changed
            fingerprint rebuilds the index and replaces the previous one.

    Under DDP (an initialised process group), every rank must call this in the same order:
    rank 0 builds or finds the index, the others wait and then load it.
    """
    folder = resolve_cache_dir(cache_dir)
    paths = [Path(p) for p in sources]
    if folder is None:
        return build()
    world, rank = world_and_rank()
    if world == 1:
        return _find_or_build(folder, name, settings, paths, build, fingerprint)
    status: list[Any] = [None]
    if rank == 0:
        try:
            index = _find_or_build(folder, name, settings, paths, build, fingerprint)
            status = [("ok", "")]
        except Exception as err:
            status = [("error", f"{type(err).__name__}: {err}")]
            dist.broadcast_object_list(status, src=0)
            raise
    dist.broadcast_object_list(status, src=0)
    if status[0][0] == "error":
        raise IndexBuildError(f"rank 0 failed to build the {name} index: {status[0][1]}")
    if rank == 0:
        return index
    # Rank 0 has it; a rank on another node without a shared cache folder builds its own.
    return _find_or_build(folder, name, settings, paths, build, fingerprint)
