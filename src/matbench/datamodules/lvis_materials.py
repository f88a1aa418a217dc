"""LVIS-materials datamodule: object crops with material captions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data._utils.collate import default_collate

from matbench.datamodules.base import BaseDataModule
from matbench.datasets.lvis_materials import LVISMaterials
from matbench.transforms import ObjectCrop, finish_object_batch


class _ObjectTransform:
    """Object crop, optional whole-image context, optional horizontal flip (training)."""

    def __init__(self, crop: ObjectCrop, context_size: int | None, flip: bool) -> None:
        self.crop = crop
        self.context_size = context_size
        self.flip = flip

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        context = sample["image"]
        if context.dtype == torch.uint8 and self.context_size is not None:
            context = context.float().div_(255.0)
        sample = self.crop(sample)
        flip = self.flip and bool(torch.rand(()) < 0.5)
        if self.crop.finish_on_device:
            sample["flip"] = torch.tensor(flip)  # applied after the blur, on the device
        elif flip:
            sample["image"] = sample["image"].flip(-1)
            sample["mask"] = sample["mask"].flip(-1)
        if self.context_size is not None:
            size = (self.context_size, self.context_size)
            context = F.interpolate(context[None], size=size, mode="bilinear", antialias=True)[0]
            sample["context"] = context.flip(-1) if flip else context
        sample.pop("box", None)
        return sample


def region_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate deferred object crops: ``image`` and ``mask`` (regions of different sizes)
    as lists, everything else as ``default_collate`` does."""
    ragged = ("image", "mask")
    batch = default_collate([{k: v for k, v in s.items() if k not in ragged} for s in samples])
    for key in ragged:
        batch[key] = [s[key] for s in samples]
    return batch


class LVISMaterialsDataModule(BaseDataModule):
    """LVIS objects cropped around their masks, captioned with their material.

    Paths are relative to ``root`` (see :mod:`matbench.datasets.lvis_materials` for the
    layout). Each annotation file needs its materials sidecar (``<stem>_materials.json``
    beside it unless given). LVIS has no public test annotations: ``test`` defaults to the
    validation file.

    Samples: ``image`` (3, S, S) object crop (padded to >= ``crop_min_size`` px per side,
    resized, blurred outside the mask), ``mask``, ``caption``, ``label``, ``key`` (the
    annotation id), ``index``, and ``context`` (the whole image at ``context_size``) when
    ``context_size`` is set (for late fusion).

    Args:
        root: Folder holding ``coco/`` and ``lvis/``.
        train_annotations: Training annotation JSON.
        val_annotations: Validation annotation JSON.
        test_annotations: Test annotation JSON (default: the validation file).
        predict_annotations: Annotation JSON to embed with ``predict`` (default: test).
        train_sidecar: Sidecar of the training file (default ``<stem>_materials.json``).
        val_sidecar: Sidecar of the validation file.
        test_sidecar: Sidecar of the test file.
        predict_sidecar: Sidecar of the predict file.
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
        crop_on_device: Loader workers only cut each object's region out; the resize, the
            background blur and the flip run on the batch's device after transfer
            (:meth:`on_after_batch_transfer`), with the same result. Frees the CPU when the
            loader cannot keep up with a GPU.
    """

    test_split = "val"

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
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.save_hyperparameters()
        self.group_by_image = group_by_image
        if crop_on_device:
            self.collate_fn = region_collate
        self.root = Path(root)
        self.class_names: list[str] = []

    def _dataset(self, split: str, train: bool) -> LVISMaterials:
        hp = self.hparams
        annotations = hp[f"{split}_annotations"]
        sidecar = hp[f"{split}_sidecar"]
        if split in ("test", "predict") and annotations is None:
            fallback = "val" if split == "test" else "test"
            if split == "predict" and hp.test_annotations is None:
                fallback = "val"
            annotations, sidecar = hp[f"{fallback}_annotations"], hp[f"{fallback}_sidecar"]
        crop = ObjectCrop(
            size=hp.image_size,
            min_size=hp.crop_min_size,
            blur_sigma=hp.crop_blur_sigma,
            context=hp.crop_context,
            square=hp.crop_square,
            finish_on_device=hp.crop_on_device,
        )
        return LVISMaterials(
            self.root / annotations,
            self.root / hp.images,
            sidecar=self.root / sidecar if sidecar else "auto",
            caption=hp.caption,
            template=hp.template,
            transforms=_ObjectTransform(crop, hp.context_size, flip=train and hp.flip),
            index_cache=hp.index_cache,
            draft_size=hp.image_size if hp.decode_draft else None,
            uint8_images=hp.crop_on_device,
        )

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_dataset = self._dataset("train", train=True)
            self.val_dataset = self._dataset("val", train=False)
            self.class_names = self.train_dataset.materials
        elif stage == "validate":
            self.val_dataset = self._dataset("val", train=False)
            self.class_names = self.val_dataset.materials
        elif stage == "test":
            self.test_dataset = self._dataset("test", train=False)
            self.class_names = self.test_dataset.materials
        elif stage == "predict":
            self.predict_dataset = self._dataset("predict", train=False)
            self.class_names = self.predict_dataset.materials

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``crop_on_device``: resize, blur and flip the object crops on the device."""
        if not self.hparams.crop_on_device:
            return batch
        return finish_object_batch(batch, self.hparams.image_size, self.hparams.crop_blur_sigma)
