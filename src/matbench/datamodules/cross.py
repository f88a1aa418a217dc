"""Train once, test on several named sets: a datamodule made of datamodules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader, Dataset

from matbench.cache import FeatureCache
from matbench.datamodules.base import BaseDataModule


class CrossDatasetDataModule(BaseDataModule):
    """Fit and validate with ``train``; ``test`` (and ``predict``) with every datamodule of
    ``test``, each one a dataloader named by its key.

    Every test datamodule brings its own class map into the model's label space (e.g.
    ``label_space: classes21`` on FMD, DMS and a folder set), and must end up with the same
    class list as ``train``: checked at setup, naming the set that differs. ``matbench test``
    then writes one results JSON per set, with the set's name as ``dataset`` and the set's
    own datamodule description; metrics are logged as ``test/<name>/<metric>``.

    Args:
        train: The datamodule to fit on (its train and validation sets); None for a
            test-only run from a checkpoint.
        test: The test sets by name, in order, e.g. ``{fmd: …, dms_test21: …, google: …}``.
    """

    def __init__(
        self, train: BaseDataModule | None = None, test: dict[str, BaseDataModule] | None = None
    ) -> None:
        super().__init__()
        if not test:
            raise ValueError("CrossDatasetDataModule needs at least one named test datamodule")
        self.train_module = train
        self.test_modules = dict(test)
        self.test_split = "test"

    @property
    def augment(self) -> bool:
        """Whether the training datamodule augments (the feature cache asks)."""
        return bool(getattr(self.train_module, "augment", False))

    @property
    def dataloader_names(self) -> list[str]:
        """The test sets' names, in dataloader order."""
        return list(self.test_modules)

    @property
    def class_names(self) -> list[str] | None:
        """The model's label space: the training datamodule's classes (else the first test
        set's)."""
        module = self.train_module or next(iter(self.test_modules.values()))
        names = module.class_names
        return list(names) if names is not None else None

    def _children(self) -> list[BaseDataModule]:
        return [m for m in [self.train_module, *self.test_modules.values()] if m is not None]

    def setup(self, stage: str | None = None) -> None:
        for child in self._children():
            child.trainer = self.trainer  # children write their split files to the run
        if stage in ("fit", "validate") and self.train_module is None:
            raise ValueError("CrossDatasetDataModule has no 'train' datamodule to fit on")
        if stage in (None, "fit", "validate") and self.train_module is not None:
            self.train_module.setup(stage)
            self.train_dataset = self.train_module.train_dataset
            self.val_dataset = self.train_module.val_dataset
        if stage in (None, "test", "predict"):
            expected = self.class_names
            for name, module in self.test_modules.items():
                module.setup("test" if stage in (None, "test") else "predict")
                got = module.class_names
                if expected is not None and got is not None and list(got) != expected:
                    raise ValueError(
                        f"test set '{name}' ({type(module).__name__}) has {len(got)} classes "
                        f"{list(got)[:5]}… but the model's label space has {len(expected)} "
                        f"{expected[:5]}…: give it the same label_space"
                    )

    def set_eval_batch_transform(self, transform: Callable[[Any], Any] | None) -> None:
        """Every datamodule's evaluation batch transform (see
        :meth:`BaseDataModule.set_eval_batch_transform`)."""
        super().set_eval_batch_transform(transform)
        for child in self._children():
            child.set_eval_batch_transform(transform)

    def use_feature_cache(self, cache: FeatureCache | None) -> list[str]:
        """Every datamodule's feature cache (see :meth:`BaseDataModule.use_feature_cache`)."""
        served: set[str] = set()
        for child in self._children():
            served.update(child.use_feature_cache(cache))
        return [s for s in ("train", "val", "test", "predict") if s in served]

    def stage_datasets(self, stage: str) -> list[Dataset]:
        if stage in ("test", "predict"):
            return [
                d
                for m in self.test_modules.values()
                if (d := getattr(m, f"{stage}_dataset", None)) is not None
            ]
        return super().stage_datasets(stage)

    def train_dataloader(self) -> DataLoader:
        assert self.train_module is not None
        return self.train_module.train_dataloader()

    def val_dataloader(self) -> DataLoader:
        assert self.train_module is not None
        return self.train_module.val_dataloader()

    def test_dataloader(self) -> list[DataLoader]:  # type: ignore[override]
        return [m.test_dataloader() for m in self.test_modules.values()]

    def predict_dataloader(self) -> list[DataLoader]:  # type: ignore[override]
        return [m.predict_dataloader() for m in self.test_modules.values()]

    def describe_set(self, index: int) -> dict[str, Any]:
        """The results-JSON ``data`` record of test set ``index``."""
        name, module = list(self.test_modules.items())[index]
        info = module.describe()
        info.update(dataset=name, test_sets=self.dataloader_names)
        if self.train_module is not None:
            info["trained_on"] = self.train_module.describe()
        return info

    def describe(self) -> dict[str, Any]:
        return {
            "datamodule": type(self).__name__,
            "split": "test",
            "train": self.train_module.describe() if self.train_module is not None else None,
            "test_sets": {name: m.describe() for name, m in self.test_modules.items()},
        }
