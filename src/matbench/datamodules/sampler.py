"""A training sampler that keeps the samples of one image together.

Object-level datasets (LVIS-materials objects, DMS regions, FG-OVD boxes) have many samples
per image. In a random order each sample lands in another batch, and the image is decoded
once per sample. :class:`GroupedSampler` shuffles *images* instead and yields each image's
samples one after the other, so a batch holds a few whole images; a dataset with
``__getitems__`` (which ``DataLoader`` workers call with a whole batch) then decodes each
image once for all of its samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from matbench.datamodules.base import EpochSeededSampler


def group_index(groups: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples sorted by group (stable: dataset order within a group) and the offsets of
    each group in that order. ``groups`` holds one key per sample (an image id, row or path).
    """
    keys = np.asarray(groups)
    if keys.ndim != 1:
        raise ValueError(f"groups must be one key per sample, got shape {keys.shape}")
    _, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse) if len(inverse) else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return order, offsets


class GroupedSampler(EpochSeededSampler):
    """Shuffled training order over groups (images), each group's samples kept together.

    The epoch's order: the groups in a random order drawn from ``(seed, epoch)``, each group's
    samples in dataset order. Like ``DistributedSampler``, the order is padded by repeating
    its first samples to a multiple of the world size; rank ``r`` then takes the ``r``-th
    *contiguous* slice (not every ``w``-th sample), so a group is split between ranks only at
    the ``w - 1`` slice boundaries. Every sample is on exactly one rank (padding aside), each
    rank has the same length, and the order depends on ``(seed, epoch)`` only, so a run
    resumed from a checkpoint continues exactly as :class:`EpochSeededSampler` does.

    Args:
        dataset: The dataset (its length is used).
        groups: One key per sample (e.g. ``dataset.sample_groups()``): the image it is from.
        num_replicas: World size.
        rank: This process's rank.
        seed: Seed of the order (Lightning's ``PL_GLOBAL_SEED``).
        shuffle: Shuffle the groups; False keeps them in key order.
    """

    def __init__(
        self,
        dataset: Dataset,
        groups: Sequence[Any] | np.ndarray,
        num_replicas: int,
        rank: int,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
        self.shuffle = shuffle
        if len(groups) != len(dataset):  # type: ignore[arg-type]
            raise ValueError(
                f"groups has {len(groups)} keys but the dataset has {len(dataset)} samples"  # type: ignore[arg-type]
            )
        self.order, self.offsets = group_index(groups)

    @property
    def num_groups(self) -> int:
        """Number of distinct groups (images)."""
        return len(self.offsets) - 1

    def epoch_order(self) -> np.ndarray:
        """The whole epoch's order over all ranks, before padding."""
        starts, ends = self.offsets[:-1], self.offsets[1:]
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
            perm = rng.permutation(self.num_groups)
            starts, ends = starts[perm], ends[perm]
        lengths = ends - starts
        # positions into self.order: each chosen group's run, concatenated
        run_starts = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        positions = run_starts + np.arange(int(lengths.sum()))
        return self.order[positions]

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order()
        padding = self.total_size - len(order)
        if padding > 0:
            order = np.concatenate([order, np.resize(order, padding)])
        start = self.rank * self.num_samples
        return iter(order[start : start + self.num_samples].tolist())
