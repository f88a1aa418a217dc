"""Datamodule for Dense Material Segmentation (DMS46), dense or per material region."""

from __future__ import annotations

from typing import Literal

from matbench.cache import feature_collate
from matbench.datamodules.base import BaseDataModule, list_collate
from matbench.datamodules.folder import RandomHorizontalFlip
from matbench.datasets.dms import DMS, dms46_class_names


class DMSDataModule(BaseDataModule):
    """DMS with its official splits: ``train`` to fit, ``validation`` to validate, and
    ``test_split`` (``test`` by default; the official script evaluates ``validation``) to test
    and predict.

    Args:
        root: The ``DMS_v1`` folder (``info.json.gz``, ``taxonomy.json``, ``labels/``,
            ``images/``).
        batch_size: Samples per training batch.
        num_workers: Loader worker processes.
        eval_batch_size: Samples per evaluation batch (default: ``batch_size``).
        mode: ``region`` (one sample per image and DMS46 class present) or ``dense``.
        image_size: Square input size; None keeps each image's size (batches are then lists).
        min_pixels: Region mode: smallest region kept, in label pixels.
        descriptions: Region mode: JSON sidecar ``{key: description}``; None = the fallback.
        test_split: ``test`` or ``validation``.
        augment: Random horizontal flips of training samples (turns the training feature
            cache off).
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        mode: Literal["region", "dense"] = "region",
        image_size: int | None = 224,
        min_pixels: int = 1024,
        descriptions: str | None = None,
        test_split: Literal["test", "validation"] = "test",
        augment: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.save_hyperparameters()
        if test_split not in ("test", "validation"):
            raise ValueError(f"test_split must be 'test' or 'validation', got '{test_split}'")
        self.root = root
        self.test_split = test_split
        self.augment = augment
        self.collate_fn = feature_collate if image_size is not None else list_collate

    @property
    def class_names(self) -> list[str]:
        """The 46 DMS46 class names in train-id order (from ``taxonomy.json``)."""
        return dms46_class_names(self.root)

    def _dataset(self, split: str, train: bool = False) -> DMS:
        h = self.hparams
        return DMS(
            self.root,
            split=split,
            mode=h.mode,
            min_pixels=h.min_pixels,
            image_size=h.image_size,
            descriptions=h.descriptions,
            transforms=RandomHorizontalFlip() if (train and self.augment) else None,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_dataset = self._dataset("train", train=True)
        if stage in (None, "fit", "validate"):
            self.val_dataset = self._dataset("validation")
        if stage in (None, "test"):
            self.test_dataset = self._dataset(self.test_split)
        if stage in (None, "predict"):
            self.predict_dataset = self._dataset(self.test_split)
