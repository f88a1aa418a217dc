"""Per-sample candidate ranking against FG-CLIP's ``get_ranks`` written out as a plain loop."""

from __future__ import annotations

import math

import pytest
import torch

from matbench.metrics import CandidateRankMetrics
from matbench.metrics.functional import candidate_rank_metrics
from matbench.metrics.functional.ranking import candidate_ranks


def fgclip_get_ranks(outputs: list[list[float]]) -> dict[int, dict[str, float]]:
    """FG-CLIP ``src/eval_util.py`` ``get_ranks``: per n, the positive's rank among the first
    n + 1 scores as ``#{conf >= positive}``; mean ('medium') and ``sorted(ranks)[len // 2]``
    ('median'), -1 when at most one sample has n negatives. Plus the fraction of rank 1."""
    position_arrays: dict[int, list[int]] = {i: [] for i in range(1, 11)}
    for scores in outputs:
        for n_neg in range(1, len(scores)):
            new_scores = scores[: n_neg + 1]
            rank = sum(1 for conf in new_scores if conf >= new_scores[0])
            position_arrays[n_neg].append(rank)
    results = {}
    for n_neg, ranks in position_arrays.items():
        results[n_neg] = {
            "medium": sum(ranks) / len(ranks) if len(ranks) > 1 else -1,
            "median": sorted(ranks)[len(ranks) // 2] if len(ranks) > 1 else -1,
            "accuracy": sum(r == 1 for r in ranks) / len(ranks) if ranks else -1,
            "count": len(ranks),
        }
    return results


def random_outputs(seed: int, n: int, levels: int | None = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 11) padded scores, rows of 2 ... 11 candidates; rounded so that ties occur."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(n, 11, generator=gen)
    if levels:
        scores = torch.round(scores * levels) / levels
    lengths = torch.randint(2, 12, (n,), generator=gen)
    scores[torch.arange(11)[None] >= lengths[:, None]] = float("nan")  # padding, ignored
    return scores, lengths


def _rows(scores: torch.Tensor, lengths: torch.Tensor) -> list[list[float]]:
    return [scores[i, : int(k)].tolist() for i, k in enumerate(lengths)]


@pytest.mark.parametrize(("seed", "n", "levels"), [(0, 57, 4), (1, 200, 3), (2, 31, None)])
def test_matches_fgclip_get_ranks(seed: int, n: int, levels: int | None) -> None:
    scores, lengths = random_outputs(seed, n, levels)
    expected = fgclip_get_ranks(_rows(scores, lengths))
    metric = CandidateRankMetrics(max_negatives=10)
    for rows in torch.arange(n).split(7):
        metric.update(scores[rows], lengths[rows])
    got = metric.compute()
    assert got == candidate_rank_metrics(scores, lengths, 10)
    for n_neg, ref in expected.items():
        assert got[f"count@{n_neg}"] == ref["count"]
        if ref["count"] > 1:
            assert got[f"mean_rank@{n_neg}"] == pytest.approx(ref["medium"], abs=1e-12)
            assert got[f"median_rank@{n_neg}"] == ref["median"]
            assert got[f"accuracy@{n_neg}"] == pytest.approx(ref["accuracy"], abs=1e-12)
    assert got["mean_rank"] == got["mean_rank@10"]
    assert got["accuracy"] == got["accuracy@10"]


def test_ties_count_against_the_positive_and_limits() -> None:
    scores = torch.tensor([[0.5, 0.5, 0.1, 0.9], [0.9, 0.1, 0.2, 0.3]])
    ranks = candidate_ranks(scores, torch.tensor([4, 3]), max_negatives=3)
    assert ranks.tolist() == [[2, 2, 3], [1, 1, 0]]
    out = CandidateRankMetrics(max_negatives=2)
    out.update(scores, torch.tensor([4, 3]))
    values = out.compute()
    assert values["mean_rank@1"] == 1.5 and values["median_rank@1"] == 2.0  # upper median
    assert values["accuracy@2"] == 0.5 and "mean_rank@3" not in values
    empty = CandidateRankMetrics(max_negatives=3).compute()
    assert math.isnan(empty["mean_rank"]) and empty["count@1"] == 0


@pytest.mark.parametrize(
    ("scores", "lengths", "message"),
    [
        (torch.tensor([[0.1, float("nan")]]), torch.tensor([2]), "NaN"),
        (torch.zeros(2, 3), torch.tensor([3]), "2 score rows"),
        (torch.zeros(1, 3), torch.tensor([4]), r"\[1, 3\]"),
        (torch.zeros(1, 3), torch.tensor([0]), r"\[1, 3\]"),
        (torch.zeros(1, 3, dtype=torch.long), torch.tensor([3]), "floating point"),
        (torch.zeros(3), torch.tensor([3]), r"\(N, C\)"),
        (torch.zeros(1, 3), torch.tensor([2.0]), "integer"),
    ],
)
def test_bad_input(scores: torch.Tensor, lengths: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CandidateRankMetrics().update(scores, lengths)


def test_bad_max_negatives() -> None:
    with pytest.raises(ValueError, match="max_negatives"):
        CandidateRankMetrics(max_negatives=0)
