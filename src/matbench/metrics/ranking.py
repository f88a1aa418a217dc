"""Per-sample candidate ranking (FG-OVD) as a DDP-exact torchmetrics ``Metric``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from matbench.metrics.functional.ranking import (
    candidate_ranks,
    check_max_negatives,
    rank_histogram,
    rank_summary,
    with_headline,
)


class CandidateRankMetrics(Metric):
    """Mean rank, median rank and accuracy of the positive among each sample's own candidates,
    for every number of negatives n = 1 ... ``max_negatives`` (see
    :mod:`matbench.metrics.functional.ranking` for the rule, FG-OVD's).

    The state is one fixed-size histogram of ranks per n (a ``sum`` state), so the result is
    exact under DDP; the median is exact too, since ranks are small integers. Evaluation
    loaders must not repeat samples (matbench's unpadded distributed sampler does not).

    Keys: ``mean_rank@n``, ``median_rank@n``, ``accuracy@n``, ``count@n`` (samples with at
    least n negatives), and ``mean_rank``, ``median_rank``, ``accuracy`` at n = max_negatives.

    Args:
        max_negatives: Largest number of negatives ranked (FG-OVD: 10; its transparency
            benchmark is reported up to 2 and pattern up to 7).
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    histogram: Tensor

    def __init__(self, max_negatives: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_max_negatives(max_negatives)
        self.max_negatives = max_negatives
        shape = (max_negatives, max_negatives + 1)
        self.add_state("histogram", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, num_candidates: Tensor) -> None:
        """Add a batch.

        Args:
            scores: (N, C) scores of each sample's candidates, the positive in column 0.
            num_candidates: (N,) candidates of each row (positive included); columns past it
                are padding.
        """
        ranks = candidate_ranks(scores, num_candidates, self.max_negatives)
        self.histogram += rank_histogram(ranks, self.max_negatives).to(self.histogram.device)

    def compute(self) -> dict[str, float]:
        return with_headline(rank_summary(self.histogram), self.max_negatives)
