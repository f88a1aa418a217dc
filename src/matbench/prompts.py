"""Seeded point prompts of the two MatSeg protocols (triplet benchmark, region IoU).

Every draw comes from a generator seeded by ``(seed, crc32(image key), index)``, so a prompt
depends only on the image, the anchor or region and the seed: the same on every rank, in any
batch order and in any run.

Rules (``rule``):

- ``mixed`` (default): the anchor plus N−1 further points drawn without replacement from the
  other annotated points of the image (triplet protocol) or uniformly from the image's pixels
  (region protocol); a drawn point is positive when it belongs to the anchor's group / region
  and negative otherwise. A prompt has min(N, number of points) points.
- ``positive``: the anchor plus N−1 further points of its own group (drawn without
  replacement) or region (drawn uniformly from its pixels), all positive. When the group has
  fewer points, the anchor is repeated so that every prompt of an image has N points.
"""

from __future__ import annotations

import zlib
from typing import Literal

import numpy as np
import torch
from torch import Tensor

PromptRule = Literal["mixed", "positive"]


def prompt_rng(seed: int, key: str, index: int) -> np.random.Generator:
    """The generator of one prompt: a function of the seed, the image key and the index."""
    return np.random.default_rng([int(seed), zlib.crc32(str(key).encode("utf-8")), int(index)])


def _check(num_points: int, rule: str) -> None:
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if rule not in ("mixed", "positive"):
        raise ValueError(f"rule must be 'mixed' or 'positive', got {rule!r}")


def triplet_prompts(
    points: Tensor,
    groups: Tensor,
    num_points: int,
    seed: int,
    key: str,
    rule: PromptRule = "mixed",
) -> tuple[Tensor, Tensor]:
    """One prompt per annotated point (its anchor), in the order of ``points``.

    Args:
        points: (N, 3) integer ``x, y, r`` of the image's annotated points.
        groups: (N,) group index of every point.
        num_points: Points per prompt (N in "N-point prompting").
        seed: Prompt seed.
        key: Image key (part of the seed).
        rule: ``mixed`` or ``positive`` (module docstring).

    Returns:
        ``coords`` (N, K, 2) float ``x, y`` (the anchor first) and ``labels`` (N, K) long.
    """
    _check(num_points, rule)
    n = points.shape[0]
    group = groups.cpu().numpy()
    xy = points[:, :2].cpu().numpy()
    size = min(num_points, n) if rule == "mixed" else num_points
    chosen = np.zeros((n, size), dtype=np.int64)
    for anchor in range(n):
        rng = prompt_rng(seed, key, anchor)
        if rule == "mixed":
            pool = np.delete(np.arange(n), anchor)
        else:
            pool = np.flatnonzero((group == group[anchor]) & (np.arange(n) != anchor))
        extra = rng.choice(pool, size=min(size - 1, pool.size), replace=False)
        row = np.concatenate([[anchor], extra, np.full(size - 1 - extra.size, anchor)])
        chosen[anchor] = row
    labels = (group[chosen] == group[:, None]).astype(np.int64)
    coords = torch.from_numpy(xy[chosen].astype(np.float32)).to(points.device)
    return coords, torch.from_numpy(labels).to(points.device)


def region_prompt(
    region: Tensor,
    num_points: int,
    seed: int,
    key: str,
    index: int,
    rule: PromptRule = "mixed",
) -> tuple[Tensor, Tensor]:
    """A prompt for one ground-truth region: the anchor drawn uniformly from the region's
    pixels, then N−1 further pixels by ``rule``.

    Args:
        region: (H, W) bool region mask (not empty).
        num_points: Points per prompt.
        seed: Prompt seed.
        key: Image key.
        index: Region index within the image.
        rule: ``mixed`` or ``positive``.

    Returns:
        ``coords`` (K, 2) float ``x, y`` and ``labels`` (K,) long (1 inside the region).
    """
    _check(num_points, rule)
    mask = region.cpu().numpy().astype(bool)
    inside = np.flatnonzero(mask)
    if inside.size == 0:
        raise ValueError(f"{key}: region {index} is empty: nothing to prompt")
    rng = prompt_rng(seed, key, index)
    anchor = rng.choice(inside, size=1)
    if rule == "mixed":
        extra = rng.choice(mask.size, size=num_points - 1, replace=mask.size < num_points - 1)
    else:
        extra = rng.choice(inside, size=num_points - 1, replace=inside.size < num_points - 1)
    flat = np.concatenate([anchor, extra])
    ys, xs = np.divmod(flat, mask.shape[1])
    coords = torch.from_numpy(np.stack([xs, ys], axis=1).astype(np.float32)).to(region.device)
    labels = torch.from_numpy(mask.reshape(-1)[flat].astype(np.int64)).to(region.device)
    return coords, labels
