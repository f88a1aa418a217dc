"""The two-stream material classifier: frozen DINOv2 patch features + description text → MLP.

Vision stream: a timm ViT (DINOv2 by default) or CNN (the paper's ResNet-101 comparison). A
ViT's patch tokens (class and register tokens dropped) form a grid; a CNN's last feature map
is its grid. The region mask is resized to that grid — a position is inside when at least
``patch_fraction`` of its area is in the mask — and the features are max-pooled over the
inside positions. When no patch is inside (a region smaller than a patch), the patch
nearest to the mask's centroid is used; an entirely empty mask pools over all patches. With
``null_mask`` the pooling always covers all patches (the paper's ablation).

Text stream: a frozen sentence encoder (``matbench.models.text``) of the region's appearance
description. The two vectors are concatenated and classified by an MLP.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.models.text import build_text_encoder
from matbench.models.utils import Freezable, state_hash
from matbench.utils.deprecation import Renamed, renamed_arguments
from matbench.utils.weights import (
    create_timm_model,
    looks_like_path,
    sha256,
    timm_normalization,
    weights_file,
)

Streams = Literal["both", "vision", "text"]


def mask_to_grid(mask: Tensor, grid: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """The patches inside a mask: (B, H, W) bool → (B, h, w) bool.

    A patch is inside when the fraction of its area covered by the mask is at least
    ``threshold`` (``threshold=0`` means any overlap). A mask with no patch inside gets the
    patch nearest to its centroid; an all-False mask gets every patch. Never empty.
    """
    mask = mask.to(torch.float32)
    fraction = F.adaptive_avg_pool2d(mask[:, None], grid)[:, 0]
    inside = fraction > 0 if threshold <= 0 else fraction >= threshold
    empty = ~inside.flatten(1).any(1)
    if bool(empty.any()):
        height, width = mask.shape[-2:]
        total = mask.sum((1, 2))
        ys = torch.arange(height, dtype=torch.float32, device=mask.device)
        xs = torch.arange(width, dtype=torch.float32, device=mask.device)
        cy = (mask.sum(2) * ys).sum(1) / total.clamp_min(1)
        cx = (mask.sum(1) * xs).sum(1) / total.clamp_min(1)
        # pixel centre → patch index
        gy = ((cy + 0.5) * grid[0] / height).floor().long().clamp(0, grid[0] - 1)
        gx = ((cx + 0.5) * grid[1] / width).floor().long().clamp(0, grid[1] - 1)
        inside = inside.clone()
        for b in torch.nonzero(empty).flatten().tolist():
            if total[b] > 0:
                inside[b, gy[b], gx[b]] = True
            else:
                inside[b] = True
    return inside


def masked_max_pool(grid: Tensor, inside: Tensor) -> Tensor:
    """Max over the positions of ``grid`` (B, D, h, w) where ``inside`` (B, h, w) is True."""
    filled = grid.masked_fill(~inside[:, None], float("-inf"))
    return filled.flatten(2).amax(2)


class VisionStream(Freezable):
    """A timm backbone returning a feature grid: a ViT's patch tokens, or a CNN's last feature
    map.

    Args:
        backbone: timm model name: a ViT (e.g. ``vit_small_patch14_dinov2``,
            ``vit_large_patch16_224``, ``test_vit``) or a CNN (e.g. ``resnet101``,
            ``test_resnet``).
        weights: None = random init; ``"timm"`` = timm's pretrained weights for the name;
            a local file path (``.pth``/``.safetensors``…, timm's key layout; a ViT's position
            embedding is resampled by timm's own filter); any other string = a timm pretrained
            tag (``vit_small_patch14_dinov2.<tag>``).
        image_size: Input size a ViT's position embedding is built for; other sizes work too
            (the embedding is interpolated). DINOv2 at 448 gives the paper's 32 x 32 patches.
        model_kwargs: Extra arguments of the timm model (e.g. ``{"depth": 1}`` in tests).
    """

    def __init__(
        self,
        backbone: str = "vit_small_patch14_dinov2",
        weights: str | None = None,
        image_size: int = 224,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        extra = dict(model_kwargs or {})
        try:
            net = create_timm_model(
                backbone,
                weights,
                num_classes=0,
                img_size=image_size,
                dynamic_img_size=True,
                **extra,
            )
        except TypeError:  # not a ViT: a CNN's constructor has no image size
            net = create_timm_model(backbone, weights, num_classes=0, **extra)
        #: The timm backbone (named ``vit`` for checkpoint compatibility; a CNN also lives here).
        self.vit = net
        self.weights_source = weights
        if hasattr(net, "patch_embed") and hasattr(net, "num_prefix_tokens"):
            self.kind = "vit"
            self.patch_size = tuple(net.patch_embed.patch_size)
        elif getattr(net, "feature_info", None) and "reduction" in net.feature_info[-1]:
            self.kind = "cnn"
            self.patch_size = (int(net.feature_info[-1]["reduction"]),) * 2
        else:
            raise ValueError(
                f"'{backbone}' is neither a timm ViT with patch tokens nor a CNN with a "
                "feature map (timm feature_info)"
            )
        self.dim = int(net.num_features)
        mean, std = timm_normalization(net)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → feature grid (B, D, h, w): ViT patches (h = H / p) or the
        CNN's last feature map."""
        features = self.vit.forward_features((image - self.mean) / self.std)
        if self.kind == "cnn":
            if features.ndim != 4:
                raise ValueError(
                    f"expected a (B, C, h, w) feature map, got {tuple(features.shape)}"
                )
            if str(getattr(self.vit, "output_fmt", "NCHW")) == "NHWC":  # e.g. Swin
                features = features.permute(0, 3, 1, 2)
            return features
        height, width = image.shape[-2:]
        grid = (height // self.patch_size[0], width // self.patch_size[1])
        patches = features[:, self.vit.num_prefix_tokens :]
        if patches.shape[1] != grid[0] * grid[1]:
            raise ValueError(
                f"got {patches.shape[1]} patch tokens for a {grid[0]}x{grid[1]} grid "
                f"(input {height}x{width}, patch {self.patch_size})"
            )
        return patches.transpose(1, 2).reshape(image.shape[0], self.dim, *grid)


@renamed_arguments(
    {
        "mask_threshold": "patch_fraction",
        "finetune": Renamed("freeze_backbone", {"head": True, "full": False}),
    }
)
class TwoStreamModel(nn.Module):
    """Frozen DINOv2 region features ⊕ frozen text features → MLP → material classes.

    Args:
        num_classes: Number of classes.
        backbone: timm ViT or CNN name of the vision stream (see :class:`VisionStream`).
        weights: Vision weights (see :class:`VisionStream`); None = random init.
        image_size: Input size the vision stream is built for.
        text_encoder: ``"minilm"``, ``"minilm-random"`` or ``"open_clip:<arch>"``.
        text_weights: Text weights (see ``matbench.models.text.build_text_encoder``).
        streams: ``"both"``, ``"vision"`` or ``"text"`` (the paper's ablation).
        null_mask: Pool over all patches, ignoring the mask.
        patch_fraction: Fraction of a patch's area in the mask for it to count as inside.
        freeze_backbone: Freeze the vision stream (True: only the MLP head trains; False: the
            ViT is trained too). The text stream is always frozen.
        hidden_dim: Width of the MLP's hidden layer.
        dropout: Dropout before the MLP's last layer.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "vit_small_patch14_dinov2",
        weights: str | None = None,
        image_size: int = 224,
        text_encoder: str = "minilm",
        text_weights: str | None = None,
        streams: Streams = "both",
        null_mask: bool = False,
        patch_fraction: float = 0.5,
        freeze_backbone: bool = True,
        hidden_dim: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if streams not in ("both", "vision", "text"):
            raise ValueError(f"streams must be 'both', 'vision' or 'text', got '{streams}'")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.streams = streams
        self.null_mask = null_mask
        self.patch_fraction = patch_fraction
        self.freeze_backbone = freeze_backbone
        self._identity = {
            "backbone": backbone,
            "weights": weights,
            "text_encoder": text_encoder,
            "text_weights": text_weights,
            "streams": streams,
            "null_mask": null_mask,
            "patch_fraction": patch_fraction,
        }
        self.vision: VisionStream | None = None
        self.text: nn.Module | None = None
        in_dim = 0
        if streams in ("both", "vision"):
            self.vision = VisionStream(backbone, weights, image_size)
            self.vision.freeze(freeze_backbone)
            in_dim += self.vision.dim
        if streams in ("both", "text"):
            self.text = build_text_encoder(text_encoder, text_weights)
            self.text.freeze()
            in_dim += int(self.text.dim)
        self.feature_dim = in_dim
        self.head = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    @property
    def frozen(self) -> bool:
        """True when both streams are frozen (their features can be cached)."""
        return self.vision is None or bool(self.vision.frozen)

    def vision_features(self, image: Tensor, mask: Tensor | None) -> Tensor:
        """(B, 3, H, W), (B, H, W) → (B, D) mask-max-pooled patch features."""
        assert self.vision is not None
        grid = self.vision(image)
        if self.null_mask or mask is None:
            return grid.flatten(2).amax(2)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool (B, H, W), got {mask.dtype}")
        inside = mask_to_grid(mask, tuple(grid.shape[-2:]), self.patch_fraction)
        return masked_max_pool(grid, inside)

    def features(
        self, image: Tensor | None, mask: Tensor | None, descriptions: list[str]
    ) -> Tensor:
        """The concatenated stream features (B, feature_dim); ``image`` may be None for a
        text-only model."""
        parts = []
        if self.vision is not None:
            if image is None:
                raise ValueError("the vision stream needs an image")
            parts.append(self.vision_features(image, mask))
        if self.text is not None:
            with torch.no_grad():
                parts.append(
                    self.text(list(descriptions)).to(parts[0].dtype if parts else torch.float32)
                )
        return torch.cat(parts, dim=1)

    def classify(self, features: Tensor) -> Tensor:
        """Stream features (B, feature_dim) → logits (B, num_classes)."""
        return self.head(features)

    def forward(self, image: Tensor | None, mask: Tensor | None, descriptions: list[str]) -> Tensor:
        return self.classify(self.features(image, mask, descriptions))

    def cache_id(self) -> str:
        """Identity of the frozen streams for the feature cache: their settings, the weights
        file hashes, and a hash of their parameter values (which also tells random inits apart)."""
        digest = hashlib.sha256(repr(sorted(self._identity.items())).encode())
        for key in ("weights", "text_weights"):
            value = self._identity[key]
            if value is not None and looks_like_path(str(value)):
                digest.update(sha256(weights_file(str(value))).encode())
        for stream in (self.vision, self.text):
            if stream is not None:
                digest.update(state_hash(stream).encode())
        return digest.hexdigest()
