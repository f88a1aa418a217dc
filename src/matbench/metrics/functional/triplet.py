"""Triplet accuracy of the MatSeg zero-shot material-state benchmark (vectorised).

For one image with points ``p``, ground-truth weights ``w(p, q)`` (1 same group, 0.6 / 0.3
partial similarity, 0 different) and predicted similarities ``s(p, q)``:

- for each anchor ``a`` and each other point ``b`` (the pivot), the comparison set is
  ``C(a, b) = {c not in {a, b} : w(a, c) != w(a, b)}``; a pivot with an empty set is dropped;
- the comparison ``(a, b, c)`` is correct when the prediction orders ``b`` and ``c`` as the
  ground truth does (``w(a, b) > w(a, c)`` iff ``s(a, b) > s(a, c)``). **A tie**
  ``s(a, b) == s(a, c)`` **counts as half correct** (the expected score of a random order);
- ``acc(a, b)`` = correct / ``|C(a, b)|``; ``acc(a)`` = mean over kept pivots; an anchor with no
  kept pivot is not scorable;
- ``top1(a)`` = 1 if the most similar other point has the highest ground-truth weight to ``a``.
  **When several points tie for the highest similarity**, ``top1(a)`` is the fraction of them
  that have the highest weight (again the expectation over a random tie-break). Candidates are
  always all other points; ``top1`` is reported for the same (scorable) anchors as ``acc``;
- per image: "by point" = mean over scorable anchors, "by material" = mean over groups of the
  mean over that group's scorable anchors; both for ``acc`` and ``top1``; NaN when no anchor is
  scorable.

"Soft" mode (``soft_only=True``) keeps only pivots with ``0 < w(a, b) < 1``; the comparison set
is unchanged. Selecting the images that have a relations file is the caller's job (see
:class:`matbench.metrics.TripletAccuracy`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from matbench.metrics.functional._checks import (
    as_tensor,
    check_finite,
    check_integer,
    check_ndim,
)

#: Result keys of :func:`triplet_accuracy`.
TRIPLET_KEYS = ("by_point", "by_material", "top1_by_point", "top1_by_material")

# Upper bound on the anchor-block x N x N comparison tensors built at once (dense path): one
# block up to N = 101; larger blocks are slower, not faster (cache).
_MAX_BLOCK_ELEMENTS = 1 << 20
# At most this many distinct weights: count by weight levels (O(N² L log N)) instead of O(N³).
_MAX_LEVELS = 16


def check_triplet_inputs(
    similarity: Any, weight: Any, groups: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate one image's inputs; return them as tensors (ValueError says what is wrong)."""
    similarity = as_tensor(similarity, "similarity")
    weight = as_tensor(weight, "weight")
    groups = as_tensor(groups, "groups")
    check_ndim(similarity, "similarity", 2, "(N, N)")
    if similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N, N), got shape {tuple(similarity.shape)}")
    if weight.shape != similarity.shape:
        raise ValueError(
            f"weight must have the shape of similarity {tuple(similarity.shape)}, "
            f"got {tuple(weight.shape)}"
        )
    n = similarity.shape[0]
    check_ndim(groups, "groups", 1, f"(N,) = ({n},)")
    if groups.shape[0] != n:
        raise ValueError(f"groups must have {n} entries (one per point), got {groups.shape[0]}")
    if n and not similarity.is_floating_point():
        raise ValueError(f"similarity must be floating point, got dtype {similarity.dtype}")
    check_finite(similarity, "similarity")
    if similarity.dtype in (torch.float16, torch.bfloat16):
        similarity = similarity.float()  # exact; sort/searchsorted need float32 on CPU
    if not weight.is_floating_point():
        weight = weight.double()
    check_finite(weight, "weight")
    if n and (weight.min() < 0 or weight.max() > 1):
        raise ValueError(
            f"weight values must lie in [0, 1] (1 same group, 0.6/0.3 related, 0 unrelated), "
            f"got range {weight.min().item()}..{weight.max().item()}"
        )
    if n:
        check_integer(groups, "groups")
    return similarity, weight, groups


def _counts_by_levels(similarity: Tensor, weight: Tensor, eye: Tensor) -> tuple[Tensor, Tensor]:
    """Twice the correct count and the comparison count of every (anchor, pivot), O(N² L log N).

    For few distinct weights L (the protocol has 4): per anchor, sort the similarities once and
    count, for every pivot b and weight level l, the points c of level l with s(a, c) below /
    equal to / above s(a, b) by binary search into per-level cumulative counts.
    """
    n = similarity.shape[0]
    levels, level = torch.unique(weight, return_inverse=True)  # levels ascending
    num_levels = levels.numel()
    # The anchor itself is never a comparison point: give it a level that is not counted.
    member = F.one_hot(level.masked_fill(eye, num_levels), num_levels + 1)[..., :num_levels]
    sorted_s, order = torch.sort(similarity, dim=1)
    cumulative = torch.zeros(n, n + 1, num_levels, dtype=torch.long, device=similarity.device)
    cumulative[:, 1:] = member.gather(1, order[:, :, None].expand(-1, -1, num_levels)).cumsum(1)
    lower = torch.searchsorted(sorted_s, similarity, right=False)  # #{c: s(a,c) < s(a,b)}
    upper = torch.searchsorted(sorted_s, similarity, right=True)  # #{c: s(a,c) <= s(a,b)}
    below_s = cumulative.gather(1, lower[:, :, None].expand(-1, -1, num_levels))
    upto_s = cumulative.gather(1, upper[:, :, None].expand(-1, -1, num_levels))
    total = cumulative[:, -1:, :]
    index = torch.arange(num_levels, device=similarity.device)
    lighter = index < level[:, :, None]  # levels with w(a, c) < w(a, b)
    heavier = index > level[:, :, None]
    other_level = lighter | heavier
    score2 = 2 * ((below_s * lighter).sum(-1) + ((total - upto_s) * heavier).sum(-1))
    score2 += ((upto_s - below_s) * other_level).sum(-1)  # ties in s: half each
    count = (total * other_level).sum(-1)
    return score2, count


def _counts_dense(similarity: Tensor, weight: Tensor, eye: Tensor) -> tuple[Tensor, Tensor]:
    """As :func:`_counts_by_levels` through (anchor, pivot, point) tensors, for any weights.

    Anchors are processed in blocks only to bound memory.
    """
    n = similarity.shape[0]
    score2 = torch.empty(n, n, dtype=torch.long, device=similarity.device)
    count = torch.empty_like(score2)
    block = max(1, _MAX_BLOCK_ELEMENTS // (n * n))
    for start in range(0, n, block):
        stop = min(n, start + block)
        w, s = weight[start:stop], similarity[start:stop]
        w_b, w_c = w[:, :, None], w[:, None, :]
        s_b, s_c = s[:, :, None], s[:, None, :]
        # c != a explicitly; c != b is implied by w(a, c) != w(a, b).
        comparable = (w_b != w_c) & ~eye[start:stop, None, :]
        tie = s_b == s_c
        agree = (w_b > w_c) == (s_b > s_c)
        score2[start:stop] = 2 * (agree & ~tie & comparable).sum(-1, dtype=torch.int32)
        score2[start:stop] += (tie & comparable).sum(-1, dtype=torch.int32)
        count[start:stop] = comparable.sum(-1, dtype=torch.int32)
    return score2, count


def triplet_per_anchor(
    similarity: Tensor, weight: Tensor, soft_only: bool = False
) -> tuple[Tensor, Tensor]:
    """``acc(a)`` and ``top1(a)`` for every anchor, NaN for anchors that are not scorable.

    Vectorised over anchors, pivots and comparison points: by weight levels when there are at
    most :data:`_MAX_LEVELS` distinct weights, otherwise by dense (anchor, pivot, point)
    tensors. Inputs are assumed valid (see :func:`triplet_accuracy`).

    Returns:
        Two float64 tensors of shape (N,).
    """
    n = similarity.shape[0]
    device = similarity.device
    acc = torch.full((n,), math.nan, dtype=torch.float64, device=device)
    if n < 3:  # an anchor needs a pivot and a comparison point
        return acc, acc.clone()
    eye = torch.eye(n, dtype=torch.bool, device=device)
    if torch.unique(weight).numel() <= _MAX_LEVELS:
        score2, count = _counts_by_levels(similarity, weight, eye)
    else:
        score2, count = _counts_dense(similarity, weight, eye)
    pivot = ~eye & (count > 0)
    if soft_only:
        pivot &= (weight > 0) & (weight < 1)
    acc_ab = score2.double() / (2 * count.clamp_min(1)).double()
    kept = pivot.sum(1)
    acc_a = (acc_ab * pivot).sum(1) / kept.clamp_min(1)
    acc = torch.where(kept > 0, acc_a, math.nan)

    s_off = similarity.masked_fill(eye, -math.inf)
    most_similar = (s_off == s_off.max(1, keepdim=True).values) & ~eye
    w_off = weight.masked_fill(eye, -math.inf)
    heaviest = (w_off == w_off.max(1, keepdim=True).values) & ~eye
    top1 = (most_similar & heaviest).sum(1).double() / most_similar.sum(1).clamp_min(1).double()
    top1 = torch.where(torch.isnan(acc), math.nan, top1)
    return acc, top1


def _group_mean(values: Tensor, groups: Tensor) -> Tensor:
    """Mean over groups of the per-group mean of ``values`` (all finite)."""
    _, inverse = torch.unique(groups, return_inverse=True)
    num_groups = int(inverse.max()) + 1
    sums = torch.zeros(num_groups, dtype=torch.float64, device=values.device)
    sums.index_add_(0, inverse, values)
    counts = torch.bincount(inverse, minlength=num_groups)
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def triplet_image_scores(
    similarity: Tensor, weight: Tensor, groups: Tensor, soft_only: bool = False
) -> Tensor:
    """The four per-image values in :data:`TRIPLET_KEYS` order as a float64 tensor (4,).

    All NaN when no anchor is scorable. Inputs are assumed valid.
    """
    acc, top1 = triplet_per_anchor(similarity, weight, soft_only)
    scorable = ~torch.isnan(acc)
    if not bool(scorable.any()):
        return torch.full((4,), math.nan, dtype=torch.float64, device=similarity.device)
    groups = groups[scorable]
    acc, top1 = acc[scorable], top1[scorable]
    return torch.stack(
        [acc.mean(), _group_mean(acc, groups), top1.mean(), _group_mean(top1, groups)]
    )


def triplet_accuracy(
    similarity: Tensor, weight: Tensor, groups: Tensor, soft_only: bool = False
) -> dict[str, float]:
    """Triplet accuracy of one image (MatSeg protocol, see the module docstring).

    Args:
        similarity: (N, N) predicted point similarities (cosine of point descriptors).
        weight: (N, N) ground-truth weights in [0, 1]: 1 same group, 0.6 / 0.3 partial, 0 none.
        groups: (N,) integer group id of every point.
        soft_only: Keep only pivots with 0 < w(a, b) < 1 (the "soft cases").

    Returns:
        ``by_point``, ``by_material``, ``top1_by_point``, ``top1_by_material`` as floats,
        NaN when no anchor is scorable.

    Raises:
        ValueError: On wrong shapes, NaN/inf values, weights outside [0, 1] or non-integer groups.
    """
    similarity, weight, groups = check_triplet_inputs(similarity, weight, groups)
    scores = triplet_image_scores(similarity, weight, groups, soft_only)
    return {key: float(value) for key, value in zip(TRIPLET_KEYS, scores.tolist(), strict=True)}
