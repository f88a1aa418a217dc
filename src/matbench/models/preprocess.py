"""The model-owned preprocessing of object regions (anomalib's pre-processor pattern).

A sample holds a whole image and the object's mask; the model needs its own input. The one
crop rule is :func:`matbench.transforms.crop_region` (the object's box padded to at least
``min_size`` pixels per side, square); what follows depends on the model:

- ``"open_clip"``: the model's own eval transform (open_clip's ``preprocess_val``: shortest
  side resized to the input size, bicubic, centre crop), as open_clip and CLIP_benchmark do.
  The tower normalises with the model's mean/std itself, so ``Normalize`` is left out here.
- ``"squash"``: the region resized to the model's square input (bilinear, antialiased), as
  :func:`matbench.transforms.crop_object` does for training crops.

Regions already cut out by a datamodule (``ObjectCrop(keep_size=True)``) go through
:meth:`RegionPreprocessor.finish` only, so no sample is cropped twice.

A task hands :class:`RegionInputs` to its datamodule so that this runs in the loader's workers,
in parallel with the model (:meth:`~matbench.datamodules.base.BaseDataModule.set_eval_batch_transform`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from matbench.transforms import blur_outside_at, crop_object, crop_region

Region = Literal["crop", "full"]
ImageTransform = Literal["open_clip", "squash"]


def open_clip_eval_transform(preprocess_cfg: dict[str, Any]) -> Any:
    """open_clip's ``preprocess_val`` for a model's ``preprocess_cfg``, without its final
    ``Normalize`` (the image tower normalises with the same mean/std)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from torchvision.transforms import Compose, Normalize

    steps = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False).transforms
    return Compose([t for t in steps if not isinstance(t, Normalize)])


def to_pil(image: Tensor) -> Image.Image:
    """A float image (3, H, W) in [0, 1] as the 8-bit PIL image a file would decode to."""
    pixels = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(pixels.cpu().numpy())


class RegionPreprocessor:
    """Model inputs (B, 3, S, S) in [0, 1] from images and object masks.

    Args:
        image_size: The model's input ``(height, width)``.
        preprocess_cfg: The open_clip model's ``preprocess_cfg`` (for ``"open_clip"``).
        image_transform: ``"open_clip"`` or ``"squash"`` (see the module docstring).
        region: ``"crop"`` = the object's region of each image; ``"full"`` = the whole image.
        crop_min_size: Smallest side of the crop in original pixels.
        crop_blur_sigma: Blur outside the mask, in model-input pixels; 0 = off.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        preprocess_cfg: dict[str, Any] | None = None,
        image_transform: ImageTransform = "open_clip",
        region: Region = "crop",
        crop_min_size: int = 50,
        crop_blur_sigma: float = 4.0,
    ) -> None:
        if image_transform == "open_clip" and preprocess_cfg is None:
            raise ValueError("image_transform='open_clip' needs the model's preprocess_cfg")
        self.image_size = tuple(image_size)
        self.preprocess_cfg = preprocess_cfg
        self.image_transform = image_transform
        self.region = region
        self.crop_min_size = crop_min_size
        self.crop_blur_sigma = crop_blur_sigma
        self._transform: Any = None

    def model_transform(self) -> Any:
        """The model's own eval transform (``"open_clip"`` only), built once."""
        if self._transform is None:
            assert self.preprocess_cfg is not None
            self._transform = open_clip_eval_transform(self.preprocess_cfg)
        return self._transform

    def describe(self) -> str:
        """What the results JSON records as the image transform."""
        if self.image_transform == "open_clip":
            return repr(self.model_transform())
        return self.image_transform

    @staticmethod
    def object_mask(mask: Tensor | None) -> Tensor:
        """The bool object mask of a sample (an empty mask means the whole image)."""
        if mask is None:
            raise ValueError("region='crop' needs a 'mask' in every sample")
        if mask.dtype != torch.bool:
            raise ValueError(f"region='crop' needs bool masks, got {mask.dtype}")
        return mask if bool(mask.any()) else torch.ones_like(mask)

    def finish(self, image: Tensor, mask: Tensor | None = None) -> Tensor:
        """A region (already cut out, any size) as the model's input: blurred outside
        ``mask`` (``crop_blur_sigma`` in model-input pixels), then the model's transform."""
        image = image.float().div(255.0) if image.dtype == torch.uint8 else image.float()
        if mask is not None and self.crop_blur_sigma > 0:
            image = blur_outside_at(image, mask, self.crop_blur_sigma, self.image_size)
        if self.image_transform == "open_clip":
            return self.model_transform()(to_pil(image))
        return F.interpolate(image[None], size=self.image_size, mode="bilinear", antialias=True)[0]

    def one(self, image: Tensor, mask: Tensor | None) -> Tensor:
        """The model input of one whole image and its object mask."""
        image = image.float()
        if self.region == "full":
            return self.finish(image)
        mask = self.object_mask(mask)
        if self.image_transform == "squash":
            crop, _, _ = crop_object(
                image,
                mask,
                size=self.image_size,
                min_size=self.crop_min_size,
                blur_sigma=self.crop_blur_sigma,
                square=True,
            )
            return crop
        region, region_mask, _ = crop_region(image, mask, self.crop_min_size, square=True)
        return self.finish(region, region_mask)

    def __call__(self, images: Sequence[Tensor], masks: Sequence[Tensor] | None = None) -> Tensor:
        """The model inputs of a batch (stacked tensors or lists of any sizes)."""
        return torch.stack(
            [self.one(images[i], None if masks is None else masks[i]) for i in range(len(images))]
        )


#: Batch key of the model inputs :class:`RegionInputs` computed in the loader.
MODEL_INPUT = "model_input"


class RegionInputs:
    """A collated batch's regions as model inputs, computed where the batch is collated (a
    loader worker): ``batch[MODEL_INPUT]`` (B, 3, S, S) in [0, 1] replaces ``image`` and
    ``mask`` (the full-size images are not moved to the device). Batches without images
    (served from a feature cache) pass unchanged.

    Args:
        preprocessor: The model's :class:`RegionPreprocessor`.
    """

    def __init__(self, preprocessor: RegionPreprocessor) -> None:
        self.preprocessor = preprocessor

    def __call__(self, batch: Any) -> Any:
        if not isinstance(batch, dict) or "image" not in batch or "features" in batch:
            return batch
        batch = dict(batch)
        batch[MODEL_INPUT] = self.preprocessor(batch.pop("image"), batch.pop("mask", None))
        return batch
