"""Prompted segmenters: models that take point prompts and return a mask (SAM, SAM 2, ...).

The interface is :class:`PromptedSegmenter`: one image and a batch of prompts in, one boolean
mask per prompt out. Every prompt of a call has the same number of points; the image is encoded
once per call and the prompts are decoded together.

Adding a segmenter takes one file (as :mod:`matbench.models.materialistic` shows): subclass
:class:`PromptedSegmenter`, accept ``weights`` and ``config`` keyword arguments, implement
:meth:`PromptedSegmenter.forward`, and pass ``--model.model your_module.YourSegmenter`` to
:class:`~matbench.tasks.prompted.PromptedMatSegTask` (see ``docs/tasks/prompted.md``).
"""

from __future__ import annotations

import importlib
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.models.utils import Freezable
from matbench.utils.weights import looks_like_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Multimask = Literal["auto", "always", "never"]


class PromptedSegmenter(Freezable):
    """A segmenter prompted by points: the interface every prompted model kind implements.

    Subclasses take ``weights`` (a hub name or local path, or None for random init) and
    ``config`` (a model config file, used with random init) keyword arguments.
    """

    def forward(self, image: Tensor, points: Tensor, labels: Tensor) -> Tensor:
        """Segment one image once per prompt.

        Args:
            image: (3, H, W) RGB in [0, 1].
            points: (P, K, 2) float point coordinates ``x, y`` in pixels of ``image``
                (column, row of the pixel centre); P prompts of K points each.
            labels: (P, K) long: 1 positive (inside the wanted region), 0 negative.

        Returns:
            (P, H, W) bool masks, one per prompt.
        """
        raise NotImplementedError


class HFSamSegmenter(PromptedSegmenter):
    """SAM or SAM 2 through ``transformers`` (``SamModel`` / ``Sam2Model``).

    Preprocessing is that of the official ``transformers`` processors, written in torch: SAM
    resizes the longest side to the model's input size (bilinear), normalises with the ImageNet
    mean and std and pads bottom/right with zeros to a square; SAM 2 resizes to the square input
    size. Point coordinates are scaled the same way. The low-resolution mask logits are brought
    back as the processors' ``post_process_masks`` do (SAM: to the padded size, crop, to the
    image size; SAM 2: to the image size; bilinear) and thresholded at 0.

    Multimask choice: with ``multimask="auto"`` a one-point prompt asks for SAM's three
    candidate masks and keeps the one with the highest predicted IoU (SAM's own advice for an
    ambiguous single point), and a prompt of several points asks for one mask; ``"always"``
    and ``"never"`` force either way.

    Args:
        kind: ``sam`` or ``sam2``.
        weights: A Hugging Face model name (e.g. ``facebook/sam-vit-base``,
            ``facebook/sam2.1-hiera-tiny``) or a local folder saved with ``save_pretrained``;
            None = random init from ``config``.
        config: With ``weights=None``: a ``config.json`` (file or folder) of the architecture;
            None = the library's default (full-size) configuration.
        multimask: ``auto``, ``always`` or ``never`` (see above).
        prompt_batch_size: Prompts decoded at once (bounds memory; all share one image
            encoding).
    """

    def __init__(
        self,
        kind: Literal["sam", "sam2"] = "sam",
        weights: str | None = None,
        config: str | None = None,
        multimask: Multimask = "auto",
        prompt_batch_size: int = 64,
    ) -> None:
        super().__init__()
        if kind not in ("sam", "sam2"):
            raise ValueError(f"kind must be 'sam' or 'sam2', got {kind!r}")
        if multimask not in ("auto", "always", "never"):
            raise ValueError(f"multimask must be 'auto', 'always' or 'never', got {multimask!r}")
        if prompt_batch_size < 1:
            raise ValueError(f"prompt_batch_size must be >= 1, got {prompt_batch_size}")
        self.kind = kind
        self.multimask = multimask
        self.prompt_batch_size = prompt_batch_size
        self.net = _load_hf_sam(kind, weights, config)
        size = self.net.config.prompt_encoder_config.image_size
        self.input_size = int(size[0] if isinstance(size, (list, tuple)) else size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def _input_shape(self, height: int, width: int) -> tuple[int, int]:
        if self.kind == "sam2":
            return self.input_size, self.input_size
        scale = self.input_size / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def preprocess(self, image: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(3, H, W) in [0, 1] → the model's (1, 3, S, S) input and the resized (h, w)."""
        resized = self._input_shape(*image.shape[-2:])
        x = F.interpolate(image[None], size=resized, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        pad_h, pad_w = self.input_size - resized[0], self.input_size - resized[1]
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x, resized

    def encode(self, image: Tensor) -> tuple[Tensor | list[Tensor], tuple[int, int]]:
        """The image embedding (computed once per image) and the resized (h, w)."""
        pixels, resized = self.preprocess(image)
        return self.net.get_image_embeddings(pixels), resized

    def decode(
        self,
        embedding: Tensor | list[Tensor],
        resized: tuple[int, int],
        size: tuple[int, int],
        points: Tensor,
        labels: Tensor,
    ) -> Tensor:
        """Masks (P, H, W) bool of the prompts on an encoded image of ``size`` (H, W)."""
        height, width = size
        scale = points.new_tensor([resized[1] / width, resized[0] / height])
        multimask = self.multimask == "always" or (
            self.multimask == "auto" and points.shape[1] == 1
        )
        out = []
        for start in range(0, points.shape[0], self.prompt_batch_size):
            chunk = slice(start, start + self.prompt_batch_size)
            result = self.net(
                image_embeddings=embedding,
                input_points=(points[chunk] * scale)[None],
                input_labels=labels[chunk].long()[None],
                multimask_output=multimask,
            )
            logits = result.pred_masks[0]  # (p, masks, h, w)
            best = result.iou_scores[0].argmax(-1)
            logits = logits[torch.arange(logits.shape[0], device=logits.device), best]
            out.append(self._to_image(logits[:, None], resized, size)[:, 0] > 0)
        return torch.cat(out)

    def segment_boxes(self, images: Tensor, boxes: Tensor) -> Tensor:
        """One mask per image from one box prompt each; the images are encoded as one batch.

        A box asks for a single mask (SAM's advice for an unambiguous prompt). Box corners are
        scaled like points (the processors' ``_normalize_coordinates(..., is_bounding_box=True)``).

        Args:
            images: (B, 3, H, W) RGB in [0, 1], all of one size.
            boxes: (B, 4) float ``x0, y0, x1, y1`` in pixels of the images.

        Returns:
            (B, H, W) bool masks.
        """
        height, width = images.shape[-2:]
        dtype = next(self.net.parameters()).dtype
        pixels = []
        for image in images:
            x, resized = self.preprocess(image.to(self.mean.dtype))
            pixels.append(x)
        embedding = self.net.get_image_embeddings(torch.cat(pixels).to(dtype))
        scale = boxes.new_tensor([resized[1] / width, resized[0] / height]).repeat(2)
        result = self.net(
            image_embeddings=embedding,
            input_boxes=(boxes.float() * scale)[:, None].to(dtype),
            multimask_output=False,
        )
        logits = result.pred_masks[:, 0, :1].float()  # (B, 1, h, w)
        return self._to_image(logits, resized, (height, width))[:, 0] > 0

    def _to_image(self, logits: Tensor, resized: tuple[int, int], size: tuple[int, int]) -> Tensor:
        if self.kind == "sam":
            square = (self.input_size, self.input_size)
            logits = F.interpolate(logits, size=square, mode="bilinear", align_corners=False)
            logits = logits[..., : resized[0], : resized[1]]
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def forward(self, image: Tensor, points: Tensor, labels: Tensor) -> Tensor:
        embedding, resized = self.encode(image)
        return self.decode(embedding, resized, tuple(image.shape[-2:]), points, labels)


def _load_hf_sam(kind: str, weights: str | None, config: str | None) -> nn.Module:
    from pathlib import Path

    from transformers import Sam2Config, Sam2Model, SamConfig, SamModel

    model_cls, config_cls = (SamModel, SamConfig) if kind == "sam" else (Sam2Model, Sam2Config)
    if weights is None:
        if config is None:
            return model_cls(config_cls())
        path = Path(config).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{kind} config '{config}' does not exist")
        try:
            cfg = config_cls.from_pretrained(str(path))
        except Exception as err:  # noqa: BLE001 - any failure means a wrong file
            raise ValueError(f"{config}: not a {config_cls.__name__} file ({err})") from err
        return model_cls(cfg)
    if looks_like_path(weights) and not Path(weights).expanduser().exists():
        raise FileNotFoundError(f"{kind} weights '{weights}' do not exist")
    try:
        net, info = model_cls.from_pretrained(weights, output_loading_info=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{weights}: cannot be loaded as {model_cls.__name__} ({err})") from err
    missing = list(info.get("missing_keys", []))
    if missing:
        raise ValueError(
            f"{weights}: {len(missing)} weights of {model_cls.__name__} are missing from the "
            f"checkpoint (e.g. {missing[:3]}): not a {kind} checkpoint"
        )
    return net


def build_prompted_segmenter(
    model: str,
    weights: str | None = None,
    config: str | None = None,
    multimask: Multimask = "auto",
    prompt_batch_size: int = 64,
) -> PromptedSegmenter:
    """``sam`` / ``sam2`` (:class:`HFSamSegmenter`), ``materialistic``
    (:class:`~matbench.models.materialistic.MaterialisticSegmenter`), or the dotted path of a
    :class:`PromptedSegmenter` subclass (``package.module.Class``), built with
    ``weights=..., config=...``."""
    if model in ("sam", "sam2"):
        return HFSamSegmenter(model, weights, config, multimask, prompt_batch_size)
    if model == "materialistic":
        from matbench.models.materialistic import MaterialisticSegmenter

        segmenter = MaterialisticSegmenter(weights, config, prompt_batch_size=prompt_batch_size)
        return segmenter.freeze()
    module_name, _, class_name = model.rpartition(".")
    if not module_name:
        raise ValueError(
            f"unknown prompted model {model!r}: expected 'sam', 'sam2', 'materialistic' or the "
            "dotted path of a PromptedSegmenter subclass"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import prompted model {model!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, PromptedSegmenter)):
        raise ValueError(f"{model!r} is not a PromptedSegmenter subclass")
    segmenter = cls(weights=weights, config=config)
    segmenter.freeze()
    return segmenter
