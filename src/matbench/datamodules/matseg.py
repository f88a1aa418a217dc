"""MatSeg datamodules: training scenes (soft masks) and the point-annotated benchmark."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from matbench.datamodules.base import BaseDataModule, EpochSeededSampler, list_collate
from matbench.datasets.errors import DatasetNotFoundError
from matbench.datasets.matseg import MatSegBenchmark, MatSegScenes
from matbench.formats.matseg import FINISHED, SCENE_IMAGE, finished_scenes
from matbench.utils.distributed import world_and_rank

log = logging.getLogger(__name__)


class MatSegAugment:
    """Image-only augmentations of MatSeg training (albumentations): darkening/lightening,
    Gaussian blur, full or partial decolouring and white noise.

    Args:
        p: Overall strength: every augmentation's probability is scaled by it (0 = none).
    """

    def __init__(self, p: float = 1.0) -> None:
        import albumentations as A

        self.compose = A.Compose(
            [
                A.RandomBrightnessContrast(
                    brightness_limit=(-0.3, 0.3), contrast_limit=(-0.2, 0.2), p=0.5 * p
                ),
                A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.2, 1.5), p=0.2 * p),
                A.OneOf(
                    [
                        A.ToGray(p=1.0),
                        A.ColorJitter(
                            brightness=0, contrast=0, saturation=(0.1, 0.7), hue=0, p=1.0
                        ),
                    ],
                    p=0.25 * p,
                ),
                A.GaussNoise(std_range=(0.01, 0.06), p=0.2 * p),
            ]
        )

    def __call__(self, image: np.ndarray, seed: int | None = None) -> np.ndarray:
        if seed is not None:  # the augmentation of a sample is a function of its seed
            self.compose.set_random_seed(seed)
        return self.compose(image=image)["image"]


def scenes_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack scene crops (all of one size) and pad the material dimension to the batch's largest,
    with ``valid`` (B, M) marking real materials."""
    sizes = {tuple(s["image"].shape[-2:]) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"scene crops of one batch must share a size, got {sorted(sizes)}")
    height, width = sizes.pop()
    num = max(1, max(s["fractions"].shape[0] for s in samples))
    fractions = torch.zeros(len(samples), num, height, width)
    valid = torch.zeros(len(samples), num, dtype=torch.bool)
    for i, s in enumerate(samples):
        m = s["fractions"].shape[0]
        fractions[i, :m] = s["fractions"]
        valid[i, :m] = True
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "fractions": fractions,
        "valid": valid,
        "roi": torch.stack([s["roi"] for s in samples]),
        "key": [s["key"] for s in samples],
        "index": torch.tensor([s["index"] for s in samples]),
    }


def matseg_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Benchmark samples (with ``points``) → lists; scene crops → :func:`scenes_collate`."""
    if "points" in samples[0]:
        return list_collate(samples)
    return scenes_collate(samples)


class SizedBatchSampler(BatchSampler):
    """Batches of ``(index, (height, width), sample_seed)``: one random crop size per batch.

    Sizes and per-sample seeds (which fix each sample's crop and augmentation) are drawn from a
    generator seeded by ``(seed, epoch, rank)``, the epoch being the one Lightning sets on the
    inner ``sampler``: a run resumed from a checkpoint draws exactly what an uninterrupted one
    would, whatever the number of loader workers.

    Args:
        sampler: Index sampler (a seeded ``DistributedSampler``, so its order is a function of
            the epoch too).
        batch_size: Samples per batch.
        drop_last: Drop the last incomplete batch.
        min_size: Smallest crop side.
        max_size: Largest crop side.
        multiple: Sizes are multiples of this (keeps the encoder stride happy; 1 = any).
        seed: Seed of the size and sample-seed draws.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sized,
        batch_size: int,
        drop_last: bool = False,
        min_size: int = 250,
        max_size: int = 900,
        multiple: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        if min_size < 1 or max_size < min_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size, self.multiple = (
            min_size,
            max(min_size, max_size),
            max(1, multiple),
        )
        self.seed = seed

    def _size(self, generator: np.random.Generator) -> int:
        size = int(generator.integers(self.min_size, self.max_size + 1))
        return max(self.multiple, size // self.multiple * self.multiple)

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, int], int]]]:
        epoch = int(getattr(self.sampler, "epoch", 0))
        rank = int(getattr(self.sampler, "rank", 0))
        generator = np.random.default_rng([self.seed, epoch, rank])
        for batch in super().__iter__():
            size = (self._size(generator), self._size(generator))
            yield [(i, size, int(generator.integers(2**62))) for i in batch]


class MixedScenes(Dataset):
    """Several :class:`MatSegScenes` behind one index space (scene roots one after another).

    Items are those of :class:`MatSegScenes` (an index, or ``(index, size, seed)``); ``key`` is
    prefixed with the root's position (``"1/000042"``) so that scene names of two roots stay
    apart.
    """

    def __init__(self, parts: list[MatSegScenes]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, item: int | tuple[Any, ...]) -> dict[str, Any]:
        index, rest = (item[0], item[1:]) if isinstance(item, tuple) else (item, ())
        if not 0 <= index < len(self):
            raise IndexError(f"scene index {index} out of range for {len(self)} scenes")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        local = index - int(self.offsets[part])
        sample = self.parts[part][(local, *rest) if rest else local]
        sample["key"] = f"{part}/{sample['key']}"
        sample["index"] = index
        return sample


class MixedRootSampler(EpochSeededSampler):
    """Training indices over several scene roots drawn by weight (sampling with replacement).

    Each epoch makes ``epoch_size`` draws, the same on every rank (seeded by ``(seed, epoch)``):
    a root with probability proportional to its weight, then one of its scenes uniformly. Rank
    ``r`` of ``w`` takes draws ``r, r + w, …``. :attr:`counts` holds this rank's draws per
    root in the current epoch.

    Args:
        sizes: Number of scenes of each root (indices are concatenated in this order).
        weights: Sampling weight of each root (non-negative, not all zero).
        epoch_size: Draws per epoch (over all ranks).
        num_replicas: World size.
        rank: This rank.
        seed: Seed of the draws.
    """

    def __init__(
        self,
        sizes: list[int],
        weights: list[float],
        epoch_size: int,
        num_replicas: int,
        rank: int,
        seed: int,
    ) -> None:
        if len(sizes) != len(weights):
            raise ValueError(f"{len(sizes)} roots but {len(weights)} weights")
        w = np.asarray(weights, dtype=np.float64)
        if (
            (w < 0).any()
            or w.sum() <= 0
            or any(s == 0 for s, x in zip(sizes, w, strict=True) if x > 0)
        ):
            raise ValueError(f"weights must be >= 0, not all 0, on non-empty roots: {weights}")
        if epoch_size < 1:
            raise ValueError(f"epoch_size must be at least 1, got {epoch_size}")
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.probabilities = w / w.sum()
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        super().__init__(range(int(self.sizes.sum())), num_replicas, rank, seed)
        self.num_samples = -(-epoch_size // num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.counts = np.zeros(len(sizes), dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, 0x6D6978])
        # Two uniforms per draw: draw k is the same whatever the world size pads the epoch to.
        uniforms = rng.random((self.total_size, 2))
        edges = np.cumsum(self.probabilities)
        roots = np.minimum(np.searchsorted(edges, uniforms[:, 0], side="right"), len(edges) - 1)
        roots = np.where(self.probabilities[roots] > 0, roots, np.argmax(self.probabilities))
        within = np.floor(uniforms[:, 1] * self.sizes[roots]).astype(np.int64)
        indices = (self.offsets[roots] + within)[self.rank : self.total_size : self.num_replicas]
        self.counts = np.bincount(
            roots[self.rank : self.total_size : self.num_replicas], minlength=len(self.sizes)
        )
        log.info("MatSeg mixed sampling, epoch %d: draws per root %s", self.epoch, self.counts)
        return iter(indices.tolist())


class MatSegDataModule(BaseDataModule):
    """MatSeg training scenes for fit/validate; the point benchmark for test/predict.

    Training samples are random crops resized to a side drawn per batch in
    ``[min_size, max_size]`` (or exactly ``crop_size``), augmented; the material dimension is
    padded per batch (``valid`` flags). Validation uses held-out scenes with fixed, seeded crops of
    ``val_size`` and reports the loss. Test and predict read ``benchmark_root`` (when given; else
    predict writes the validation scenes' descriptor maps).

    Args:
        root: Folder of scene folders (``<root>/<scene>/Finished.txt``…), or a list of such
            folders (e.g. 2D, 3D and released scenes) for mixed training: each root is split
            into train/val on its own, training draws roots by ``root_weights``.
        root_weights: Sampling weight of each root of a list (default: equal weights). Only
            the ratios count; a weight of 0 keeps a root for validation only.
        epoch_size: Training draws per epoch with several roots (default: the number of
            training scenes of all roots).
        benchmark_root: MatSeg benchmark folder (``images/``, ``data/``) for test and predict.
        crop_size: Fixed training crop side; None = draw in ``[min_size, max_size]`` per batch.
        min_size: Smallest training crop side.
        max_size: Largest training crop side.
        val_size: Validation crop side.
        val_fraction: Fraction of scenes held out for validation (at least one when there are
            two scenes or more; with one scene, validation reuses it).
        min_crop_fraction: Smallest crop window, as a fraction of the largest that fits.
        augment: Apply the training augmentations.
        on_error: ``raise`` on a bad scene file, or ``skip`` it with a logged warning.
        benchmark_max_size: Longest side of benchmark images.
        batch_size: Training crops per batch.
        eval_batch_size: Samples per validation/test/predict batch.
        num_workers: Loader worker processes.
        seed: Seed of the split, crops and crop sizes.
        index_cache: Folder of cached scene indexes (keyed by the names, sizes and
            modification times of the scenes' files); ``"auto"`` =
            ``$MATBENCH_CACHE_DIR/index``; None = check every scene's files on every run.
    """

    test_split = "benchmark"

    def __init__(
        self,
        root: str | list[str],
        benchmark_root: str | None = None,
        root_weights: list[float] | None = None,
        epoch_size: int | None = None,
        crop_size: int | None = None,
        min_size: int = 250,
        max_size: int = 900,
        val_size: int = 256,
        val_fraction: float = 0.1,
        min_crop_fraction: float = 0.3,
        augment: bool = True,
        on_error: Literal["raise", "skip"] = "raise",
        benchmark_max_size: int = 700,
        batch_size: int = 4,
        eval_batch_size: int | None = 1,
        num_workers: int = 0,
        seed: int = 0,
        index_cache: str | None = "auto",
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.save_hyperparameters()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        roots = self.roots
        if root_weights is not None and len(root_weights) != len(roots):
            raise ValueError(f"root_weights has {len(root_weights)} values for {len(roots)} roots")
        if root_weights is not None and (min(root_weights) < 0 or sum(root_weights) <= 0):
            raise ValueError(f"root_weights must be >= 0 and not all 0, got {root_weights}")
        self.collate_fn = matseg_collate
        #: Per root after :meth:`setup`: path, training and validation scenes, weight.
        self.scene_counts: list[dict[str, Any]] = []

    @classmethod
    def data_roots(cls, init_args: dict[str, Any], stage: str) -> list[tuple[str, str]]:
        benchmark = init_args.get("benchmark_root")
        if stage in ("test", "predict") and benchmark:
            return [("benchmark_root", str(benchmark))]
        return super().data_roots(init_args, stage)

    @property
    def roots(self) -> list[str]:
        """The scene roots (one for a plain string)."""
        root = self.hparams.root
        return [root] if isinstance(root, str) else list(root)

    @property
    def mixed(self) -> bool:
        """Whether training mixes several scene roots."""
        return len(self.roots) > 1

    def _split(self, root_path: str) -> tuple[list[str], list[str]]:
        root = Path(root_path)
        if not root.is_dir():
            raise DatasetNotFoundError("MatSegScenes", root, [f"<scene>/{FINISHED}"])
        names = [p.name for p in finished_scenes(root)]
        if len(names) < 2:
            return names, names
        order = np.random.default_rng(self.hparams.seed).permutation(len(names))
        n_val = min(len(names) - 1, max(1, round(len(names) * self.hparams.val_fraction)))
        val = sorted(names[i] for i in order[:n_val])
        train = sorted(names[i] for i in order[n_val:])
        return train, val

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.mixed and (
            stage in ("fit", "validate", None) or (stage == "predict" and not hp.benchmark_root)
        ):
            self._setup_mixed(stage)
        elif stage in ("fit", "validate", None) or (stage == "predict" and not hp.benchmark_root):
            root = self.roots[0]
            train, val = self._split(root)
            if not train:
                raise DatasetNotFoundError(
                    "MatSegScenes", root, [f"<scene>/{FINISHED}", f"<scene>/{SCENE_IMAGE}"]
                )
            common = dict(
                min_crop_fraction=hp.min_crop_fraction,
                on_error=hp.on_error,
                seed=hp.seed,
                index_cache=hp.index_cache,
            )
            if stage in ("fit", None):
                self.train_dataset = MatSegScenes(
                    root,
                    crop_size=hp.crop_size or hp.min_size,
                    transform=MatSegAugment() if hp.augment else None,
                    scenes=train,
                    **common,
                )
            self.val_dataset = MatSegScenes(
                root, crop_size=hp.val_size, scenes=val, fixed_crops=True, **common
            )
            self.scene_counts = [{"root": root, "train": len(train), "val": len(val)}]
            if stage == "predict":
                self.predict_dataset = self.val_dataset
        if stage in ("test", "predict", None) and hp.benchmark_root:
            bench = MatSegBenchmark(hp.benchmark_root, max_size=hp.benchmark_max_size)
            self.test_dataset = bench
            self.predict_dataset = bench
        if stage == "test" and not hp.benchmark_root:
            raise ValueError(
                "MatSegDataModule: `test` needs a benchmark; set --data.benchmark_root to a MatSeg "
                "benchmark folder (images/, data/)"
            )

    def _setup_mixed(self, stage: str | None) -> None:
        hp = self.hparams
        weights = hp.root_weights or [1.0] * len(self.roots)
        common = dict(
            min_crop_fraction=hp.min_crop_fraction,
            on_error=hp.on_error,
            seed=hp.seed,
            index_cache=hp.index_cache,
        )
        train_parts, val_parts, self.scene_counts = [], [], []
        for root, weight in zip(self.roots, weights, strict=True):
            train, val = self._split(root)
            if not train:
                raise DatasetNotFoundError(
                    "MatSegScenes", root, [f"<scene>/{FINISHED}", f"<scene>/{SCENE_IMAGE}"]
                )
            if stage in ("fit", None):
                train_parts.append(
                    MatSegScenes(
                        root,
                        crop_size=hp.crop_size or hp.min_size,
                        transform=MatSegAugment() if hp.augment else None,
                        scenes=train,
                        **common,
                    )
                )
            val_parts.append(
                MatSegScenes(root, crop_size=hp.val_size, scenes=val, fixed_crops=True, **common)
            )
            self.scene_counts.append(
                {"root": root, "train": len(train), "val": len(val), "weight": float(weight)}
            )
        total = sum(weights)
        for entry in self.scene_counts:
            log.info(
                "MatSegDataModule: %s: %d training scenes (sampling share %.1f%%), %d validation",
                entry["root"],
                entry["train"],
                100.0 * entry["weight"] / total,
                entry["val"],
            )
        if train_parts:
            self.train_dataset = MixedScenes(train_parts)
        self.val_dataset = MixedScenes(val_parts)
        if stage == "predict":
            self.predict_dataset = self.val_dataset

    def train_dataloader(self) -> DataLoader:
        dataset = self._require("train")
        hp = self.hparams
        low, high = (hp.crop_size, hp.crop_size) if hp.crop_size else (hp.min_size, hp.max_size)
        if isinstance(dataset, MixedScenes):
            shuffle: EpochSeededSampler = MixedRootSampler(
                [len(p) for p in dataset.parts],
                hp.root_weights or [1.0] * len(dataset.parts),
                hp.epoch_size or len(dataset),
                *world_and_rank(),
                seed=hp.seed,
            )
        else:
            shuffle = EpochSeededSampler(dataset, *world_and_rank(), seed=hp.seed)
        sampler = SizedBatchSampler(
            shuffle,
            self.batch_size,
            drop_last=False,
            min_size=low,
            max_size=high,
            seed=hp.seed,
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            # samples carry their own seeds: persistent workers stay exact on resume
            persistent_workers=self.num_workers > 0,
            generator=shuffle.generator,  # leaves the global RNG alone
        )

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["root"] = str(self.hparams.benchmark_root or self.hparams.root)
        # A test run records what the model was trained on: the split of every scene root.
        info["scenes"] = self.scene_counts or self._count_scenes()
        return info

    def _count_scenes(self) -> list[dict[str, Any]]:
        weights = self.hparams.root_weights or [1.0] * len(self.roots)
        counts = []
        for root, weight in zip(self.roots, weights, strict=True):
            if not Path(root).is_dir():
                continue
            train, val = self._split(root)
            entry: dict[str, Any] = {"root": root, "train": len(train), "val": len(val)}
            if self.mixed:
                entry["weight"] = float(weight)
            counts.append(entry)
        return counts


class MatSegBenchmarkDataModule(BaseDataModule):
    """The MatSeg point benchmark alone, for ``test`` and ``predict`` (e.g. the baselines).

    Args:
        root: Benchmark folder with ``images/`` and ``data/``.
        max_size: Longest image side after resizing.
        batch_size: Images per batch (lists; images differ in size).
        num_workers: Loader worker processes.
    """

    test_split = "benchmark"
    collate_fn = staticmethod(list_collate)

    def __init__(
        self, root: str, max_size: int = 700, batch_size: int = 1, num_workers: int = 0
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate"):
            raise ValueError(
                "MatSegBenchmarkDataModule only serves test and predict; train with "
                "MatSegDataModule on scenes"
            )
        self.test_dataset = MatSegBenchmark(self.hparams.root, max_size=self.hparams.max_size)
        self.predict_dataset = self.test_dataset


__all__ = [
    "MatSegAugment",
    "MatSegBenchmarkDataModule",
    "MatSegDataModule",
    "SizedBatchSampler",
    "matseg_collate",
    "scenes_collate",
]
