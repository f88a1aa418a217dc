"""Materialistic (Sharma et al., SIGGRAPH 2023) as a prompted segmenter.

The architecture of the authors' code (``prafull7/materialistic``, ``src/models/transformer.py``,
model type ``transformer``), rebuilt so that its released checkpoint loads key for key:

- a DINO ViT-B/8 (``dino_model``) sees the image at 512 × 512, ImageNet-normalised; the tokens
  after blocks 3, 6, 9 and 12 are kept (DINO's own bicubic position-embedding interpolation);
- per kept layer, a readout projection (patch token ⊕ class token → linear), a 1×1 conv to 256
  channels and an upsampling (×4, ×2, ×1, ×1; bilinear, ``align_corners=True``);
- per layer, cross-attention from the query point: the point's embedding at its patch (plus
  its position inside the patch) through an MLP is the query, the layer-normed map the keys
  and values, 16 heads, a *sigmoid* of the scaled dot product weights the values, then a
  linear layer and a layer norm;
- a DPT fusion decoder (residual conv units, ×2 upsampling) from the deepest layer up, and a
  per-pixel MLP (256 → 256 → 128 → 128 → 1) with a sigmoid: the probability that a pixel shows
  the query point's material.

The released checkpoint is a Lightning ``.ckpt`` (``state_dict`` keys prefixed ``net.``) or a
``model.pth`` (keys prefixed ``module.``); both load. matbench resizes the whole image to the
model's square input (the authors' demo centre-crops instead, which would leave pixels without
a score), brings the scores back to the image size (bilinear) and thresholds them at
``threshold`` (0.5, the demo's default).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.models.prompted import IMAGENET_MEAN, IMAGENET_STD, PromptedSegmenter
from matbench.utils.weights import load_exact_state

#: The released architecture; a config file may override any key (tests use a tiny one).
MATERIALISTIC_CONFIG: dict[str, Any] = {
    "image_size": 512,
    "pretrain_size": 224,
    "patch_size": 8,
    "embed_dim": 768,
    "depth": 12,
    "vit_heads": 12,
    "channels": 256,
    "attention_heads": 16,
}


class _ProjectReadout(nn.Module):
    """Patch tokens concatenated with the class token, projected back to the token width."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim))

    def forward(self, tokens: Tensor) -> Tensor:
        cls = tokens[:, :1].expand(-1, tokens.shape[1] - 1, -1)
        return self.project(torch.cat([tokens[:, 1:], cls], dim=-1))


class _ToGrid(nn.Module):
    """(B, N, C) square token list → (B, C, √N, √N)."""

    def forward(self, tokens: Tensor) -> Tensor:
        side = math.isqrt(tokens.shape[1])
        return tokens.transpose(1, 2).unflatten(2, (side, side))


def _spatial(dim: int, channels: int, scale: int) -> nn.Sequential:
    layers: list[nn.Module] = [_ProjectReadout(dim), _ToGrid(), nn.Conv2d(dim, channels, 1)]
    if scale > 1:
        layers.append(nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=True))
    return nn.Sequential(*layers)


class _ReferenceEmbedding(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.reference_feature_extractor = nn.Sequential(
            nn.Linear(channels + 2, channels * 2), nn.ReLU(), nn.Linear(channels * 2, channels)
        )
        self.stride = stride

    def forward(self, grid: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """grid (P, C, h, w); rows, cols (P,) integer pixel positions in the model input."""
        s = self.stride
        embedding = grid[torch.arange(grid.shape[0]), :, rows // s, cols // s]
        centre = (s - 1.0) / 2.0
        local = torch.stack(
            [
                (rows - (rows // s) * s - centre) / (centre + 1e-4),
                (cols - (cols // s) * s - centre) / (centre + 1e-4),
            ],
            dim=1,
        ).to(grid.dtype)
        return self.reference_feature_extractor(torch.cat([embedding, local], dim=1))


class _CrossAttention(nn.Module):
    def __init__(self, channels: int, heads: int, stride: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.LayerNorm = nn.LayerNorm(channels)  # noqa: N815 - the checkpoint's key
        self.get_reference_embedding = _ReferenceEmbedding(channels, stride)
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)
        self.out_norm = nn.LayerNorm(channels)

    def forward(self, grid: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """grid (P, C, h, w) → (P, C, h, w) attended to each prompt's reference point."""
        p, c, h, w = grid.shape
        tokens = self.LayerNorm(grid.flatten(2).transpose(1, 2))  # (P, N, C)
        normed = tokens.transpose(1, 2).reshape(p, c, h, w)
        reference = self.get_reference_embedding(normed, rows, cols)
        d = c // self.heads
        q = self.query(reference).view(p, self.heads, 1, d)
        k = self.key(tokens).view(p, -1, self.heads, d).transpose(1, 2)
        v = self.value(tokens).view(p, -1, self.heads, d).transpose(1, 2)
        attention = torch.sigmoid((q @ k.transpose(-2, -1)) * self.scale)  # (P, heads, 1, N)
        x = (attention.transpose(-1, -2) * v).transpose(1, 2).reshape(p, -1, c)
        x = self.out_norm(self.out(x))
        return x.transpose(1, 2).reshape(p, c, h, w)


class _ResidualConvUnit(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class _Fusion(nn.Module):
    def __init__(self, channels: int, upsample: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(channels, channels, 1)
        self.resConfUnit1 = _ResidualConvUnit(channels)  # noqa: N815 - the checkpoint's key
        self.resConfUnit2 = _ResidualConvUnit(channels)  # noqa: N815
        self.upsample = upsample
        self.layer_norm_1 = nn.LayerNorm(channels)  # in the checkpoint, unused by the net

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class MaterialisticNet(nn.Module):
    """The Materialistic network: (B, 3, S, S) normalised image and (B, 2) ``row, col`` query
    pixels → (B, S, S) probabilities (module docstring). Keys as the released checkpoint's
    (without its ``net.`` prefix).

    Args:
        config: Overrides of :data:`MATERIALISTIC_CONFIG`.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        cfg = {**MATERIALISTIC_CONFIG, **(config or {})}
        unknown = set(cfg) - set(MATERIALISTIC_CONFIG)
        if unknown:
            raise ValueError(f"unknown Materialistic config keys {sorted(unknown)}")
        self.config = cfg
        dim, channels, patch = cfg["embed_dim"], cfg["channels"], cfg["patch_size"]
        self.image_size = int(cfg["image_size"])
        self.dino_model = VisionTransformer(
            img_size=cfg["pretrain_size"],
            patch_size=patch,
            embed_dim=dim,
            depth=cfg["depth"],
            num_heads=cfg["vit_heads"],
            num_classes=0,
        )
        depth = cfg["depth"]
        self.taps = [depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1]
        for index, scale in enumerate((4, 2, 1, 1), start=1):
            setattr(self, f"spatial_transform_{index}", _spatial(dim, channels, scale))
        strides = (patch // 4, patch // 2, patch, patch)
        for index, stride in enumerate(strides, start=1):
            attention = _CrossAttention(channels, cfg["attention_heads"], stride)
            setattr(self, f"cross_attention_{index}", attention)
        for index in (1, 2, 3):
            setattr(self, f"fusion_{index}", _Fusion(channels))
        self.fusion_4 = _Fusion(channels, upsample=False)
        self.out_conv = nn.Sequential(
            nn.Linear(channels, channels),
            nn.ReLU(),
            nn.Linear(channels, channels // 2),
            nn.ReLU(),
            nn.Linear(channels // 2, channels // 2),
            nn.ReLU(),
            nn.Linear(channels // 2, 1),
        )

    def _pos_embed(self, grid: int) -> Tensor:
        """DINO's ``interpolate_pos_encoding`` for a square ``grid`` of patches."""
        pos = self.dino_model.pos_embed
        n = pos.shape[1] - 1
        if n == grid * grid:
            return pos
        side = int(math.sqrt(n))
        patches = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        factor = (grid + 0.1) / side
        patches = F.interpolate(patches, scale_factor=(factor, factor), mode="bicubic")
        patches = patches.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
        return torch.cat([pos[:, :1], patches], dim=1)

    def layers(self, image: Tensor) -> list[Tensor]:
        """The four context maps (B, C, h, w) of an image batch (before the query)."""
        vit = self.dino_model
        grid = image.shape[-1] // vit.patch_embed.patch_size[0]
        x = vit.patch_embed.proj(image).flatten(2).transpose(1, 2)
        x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._pos_embed(grid)
        taps = []
        for index, block in enumerate(vit.blocks):
            x = block(x)
            if index in self.taps:
                taps.append(x)
        return [getattr(self, f"spatial_transform_{i}")(tokens) for i, tokens in enumerate(taps, 1)]

    def decode(self, layers: list[Tensor], rows: Tensor, cols: Tensor) -> Tensor:
        """Probabilities (P, S, S) for P query pixels on one image's context maps."""
        p = rows.shape[0]
        attended = [
            getattr(self, f"cross_attention_{i}")(layer.expand(p, -1, -1, -1), rows, cols)
            for i, layer in enumerate(layers, 1)
        ]
        path = self.fusion_4(attended[3])
        path = self.fusion_3(attended[2], path)
        path = self.fusion_2(attended[1], path)
        path = self.fusion_1(attended[0], path)
        return torch.sigmoid(self.out_conv(path.permute(0, 2, 3, 1))[..., 0])

    def forward(self, image: Tensor, reference: Tensor) -> Tensor:
        """(B, 3, S, S), (B, 2) ``row, col`` → (B, S, S) probabilities."""
        layers = self.layers(image)
        rows, cols = reference[:, 0].long(), reference[:, 1].long()
        out = [
            self.decode([m[i : i + 1] for m in layers], rows[i : i + 1], cols[i : i + 1])
            for i in range(image.shape[0])
        ]
        return torch.cat(out)


def load_materialistic_weights(net: MaterialisticNet, path: str | Path) -> None:
    """Load the released checkpoint (``.ckpt`` with ``net.`` keys or ``model.pth`` with
    ``module.`` keys): every key must match and every shape agree (ValueError naming the file)."""
    load_exact_state(net, path, "Materialistic", prefixes=("module.", "net."))


class MaterialisticSegmenter(PromptedSegmenter):
    """Materialistic behind the prompted-segmenter interface: one query point per prompt (the
    anchor; ``num_points`` must be 1), probabilities thresholded at ``threshold``.

    Args:
        weights: The released checkpoint (``.ckpt`` or ``model.pth``), or None (random init).
        config: A JSON file overriding :data:`MATERIALISTIC_CONFIG` (e.g. a tiny test model).
        threshold: Probability above which a pixel is in the mask.
        prompt_batch_size: Query points decoded at once.
    """

    def __init__(
        self,
        weights: str | None = None,
        config: str | None = None,
        threshold: float = 0.5,
        prompt_batch_size: int = 8,
    ) -> None:
        super().__init__()
        overrides = None
        if config is not None:
            path = Path(config).expanduser()
            try:
                overrides = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"{config}: not a Materialistic config JSON ({err})") from err
        self.net = MaterialisticNet(overrides)
        if weights is not None:
            load_materialistic_weights(self.net, weights)
        self.threshold = threshold
        self.prompt_batch_size = prompt_batch_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor, points: Tensor, labels: Tensor) -> Tensor:
        if points.shape[1] != 1:
            raise ValueError(
                f"Materialistic takes one query point per prompt, got {points.shape[1]}: "
                "set num_points to 1"
            )
        height, width = image.shape[-2:]
        size = self.net.image_size
        x = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)
        layers = self.net.layers((x - self.mean) / self.std)
        cols = (points[:, 0, 0] * size / width).long().clamp(0, size - 1)
        rows = (points[:, 0, 1] * size / height).long().clamp(0, size - 1)
        masks = []
        for start in range(0, points.shape[0], self.prompt_batch_size):
            chunk = slice(start, start + self.prompt_batch_size)
            scores = self.net.decode(layers, rows[chunk], cols[chunk])
            scores = F.interpolate(scores[:, None], size=(height, width), mode="bilinear")
            masks.append(scores[:, 0] > self.threshold)
        return torch.cat(masks)
