"""LVIS-materials datamodule: object crops with material captions, and the seeded split."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from matbench.datamodules.base import BaseDataModule, split_sha256
from matbench.datamodules.folder import read_split_file
from matbench.datasets.lvis_materials import LVISMaterials, object_batch_tensors
from matbench.transforms import ObjectCrop, context_image, finish_polygon_batch


class _ObjectTransform:
    """Object crop, optional whole-image context, optional horizontal flip (training)."""

    accepts_region_masks = True  # the mask only reaches the ObjectCrop

    def __init__(self, crop: ObjectCrop, context_size: int | None, flip: bool) -> None:
        self.crop = crop
        self.context_size = context_size
        self.flip = flip

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = sample["image"]
        sample = self.crop(sample)
        flip = self.flip and bool(torch.rand(()) < 0.5)
        if self.crop.finish_on_device:
            sample["flip"] = torch.tensor(flip)  # applied after the blur, on the device
        elif flip:
            sample["image"] = sample["image"].flip(-1)
            sample["mask"] = sample["mask"].flip(-1)
        if self.context_size is not None:
            context = context_image(image, self.context_size)
            sample["context"] = context.flip(-1) if flip else context
        if not self.crop.keep_size:
            sample.pop("box", None)  # regions keep their box (x0, y0, x1, y1) in the image
        return sample


def object_batch_collate(batch: dict[str, Any]) -> dict[str, Any]:
    """The collate function of object batches (:meth:`LVISSplit.__getitems__` with
    ``object_batches``): the dataset already made the batch."""
    return batch


def _merge_object_arrays(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Object arrays of several parts (:meth:`LVISMaterials.object_arrays`) as one, the
    parts' objects one after the other."""
    image_base = np.cumsum([0] + [len(b["images"]) for b in batches])
    object_base = np.cumsum([0] + [len(b["label"]) for b in batches])
    point_base = np.cumsum([0] + [len(b["points"]) for b in batches])
    out: dict[str, Any] = {"images": [image for b in batches for image in b["images"]]}
    for key in ("image_scale", "image_hw", "points", "box", "label"):
        out[key] = np.concatenate([b[key] for b in batches])
    out["image_of"] = np.concatenate([b["image_of"] + image_base[j] for j, b in enumerate(batches)])
    out["polygon_object"] = np.concatenate(
        [b["polygon_object"] + object_base[j] for j, b in enumerate(batches)]
    )
    out["polygon_offsets"] = np.concatenate(
        [[0]] + [b["polygon_offsets"][1:] + point_base[j] for j, b in enumerate(batches)]
    )
    for key in ("caption", "key"):
        out[key] = [value for b in batches for value in b[key]]
    return out


def region_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate deferred object crops: ``image`` and ``mask`` (regions of different sizes)
    as lists, everything else as ``default_collate`` does."""
    ragged = ("image", "mask")
    batch = default_collate([{k: v for k, v in s.items() if k not in ragged} for s in samples])
    for key in ragged:
        batch[key] = [s[key] for s in samples]
    return batch


def seeded_image_split(
    image_ids: list[int], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Images into ``train``/``val``/``test``, by image (an image's objects stay together).

    Every image is ranked by ``sha256(f"{seed}:{image_id}")``; the first
    ``round(test_fraction * n)`` go to test, the next ``round(val_fraction * n)`` to val (each at
    least one when its fraction is positive), the rest to train. An image's rank depends only on its id and the seed, not on the file's order.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError("val_fraction + test_fraction must be < 1")
    ids = sorted({int(i) for i in image_ids})
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    n = len(ranked)
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    if n_test + n_val > n:
        raise ValueError(
            f"{n} images cannot give {n_val} validation and {n_test} test images: use more "
            "images, or split: files"
        )
    return {
        "train": sorted(ranked[n_test + n_val :]),
        "val": sorted(ranked[n_test : n_test + n_val]),
        "test": sorted(ranked[:n_test]),
    }


class _SplitObjects(Sequence):
    """The object records of an :class:`LVISSplit`, made on access."""

    def __init__(self, split: LVISSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        split = self.split
        dataset = split.datasets[int(split.part[index])]
        return dataset.objects[int(split.position[index])]


class LVISSplit(Dataset):
    """Some images' objects of one or more :class:`LVISMaterials` files, as one dataset.

    ``index`` is the position in this dataset and ``label`` indexes :attr:`materials`, the
    sorted union of the parts' vocabularies. Batched reads (``__getitems__``: each image
    decoded once) and image groups (``sample_groups``) pass through to the parts.

    With ``object_batches`` a batched read gives one object batch
    (:meth:`LVISMaterials.object_batch`: each image once, the objects' polygons as arrays)
    for :func:`~matbench.transforms.finish_polygon_batch` to finish on the device, and draws
    ``flip`` (a flag per object, drawn in the order the parts' transforms draw theirs).

    Args:
        parts: ``(dataset, image ids or None for all)`` pairs.
        object_batches: Batched reads give object batches instead of samples.
        flip: Object batches: draw random horizontal flips.
    """

    def __init__(
        self,
        parts: list[tuple[LVISMaterials, set[int] | None]],
        object_batches: bool = False,
        flip: bool = False,
    ) -> None:
        self.object_batches = object_batches
        self.flip = flip
        self.datasets = [dataset for dataset, _ in parts]
        self.materials = sorted({m for dataset in self.datasets for m in dataset.materials})
        lookup = {name: i for i, name in enumerate(self.materials)}
        self._relabel = [[lookup[m] for m in d.materials] for d in self.datasets]
        self._relabel_arrays = [np.asarray(r, dtype=np.int64) for r in self._relabel]
        parts_of, positions = [], []
        for k, (dataset, images) in enumerate(parts):
            a = dataset.index.arrays
            if images is None:
                chosen = np.arange(len(dataset))
            else:
                object_images = np.asarray(a["image_id"])[np.asarray(a["image_row"])]
                chosen = np.flatnonzero(np.isin(object_images, sorted(images)))
            parts_of.append(np.full(len(chosen), k))
            positions.append(chosen)
        self.part = np.concatenate(parts_of) if parts_of else np.zeros(0, int)
        self.position = np.concatenate(positions) if positions else np.zeros(0, int)
        #: The annotation file of the first part (the test split's file).
        self.annotation_file = self.datasets[0].annotation_file

    def __len__(self) -> int:
        return len(self.position)

    @property
    def transforms(self) -> Any:
        """The parts' sample transforms; setting it gives the parts (copies) new ones."""
        return self.datasets[0].transforms

    @transforms.setter
    def transforms(self, value: Any) -> None:
        copies = [copy.copy(dataset) for dataset in self.datasets]
        for dataset in copies:
            dataset.transforms = value
        self.datasets = copies

    @property
    def objects(self) -> list[dict[str, Any]]:
        """The object records (``id``, ``image_id``, ...) of the samples, in order."""
        return _SplitObjects(self)

    def _finish(self, index: int, sample: dict[str, Any]) -> dict[str, Any]:
        sample["index"] = index
        label = sample["label"]
        sample["label"] = torch.as_tensor(self._relabel[int(self.part[index])][int(label)])
        return sample

    def __getitem__(self, index: int | list[int]) -> Any:
        """Sample ``index``, or a batched read of a list of indices (as a batch sampler such
        as :class:`~matbench.datamodules.sampler.ImageBatchSampler` gives them)."""
        if isinstance(index, list):
            return self.__getitems__(index)
        if self.object_batches:
            return self.__getitems__([index])
        dataset = self.datasets[int(self.part[index])]
        return self._finish(index, dataset[int(self.position[index])])

    def __getitems__(self, indices: list[int]) -> Any:
        if self.object_batches:
            return self._object_batch(indices)
        out: list[dict[str, Any] | None] = [None] * len(indices)
        for k, dataset in enumerate(self.datasets):
            slots = [j for j, i in enumerate(indices) if int(self.part[i]) == k]
            if not slots:
                continue
            samples = dataset.__getitems__([int(self.position[indices[j]]) for j in slots])
            for j, sample in zip(slots, samples, strict=True):
                out[j] = self._finish(indices[j], sample)
        return out  # type: ignore[return-value]

    def _object_batch(self, indices: list[int]) -> dict[str, Any]:
        indices_array = np.asarray(indices, dtype=np.int64)
        parts = self.part[indices_array]
        slots, batches = [], []
        for k, dataset in enumerate(self.datasets):
            mine = np.flatnonzero(parts == k) if len(self.datasets) > 1 else None
            if mine is not None and not len(mine):
                continue
            positions = self.position[indices_array if mine is None else indices_array[mine]]
            batch = dataset.object_arrays(positions)
            batch["label"] = self._relabel_arrays[k][batch["label"]]
            slots.append(np.arange(len(indices)) if mine is None else mine)
            batches.append(batch)
        out = batches[0] if len(batches) == 1 else _merge_object_arrays(batches)
        # the parts' objects one after the other (the order of their draws), then put back
        # into the order of ``indices``
        order = np.concatenate(slots)
        n = len(indices)
        inverse = None
        if not np.array_equal(order, np.arange(n)):
            inverse = np.argsort(order)
            for key in ("image_of", "image_hw", "box", "label"):
                out[key] = out[key][inverse]
            out["polygon_object"] = order[out["polygon_object"]]
            for key in ("caption", "key"):
                out[key] = [out[key][j] for j in inverse.tolist()]
        out["index"] = indices_array
        result = object_batch_tensors(out)
        if self.flip:
            flips = torch.rand(n) < 0.5
            result["flip"] = flips if inverse is None else flips[torch.from_numpy(inverse)]
        return result

    def sample_groups(self) -> np.ndarray:
        """The image of every sample, distinct across the parts."""
        groups = np.zeros(len(self), dtype=np.int64)
        offset = 0
        for k, dataset in enumerate(self.datasets):
            own = np.asarray(dataset.sample_groups(), dtype=np.int64)
            rows = self.part == k
            groups[rows] = own[self.position[rows]] + offset
            offset += int(own.max()) + 1 if len(own) else 0
        return groups


class LVISMaterialsDataModule(BaseDataModule):
    """LVIS objects cropped around their masks, captioned with their material.

    Paths are relative to ``root`` (see :mod:`matbench.datasets.lvis_materials` for the
    layout). Each annotation file needs its materials sidecar (``<stem>_materials.json``
    beside it unless given).

    **Splits.** LVIS has no public test annotations, and the validation annotations also pick
    the best checkpoint. ``split: seeded`` (default) makes a fixed, seeded split by image:
    the images of the validation file are ranked by a hash of ``(split_seed, image id)``;
    ``test_fraction`` of them form the test split, ``val_fraction`` the validation split, and
    the rest join every image of the training file in the training split (with LVIS v1 and the
    defaults: ~1.1M training objects, ~50k each for validation and test). The split is written
    as ``lvis_materials_split.json`` into the run's log directory (reuse it with
    ``split_file``), and its SHA-256 goes into every results JSON. ``split: files`` uses the
    files as they are: ``test_annotations``, or the validation file only with
    ``test_on_val: true`` (a test on the checkpoint-selection set must be asked for).


    Samples: ``image`` (3, S, S) object crop (padded to >= ``crop_min_size`` px per side,
    resized, blurred outside the mask), ``mask``, ``caption``, ``label``, ``key`` (the
    annotation id), ``index``, and ``context`` (the whole image at ``context_size``) when
    ``context_size`` is set (for late fusion).

    Args:
        root: Folder holding ``coco/`` and ``lvis/``.
        train_annotations: Training annotation JSON.
        val_annotations: Validation annotation JSON.
        test_annotations: ``split: files``: test annotation JSON.
        predict_annotations: Annotation JSON to embed with ``predict`` (default: the test
            split).
        train_sidecar: Sidecar of the training file (default ``<stem>_materials.json``).
        val_sidecar: Sidecar of the validation file.
        test_sidecar: Sidecar of the test file.
        predict_sidecar: Sidecar of the predict file.
        split: ``seeded`` (the fixed split by image described above) or ``files``.
        split_seed: Seed of the seeded split.
        val_fraction: Seeded split: fraction of the validation file's images for validation.
        test_fraction: Seeded split: fraction of the validation file's images for test.
        split_file: A split written by an earlier run (``lvis_materials_split.json``), used
            instead of computing it.
        test_on_val: ``split: files`` without ``test_annotations``: test on the validation
            annotations (refused otherwise).
        images: Images root (with ``train2017/``, ``val2017/``).
        image_size: Side of the object crop given to the model.
        crop_min_size: Smallest side of the crop in original pixels (the talk's 50 px).
        crop_blur_sigma: Blur outside the mask, in output pixels; 0 = off.
        crop_context: Extra margin around the box, as a fraction of its side.
        crop_square: Square crops (keep the aspect ratio).
        context_size: Also return the whole image at this size (late fusion); None = no.
        caption: ``"material"`` (the material names) or ``"sidecar"`` (the free text).
        template: Caption template such as ``"an object made of {}"``; None = name alone.
        flip: Random horizontal flips of training samples.
        batch_size: Samples per batch.
        num_workers: Loader worker processes.
        eval_batch_size: Samples per batch for evaluation.
        group_by_image: Training batches hold whole images, each decoded once for all of its
            objects (:class:`~matbench.datamodules.sampler.GroupedSampler`); the order is
            still a seeded shuffle, over images. Off by default: it changes which objects
            share a batch (the in-batch negatives of the contrastive loss).
        decode_draft: Decode a JPEG at 1/2, 1/4 or 1/8 size when all of its objects in the
            batch keep at least ``image_size`` pixels per box side (approximately the same
            crop, much less decoding for large objects).
        index_cache: Folder of cached annotation indexes; ``"auto"`` =
            ``$MATBENCH_CACHE_DIR/index``; None = parse the JSON on every run.
        crop_on_device: Loader workers only decode each image of a batch once and gather
            its objects' polygons, boxes and labels from the index; the polygons' masks
            (rasterised exactly as pycocotools does), the crop, the resize, the background
            blur, the flip and the context run on the batch's device after transfer
            (:meth:`on_after_batch_transfer`), with the same batches as without it. Frees
            the CPU when the loader cannot keep up with a GPU.
        image_batches: Training batches are cut only between images
            (:class:`~matbench.datamodules.sampler.ImageBatchSampler`, implies
            ``group_by_image``): at most ``batch_size`` objects each, so no image is decoded
            for two batches. Batches then vary in size (a few objects fewer than
            ``batch_size`` on average), hence off by default.
    """

    split_name = "lvis_materials_split"

    def __init__(
        self,
        root: str = "data/lvis_materials",
        train_annotations: str = "lvis/lvis_v1_train.json",
        val_annotations: str = "lvis/lvis_v1_val.json",
        test_annotations: str | None = None,
        predict_annotations: str | None = None,
        train_sidecar: str | None = None,
        val_sidecar: str | None = None,
        test_sidecar: str | None = None,
        predict_sidecar: str | None = None,
        split: Literal["seeded", "files"] = "seeded",
        split_seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_file: str | None = None,
        test_on_val: bool = False,
        images: str = "coco",
        image_size: int = 224,
        crop_min_size: int = 50,
        crop_blur_sigma: float = 4.0,
        crop_context: float = 0.0,
        crop_square: bool = True,
        context_size: int | None = None,
        caption: Literal["material", "sidecar"] = "material",
        template: str | None = None,
        flip: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        group_by_image: bool = False,
        decode_draft: bool = False,
        index_cache: str | None = "auto",
        crop_on_device: bool = False,
        image_batches: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.save_hyperparameters()
        self.group_by_image = group_by_image or image_batches
        self.image_batches = image_batches
        if crop_on_device:
            self.collate_fn = object_batch_collate
        if split not in ("seeded", "files"):
            raise ValueError(f"split must be 'seeded' or 'files', got '{split}'")
        self.root = Path(root)
        self._materials: list[str] | None = None
        on_val = split == "files" and test_annotations is None
        self.test_split = "val" if on_val else "test"
        #: The seeded split (image ids per split), once computed or read.
        self.split_record: dict[str, Any] | None = None
        self.split_path: Path | None = None
        self._files: dict[tuple[str, bool], LVISMaterials] = {}

    def _file(self, split: str, train: bool = False, regions: bool = False) -> LVISMaterials:
        """The whole annotation file of ``split`` with the training or evaluation transforms,
        or (``regions``) giving each object's region at its own size, for the model's own eval
        transform (one reader per file and kind; the index cache makes a second one cheap)."""
        hp = self.hparams
        annotations, sidecar = hp[f"{split}_annotations"], hp[f"{split}_sidecar"]
        key = (str(annotations), train, regions)
        if key not in self._files:
            crop = ObjectCrop(
                size=hp.image_size,
                min_size=hp.crop_min_size,
                blur_sigma=hp.crop_blur_sigma,
                context=hp.crop_context,
                square=hp.crop_square,
                finish_on_device=hp.crop_on_device and not regions,
                keep_size=regions,
            )
            self._files[key] = LVISMaterials(
                self.root / annotations,
                self.root / hp.images,
                sidecar=self.root / sidecar if sidecar else "auto",
                caption=hp.caption,
                template=hp.template,
                transforms=_ObjectTransform(crop, hp.context_size, flip=train and hp.flip),
                index_cache=hp.index_cache,
                draft_size=hp.image_size if hp.decode_draft else None,
                uint8_images=True,  # only the crops are converted to float
            )
        return self._files[key]

    # -- the split -----------------------------------------------------------------------------
    def _split(self) -> dict[str, Any]:
        """The seeded split record: settings and the validation file's image ids per split
        (``{"settings": ..., "splits": {"train": [...], "val": [...], "test": [...]}}``)."""
        if self.split_record is not None:
            return self.split_record
        hp = self.hparams
        if hp.split_file:
            splits = read_split_file(hp.split_file)
            record = {
                "settings": {"split_file": hp.split_file},
                "splits": {k: sorted(int(i) for i in v) for k, v in splits.items()},
            }
        else:
            arrays = self._file("val").index.arrays
            val_images = np.unique(np.asarray(arrays["image_id"])[np.asarray(arrays["image_row"])])
            val_images = val_images.tolist()
            record = {
                "settings": {
                    "split_seed": hp.split_seed,
                    "val_fraction": hp.val_fraction,
                    "test_fraction": hp.test_fraction,
                    "train_annotations": hp.train_annotations,
                    "val_annotations": hp.val_annotations,
                    "train_holds": "every image of train_annotations, and splits.train",
                },
                "splits": seeded_image_split(
                    val_images, hp.val_fraction, hp.test_fraction, hp.split_seed
                ),
            }
        self.split_record = record
        path = self.write_split_record(self.split_name, record)
        if path is not None:
            self.split_path = path
        return record

    def _dataset(self, split: str, train: bool = False, regions: bool = False) -> LVISSplit:
        hp = self.hparams
        batches = {"object_batches": hp.crop_on_device and not regions, "flip": train and hp.flip}
        if hp.split == "files":
            if split in ("test", "predict") and hp[f"{split}_annotations"] is None:
                return self._dataset("test" if split == "predict" else "val", regions=regions)
            return LVISSplit([(self._file(split, train, regions), None)], **batches)
        if split == "predict" and hp.predict_annotations is not None:
            return LVISSplit([(self._file("predict", regions=regions), None)], **batches)
        if split == "predict":
            split = "test"
        images = {k: set(v) for k, v in self._split()["splits"].items()}
        if split == "train":
            parts = [(self._file("train", True), None), (self._file("val", True), images["train"])]
            return LVISSplit(parts, **batches)
        return LVISSplit([(self._file("val", regions=regions), images[split])], **batches)

    @property
    def object_crops(self) -> bool:
        """Training and test samples are object crops; predict gives the regions uncut by
        size, still one crop (see :meth:`predict_dataloader`)."""
        return True

    @property
    def class_names(self) -> list[str] | None:
        """The material names of the split set up last (None before :meth:`setup`)."""
        return None if self._materials is None else list(self._materials)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_dataset = self._dataset("train", train=True)
            self.val_dataset = self._dataset("val")
            self._materials = self.train_dataset.materials
        elif stage == "validate":
            self.val_dataset = self._dataset("val")
            self._materials = self.val_dataset.materials
        elif stage == "test":
            if self.test_split == "val" and not self.hparams.test_on_val:
                raise ValueError(
                    "LVISMaterialsDataModule: with split 'files' and no test_annotations, test "
                    "would run on the validation annotations, which also pick the best "
                    "checkpoint. Use split: seeded (a held-out test split), set "
                    "test_annotations, or pass test_on_val: true to test on them anyway"
                )
            self.test_dataset = self._dataset("test")
            self._materials = self.test_dataset.materials
        elif stage == "predict":
            # the regions at their own size: the model's own eval transform finishes them
            self.predict_dataset = self._dataset("predict", regions=True)
            self._materials = self.predict_dataset.materials

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["split_mode"] = self.hparams.split
        if self.split_record is not None:
            info["split_sha256"] = split_sha256(self.split_record["splits"])
            info["split_images"] = {k: len(v) for k, v in self.split_record["splits"].items()}
            if self.split_path is not None:
                info["split_file"] = str(self.split_path)
        return info

    def predict_dataloader(self) -> DataLoader:
        """The regions of different sizes, as lists (:func:`region_collate`)."""
        return self._loader(self._require("predict"), train=False, collate_fn=region_collate)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``crop_on_device``: rasterise, crop, resize, blur and flip the objects on the
        device (:func:`~matbench.transforms.finish_polygon_batch`)."""
        predicting = self.trainer is not None and self.trainer.predicting
        if not self.hparams.crop_on_device or predicting:  # predict: regions stay as they are
            return batch
        hp = self.hparams
        return finish_polygon_batch(
            batch,
            hp.image_size,
            hp.crop_blur_sigma,
            min_size=hp.crop_min_size,
            context=hp.crop_context,
            square=hp.crop_square,
            context_size=hp.context_size,
        )
