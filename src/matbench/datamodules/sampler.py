"""A training sampler that keeps the samples of one image together.

Object-level datasets (LVIS-materials objects, DMS regions, FG-OVD boxes) have many samples
per image. In a random order each sample lands in another batch, and the image is decoded
once per sample. :class:`GroupedSampler` shuffles *images* instead and yields each image's
samples one after the other, so a batch holds a few whole images; a dataset with
``__getitems__`` (which ``DataLoader`` workers call with a whole batch) then decodes each
image once for all of its samples. Its batches are cut every ``batch_size`` samples, so an
image whose samples straddle a cut is decoded for both batches; :class:`ImageBatchSampler`
cuts only between images (batches of at most ``batch_size`` samples).
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
        return self.epoch_groups(self.epoch)[0]

    def epoch_groups(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch ``epoch``'s order over all ranks (before padding) and the length of each
        group along it."""
        starts, ends = self.offsets[:-1], self.offsets[1:]
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
            perm = rng.permutation(self.num_groups)
            starts, ends = starts[perm], ends[perm]
        lengths = ends - starts
        # positions into self.order: each chosen group's run, concatenated
        run_starts = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        positions = run_starts + np.arange(int(lengths.sum()))
        return self.order[positions], lengths

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order()
        padding = self.total_size - len(order)
        if padding > 0:
            order = np.concatenate([order, np.resize(order, padding)])
        start = self.rank * self.num_samples
        return iter(order[start : start + self.num_samples].tolist())


def pack_groups(lengths: np.ndarray, batch_size: int, max_batches: int | None = None) -> np.ndarray:
    """Cut a sequence of groups (their ``lengths``, in order) into batches of at most
    ``batch_size`` samples, between groups: a batch is closed when the next group does not
    fit. A group longer than ``batch_size`` is split. With ``max_batches``, a group is also
    split (to fill the batch up to ``batch_size``) where closing the batch would leave too
    few batches for the samples still to come, so that there are at most ``max_batches``.

    Returns:
        The end of each batch along the sequence (cumulative sample counts).
    """
    total = int(np.sum(lengths))
    if max_batches is not None and max_batches * batch_size < total:
        raise ValueError(f"{total} samples do not fit in {max_batches} batches of {batch_size}")
    ends: list[int] = []
    fill, placed = 0, 0
    for length in np.asarray(lengths).tolist():
        while length > 0:
            if fill + length <= batch_size:
                fill += length
                placed += length
                length = 0
                continue
            remaining = total - placed  # samples not yet in a batch, this group included
            closable = fill > 0 and (
                max_batches is None or remaining <= (max_batches - len(ends) - 1) * batch_size
            )
            take = 0 if closable else batch_size - fill
            placed += take
            length -= take
            ends.append(placed)
            fill = 0
    if fill:
        ends.append(placed)
    return np.asarray(ends, dtype=np.int64)


class ImageBatchSampler(GroupedSampler):
    """Training batches of whole images: :class:`GroupedSampler`'s order cut into batches
    only between images, each of at most ``batch_size`` samples (an image with more samples
    than that alone is split), so that no image is decoded for two batches.

    Batches vary in size, but their number does not: every epoch has the same number of
    batches per rank (Lightning counts an epoch's batches once, before the first). It is
    the largest count of the first four epochs' cuts (:func:`pack_groups`), a function of
    the seed and the groups; a later epoch that would need more splits one more image where
    needed, one that needs fewer repeats its first batches (as ``DistributedSampler``
    repeats samples), and so does the padding to a multiple of the world size. Rank ``r``
    takes batches ``r, r + w, ...``. The order depends on ``(seed, epoch)`` only, so a
    resumed run continues exactly.

    Iterating yields lists of sample indices (a batch each): give it to a ``DataLoader`` as
    ``sampler`` with ``batch_size=None`` (it is a ``DistributedSampler``, which Lightning
    leaves in place), with a dataset whose ``__getitem__`` takes such a list.

    Args:
        dataset: The dataset (its length is used).
        groups: One key per sample (the image it is from).
        batch_size: Largest number of samples in a batch.
        num_replicas: World size.
        rank: This process's rank.
        seed: Seed of the order (Lightning's ``PL_GLOBAL_SEED``).
        shuffle: Shuffle the groups; False keeps them in key order.
    """

    #: Iterating yields whole batches (lists of indices).
    yields_batches = True

    def __init__(
        self,
        dataset: Dataset,
        groups: Sequence[Any] | np.ndarray,
        batch_size: int,
        num_replicas: int,
        rank: int,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(dataset, groups, num_replicas, rank, seed, shuffle)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        counts = [len(pack_groups(self.epoch_groups(e)[1], batch_size)) for e in range(4)]
        #: Batches of every epoch over all ranks, before the padding to the world size.
        self.num_batches = max(counts) if len(self.order) else 0
        self.batches_per_rank = -(-self.num_batches // num_replicas)

    def epoch_batches(self) -> list[np.ndarray]:
        """This epoch's batches over all ranks, padded (each an array of sample indices)."""
        order, lengths = self.epoch_groups(self.epoch)
        ends = pack_groups(lengths, self.batch_size, self.num_batches)
        batches = np.split(order, ends[:-1]) if len(ends) else []
        wanted = self.batches_per_rank * self.num_replicas
        return [batches[k % len(batches)] for k in range(wanted)] if batches else []

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        # a generator: the epoch is read at the first batch, as a BatchSampler reads its
        # sampler (Lightning may make the iterator before it sets the epoch of a resumed run)
        for batch in self.epoch_batches()[self.rank :: self.num_replicas]:
            yield batch.tolist()

    def __len__(self) -> int:
        return self.batches_per_rank
