"""FG-OVD datamodule: object crops, each with its positive and hard-negative sentences."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch.utils.data import Dataset

from matbench.datamodules.base import BaseDataModule
from matbench.datasets.fgovd import FGOVD, FGOVDImages, fgovd_collate, reported_negatives


class FGOVDDataModule(BaseDataModule):
    """FG-OVD benchmarks for testing, its training and validation sets for fitting.

    ``test`` reads ``benchmarks/<benchmark>.json``, ``fit`` reads
    ``training_sets/<train_set>.json`` and ``validation_sets/<val_set>.json`` (a name, or a
    path relative to ``root`` ending in ``.json``). See :mod:`matbench.datasets.fgovd` for the
    layout and the crop rules.

    Training samples are single objects, shuffled, and keep only objects with at least
    ``train_min_negatives`` negatives (FG-CLIP trains on the objects with all 10). Validation
    and test items are whole images: each image is decoded once for all its objects, so
    ``eval_batch_size`` counts images, and objects with any number of negatives are kept.

    Args:
        root: Folder holding ``benchmarks/``, ``training_sets/``, ``validation_sets/`` and
            the images.
        benchmark: The test benchmark (``material``, ``color``, ``pattern``, ``transparency``,
            ``1_attributes`` (Hard), ``2_attributes``, ``3_attributes``, ``shuffle_negatives``).
        train_set: Training set name or file.
        val_set: Validation set name or file.
        images: Images root (with ``train2017/`` and ``val2017/``), relative to ``root``.
        crop: ``"box"`` (FG-OVD's box crop) or ``"object"`` (matbench's object crop).
        image_size: Side of the crops (the model's input size).
        scale_factor: FG-OVD's box scale about its centre.
        max_negatives: Negatives kept per object (FG-OVD evaluates 10).
        train_min_negatives: Training objects with fewer negatives are dropped.
        crop_min_size: Smallest side of the object crop in original pixels.
        crop_blur_sigma: Blur outside the mask of the object crop; 0 = off.
        batch_size: Objects per training batch.
        num_workers: Loader worker processes.
        eval_batch_size: Images per evaluation batch (default: ``batch_size``).
    """

    collate_fn = staticmethod(fgovd_collate)

    def __init__(
        self,
        root: str = "data/fgovd",
        benchmark: str = "material",
        train_set: str = "1_attributes",
        val_set: str = "1_attributes",
        images: str = "coco",
        crop: Literal["box", "object"] = "box",
        image_size: int = 224,
        scale_factor: float = 1.0,
        max_negatives: int = 10,
        train_min_negatives: int = 10,
        crop_min_size: int = 50,
        crop_blur_sigma: float = 4.0,
        batch_size: int = 256,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.save_hyperparameters()
        self.root = Path(root)
        self.test_split = f"benchmarks/{Path(benchmark).stem}"
        #: Most negatives the benchmark's published evaluation reports (transparency 2,
        #: pattern 7, else 10), capped by ``max_negatives``.
        self.reported_negatives = min(reported_negatives(benchmark), max_negatives)

    def _file(self, folder: str, name: str) -> Path:
        return self.root / (name if name.endswith(".json") else f"{folder}/{name}.json")

    def _dataset(self, folder: str, name: str, min_negatives: int) -> FGOVD:
        hp = self.hparams
        return FGOVD(
            self._file(folder, name),
            self.root / hp.images,
            crop=hp.crop,
            image_size=hp.image_size,
            scale_factor=hp.scale_factor,
            max_negatives=hp.max_negatives,
            min_negatives=min(min_negatives, hp.max_negatives),
            crop_min_size=hp.crop_min_size,
            crop_blur_sigma=hp.crop_blur_sigma,
        )

    def _eval_dataset(self, folder: str, name: str) -> Dataset:
        return FGOVDImages(self._dataset(folder, name, 1))

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit":
            self.train_dataset = self._dataset(
                "training_sets", hp.train_set, hp.train_min_negatives
            )
            self.val_dataset = self._eval_dataset("validation_sets", hp.val_set)
        elif stage == "validate":
            self.val_dataset = self._eval_dataset("validation_sets", hp.val_set)
        elif stage in ("test", "predict"):
            dataset = self._eval_dataset("benchmarks", hp.benchmark)
            self.test_dataset = dataset
            self.predict_dataset = dataset
