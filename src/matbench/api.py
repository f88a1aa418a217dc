"""The Python API for notebooks: ``matbench.load(checkpoint)`` and what it returns.

```python
import matbench

model = matbench.load("logs/clip/lvis_materials/run/checkpoints/last.ckpt")
model.rank_materials(image, mask)[:3]      # [("wood", 0.31), ("metal", 0.27), ...]
```

Images are PIL images, numpy arrays (H, W, 3; uint8 or float in [0, 1]) or tensors
(3, H, W) in [0, 1]; masks are (H, W) arrays or tensors (non-zero = the region).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from matbench.errors import ConfigError

#: The file `save_pretrained` writes next to Hugging Face's ``config.json``: which task class.
MATBENCH_JSON = "matbench.json"


def as_image(image: Any) -> Tensor:
    """A PIL image, numpy array (H, W, 3) or tensor (3, H, W) as a float (3, H, W) in [0, 1]."""
    if isinstance(image, Tensor):
        tensor = image.detach().float()
        if tensor.ndim == 3 and tensor.shape[0] != 3 and tensor.shape[-1] == 3:
            tensor = tensor.permute(2, 0, 1)
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(f"image tensor must be (3, H, W), got {tuple(tensor.shape)}")
        return tensor / 255.0 if tensor.max() > 1.5 else tensor
    if hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"image array must be (H, W, 3), got {array.shape}")
    array = array[..., :3]
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / scale).permute(2, 0, 1)


def as_mask(mask: Any, image: Tensor) -> Tensor:
    """A region mask (H, W) as bool; None = the whole image."""
    if mask is None:
        return torch.ones(image.shape[-2:], dtype=torch.bool)
    if hasattr(mask, "convert"):
        mask = np.asarray(mask.convert("L"))
    tensor = mask if isinstance(mask, Tensor) else torch.from_numpy(np.array(mask))
    if tensor.ndim == 3:
        tensor = tensor[..., 0] if tensor.shape[-1] in (3, 4) else tensor[0]
    if tuple(tensor.shape) != tuple(image.shape[-2:]):
        raise ValueError(
            f"mask is {tuple(tensor.shape)} but the image is {tuple(image.shape[-2:])}"
        )
    return tensor > 0 if tensor.dtype != torch.bool else tensor


class MaterialModel:
    """A trained matbench task behind a small API (built by `load`).

    Which methods apply depends on the task: `embed_region` and `rank_materials` for CLIP
    material models, `classify` for two-stream classifiers and zero-shot CLIP, and
    `descriptor_map` and `similarity` for MatSeg. The others raise a TypeError that says so.

    Args:
        task: The task (a `matbench.tasks.BaseTask`), in eval mode.
        class_names: Class names of a classifier (stored in its checkpoint).
    """

    def __init__(self, task: Any, class_names: list[str] | None = None) -> None:
        self.task = task.eval()
        self.class_names = class_names
        self._text_cache: tuple[tuple[str, ...], Tensor] | None = None

    def __repr__(self) -> str:
        return f"MaterialModel({type(self.task).__name__}: {self.task.model_name})"

    @property
    def device(self) -> torch.device:
        return next(self.task.parameters()).device

    def _needs(self, *names: str) -> None:
        if type(self.task).__name__ not in names:
            raise TypeError(
                f"{type(self.task).__name__} does not support this: it is for {', '.join(names)}"
            )

    # -- CLIP ------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_region(self, image: Any, mask: Any = None) -> Tensor:
        """The L2-normalised material embedding (D,) of a region: the object crop rule of
        training (box padded to >= 50 px, resized, background blurred), then the image tower."""
        from matbench.transforms import crop_object

        self._needs("ClipMaterialTask", "ZeroShotTask")
        tensor = as_image(image)
        region = as_mask(mask, tensor)
        size = self.task.model.image.image_size
        crop, _, _ = crop_object(tensor, region, size=size, square=True)
        return self.task.model.encode_image(crop[None].to(self.device))[0].cpu()

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> Tensor:
        """L2-normalised text embeddings (N, D) of material queries."""
        self._needs("ClipMaterialTask", "ZeroShotTask")
        return self.task.model.encode_text(list(texts)).cpu()

    def rank_materials(
        self, image: Any, mask: Any = None, vocabulary: list[str] | None = None, top_k: int = 10
    ) -> list[tuple[str, float]]:
        """Materials of a region ranked by cosine similarity: ``[(name, cosine), …]``.

        Args:
            image: The photo.
            mask: The region (None = the whole photo).
            vocabulary: Material names to rank (default: `matbench.materials.material_names`).
            top_k: How many to return.
        """
        from matbench.materials import material_names

        names = tuple(vocabulary or material_names())
        if self._text_cache is None or self._text_cache[0] != names:
            self._text_cache = (names, self.embed_text(list(names)))
        scores = self._text_cache[1] @ self.embed_region(image, mask)
        order = scores.argsort(descending=True)[:top_k].tolist()
        return [(names[i], float(scores[i])) for i in order]

    # -- classification --------------------------------------------------------------------------
    @torch.no_grad()
    def classify(
        self, image: Any, mask: Any = None, description: str | None = None
    ) -> dict[str, float]:
        """Class probabilities of a region, ``{class name: probability}``, highest first.

        Args:
            image: The photo.
            mask: The region (None = the whole photo).
            description: Appearance text for the two-stream text stream (default: the
                datasets' class-agnostic fallback).
        """
        self._needs("TwoStreamTask", "ZeroShotTask")
        tensor = as_image(image)
        region = as_mask(mask, tensor)
        if type(self.task).__name__ == "ZeroShotTask":
            names = list(self.task.hparams.class_names or self.class_names or [])
            if not names:
                raise ConfigError(
                    "zero-shot classification needs class names",
                    hint="build the ZeroShotTask with class_names=[...]",
                )
            probs = self._zero_shot(tensor, region, names)
        else:
            from matbench.datasets.descriptions import FALLBACK_DESCRIPTION

            size = int(self.task.hparams.image_size)
            resized = F.interpolate(
                tensor[None], size=(size, size), mode="bilinear", antialias=True
            )
            small = F.interpolate(region[None, None].float(), size=(size, size), mode="nearest")
            batch = {
                "image": resized.to(self.device),
                "mask": small[:, 0].bool().to(self.device),
                "description": [description or FALLBACK_DESCRIPTION],
            }
            probs = self.task(batch).softmax(1)[0].cpu()
            names = self.class_names or [f"class_{i}" for i in range(len(probs))]
        order = probs.argsort(descending=True).tolist()
        return {names[i]: float(probs[i]) for i in order}

    def _zero_shot(self, image: Tensor, region: Tensor, names: list[str]) -> Tensor:
        task = self.task
        if task._classes != names:
            task._classes, task._class_embeddings = names, task.class_embeddings(names)
        batch = {"image": [image.to(self.device)], "mask": [region.to(self.device)]}
        return task.probabilities(batch)[0].cpu()

    # -- MatSeg ----------------------------------------------------------------------------------
    @torch.no_grad()
    def descriptor_map(self, image: Any) -> Tensor:
        """The unit material-state descriptors (D, H, W) of every pixel."""
        self._needs("MatSegTask")
        return self.task.descriptor_map(as_image(image).to(self.device)).cpu()

    @torch.no_grad()
    def similarity(self, image: Any, point: tuple[int, int], radius: int = 5) -> Tensor:
        """Cosine similarity (H, W) of every pixel's descriptor to that of a point ``(x, y)``
        (the unit sum of the descriptors in a disk of ``radius``, as the benchmark does)."""
        from matbench.tasks.matseg import point_descriptors

        desc = self.descriptor_map(image)
        x, y = int(point[0]), int(point[1])
        height, width = desc.shape[-2:]
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"point ({x}, {y}) is outside the {width}x{height} image")
        anchor = point_descriptors(desc, torch.tensor([[x, y, radius]]))[0]
        return torch.einsum("d,dhw->hw", anchor, desc)


def _task_class(class_path: str | None, hparams: dict[str, Any]) -> type:
    import importlib

    import matbench.tasks as tasks

    if class_path:
        if "." not in class_path:
            return getattr(tasks, class_path)
        module, _, name = class_path.rpartition(".")
        return getattr(importlib.import_module(module), name)
    # a checkpoint written from Python (no class path): tell the tasks apart by their arguments
    if "templates" in hparams:
        return tasks.ZeroShotTask
    if "text_tower" in hparams:
        return tasks.ClipMaterialTask
    if "descriptor_dim" in hparams:
        return tasks.MatSegTask
    if "streams" in hparams:
        return tasks.TwoStreamTask
    raise ConfigError(f"cannot tell which matbench task wrote these hyperparameters: {hparams}")


def load(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> MaterialModel:
    """A trained model from a Lightning checkpoint (``.ckpt``) or a `save_pretrained` folder.

    Args:
        checkpoint: The ``.ckpt`` file, or a folder with ``model.safetensors``,
            ``config.json`` and ``matbench.json``.
        map_location: Device of the weights.

    Returns:
        A `MaterialModel` in eval mode.
    """
    from matbench.tasks.base import read_checkpoint

    path = Path(checkpoint).expanduser()
    if path.is_dir():
        info_path = path / MATBENCH_JSON
        if not info_path.is_file():
            raise ConfigError(
                f"{path}: not a matbench model folder (no {MATBENCH_JSON})",
                hint="save one with task.save_pretrained(folder)",
            )
        info = json.loads(info_path.read_text(encoding="utf-8"))
        cls = _task_class(info.get("class_path"), {})
        task = cls.from_pretrained(path, map_location=str(map_location))
        return MaterialModel(task, info.get("class_names"))
    data = read_checkpoint(path)
    if data is None:
        raise ConfigError(f"{path}: not a matbench checkpoint (.ckpt) or model folder")
    hparams = dict(data.get("hyper_parameters") or {})
    cls = _task_class(hparams.get("_class_path"), hparams)
    task = cls.load_from_checkpoint(path, map_location=map_location)
    return MaterialModel(task, data.get("matbench_class_names"))
