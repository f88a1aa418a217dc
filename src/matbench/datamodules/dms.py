"""Datamodule for Dense Material Segmentation (DMS46), dense or per material region."""

from __future__ import annotations

from typing import Any, Literal

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
        on_label_leak: A description naming its sample's own class: ``redact`` its class
            words (default), replace it by the ``fallback``, ``keep`` it, or stop with an
            ``error``; the results JSON counts each case (``data.label_leaks``).
        test_split: ``test`` or ``validation``.
        augment: Random horizontal flips of training samples (turns the training feature
            cache off).
        label_space: Region mode: relabel regions into a label space (``classes21`` for the
            two-stream paper's DMS-test-21, or a label-space JSON); regions of DMS46 classes
            without a counterpart are dropped and counted (:meth:`describe`).
        group_by_image: Region mode: training batches hold all regions of an image, read
            once (:class:`~matbench.datamodules.sampler.GroupedSampler`).
        index_cache: Folder of cached region statistics; ``"auto"`` =
            ``$MATBENCH_CACHE_DIR/index``; None = read every label map on every run.
        eval_full_size: Dense mode: validation, test and predict samples keep their own size
            (``image_size`` then applies to training only), so that a segmenter is scored on
            the full-resolution label maps as the official evaluation does; their batches
            are lists.
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
        on_label_leak: Literal["redact", "fallback", "keep", "error"] = "redact",
        test_split: Literal["test", "validation"] = "test",
        augment: bool = False,
        label_space: str | None = None,
        group_by_image: bool = False,
        index_cache: str | None = "auto",
        eval_full_size: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.save_hyperparameters()
        self.group_by_image = group_by_image
        if test_split not in ("test", "validation"):
            raise ValueError(f"test_split must be 'test' or 'validation', got '{test_split}'")
        self.root = root
        self.test_split = test_split
        self.augment = augment
        if eval_full_size and mode != "dense":
            raise ValueError("eval_full_size needs mode='dense' (region samples are resized)")
        self.collate_fn = feature_collate if image_size is not None else list_collate

    def loader_collate_fn(self, train: bool) -> Any:
        if self.hparams.get("eval_full_size") and not train:
            return list_collate
        return self.collate_fn

    @property
    def class_names(self) -> list[str]:
        """The class names in id order: DMS46's (from ``taxonomy.json``) or the label space's."""
        if self.hparams.label_space is not None:
            from matbench.datasets.label_space import load_label_space

            return load_label_space(self.hparams.label_space).classes
        return dms46_class_names(self.root)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        for stage in ("train", "val", "test"):
            dataset = getattr(self, f"{stage}_dataset", None)
            if dataset is not None and dataset.label_space is not None:
                info.setdefault("label_space", dataset.label_space.info())
                info.setdefault("dropped", {})[stage] = dataset.dropped
        return info

    def _dataset(self, split: str, train: bool = False) -> DMS:
        h = self.hparams
        return DMS(
            self.root,
            split=split,
            mode=h.mode,
            min_pixels=h.min_pixels,
            image_size=None if (h.get("eval_full_size") and not train) else h.image_size,
            descriptions=h.descriptions,
            on_label_leak=h.on_label_leak,
            transforms=RandomHorizontalFlip() if (train and self.augment) else None,
            label_space=h.label_space,
            index_cache=h.index_cache,
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
