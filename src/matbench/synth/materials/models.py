"""The models of ``matbench synth materials``: a ``diffusers`` text-to-image pipeline, and
Grounding DINO + SAM (``transformers``) for the semantic-grounding labels.

Imported only by that command: ``diffusers`` is the optional extra ``matbench[generate]``.
Every model is named by a Hugging Face hub name or a local folder (``save_pretrained``);
on a GPU the models run in float16, on the CPU in float32.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from matbench.errors import MatbenchError
from matbench.synth.materials import (  # noqa: F401 - re-exported
    DEFAULT_DETECTOR,
    DEFAULT_DIFFUSION,
    DEFAULT_SEGMENTER,
)

INSTALL = 'pip install "matbench[generate]"'


class GenerateUnavailableError(MatbenchError, ImportError):
    """The optional ``generate`` extra (``diffusers``) is not installed."""

    hint = INSTALL


class ModelLoadError(MatbenchError, ValueError):
    """A model name or folder that cannot be loaded as the expected kind of model."""


def require_diffusers() -> Any:
    """The ``diffusers`` module, or an error naming the install line."""
    try:
        return importlib.import_module("diffusers")
    except ImportError as err:
        raise GenerateUnavailableError(
            f"matbench synth materials needs diffusers ({err}): {INSTALL}"
        ) from err


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ModelLoadError(f"--device '{device}' is not a torch device ({err})") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device '{device}': no CUDA GPU is available here")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on a GPU and float32 on the CPU (half precision is slow there)."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"dtype must be auto, float32, float16 or bfloat16, got '{dtype}'")
    return table[dtype]


def _load(what: str, name: str, loader: Any, **kwargs: Any) -> Any:
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{what} '{name}' cannot be loaded ({err})") from err


def prompt_seed(run_seed: int, class_name: str, index: int) -> int:
    """The seed of image ``index`` of a class: a hash of the run seed, the class and the index
    (so an image never depends on the batch it was generated in or on the other classes)."""
    import hashlib

    text = f"{run_seed}/{class_name}/{index}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big") & 0x7FFFFFFF


@dataclass
class DiffusionSettings:
    """What a text-to-image call is given besides the prompts.

    Args:
        steps: Denoising steps.
        guidance: Classifier-free guidance scale.
        size: Image side in pixels (SD 2.1: 768).
        negative_prompt: Text to steer away from (None: none).
    """

    steps: int = 50
    guidance: float = 7.5
    size: int = 768
    negative_prompt: str | None = None


class ImageGenerator:
    """A ``diffusers`` text-to-image pipeline (``DiffusionPipeline.from_pretrained``): Stable
    Diffusion 2.1 by default, any pipeline by hub name or local folder. Each image has its own
    seeded generator, so it depends only on its prompt and seed.

    Args:
        model: Hub name or local folder of the pipeline.
        settings: Steps, guidance, size, negative prompt.
        device: Torch device.
        dtype: Torch dtype of the weights.
    """

    def __init__(
        self,
        model: str,
        settings: DiffusionSettings,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        from matbench.vlm.hf import model_identity

        diffusers = require_diffusers()
        self.settings = settings
        self.device = device
        self.pipe = _load(
            "diffusion pipeline", model, diffusers.DiffusionPipeline.from_pretrained, dtype=dtype
        )
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.model_id = model_identity(model)

    def __call__(
        self, prompts: Sequence[str], seeds: Sequence[int]
    ) -> tuple[list[Image.Image], list[bool]]:
        """The images of ``prompts`` (one seed each) and, per image, whether the pipeline's
        safety checker flagged it (False for pipelines without one)."""
        s = self.settings
        generators = [torch.Generator(self.device).manual_seed(int(seed)) for seed in seeds]
        kwargs: dict[str, Any] = {}
        if s.negative_prompt:
            kwargs["negative_prompt"] = [s.negative_prompt] * len(prompts)
        with torch.inference_mode():
            out = self.pipe(
                prompt=list(prompts),
                num_inference_steps=s.steps,
                guidance_scale=s.guidance,
                height=s.size,
                width=s.size,
                generator=generators,
                output_type="pil",
                **kwargs,
            )
        flagged = getattr(out, "nsfw_content_detected", None) or [False] * len(prompts)
        return list(out.images), [bool(f) for f in flagged]


@dataclass
class Grounding:
    """The label of one image: the detector's best box for the object and SAM's mask in it."""

    score: float
    box: list[float]
    mask: np.ndarray | None = None


class ObjectGrounder:
    """Grounding DINO finds the object named in the prompt, SAM turns its box into a mask.

    The detection score of an image is the best box's score as Grounding DINO's processor
    computes it (``post_process_grounded_object_detection``: the sigmoid of the box-token
    logits, maximised over the query's tokens); the box of that score is SAM's prompt.

    Args:
        detector: Hub name or folder of a Grounding DINO model and its processor.
        segmenter: Hub name or folder of a SAM (``sam``) or SAM 2 (``sam2``) model.
        device: Torch device.
        dtype: Torch dtype of the weights.
        segmenter_kind: ``sam`` or ``sam2``.
    """

    def __init__(
        self,
        detector: str,
        segmenter: str,
        device: torch.device,
        dtype: torch.dtype,
        segmenter_kind: str = "sam",
    ) -> None:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from matbench.models.prompted import HFSamSegmenter
        from matbench.vlm.hf import model_identity

        self.device, self.dtype = device, dtype
        self.processor = _load("Grounding DINO processor", detector, AutoProcessor.from_pretrained)
        self.detector = _load(
            "Grounding DINO model",
            detector,
            AutoModelForZeroShotObjectDetection.from_pretrained,
            dtype=dtype,
        )
        self.detector.to(device).eval()
        try:
            self.segmenter = HFSamSegmenter(segmenter_kind, weights=segmenter)  # type: ignore[arg-type]
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"segmenter '{segmenter}' cannot be loaded ({err})") from err
        self.segmenter.to(device=device, dtype=dtype).eval()
        self.detector_id = model_identity(detector)
        self.segmenter_id = model_identity(segmenter)

    @torch.inference_mode()
    def detect(self, images: Sequence[Image.Image], queries: Sequence[str]) -> list[Grounding]:
        """The best box (pixels, ``x0, y0, x1, y1``) and its score for each image's query."""
        inputs = self.processor(
            images=list(images), text=list(queries), return_tensors="pt", padding=True
        )
        inputs = {
            k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
            for k, v in inputs.items()
        }
        outputs = self.detector(**inputs)
        # the processor's post_process_grounded_object_detection, for the best box only:
        # score = max over the text tokens of sigmoid(logit); boxes cxcywh (relative) -> xyxy
        scores = outputs.logits.float().sigmoid().amax(-1)  # (B, queries)
        best = scores.argmax(-1)
        rows = torch.arange(len(images), device=best.device)
        cx, cy, w, h = outputs.pred_boxes.float()[rows, best].unbind(-1)
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        sizes = torch.tensor([[im.width, im.height] * 2 for im in images], device=boxes.device)
        boxes = (boxes * sizes).cpu()
        best_scores = scores[rows, best].cpu()
        return [
            Grounding(float(score), box.tolist())
            for score, box in zip(best_scores, boxes, strict=True)
        ]

    @torch.inference_mode()
    def segment(
        self, images: Sequence[Image.Image], boxes: Sequence[Sequence[float]]
    ) -> list[np.ndarray]:
        """SAM's mask (bool H x W) in each image's box; the images must share one size."""
        if not images:
            return []
        pixels = torch.stack(
            [torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1) for im in images]
        )
        pixels = pixels.to(self.device, torch.float32) / 255.0
        masks = self.segmenter.segment_boxes(pixels, torch.tensor(boxes, device=self.device))
        return list(masks.cpu().numpy())
