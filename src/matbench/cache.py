"""A cache of frozen features, so that later epochs only train the classifier head.

With frozen streams the features of a sample never change, so they are computed once and
kept in memory or on disk. A cache entry is keyed by:

- the **model**: a hash of the frozen streams' weights and settings (``model_id``; see
  ``TwoStreamModel.cache_id``), so another backbone, other weights, another text encoder,
  null-mask pooling or another mask threshold is another key;
- the **sample**: a *fingerprint* from the dataset: dataset, split and sample key, plus a hash
  of the image and mask file contents, the preprocessing settings (image size, object crop,
  mask threshold, DMS region class) and the description text.

On disk an entry is ``<directory>/<dataset>/<split>/<model_id[:16]>/<hash>.pt``, written
atomically (temporary file + rename), so that DDP ranks (each caching its own samples) and
loader workers never read a half-written file.

A datamodule serves its datasets through :class:`CachedFeatures` views once a task attaches
a cache (``BaseDataModule.use_feature_cache``): on a hit the view returns the features instead
of decoding the image; :func:`feature_collate` batches such samples with ordinary ones. A loader worker
sees the disk cache, and the memory cache as it was when the worker started; the task checks
the in-process memory cache again for samples that arrive decoded.

The cache must not be used when the features can change between epochs: when the backbone is
fine-tuned, or when training-time augmentation changes the input.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from matbench.utils.distributed import world_and_rank

Fingerprint = dict[str, str]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` through a temporary file and a rename: readers (other ranks, workers, a
    resumed run) never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FeatureCache:
    """Frozen features per (model, sample), in memory and optionally on disk.

    Args:
        model_id: Identity of the frozen model (weights and settings).
        directory: Folder for ``.pt`` files; None keeps the features in memory only.
        memory: Also keep the features in this process's memory.
    """

    def __init__(
        self, model_id: str, directory: str | Path | None = None, memory: bool = True
    ) -> None:
        if directory is None and not memory:
            raise ValueError("a FeatureCache needs memory=True or a directory")
        self.model_id = model_id
        self.directory = Path(directory).expanduser() if directory is not None else None
        self.memory = memory
        self._store: dict[str, Tensor] = {}
        self.hits = 0
        self.misses = 0

    def key(self, fingerprint: Fingerprint) -> str:
        """The entry's hash: model identity and the whole sample fingerprint."""
        text = json.dumps({"model": self.model_id, "sample": fingerprint}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, fingerprint: Fingerprint) -> Path:
        """The entry's file (only meaningful with a directory)."""
        if self.directory is None:
            raise ValueError("this FeatureCache has no directory")
        return (
            self.directory
            / _safe(fingerprint.get("dataset", "data"))
            / _safe(fingerprint.get("split", "all"))
            / self.model_id[:16]
            / f"{self.key(fingerprint)}.pt"
        )

    def lookup(self, fingerprint: Fingerprint) -> Tensor | None:
        """The cached features, or None (does not change the hit/miss counts)."""
        key = self.key(fingerprint)
        if key in self._store:
            return self._store[key]
        if self.directory is not None:
            path = self.path(fingerprint)
            if path.is_file():
                try:
                    features = torch.load(path, map_location="cpu", weights_only=True)
                except Exception:  # noqa: BLE001 - an unreadable entry is a miss
                    return None
                if self.memory:
                    self._store[key] = features
                return features
        return None

    def get(self, fingerprint: Fingerprint) -> Tensor | None:
        """Like :meth:`lookup`, counting a hit or a miss."""
        features = self.lookup(fingerprint)
        if features is None:
            self.misses += 1
        else:
            self.hits += 1
        return features

    def put(self, fingerprint: Fingerprint, features: Tensor) -> None:
        """Store one sample's features (a 1-D tensor, kept on the CPU in fp32)."""
        features = features.detach().to("cpu", torch.float32).contiguous().clone()
        key = self.key(fingerprint)
        if self.memory:
            self._store[key] = features
        if self.directory is not None:
            atomic_torch_save(self.path(fingerprint), features)

    @property
    def entries(self) -> dict[str, Tensor]:
        """The in-memory entries, by key."""
        return self._store

    def update(self, entries: dict[str, Tensor]) -> None:
        """Add in-memory entries (as saved from :attr:`entries`, e.g. in a checkpoint)."""
        self._store.update(entries)

    def __len__(self) -> int:
        return len(self._store)


def pack_entries(store: dict[str, Tensor]) -> dict[str, Any]:
    """A ``key → 1-D tensor`` store as sorted keys and one stacked tensor (checkpoint-ready)."""
    keys = sorted(store)
    values = torch.stack([store[k].detach().cpu() for k in keys]) if keys else torch.empty(0)
    return {"keys": keys, "values": values}


def unpack_entries(packed: dict[str, Any]) -> dict[str, Tensor]:
    """The store :func:`pack_entries` packed."""
    return {k: v.clone() for k, v in zip(packed["keys"], packed["values"], strict=True)}


def gather_entries(store: dict[str, Tensor]) -> dict[str, Tensor]:
    """Under DDP, the union of every rank's store (each rank caches the samples it saw);
    a collective: every rank must call it. Otherwise ``store`` itself."""
    world, _ = world_and_rank()
    if world == 1:
        return store
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, pack_entries(store))
    union: dict[str, Tensor] = {}
    for packed in gathered:
        union.update(unpack_entries(packed))
    return union


class CachedFeatures(Dataset):
    """A view of a dataset that serves a sample's cached frozen ``features`` instead of
    decoding its image (the readers know nothing of the cache).

    The dataset gives, without decoding anything, ``fingerprint(index)`` (the cache key's
    data part, see the module docstring) and ``sample_meta(index)``: the sample's label, key,
    index and description, or None for a sample that is never served from the cache. A hit
    is ``{**meta, "features": ..., "fingerprint": ...}``; a miss is the dataset's own sample
    with its ``fingerprint`` added, so the task can store the features it computes. Other
    attributes (``labels``, ``sample_groups``, ...) are the dataset's.

    Args:
        dataset: The dataset.
        cache: The cache; None serves the dataset's samples unchanged.
    """

    def __init__(self, dataset: Any, cache: FeatureCache | None = None) -> None:
        self.dataset = dataset
        self.cache = cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        out: list[dict[str, Any] | None] = [None] * len(indices)
        misses: list[tuple[int, int, Fingerprint | None]] = []
        for position, index in enumerate(indices):
            meta = self.dataset.sample_meta(index) if self.cache is not None else None
            if meta is None:
                misses.append((position, index, None))
                continue
            fingerprint = self.dataset.fingerprint(index)
            features = self.cache.lookup(fingerprint)
            if features is None:
                misses.append((position, index, fingerprint))
            else:
                out[position] = {**meta, "fingerprint": fingerprint, "features": features}
        if misses:
            wanted = [index for _, index, _ in misses]
            if hasattr(self.dataset, "__getitems__"):
                loaded = self.dataset.__getitems__(wanted)
            else:
                loaded = [self.dataset[index] for index in wanted]
            for (position, _, fingerprint), sample in zip(misses, loaded, strict=True):
                if fingerprint is not None:
                    sample["fingerprint"] = fingerprint
                out[position] = sample
        return out  # type: ignore[return-value]


def feature_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate samples of which some carry cached ``features`` instead of ``image``/``mask``.

    Plain samples (no cache attached) are collated by ``default_collate`` unchanged. Otherwise
    the batch has ``cached`` (bool per sample), ``features`` (rows of the cached samples, in
    order), ``image``/``mask`` (rows of the others, in order) and ``fingerprint`` (a list).
    """
    if not any("fingerprint" in s or "features" in s for s in samples):
        return default_collate(samples)
    special = ("image", "mask", "features", "fingerprint")
    common = [k for k in samples[0] if k not in special and all(k in s for s in samples)]
    batch = default_collate([{k: s[k] for k in common} for s in samples])
    cached = torch.tensor(["features" in s for s in samples], dtype=torch.bool)
    batch["cached"] = cached
    batch["fingerprint"] = [s.get("fingerprint") for s in samples]
    if cached.any():
        batch["features"] = torch.stack([s["features"] for s in samples if "features" in s])
    if not cached.all():
        fresh = [s for s in samples if "features" not in s]
        batch["image"] = default_collate([s["image"] for s in fresh])
        batch["mask"] = default_collate([s["mask"] for s in fresh])
    return batch
