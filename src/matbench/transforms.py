"""Object-centred preprocessing shared by the object-level datasets (LVIS-materials, FMD).

The recipe follows the findings of the open-vocabulary materials talk: crop the object's box,
padded so that each side of the crop is at least ``min_size`` pixels (50 by default), resize the
crop to the model's input size, and blur everything outside the object's mask so that the
material of the object dominates the embedding while the context stays visible.

Boxes are ``(x0, y0, x1, y1)`` in integer pixels with exclusive ends (``image[:, y0:y1, x0:x1]``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Box = tuple[int, int, int, int]


def mask_box(mask: Tensor) -> Box:
    """Tight box ``(x0, y0, x1, y1)`` (exclusive ends) around the True pixels of ``mask``.

    Raises:
        ValueError: if the mask is empty.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {tuple(mask.shape)}")
    if mask.device.type == "cpu":  # NumPy's any() along an axis is ~30x torch's on CPU
        array = mask.numpy() if mask.dtype == torch.bool else mask.numpy() != 0
        rows, cols = np.flatnonzero(array.any(axis=1)), np.flatnonzero(array.any(axis=0))
    else:
        rows = torch.nonzero(mask.any(dim=1)).flatten().cpu().numpy()
        cols = torch.nonzero(mask.any(dim=0)).flatten().cpu().numpy()
    if rows.size == 0:
        raise ValueError("mask is empty: no object pixel to crop around")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _any(mask: Tensor | RegionMask) -> bool:
    if isinstance(mask, RegionMask):
        return mask.any()
    if mask.device.type == "cpu" and mask.dtype == torch.bool:
        return bool(mask.numpy().any())
    return bool(mask.any())


def _int_box(box: Tensor | Sequence[float]) -> Box:
    values = box.tolist() if isinstance(box, Tensor) else box
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def xywh_to_box(bbox: Sequence[float]) -> Box:
    """A COCO ``[x, y, w, h]`` float box as an integer box covering it."""
    x, y, w, h = (float(v) for v in bbox)
    return math.floor(x), math.floor(y), math.ceil(x + w), math.ceil(y + h)


def _expand_1d(lo: int, hi: int, length: int, limit: int) -> tuple[int, int]:
    """Grow ``[lo, hi)`` symmetrically to ``length`` and shift it inside ``[0, limit)``."""
    length = min(max(length, hi - lo), limit)
    extra = length - (hi - lo)
    lo -= extra // 2
    hi = lo + length
    if lo < 0:
        lo, hi = 0, length
    if hi > limit:
        lo, hi = limit - length, limit
    return lo, hi


def expand_box(
    box: Box,
    image_hw: tuple[int, int],
    min_size: int = 50,
    context: float = 0.0,
    square: bool = False,
) -> Box:
    """The crop box of an object box.

    Each side is first grown by ``context`` times its length (0 = the tight box), then to at
    least ``min_size`` pixels (to the square of the longer side with ``square=True``), centred
    on the object, and shifted to lie inside the image. A side never exceeds the image.

    Args:
        box: Object box ``(x0, y0, x1, y1)``, exclusive ends.
        image_hw: Image height and width.
        min_size: Smallest side of the crop in pixels (the talk's 50 px).
        context: Extra margin as a fraction of the box side, added before ``min_size``.
        square: Make the crop square (before clipping to the image), to keep the aspect
            ratio when resizing to a square model input.
    """
    height, width = image_hw
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, min(x0, width - 1)), max(0, min(y0, height - 1))
    x1, y1 = max(x0 + 1, min(x1, width)), max(y0 + 1, min(y1, height))
    w = x1 - x0 + 2 * math.ceil(context * (x1 - x0) / 2)
    h = y1 - y0 + 2 * math.ceil(context * (y1 - y0) / 2)
    w, h = max(w, min_size), max(h, min_size)
    if square:
        w = h = max(w, h)
    x0, x1 = _expand_1d(x0, x1, w, width)
    y0, y1 = _expand_1d(y0, y1, h, height)
    return x0, y0, x1, y1


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised 1-D Gaussian kernel of radius ``ceil(3 sigma)`` (a new tensor)."""
    return _gaussian_kernel(float(sigma), dtype).clone()


@functools.lru_cache(maxsize=64)
def _gaussian_kernel(sigma: float, dtype: torch.dtype) -> Tensor:
    # cached: every crop of a run is blurred with the same one or two kernels
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


@functools.lru_cache(maxsize=64)
def _gaussian_kernel_numpy(sigma: float) -> np.ndarray:
    kernel = _gaussian_kernel(sigma, torch.float32).numpy().copy()
    kernel.flags.writeable = False
    return kernel


def gaussian_blur(image: Tensor, sigma: float, exact: bool = False) -> Tensor:
    """Gaussian blur of a (C, H, W) or (B, C, H, W) image, edges replicated.

    A large blur (``sigma >= 4``) is computed, unless ``exact``, at a lower resolution:
    area-downsample by ``k = floor(sigma / 2)``, blur with ``sigma / k``, upsample
    bilinearly -- the same background softening at a fraction of the cost (the blur is a
    context cue, not a measurement).
    """
    if sigma <= 0:
        return image
    squeeze = image.ndim == 3
    x = image.unsqueeze(0) if squeeze else image
    factor = 1 if exact else int(sigma // 2)
    height, width = x.shape[-2:]
    if factor > 1 and min(height, width) >= 4 * factor:
        small = F.avg_pool2d(x, factor, ceil_mode=True)
        small = _separable_blur(small, sigma / factor)
        x = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    else:
        x = _separable_blur(x, sigma)
    return x.squeeze(0) if squeeze else x


def _separable_blur(x: Tensor, sigma: float) -> Tensor:
    channels = x.shape[1]
    kernel = _gaussian_kernel(float(sigma), x.dtype).to(x.device)
    radius = kernel.numel() // 2
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def blur_outside(image: Tensor, mask: Tensor, sigma: float) -> Tensor:
    """``image`` (C, H, W) or (B, C, H, W) with every pixel outside ``mask`` ((H, W) or
    (B, H, W)) replaced by its Gaussian-blurred value.

    Pixels inside the mask are returned unchanged (bit-exact); ``sigma <= 0`` disables it.
    """
    if sigma <= 0:
        return image
    keep = mask.to(torch.bool).unsqueeze(-3)
    return torch.where(keep, image, gaussian_blur(image, sigma))


def blur_outside_at(
    image: Tensor, mask: Tensor, sigma: float, output_size: int | Sequence[int]
) -> Tensor:
    """:func:`blur_outside` of an image that the model will resize so that its short side is
    the short side of ``output_size``: ``sigma`` is given in those output pixels."""
    out = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    return blur_outside(image, mask, sigma * min(image.shape[-2:]) / min(out))


class RegionMask:
    """An object's (height, width) bool mask held as its tight ``box`` and the pixels inside
    it: what a reader that rasterises one object at a time gives a transform that accepts it
    (``accepts_region_masks``), instead of a whole-image mask that is False almost
    everywhere. :func:`crop_region` cuts it as it cuts the whole mask, with the same pixels.

    Args:
        shape: ``(height, width)`` of the whole mask.
        box: Tight box ``(x0, y0, x1, y1)`` of the True pixels; None for an empty mask.
        inside: The mask within ``box``, bool (y1 - y0, x1 - x0); None for an empty mask.
    """

    def __init__(
        self, shape: tuple[int, int], box: Box | None = None, inside: np.ndarray | None = None
    ) -> None:
        if (box is None) != (inside is None):
            raise ValueError("a region mask needs both box and inside, or neither")
        if inside is not None and box is not None:
            x0, y0, x1, y1 = box
            if tuple(inside.shape) != (y1 - y0, x1 - x0):
                raise ValueError(f"inside has shape {tuple(inside.shape)}, box {box}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.box = None if box is None else tuple(int(v) for v in box)
        self.inside = inside
        self._any: bool | None = None

    def any(self) -> bool:
        """Whether any pixel is True."""
        if self._any is None:
            self._any = self.inside is not None and bool(self.inside.any())
        return self._any

    def crop(self, box: Box) -> Tensor:
        """The mask within ``box`` (inside the whole mask), a new bool (y1 - y0, x1 - x0)."""
        x0, y0, x1, y1 = box
        out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        if self.box is not None:
            bx0, by0, bx1, by1 = self.box
            ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
            if ix0 < ix1 and iy0 < iy1:
                out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self.inside[
                    iy0 - by0 : iy1 - by0, ix0 - bx0 : ix1 - bx0
                ]
        return torch.from_numpy(out)

    def full(self) -> Tensor:
        """The whole (height, width) mask."""
        return self.crop((0, 0, self.shape[1], self.shape[0]))


def crop_object(
    image: Tensor,
    mask: Tensor | RegionMask,
    size: int | tuple[int, int] | None = 224,
    min_size: int = 50,
    blur_sigma: float = 4.0,
    context: float = 0.0,
    square: bool = False,
    box: Box | None = None,
    image_scale: float = 1.0,
) -> tuple[Tensor, Tensor, Box]:
    """Crop, resize and background-blur one object.

    Args:
        image: Float image (3, H, W).
        mask: Object mask (H, W), bool (any non-zero value is the object), or a
            :class:`RegionMask`.
        size: Output side (or ``(height, width)``); None keeps the crop's own size.
        min_size: Smallest side of the crop in original pixels.
        blur_sigma: Gaussian sigma, in *output* pixels, of the blur applied outside the mask
            after resizing (so that the blur strength does not depend on the object's size);
            0 turns the blur off.
        context: Extra margin around the box, as a fraction of its side.
        square: Square crop (keeps the aspect ratio when resizing to a square input).
        box: Object box to use instead of the mask's tight box (needed for an empty mask).
        image_scale: The image is the mask's image reduced by this factor (a JPEG decoded
            at 1/2, 1/4 or 1/8): the crop box, found at mask resolution, is scaled to it.
            Needs ``size``.

    Returns:
        The crop (3, h, w), its bool mask (h, w) and the crop box in the original image.
    """
    if image_scale != 1.0 and size is None:
        raise ValueError("a reduced image (image_scale != 1) needs an output size")
    crop, crop_mask, crop_box = crop_region(
        image, mask, min_size, context, square, box=box, image_scale=image_scale
    )
    crop, crop_mask = finish_crop(crop, crop_mask, size, blur_sigma)
    return crop.contiguous(), crop_mask.contiguous(), crop_box


def crop_region(
    image: Tensor,
    mask: Tensor | RegionMask,
    min_size: int = 50,
    context: float = 0.0,
    square: bool = False,
    box: Box | None = None,
    image_scale: float = 1.0,
) -> tuple[Tensor, Tensor, Box]:
    """The first half of :func:`crop_object` (same arguments): the crop box and the cut-out
    image and mask, at their own size (views, no copy; a :class:`RegionMask` is cut into a
    new tensor)."""
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    if image_scale == 1.0 and tuple(mask.shape) != tuple(image.shape[-2:]):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match image size {tuple(image.shape[-2:])}"
        )
    if isinstance(mask, RegionMask):
        if box is None:
            if mask.box is None or not mask.any():
                raise ValueError("mask is empty: no object pixel to crop around")
            box = mask.box
        crop_box = expand_box(box, mask.shape, min_size, context, square)
        crop_mask = mask.crop(crop_box)
    else:
        mask = mask.to(torch.bool)
        if box is None:
            box = mask_box(mask)
        crop_box = expand_box(box, (mask.shape[-2], mask.shape[-1]), min_size, context, square)
        crop_mask = None
    x0, y0, x1, y1 = scaled_box(crop_box, image_scale, image.shape[-2], image.shape[-1])
    crop = image[:, y0:y1, x0:x1]
    if crop_mask is None:
        x0, y0, x1, y1 = crop_box
        crop_mask = mask[y0:y1, x0:x1]
    return crop, crop_mask, crop_box


def scaled_box(box: Box, image_scale: float, height: int, width: int) -> Box:
    """The pixels of ``box`` (in the full-size image) in an image reduced by ``image_scale``
    to ``height`` x ``width`` (a JPEG decoded at 1/2, 1/4 or 1/8): ``box`` itself at 1."""
    if image_scale == 1.0:
        return box
    x0, y0, x1, y1 = box
    ix0, iy0 = min(int(x0 // image_scale), width - 1), min(int(y0 // image_scale), height - 1)
    ix1 = max(ix0 + 1, min(math.ceil(x1 / image_scale), width))
    iy1 = max(iy0 + 1, min(math.ceil(y1 / image_scale), height))
    return ix0, iy0, ix1, iy1


def finish_object_batch(
    batch: dict[str, Any], size: int | tuple[int, int], blur_sigma: float
) -> dict[str, Any]:
    """Finish a batch of deferred object crops (``ObjectCrop(finish_on_device=True)``) where
    the batch is, typically on the GPU after transfer: ``image``/``mask`` are lists of
    cut-out regions; each is resized as :func:`finish_crop` does, the batch is blurred
    outside the masks at once, and the samples whose ``flip`` flag is set are flipped
    (after the blur, as the CPU path does). Equal to the CPU path's batch."""
    flips = batch.pop("flip", None)
    crops, masks = [], []
    on_cpu = all(crop.device.type == "cpu" for crop in batch["image"])
    for crop, crop_mask in zip(batch["image"], batch["mask"], strict=True):
        # on the CPU each crop is blurred as a loader worker blurs it (the same values)
        crop, crop_mask = finish_crop(crop, crop_mask, size, blur_sigma if on_cpu else 0.0)
        crops.append(crop)
        masks.append(crop_mask)
    image, mask = torch.stack(crops), torch.stack(masks)
    if not on_cpu:
        image = blur_outside(image, mask, blur_sigma)
    if flips is not None and bool(flips.any()):
        flip = flips.to(torch.bool).view(-1, 1, 1)
        image = torch.where(flip.unsqueeze(1), image.flip(-1), image)
        mask = torch.where(flip, mask.flip(-1), mask)
    batch["image"], batch["mask"] = image, mask
    return batch


def context_image(image: Tensor, size: int) -> Tensor:
    """An object's whole image as its context: float in [0, 1] (a uint8 image converted as
    :func:`matbench.datasets.utils.read_image` converts), resized (bilinear, antialiased) to
    ``size`` x ``size``. One definition for the loader's and the device's object paths, whose
    batches must be equal."""
    if image.dtype == torch.uint8:
        image = image.contiguous().float().div_(255.0)
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)[0]


def finish_polygon_batch(
    batch: dict[str, Any],
    size: int | tuple[int, int],
    blur_sigma: float,
    min_size: int = 50,
    context: float = 0.0,
    square: bool = False,
    context_size: int | None = None,
) -> dict[str, Any]:
    """Finish a batch of objects read as polygons (an LVIS object batch, see
    :meth:`matbench.datasets.lvis_materials.LVISMaterials.object_batch`) where the batch is,
    typically on the GPU after transfer: rasterise every polygon as pycocotools does
    (:func:`matbench.datasets.rasterise.rasterise_polygons`), take each mask's tight box
    (the object's ``box`` when the mask is empty) grown by :func:`expand_box`, cut the crop
    and its mask out of the object's image, then resize, blur and flip them as
    :func:`finish_object_batch` does; with ``context_size`` also each image at that size
    (flipped with its object). The arguments are :class:`ObjectCrop`'s. Equal to the batch
    of the CPU path (``ObjectCrop`` on each sample, then collation). On the CPU it runs on
    one thread (:func:`~matbench.utils.threads.one_cpu_thread`: many small operations)."""
    from matbench.utils.threads import one_cpu_thread

    with one_cpu_thread(batch["points"].device):
        return _finish_polygon_batch(
            batch, size, blur_sigma, min_size, context, square, context_size
        )


def _finish_polygon_batch(
    batch: dict[str, Any],
    size: int | tuple[int, int],
    blur_sigma: float,
    min_size: int,
    context: float,
    square: bool,
    context_size: int | None,
) -> dict[str, Any]:
    from matbench.datasets.rasterise import rasterise_polygons

    images = batch.pop("images")
    image_of = batch.pop("image_of")
    image_scale = batch.pop("image_scale").tolist()
    image_hw = batch.pop("image_hw")
    masks = rasterise_polygons(
        batch.pop("points"), batch.pop("polygon_offsets"), batch.pop("polygon_object"), image_hw
    )
    boxes = torch.where(masks.empty[:, None], batch.pop("box"), masks.boxes).tolist()
    crops, crop_masks = [], []
    for k, (box, (height, width), image) in enumerate(
        zip(boxes, image_hw.tolist(), image_of.tolist(), strict=True)
    ):
        crop_box = expand_box(tuple(box), (height, width), min_size, context, square)
        pixels = images[image]
        x0, y0, x1, y1 = scaled_box(crop_box, image_scale[image], *pixels.shape[-2:])
        crops.append(pixels[:, y0:y1, x0:x1])
        crop_masks.append(masks.crop(k, crop_box))
    if context_size is not None:
        whole = [context_image(image, context_size) for image in images]
        contexts = (
            torch.stack(whole)[image_of] if whole else torch.zeros(0, 3, context_size, context_size)
        )
        flips = batch.get("flip")
        if flips is not None and bool(flips.any()):
            contexts = torch.where(flips.view(-1, 1, 1, 1), contexts.flip(-1), contexts)
        batch["context"] = contexts
    batch["image"], batch["mask"] = crops, crop_masks
    return finish_object_batch(batch, size, blur_sigma)


def finish_crop(
    crop: Tensor, crop_mask: Tensor, size: int | tuple[int, int] | None, blur_sigma: float
) -> tuple[Tensor, Tensor]:
    """The second half of :func:`crop_object`, on a cut-out region (any device): resize the
    crop (bilinear, antialiased) and its mask (nearest) to ``size``, then blur outside the
    mask. Run on the GPU after transfer it gives the CPU path's values. A uint8 crop is
    first converted as :func:`matbench.datasets.utils.read_image` converts.

    On the CPU the blur runs through OpenCV (:func:`finish_crop_cpu`): several times faster
    than PyTorch's CPU convolutions, equal to them within float rounding (< 1e-6)."""
    if crop.device.type == "cpu" and size is not None:
        return finish_crop_cpu(crop, crop_mask, size, blur_sigma)
    return finish_crop_torch(crop, crop_mask, size, blur_sigma)


def finish_crop_torch(
    crop: Tensor, crop_mask: Tensor, size: int | tuple[int, int] | None, blur_sigma: float
) -> tuple[Tensor, Tensor]:
    """:func:`finish_crop` in PyTorch operations (the GPU path, and the reference)."""
    if size is not None:
        crop, crop_mask = _resize_crop(crop, crop_mask, _size_hw(size))
    elif crop.dtype == torch.uint8:
        crop = crop.float().div_(255.0)
    return blur_outside(crop, crop_mask, blur_sigma), crop_mask


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _avg_pool_hwc(x: np.ndarray, factor: int) -> np.ndarray:
    """``F.avg_pool2d(x, factor, ceil_mode=True)`` of an (H, W, C) float32 array: windows
    cut by the border average their pixels inside the image."""
    import cv2

    height, width = x.shape[:2]
    out_h, out_w = -(-height // factor), -(-width // factor)
    if (out_h * factor, out_w * factor) == (height, width):  # whole windows: OpenCV's mean
        return cv2.resize(x, (out_w, out_h), interpolation=cv2.INTER_AREA).reshape(out_h, out_w, -1)
    total = np.zeros((out_h, out_w, x.shape[2]), np.float32)
    for dy in range(factor):
        for dx in range(factor):
            part = x[dy::factor, dx::factor]
            total[: part.shape[0], : part.shape[1]] += part
    rows = np.minimum(factor, height - factor * np.arange(out_h))
    cols = np.minimum(factor, width - factor * np.arange(out_w))
    return total / (rows[:, None] * cols[None, :]).astype(np.float32)[..., None]


def _gaussian_blur_hwc(x: np.ndarray, sigma: float) -> np.ndarray:
    """:func:`gaussian_blur` (not ``exact``) of an (H, W, C) float32 array, through OpenCV."""
    import cv2

    height, width = x.shape[:2]
    factor = int(sigma // 2)
    if factor > 1 and min(height, width) >= 4 * factor:
        kernel = _gaussian_kernel_numpy(sigma / factor)
        small = _avg_pool_hwc(x, factor)
        small = cv2.sepFilter2D(small, -1, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
        out = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        kernel = _gaussian_kernel_numpy(float(sigma))
        out = cv2.sepFilter2D(x, -1, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
    return out.reshape(x.shape)  # OpenCV drops a channel axis of length 1


def finish_crop_cpu(
    crop: Tensor, crop_mask: Tensor, size: int | tuple[int, int], blur_sigma: float
) -> tuple[Tensor, Tensor]:
    """:func:`finish_crop` on the CPU: PyTorch's resize (the same kernel and input layout,
    so the same values), then the blur outside the mask through OpenCV on each channel plane
    (PyTorch's grouped convolutions take several times longer on a CPU). Equal to
    :func:`finish_crop_torch` within float rounding (the blur's terms are summed in another
    order; < 1e-6)."""
    import cv2

    image, mask = _resize_crop(crop, crop_mask, _size_hw(size))
    if blur_sigma > 0:
        planes = image.numpy()
        keep = mask.numpy().view(np.uint8)
        for plane in planes:
            blurred = _gaussian_blur_hwc(plane[..., None], blur_sigma)[..., 0]
            cv2.copyTo(blurred, 1 - keep, plane)  # outside the mask only: inside stays exact
    return image, mask


def _resize_crop(crop: Tensor, crop_mask: Tensor, out_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The resize of :func:`finish_crop_torch`: the crop converted to a contiguous float
    image (whatever layout it was cut from), antialiased bilinear, clamped; the mask nearest."""
    if crop.dtype == torch.uint8:
        crop = crop.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    else:
        crop = crop.to(torch.float32, memory_format=torch.contiguous_format)
    crop = F.interpolate(crop.unsqueeze(0), size=out_hw, mode="bilinear", antialias=True)
    crop = crop.squeeze(0).clamp_(0.0, 1.0)
    if crop_mask.device.type == "cpu":
        rows = _nearest_indices(crop_mask.shape[0], out_hw[0])
        cols = _nearest_indices(crop_mask.shape[1], out_hw[1])
        mask = (
            crop_mask.numpy() if crop_mask.dtype == torch.bool else crop_mask.float().numpy() > 0.5
        )
        return crop, torch.from_numpy(mask.take(rows, 0).take(cols, 1))
    crop_mask = F.interpolate(crop_mask[None, None].float(), size=out_hw, mode="nearest")[0, 0]
    return crop, crop_mask > 0.5


@functools.lru_cache(maxsize=1024)
def _nearest_indices(input_size: int, output_size: int) -> np.ndarray:
    """The source index of each output index of PyTorch's ``mode="nearest"`` resize (its
    float32 ``floor(i * in / out)``, exact at 1x and 2x): a mask resized by indexing, with
    the same pixels as ``F.interpolate`` at a fraction of its cost."""
    out = np.arange(output_size)
    if output_size == input_size:
        index = out
    elif output_size == 2 * input_size:
        index = out >> 1
    else:
        scale = np.float32(input_size) / np.float32(output_size)
        index = np.floor(out.astype(np.float32) * scale).astype(np.int64)
    index = np.minimum(index, input_size - 1)
    index.flags.writeable = False
    return index


class ObjectCrop:
    """Sample transform: replace ``image``/``mask`` of a sample by the object crop.

    The sample's ``mask`` must be the bool object mask; an optional ``mask_box`` entry is its
    tight box (as :func:`mask_box` finds it, given by readers that know it); an optional
    ``box`` entry ``(x0, y0, x1, y1)`` is used when the mask is empty, and is replaced by the
    crop box. See :func:`crop_object` for the arguments. With
    ``finish_on_device`` only the region is cut out (:func:`crop_region`); the resize and the
    blur are left to :func:`finish_object_batch` after the batch reaches its device. With
    ``keep_size`` the region keeps its own size, blurred as if resized to ``size``: for a
    model's own eval transform (:class:`matbench.models.preprocess.RegionPreprocessor`).
    The ``mask`` may be a :class:`RegionMask` (``accepts_region_masks``).
    """

    #: Readers may give the object's mask as a :class:`RegionMask`.
    accepts_region_masks = True

    def __init__(
        self,
        size: int | tuple[int, int] | None = 224,
        min_size: int = 50,
        blur_sigma: float = 4.0,
        context: float = 0.0,
        square: bool = False,
        finish_on_device: bool = False,
        keep_size: bool = False,
    ) -> None:
        if keep_size and (finish_on_device or size is None):
            raise ValueError("keep_size needs a size and no finish_on_device")
        if min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {min_size}")
        if blur_sigma < 0:
            raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}")
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.size = size
        self.min_size = min_size
        self.blur_sigma = blur_sigma
        self.context = context
        self.square = square
        self.finish_on_device = finish_on_device
        self.keep_size = keep_size

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        box = sample.get("box")
        if sample.get("mask_box") is not None:  # given by the reader: no search of the mask
            box = _int_box(sample["mask_box"])
        elif box is not None and not _any(sample["mask"]):
            box = _int_box(box)
        elif box is not None:
            box = None  # the mask's tight box is exact; the stored box may be rounded
        scale = float(sample.get("image_scale", 1.0))
        if self.finish_on_device or self.keep_size:
            image, mask, crop_box = crop_region(
                sample["image"],
                sample["mask"],
                self.min_size,
                self.context,
                self.square,
                box,
                scale,
            )
            # copies: a view would carry the whole image's storage to the main process
            image = image.clone()
            mask = mask if isinstance(sample["mask"], RegionMask) else mask.clone()
            if self.keep_size:
                image = image.float().div_(255.0) if image.dtype == torch.uint8 else image
                image = blur_outside_at(image, mask, self.blur_sigma, self.size)
        else:
            image, mask, crop_box = crop_object(
                sample["image"],
                sample["mask"],
                size=self.size,
                min_size=self.min_size,
                blur_sigma=self.blur_sigma,
                context=self.context,
                square=self.square,
                box=box,
                image_scale=scale,
            )
        out = dict(sample)
        out.pop("image_scale", None)
        out.pop("mask_box", None)
        out.update(image=image, mask=mask, box=torch.tensor(crop_box, dtype=torch.int64))
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, min_size={self.min_size}, "
            f"blur_sigma={self.blur_sigma}, context={self.context}, square={self.square}, "
            f"finish_on_device={self.finish_on_device}, keep_size={self.keep_size})"
        )
