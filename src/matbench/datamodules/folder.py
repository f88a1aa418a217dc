"""Datamodule for a :class:`matbench.datasets.folder.MaterialFolder` (a user's own photos)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from matbench.cache import feature_collate
from matbench.datamodules.base import BaseDataModule, list_collate, split_sha256
from matbench.datasets.folder import MaterialFolder
from matbench.datasets.utils import split_per_class


class RandomHorizontalFlip:
    """Flip ``image``, ``mask`` and ``context`` (those present) of a sample left-right with
    probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        if "image" in sample and torch.rand(()) < self.p:
            for key in ("image", "mask", "context"):
                if key in sample:
                    sample[key] = sample[key].flip(-1)
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """Read a split file written by a datamodule (``{"splits": {"train": [...], ...}}``)."""
    from matbench.datasets.errors import DatasetFormatError
    from matbench.datasets.utils import read_json

    path = Path(path).expanduser()
    data = read_json(path, "split file")
    splits = data.get("splits", data) if isinstance(data, dict) else None
    if not isinstance(splits, dict) or not all(
        isinstance(splits.get(k), list) for k in ("train", "test")
    ):
        raise DatasetFormatError(
            path, "expected {'splits': {'train': [...], 'val': [...], 'test': [...]}}"
        )
    return {k: [str(v) for v in splits.get(k, [])] for k in ("train", "val", "test")}


class MaterialFolderDataModule(BaseDataModule):
    """A seeded per-class train/val/test split of a :class:`MaterialFolder`.

    The split (see :func:`matbench.datasets.utils.split_per_class`) is written as
    ``<split_name>.json`` into the run's log directory (``trainer.log_dir``, when the run has
    a logger), with the settings that made it; pass that file as ``split_file`` to reuse it
    exactly. The results JSON records the split's sizes and SHA-256 (:meth:`describe`).

    Args:
        root: Folder holding ``image/<class>/`` (and optionally ``mask/<class>/``).
        batch_size: Samples per training batch.
        num_workers: Loader worker processes.
        eval_batch_size: Samples per evaluation batch (default: ``batch_size``).
        image_size: Square input size (image and mask are resized to it); None keeps each
            image's own size, and batches are lists (for tasks that crop regions themselves,
            e.g. :class:`matbench.tasks.ZeroShotTask` with ``region: crop``).
        train_fraction: Fraction of each class used for training (the rest is the test set).
        val_fraction: Fraction of each class's training part held out for validation
            (0 = validate on the test split, as FMD papers without a validation set do).
        seed: Seed of the split.
        split_file: A split JSON written by an earlier run, used instead of the seeded split.
        object_crop: Crop around the mask first (see :func:`matbench.transforms.crop_object`).
        crop_min_size: Smallest side of the object crop in original pixels.
        crop_blur_sigma: Blur outside the mask after the crop; 0 = none.
        descriptions: JSON sidecar ``{key: description}``; None = the class-agnostic fallback.
        on_label_leak: A description naming its sample's own class: ``redact`` its class
            words (default), replace it by the ``fallback``, ``keep`` it, or stop with an
            ``error``; the results JSON counts each case (``data.label_leaks``).
        augment: Random horizontal flips of training samples (turns the training feature
            cache off, since the input changes every epoch).
        label_space: Relabel into a label space (``classes21`` or a label-space JSON, see
            :mod:`matbench.datasets.label_space`); for a plain folder the sub-folders must be
            named after the space's classes (a Google-test-like folder of the 21 classes).
        test_on: ``test``: the split's test part; ``all``: every sample (a cross-dataset
            test set, e.g. all 1000 FMD images for a model trained elsewhere).
    """

    #: File name (without ``.json``) of the written split.
    split_name = "material_folder_split"

    def __init__(
        self,
        root: str,
        batch_size: int = 8,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        image_size: int | None = 224,
        train_fraction: float = 0.5,
        val_fraction: float = 0.1,
        seed: int = 0,
        split_file: str | None = None,
        object_crop: bool = False,
        crop_min_size: int = 50,
        crop_blur_sigma: float = 0.0,
        descriptions: str | None = None,
        on_label_leak: Literal["redact", "fallback", "keep", "error"] = "redact",
        augment: bool = False,
        label_space: str | None = None,
        test_on: Literal["test", "all"] = "test",
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.save_hyperparameters()
        if test_on not in ("test", "all"):
            raise ValueError(f"test_on must be 'test' or 'all', got '{test_on}'")
        self.root = root
        self.augment = augment
        self.test_split = test_on
        if image_size is None:
            self.collate_fn = list_collate
        self.splits: dict[str, list[str]] | None = None
        self.split_path: Path | None = None

    collate_fn = staticmethod(feature_collate)

    # -- hooks for FMD ---------------------------------------------------------------------------
    def _dataset(self, keys: list[str] | None, split: str, train: bool = False) -> MaterialFolder:
        h = self.hparams
        return MaterialFolder(
            self.root,
            keys=keys,
            image_size=h.image_size,
            object_crop=h.object_crop,
            crop_min_size=h.crop_min_size,
            crop_blur_sigma=h.crop_blur_sigma,
            descriptions=h.descriptions,
            on_label_leak=h.on_label_leak,
            transforms=RandomHorizontalFlip() if (train and self.augment) else None,
            split=split,
            label_space=h.label_space,
        )

    @property
    def object_crops(self) -> bool:
        """Whether the samples are object crops (``object_crop``)."""
        return bool(self.hparams.object_crop)

    @property
    def class_names(self) -> list[str]:
        """The class names, in id order."""
        return list(self._dataset(None, "all").classes)

    def make_splits(self) -> dict[str, list[str]]:
        """The train/val/test keys: from ``split_file``, or the seeded per-class split."""
        h = self.hparams
        if h.split_file:
            return read_split_file(h.split_file)
        full = self._dataset(None, "all")
        by_class: dict[str, list[str]] = {name: [] for name in full.classes}
        for key, label, _, _ in full.samples:
            by_class[full.classes[label]].append(key)
        return split_per_class(by_class, h.train_fraction, h.val_fraction, h.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self.make_splits()
            self._check_sidecar_keys()
            self._write_split()
        splits = self.splits
        if stage in (None, "fit"):
            self.train_dataset = self._dataset(splits["train"], "train", train=True)
            if splits["val"]:
                self.val_dataset = self._dataset(splits["val"], "val")
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            # no validation keys (val_fraction=0): validate on the test split
            self.val_dataset = self._dataset(splits["test"] or splits["val"], "test")
        test_keys = splits["test"]
        if self.test_split == "all":
            test_keys = sorted({k for part in splits.values() for k in part})
        if stage in (None, "test"):
            self.test_dataset = self._dataset(test_keys, self.test_split)
        if stage in (None, "predict"):
            self.predict_dataset = self._dataset(test_keys, self.test_split)

    def _check_sidecar_keys(self) -> None:
        """Every key of the descriptions sidecar must name a sample of the folder."""
        sidecar = self.hparams.descriptions
        if sidecar is None or self.splits is None:
            return
        from matbench.datasets.descriptions import load_descriptions
        from matbench.datasets.errors import DatasetFormatError

        known = {key for part in self.splits.values() for key in part}
        unknown = sorted(set(load_descriptions(sidecar)) - known)
        if unknown:
            raise DatasetFormatError(
                Path(sidecar),
                f"{len(unknown)} keys match no sample of {self.root} (e.g. '{unknown[0]}'); "
                "keys are '<class>/<file name>'",
            )

    def _write_split(self) -> None:
        if self.splits is None:
            return
        h = self.hparams
        record = {
            "settings": {
                "root": str(self.root),
                "train_fraction": h.train_fraction,
                "val_fraction": h.val_fraction,
                "seed": h.seed,
                "split_file": h.split_file,
            },
            "splits": self.splits,
        }
        path = self.write_split_record(self.split_name, record)
        if path is not None:
            self.split_path = path

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.split_path is not None:
            info["split_file"] = str(self.split_path)
        if self.splits is not None:
            info["split_sizes"] = {k: len(v) for k, v in self.splits.items()}
            info["split_sha256"] = split_sha256(self.splits)
        dataset = self.test_dataset or self.train_dataset
        if dataset is not None and dataset.label_space is not None:
            info["label_space"] = dataset.label_space.info()
            info["dropped"] = {
                stage: ds.dropped
                for stage in ("train", "val", "test")
                if (ds := getattr(self, f"{stage}_dataset", None)) is not None
            }
        return info
