"""The base class of every matbench datamodule."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.loggers.logger import DummyLogger
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler
from torch.utils.data._utils.collate import default_collate

from matbench.cache import CachedFeatures, FeatureCache
from matbench.errors import EvaluationError
from matbench.results import atomic_write_text, plain
from matbench.utils.distributed import world_and_rank


def _absolute_roots(root: Any) -> Any:
    """A root (or a list of roots) as absolute paths, for the results JSON."""
    if isinstance(root, (list, tuple)):
        return [str(Path(r).expanduser().resolve()) for r in root]
    return str(Path(root).expanduser().resolve()) if root else ""


def list_collate(samples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Collate dict samples into a dict of lists (for samples of different sizes)."""
    return {key: [sample[key] for sample in samples] for key in samples[0]}


class TransformedCollate:
    """A collate function followed by a batch transform, with one CPU thread: in a loader
    worker (which has one) or in the main process (where small per-sample ops would wait for
    the compute threads, see :func:`~matbench.utils.threads.one_cpu_thread`)."""

    def __init__(
        self, collate: Callable[[list[Any]], Any], transform: Callable[[Any], Any]
    ) -> None:
        self.collate = collate
        self.transform = transform

    def __call__(self, samples: list[Any]) -> Any:
        from matbench.utils.threads import one_cpu_thread

        with one_cpu_thread():
            return self.transform(self.collate(samples))


def split_sha256(record: Any) -> str:
    """SHA-256 of a split's canonical JSON (sorted keys): the results JSON's ``split_sha256``,
    equal for equal splits however the file was formatted."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank ``r`` of ``w`` gets samples ``r, r + w, r + 2w, …`` in order, without padding.

    Ranks may get different numbers of samples, so evaluation code must not run collectives
    per batch. A rank may even get none (a dataset smaller than the world); its length is
    still reported as 1 so that Lightning runs that rank's epoch hooks, where metrics sync
    (Lightning skips the whole loop, hooks included, on a rank of length 0). Being a
    ``DistributedSampler``, Lightning leaves it in place.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):  # type: ignore[override]
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return max(self.num_samples, 1)


class EpochSeededSampler(DistributedSampler):
    """The shuffled training sampler: the order is a function of ``(seed, epoch)``, and so is
    :attr:`generator`, the loader's own generator (the seed of its workers).

    A ``DataLoader`` otherwise draws its workers' base seed from the global torch RNG each
    time an iterator is created, and Lightning creates an extra one when it resumes from a
    checkpoint: the resumed run's global RNG, augmentations included, would drift from an
    uninterrupted run. Seeded here per epoch and rank, neither happens.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        state = np.random.SeedSequence([self.seed, epoch, self.rank]).generate_state(2)
        self.generator.manual_seed(int(state[0]) << 32 | int(state[1]))


class BaseDataModule(L.LightningDataModule):
    """Splits, loaders and the distributed sampling rules shared by all datamodules.

    Subclasses declare their own explicit, typed ``__init__`` arguments (never ``**kwargs``),
    pass ``batch_size``/``num_workers`` here, and set ``train_dataset``, ``val_dataset``,
    ``test_dataset`` and ``predict_dataset`` in :meth:`setup`. Datamodules with classes
    override :attr:`class_names`, those with several evaluation sets :attr:`dataloader_names`
    (both properties: tasks read them, see ``docs/dev/contracts.md``).

    Validation, test and predict loaders use an *unpadded* distributed sampler, so under DDP
    every sample is seen exactly once (Lightning's default sampler repeats samples to even out
    the ranks, which would bias every metric).

    Args:
        batch_size: Samples per batch.
        num_workers: Loader worker processes.
        eval_batch_size: Samples per batch for validation/test/predict (default: ``batch_size``).
    """

    #: Name of the split that ``test_dataset`` holds; recorded in the results JSON.
    test_split: str = "test"
    #: Training batches hold whole images (see :mod:`matbench.datamodules.sampler`), so a
    #: dataset with ``sample_groups()`` and ``__getitems__`` decodes each image once.
    group_by_image: bool = False
    #: Training batches are cut only between images (see
    #: :class:`~matbench.datamodules.sampler.ImageBatchSampler`); the dataset's
    #: ``__getitem__`` must take a list of indices.
    image_batches: bool = False
    #: Collate function of every loader.
    collate_fn: Callable[[list[Any]], Any] = staticmethod(default_collate)
    #: Training samples are randomly augmented (their inputs change between epochs).
    augment: bool = False

    def __init__(
        self, batch_size: int = 8, num_workers: int = 0, eval_batch_size: int | None = None
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        # The unpadded sampler can leave a rank without samples; that is intended.
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.predict_dataset: Dataset | None = None
        self._feature_cache: FeatureCache | None = None
        self._cache_views: dict[str, CachedFeatures] = {}
        self._eval_batch_transform: Callable[[Any], Any] | None = None

    # -- the contract tasks and tools read ------------------------------------------------------
    @property
    def class_names(self) -> list[str] | None:
        """The class names in label order, or None for data without a fixed class list
        (retrieval, MatSeg) and while the classes are not known yet (before :meth:`setup`
        where they come from the data)."""
        return None

    @property
    def dataloader_names(self) -> list[str] | None:
        """Names of the evaluation dataloaders, in order, used in logged keys and the results
        JSON; None for the single unnamed dataloader of each stage."""
        return None

    @property
    def object_crops(self) -> bool:
        """True when the samples' images are object crops already (the datamodule cut each
        object out): a model-side region crop would crop twice."""
        return False

    def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``save_hyperparameters``, except that a datamodule nested in another
        (the test sets of a ``CrossDatasetDataModule``) keeps its own arguments: LightningCLI
        hands the outer datamodule's config to every datamodule built under it."""
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

        kwargs.setdefault("frame", inspect.currentframe().f_back)  # the caller's __init__
        given = _given_hyperparameters.get()
        path = str(given.get("_class_path", "")) if isinstance(given, dict) else ""
        if not path or path.rsplit(".", 1)[-1] == type(self).__name__:
            super().save_hyperparameters(*args, **kwargs)
            return
        token = _given_hyperparameters.set(None)
        try:
            super().save_hyperparameters(*args, **kwargs)
        finally:
            _given_hyperparameters.reset(token)

    @classmethod
    def data_roots(cls, init_args: dict[str, Any], stage: str) -> list[tuple[str, str]]:
        """The folders ``stage`` reads, as (argument name, folder), from the constructor
        arguments (``root``, a string or a list of them, by default).

        The command line checks that they exist before it builds any model, so that a wrong
        path fails at once rather than after minutes of loading weights.
        """
        root = init_args.get("root")
        roots = [root] if isinstance(root, str) else list(root or [])
        return [("root", str(r)) for r in roots if r]

    # -- loaders -----------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self._loader(self._require("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require("test"), train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._require("predict"), train=False)

    def set_eval_batch_transform(self, transform: Callable[[Any], Any] | None) -> None:
        """Apply ``transform`` to every evaluation batch (validation, test, predict) as it is
        collated, in the loader's workers, in parallel with the model: a model's own input
        preprocessing, set by the task at setup (anomalib's pre-processor pattern); None
        removes it. Loaders made after the call use it."""
        self._eval_batch_transform = transform

    # -- the feature cache ------------------------------------------------------------------
    def use_feature_cache(self, cache: FeatureCache | None) -> list[str]:
        """Serve frozen features from ``cache`` (None: stop) for every stage whose inputs do
        not change between epochs: evaluation always, training unless :attr:`augment`. The
        datasets are wrapped in :class:`~matbench.cache.CachedFeatures` views when their
        loaders are made (datasets with ``fingerprint`` and ``sample_meta`` only); views
        already made follow at once. Returns the stages served."""
        self._feature_cache = cache
        for stage, view in self._cache_views.items():
            view.cache = self._stage_cache(stage)
        stages = ("train", "val", "test", "predict")
        return [s for s in stages if cache is not None and self._stage_cache(s) is not None]

    def _stage_cache(self, stage: str) -> FeatureCache | None:
        return None if stage == "train" and self.augment else self._feature_cache

    def _served(self, stage: str, dataset: Dataset) -> Dataset:
        """``dataset`` through its stage's feature-cache view (see :meth:`use_feature_cache`)."""
        if not (hasattr(dataset, "fingerprint") and hasattr(dataset, "sample_meta")):
            return dataset
        view = self._cache_views.get(stage)
        if view is None or view.dataset is not dataset:
            view = self._cache_views[stage] = CachedFeatures(dataset)
        view.cache = self._stage_cache(stage)
        return view

    def _require(self, stage: str) -> Dataset:
        dataset = getattr(self, f"{stage}_dataset")
        if dataset is None:
            raise RuntimeError(
                f"{type(self).__name__} has no {stage} dataset: setup() did not create one"
            )
        if len(dataset) == 0:
            # Lightning would skip the loop and exit 0 with no result at all.
            split = self.test_split if stage == "test" else stage
            raise EvaluationError(
                f"{type(self).__name__}: the '{split}' split of "
                f"'{self.hparams.get('root', '?')}' has no sample (check the root and the "
                "split settings, e.g. too few images per class for a per-class split)"
            )
        return self._served(stage, dataset)

    def _loader(
        self,
        dataset: Dataset,
        train: bool,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> DataLoader:
        world, rank = world_and_rank()
        if train:
            # Order and worker seeds are functions of (seed, epoch): Lightning calls
            # set_epoch, so a run resumed from a checkpoint continues exactly.
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            sampler: Sampler = self._train_sampler(dataset, world, rank, seed)
            generator = sampler.generator
        else:
            if dist.is_available() and dist.is_initialized():
                sampler = UnpaddedDistributedSampler(dataset, num_replicas=world, rank=rank)
            else:
                sampler = SequentialSampler(dataset)
            # Creating an iterator must not draw from the global RNG (training's augmentations).
            generator = torch.Generator().manual_seed(rank)
        collate = collate_fn or self.loader_collate_fn(train)
        if not train and self._eval_batch_transform is not None:
            collate = TransformedCollate(collate, self._eval_batch_transform)
        batch_size = self.batch_size if train else self.eval_batch_size
        if getattr(sampler, "yields_batches", False):
            batch_size = None  # the sampler's items are whole batches
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            # Training workers start afresh each epoch, seeded from (seed, epoch, rank), so
            # their augmentations do not depend on how many epochs this process has run.
            persistent_workers=self.num_workers > 0 and not train,
            generator=generator,
            drop_last=False,
        )

    def loader_collate_fn(self, train: bool) -> Callable[[list[Any]], Any]:
        """The collate function of the training (``train``) or evaluation loaders:
        :attr:`collate_fn` for both unless a datamodule batches them differently."""
        return self.collate_fn

    def stage_datasets(self, stage: str) -> list[Dataset]:
        """The datasets of a stage (``train``, ``val``, ``test``, ``predict``) that exist:
        one here, one per test set for :class:`~matbench.datamodules.cross.CrossDatasetDataModule`."""
        dataset = getattr(self, f"{stage}_dataset", None)
        return [] if dataset is None else [dataset]

    def describe_set(self, index: int) -> dict[str, Any]:
        """The results-JSON ``data`` record of test dataloader ``index``."""
        return self.describe()

    def _train_sampler(
        self, dataset: Dataset, world: int, rank: int, seed: int
    ) -> EpochSeededSampler:
        """The shuffled training sampler; a :class:`~matbench.datamodules.sampler.GroupedSampler`
        when :attr:`group_by_image` is set and the dataset has ``sample_groups()``."""
        if self.image_batches and hasattr(dataset, "sample_groups"):
            from matbench.datamodules.sampler import ImageBatchSampler

            groups = dataset.sample_groups()
            return ImageBatchSampler(dataset, groups, self.batch_size, world, rank, seed)
        if self.group_by_image and hasattr(dataset, "sample_groups"):
            from matbench.datamodules.sampler import GroupedSampler

            return GroupedSampler(dataset, dataset.sample_groups(), world, rank, seed)
        return EpochSeededSampler(dataset, world, rank, seed)

    def write_split_record(self, name: str, record: dict[str, Any]) -> Path | None:
        """Write ``record`` (a split and the settings that made it) as ``<name>.json`` into the
        run's log directory (``trainer.log_dir``) on global rank 0; None when the run has no
        directory (no trainer, ``logger=False``, ``fast_dev_run``) or on other ranks."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.logger is None or isinstance(trainer.logger, DummyLogger):
            return None
        # log_dir broadcasts from rank 0: every rank must ask for it
        out_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return None
        path = out_dir / f"{name}.json"
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
        return path

    def describe(self) -> dict[str, Any]:
        """What the results JSON records about the data: class, arguments and test split, and
        per split the label-leak counts of datasets with description sidecars."""
        root = self.hparams.get("root")
        info = {
            "datamodule": type(self).__name__,
            "root": _absolute_roots(root),
            "split": self.test_split,
            "hparams": {k: plain(v) for k, v in self.hparams.items()},
        }
        # Silent fallbacks made visible: what the reader skipped or replaced, counted.
        counts = getattr(self.test_dataset, "data_warnings", None)
        if counts:
            info["data_warnings"] = dict(counts)
        leaks = {
            stage: dataset.label_leaks
            for stage in ("train", "val", "test")
            if (dataset := getattr(self, f"{stage}_dataset", None)) is not None
            and getattr(dataset, "label_leaks", None) is not None
        }
        if leaks:
            info["label_leaks"] = leaks
        return info
