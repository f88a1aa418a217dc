"""Datamodule for the Flickr Material Database."""

from __future__ import annotations

from typing import Literal

from matbench.datamodules.folder import MaterialFolderDataModule, RandomHorizontalFlip
from matbench.datasets.fmd import FMD, FMD_CLASSES


class FMDDataModule(MaterialFolderDataModule):
    """FMD with a seeded per-class split (50/50 train/test by default), written to the run's
    log directory as ``fmd_split.json`` (reuse it with ``split_file``).

    Args:
        root: Folder holding ``image/`` and ``mask/`` (the FMD zip's content).
        batch_size: Samples per training batch.
        num_workers: Loader worker processes.
        eval_batch_size: Samples per evaluation batch (default: ``batch_size``).
        image_size: Square input size (image and mask are resized to it); None keeps
            512 x 384, batches are then lists.
        train_fraction: Fraction of each class used for training; the rest is the test set.
        val_fraction: Fraction of each class's training part held out for validation
            (0 = validate on the test split).
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
            cache off).
        label_space: Relabel into a label space through its ``fmd`` map (``classes21`` for
            the two-stream paper's 21-class protocol).
        test_on: ``test``: the split's test half; ``all``: all images (FMD as a
            cross-dataset test set, as in the paper).
    """

    split_name = "fmd_split"

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
        super().__init__(
            root,
            batch_size=batch_size,
            num_workers=num_workers,
            eval_batch_size=eval_batch_size,
            image_size=image_size,
            train_fraction=train_fraction,
            val_fraction=val_fraction,
            seed=seed,
            split_file=split_file,
            object_crop=object_crop,
            crop_min_size=crop_min_size,
            crop_blur_sigma=crop_blur_sigma,
            descriptions=descriptions,
            on_label_leak=on_label_leak,
            augment=augment,
            label_space=label_space,
            test_on=test_on,
        )

    @property
    def object_crops(self) -> bool:
        """Whether the samples are object crops (``object_crop``)."""
        return bool(self.hparams.object_crop)

    @property
    def class_names(self) -> list[str]:
        """The 10 FMD classes in id order, or the label space's classes."""
        if self.hparams.label_space is not None:
            from matbench.datasets.label_space import load_label_space

            return load_label_space(self.hparams.label_space).classes
        return list(FMD_CLASSES)

    def _dataset(self, keys: list[str] | None, split: str, train: bool = False) -> FMD:
        h = self.hparams
        return FMD(
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
