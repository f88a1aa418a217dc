"""Zero-shot dense descriptors from a foundation model's patch features.

The patch-token grid of a timm ViT (DINOv2 by default), of an open_clip image tower or of a
Hugging Face ``transformers`` ViT is upsampled to the input's pixels (bilinear) and
L2-normalised per pixel, and used directly as a MatSeg descriptor map: no training, the
baseline a reader asks for first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.models.utils import Freezable

#: Prefix of ``backbone`` names that select an open_clip image tower.
OPEN_CLIP_PREFIX = "open_clip:"
#: Prefix of ``backbone`` names that select a Hugging Face ``transformers`` ViT.
HF_PREFIX = "hf:"


def _patch_multiple_size(
    height: int, width: int, patch: tuple[int, int], longest: int | None
) -> tuple[int, int]:
    """The backbone input size: the image's size (or scaled so its longest side is
    ``longest``), each side rounded to the nearest multiple of the patch (at least one patch)."""
    scale = 1.0 if longest is None else longest / max(height, width)
    return (
        max(patch[0], round(height * scale / patch[0]) * patch[0]),
        max(patch[1], round(width * scale / patch[1]) * patch[1]),
    )


class _TimmGrid(nn.Module):
    """A timm ViT's patch grid at a size that is a multiple of its patch (any aspect ratio)."""

    def __init__(self, name: str, weights: str | None, image_size: int | None) -> None:
        super().__init__()
        from matbench.models.two_stream import VisionStream

        self.stream = VisionStream(name, weights, image_size or 224)
        self.dim = self.stream.dim
        self.image_size = image_size

    def forward(self, image: Tensor) -> Tensor:
        size = _patch_multiple_size(*image.shape[-2:], self.stream.patch_size, self.image_size)
        if size != tuple(image.shape[-2:]):
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        return self.stream(image)


class _OpenCLIPGrid(nn.Module):
    """The last block's patch tokens of an open_clip image tower (after its final norm), at the
    tower's fixed input size (images are resized to it, aspect ratio not kept)."""

    def __init__(self, arch: str, weights: str | None) -> None:
        super().__init__()
        from matbench.models.clip import OPENAI_MEAN, OPENAI_STD, create_open_clip

        self.visual = create_open_clip(arch, weights, frozen=True).visual
        if not hasattr(self.visual, "forward_intermediates") or not hasattr(
            self.visual, "patch_size"
        ):
            raise ValueError(
                f"open_clip model '{arch}': its image tower has no patch tokens "
                "(a ViT tower is needed for dense features)"
            )
        cfg = getattr(self.visual, "preprocess_cfg", None) or {}
        mean = torch.tensor(cfg.get("mean", OPENAI_MEAN)).view(1, 3, 1, 1)
        std = torch.tensor(cfg.get("std", OPENAI_STD)).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        size = self.visual.image_size
        self.size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.dim = int(self.visual.transformer.width)

    def forward(self, image: Tensor) -> Tensor:
        if tuple(image.shape[-2:]) != self.size:
            image = F.interpolate(image, size=self.size, mode="bilinear", align_corners=False)
        out = self.visual.forward_intermediates(
            (image - self.mean) / self.std,
            indices=1,
            normalize_intermediates=True,
            intermediates_only=True,
            output_fmt="NCHW",
        )
        return out["image_intermediates"][-1]


class _HFGrid(nn.Module):
    """The last layer's patch tokens of a Hugging Face ``transformers`` ViT (DINOv2, ViT,
    ...), class and register tokens dropped, at a size that is a multiple of its patch (the
    position embedding interpolated), as :class:`_TimmGrid`."""

    def __init__(self, name: str, weights: str | None, image_size: int | None) -> None:
        super().__init__()
        import inspect
        import json
        from pathlib import Path

        from transformers import AutoConfig, AutoModel

        from matbench.utils.weights import loading_weights

        with loading_weights("encoder", name):
            if weights in ("none", "random"):
                self.net = AutoModel.from_config(AutoConfig.from_pretrained(name))
            else:
                self.net = AutoModel.from_pretrained(name)
        config = self.net.config
        if not hasattr(config, "patch_size") or not hasattr(config, "hidden_size"):
            raise ValueError(f"Hugging Face model '{name}' is not a ViT with patch tokens")
        patch = config.patch_size
        self.patch = tuple(patch) if isinstance(patch, (list, tuple)) else (int(patch),) * 2
        self.prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.dim = int(config.hidden_size)
        self.image_size = image_size
        self.interpolate = (
            "interpolate_pos_encoding" in inspect.signature(self.net.forward).parameters
        )
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        processor = Path(name).expanduser() / "preprocessor_config.json"
        if processor.is_file():
            cfg = json.loads(processor.read_text(encoding="utf-8"))
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        size = _patch_multiple_size(*image.shape[-2:], self.patch, self.image_size)
        if size != tuple(image.shape[-2:]):
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        extra = {"interpolate_pos_encoding": True} if self.interpolate else {}
        tokens = self.net(pixel_values=(image - self.mean) / self.std, **extra).last_hidden_state
        grid = (size[0] // self.patch[0], size[1] // self.patch[1])
        patches = tokens[:, self.prefix :]
        if patches.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"got {patches.shape[1]} patch tokens for a {grid[0]}x{grid[1]} grid")
        return patches.transpose(1, 2).reshape(image.shape[0], self.dim, *grid)


class DenseFeatureDescriptor(Freezable):
    """Foundation-model patch features as per-pixel MatSeg descriptors (zero-shot, frozen).

    The backbone sees the image normalised with its own mean and std. A timm ViT sees it at its
    own size (or scaled so that the longest side is ``image_size``), each side rounded to the
    nearest multiple of the patch size; an open_clip tower sees it resized to the tower's input
    size. The patch grid is upsampled bilinearly (``align_corners=False``) to the input's height
    and width and L2-normalised per pixel.

    Args:
        backbone: A timm ViT name (default DINOv2 ViT-S/14), ``open_clip:<arch>`` (an open_clip
            architecture name or a JSON model config path) or ``hf:<name or folder>`` (a
            Hugging Face ``transformers`` ViT, e.g. ``hf:facebook/dinov2-small``).
        weights: Backbone weights: for timm, ``"timm"`` (the default pretrained tag), a timm
            tag, a local file or None; for open_clip, a pretrained tag, a local file or None
            (random init); for Hugging Face, None (the model's own) or ``"none"`` (random
            init from its config).
        image_size: Longest side a timm ViT sees (None = the image's own size).
    """

    def __init__(
        self,
        backbone: str = "vit_small_patch14_dinov2",
        weights: str | None = None,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be >= 1 or None, got {image_size}")
        if backbone.startswith(OPEN_CLIP_PREFIX):
            self.grid: nn.Module = _OpenCLIPGrid(backbone[len(OPEN_CLIP_PREFIX) :], weights)
        elif backbone.startswith(HF_PREFIX):
            self.grid = _HFGrid(backbone[len(HF_PREFIX) :], weights, image_size)
        else:
            self.grid = _TimmGrid(backbone, weights, image_size)
        self.descriptor_dim = int(self.grid.dim)
        self.freeze()

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, D, H, W) unit descriptors."""
        height, width = image.shape[-2:]
        grid = self.grid(image)
        dense = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return F.normalize(dense, dim=1)

    def extra_repr(self) -> str:
        return f"descriptor_dim={self.descriptor_dim}"
