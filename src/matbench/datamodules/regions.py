"""The point-prompt IoU protocol's datamodule: labelled images split into a validation part
(threshold selection) and a test part, served together to ``test``."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from matbench.datamodules.base import BaseDataModule, list_collate
from matbench.datasets.regions import RegionDataset, RegionLayout


class _WithSplit(Dataset):
    """Adds ``split`` (``val`` or ``test``) to every sample of a dataset."""

    def __init__(self, dataset: RegionDataset, val: set[int]) -> None:
        self.dataset = dataset
        self.val = val

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        sample["split"] = "val" if index in self.val else "test"
        return sample


class RegionIoUDataModule(BaseDataModule):
    """Labelled images for the point-prompt IoU protocol, for ``test`` only.

    A seeded fraction of the images (``val_fraction``, at least one when there are two images
    or more) is the validation part, on which a descriptor model's similarity threshold is
    chosen; the metric reports the other images. Both parts go through the one test loader;
    each sample carries its ``split``. Set ``val_fraction=0`` with a fixed threshold (or a
    prompted segmenter, which needs none) to score every image.

    Args:
        root: Dataset folder (see :class:`~matbench.datasets.regions.RegionDataset`).
        layout: ``masks``, ``labels`` or ``auto``.
        max_size: Longest image side after resizing.
        val_fraction: Fraction of the images held out for threshold selection.
        seed: Seed of the split.
        batch_size: Images per batch (lists; images differ in size).
        num_workers: Loader worker processes.
    """

    test_split = "test"
    collate_fn = staticmethod(list_collate)
    #: The evaluation protocol the tasks apply to this datamodule's test samples.
    protocol = "region_iou"

    def __init__(
        self,
        root: str,
        layout: RegionLayout = "auto",
        max_size: int = 700,
        val_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")

    def split(self, num_images: int) -> set[int]:
        """Indices of the validation images: a seeded permutation's first part."""
        fraction = self.hparams.val_fraction
        if fraction == 0 or num_images < 2:
            return set()
        count = min(num_images - 1, max(1, round(num_images * fraction)))
        order = np.random.default_rng(self.hparams.seed).permutation(num_images)
        return {int(i) for i in order[:count]}

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", "predict"):
            raise ValueError(
                f"RegionIoUDataModule only serves test (the IoU protocol), not {stage}"
            )
        hp = self.hparams
        dataset = RegionDataset(hp.root, hp.layout, hp.max_size)
        self.test_dataset = _WithSplit(dataset, self.split(len(dataset)))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["protocol"] = self.protocol
        return info
