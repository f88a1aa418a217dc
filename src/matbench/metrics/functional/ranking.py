"""Rank of the positive among per-sample candidates (FG-OVD / FG-CLIP ``get_ranks``).

Every sample has its own candidates: the positive first, then its negatives in order. For
``n`` negatives, the rank of the positive among the positive and the first ``n`` negatives is
``#{candidates j <= n : score_j >= score_0}`` -- ties count against the positive, and the
positive itself makes the smallest rank 1. A sample with ``k`` negatives has ranks for
``n = 1 ... k``. Per ``n``, over the samples that have one: the mean rank, the median rank
(FG-CLIP's ``sorted(ranks)[len // 2]``, the upper median for an even count) and the accuracy
(the fraction ranked first).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from matbench.metrics.functional._checks import as_tensor, check_finite, check_integer, check_ndim


def check_max_negatives(max_negatives: int) -> None:
    """Raise unless ``max_negatives`` is a positive int."""
    if isinstance(max_negatives, bool) or not isinstance(max_negatives, int) or max_negatives < 1:
        raise ValueError(f"max_negatives must be an int >= 1, got {max_negatives!r}")


def candidate_ranks(scores: Tensor, num_candidates: Tensor, max_negatives: int) -> Tensor:
    """(N, max_negatives) ranks of the positive (column 0 of ``scores``) for n = 1, 2, ...
    negatives; 0 where a sample has fewer than n negatives.

    Args:
        scores: (N, C) scores, the positive in column 0; entries past a row's
            ``num_candidates`` are ignored (any value).
        num_candidates: (N,) candidates of each row (positive included), >= 1.
        max_negatives: Largest number of negatives ranked.
    """
    check_max_negatives(max_negatives)
    scores = as_tensor(scores, "scores")
    num_candidates = as_tensor(num_candidates, "num_candidates")
    check_ndim(scores, "scores", 2, "(N, C)")
    check_ndim(num_candidates, "num_candidates", 1, "(N,)")
    check_integer(num_candidates, "num_candidates")
    if num_candidates.shape[0] != scores.shape[0]:
        raise ValueError(
            f"got {num_candidates.shape[0]} candidate counts for {scores.shape[0]} score rows"
        )
    if num_candidates.numel() and (
        int(num_candidates.min()) < 1 or int(num_candidates.max()) > scores.shape[1]
    ):
        raise ValueError(
            f"num_candidates must lie in [1, {scores.shape[1]}] (the score columns), got "
            f"[{int(num_candidates.min())}, {int(num_candidates.max())}]"
        )
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got dtype {scores.dtype}")
    width = min(scores.shape[1], max_negatives + 1)
    scores = scores[:, :width]
    columns = torch.arange(width, device=scores.device)
    valid = columns[None, :] < num_candidates.to(scores.device)[:, None]
    check_finite(scores[valid], "scores")
    at_least = (scores >= scores[:, :1]) & valid
    ranks = at_least.long().cumsum(1)[:, 1:]  # column n-1: rank with n negatives
    ranks = ranks.masked_fill(~valid[:, 1:], 0)
    out = ranks.new_zeros((scores.shape[0], max_negatives))
    out[:, : ranks.shape[1]] = ranks
    return out


def rank_histogram(ranks: Tensor, max_negatives: int) -> Tensor:
    """(max_negatives, max_negatives + 1) counts: row n-1, column r-1 = samples of rank r
    with n negatives (from :func:`candidate_ranks`)."""
    bins = max_negatives + 1
    n = torch.arange(max_negatives, device=ranks.device).expand_as(ranks)
    keep = ranks > 0
    flat = n[keep] * bins + (ranks[keep] - 1)
    return torch.bincount(flat, minlength=max_negatives * bins).view(max_negatives, bins)


def rank_summary(histogram: Tensor) -> dict[str, float]:
    """``mean_rank@n``, ``median_rank@n``, ``accuracy@n`` and ``count@n`` for every n, from a
    :func:`rank_histogram` (NaN where no sample has n negatives)."""
    out: dict[str, float] = {}
    histogram = histogram.to(torch.float64).cpu()
    ranks = torch.arange(1, histogram.shape[1] + 1, dtype=torch.float64)
    for row, counts in enumerate(histogram):
        n, total = row + 1, float(counts.sum())
        if total == 0:
            mean = median = accuracy = math.nan
        else:
            mean = float((counts * ranks).sum()) / total
            # sorted(ranks)[total // 2]: the first rank whose cumulative count exceeds it
            median = float(ranks[int((counts.cumsum(0) > total // 2).nonzero()[0])])
            accuracy = float(counts[0]) / total
        out[f"mean_rank@{n}"] = mean
        out[f"median_rank@{n}"] = median
        out[f"accuracy@{n}"] = accuracy
        out[f"count@{n}"] = total
    return out


def candidate_rank_metrics(
    scores: Tensor, num_candidates: Tensor, max_negatives: int = 10
) -> dict[str, float]:
    """One-call form of :class:`matbench.metrics.CandidateRankMetrics`."""
    ranks = candidate_ranks(scores, num_candidates, max_negatives)
    summary = rank_summary(rank_histogram(ranks, max_negatives))
    return with_headline(summary, max_negatives)


def with_headline(summary: dict[str, float], max_negatives: int) -> dict[str, float]:
    """``summary`` plus ``mean_rank``, ``median_rank``, ``accuracy``: the values at
    ``max_negatives`` (the number FG-CLIP's tables and its "mean rank sum" use)."""
    head = {
        key: summary[f"{key}@{max_negatives}"] for key in ("mean_rank", "median_rank", "accuracy")
    }
    return {**head, **summary}
