"""Seeded random inputs shared by the metric tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def triplet_image(
    seed: int, n: int, num_groups: int = 4, relations: bool = True, levels: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Random (similarity, weight, groups) of one MatSeg image.

    Weights follow the annotation: 1 within a group, 0.6 / 0.3 / 0 between groups (random
    relations when ``relations``). ``levels`` rounds the similarities to make ties frequent.
    """
    gen = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, num_groups, (n,), generator=gen)
    between = torch.zeros(num_groups, num_groups)
    if relations:
        choice = torch.tensor([0.0, 0.3, 0.6])[
            torch.randint(0, 3, (num_groups, num_groups), generator=gen)
        ]
        between = torch.triu(choice, 1)
        between = between + between.T
    weight = between[groups][:, groups]
    weight[groups[:, None] == groups[None, :]] = 1.0
    desc = F.normalize(torch.randn(n, 5, generator=gen), dim=1)
    similarity = desc @ desc.T
    if levels is not None:
        similarity = torch.round(similarity * levels) / levels
    return similarity, weight, groups


def retrieval_data(
    seed: int, n: int, vocabulary: int = 12, dim: int = 8
) -> tuple[Tensor, Tensor, list[str]]:
    """Random image embeddings correlated with per-caption text embeddings (with repeats)."""
    gen = torch.Generator().manual_seed(seed)
    words = [f"material {i}" for i in range(vocabulary)]
    table = torch.randn(vocabulary, dim, generator=gen)
    ids = torch.randint(0, vocabulary, (n,), generator=gen)
    text = table[ids]
    image = text + 1.5 * torch.randn(n, dim, generator=gen)
    return image, text, [words[i] for i in ids.tolist()]
