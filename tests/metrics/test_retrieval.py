"""Retrieval metrics: hand-worked cases, loop reference, index handling, errors."""

from __future__ import annotations

import math

import pytest
import torch

from matbench.metrics import RetrievalMetrics
from matbench.metrics.functional import retrieval_metrics
from tests.metrics import reference
from tests.metrics.helpers import retrieval_data

# "wood" appears twice with different text embeddings; the first occurrence gives its candidate.
HAND_CAPTIONS = ["wood", "metal", "wood", "glass"]
HAND_TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], dtype=torch.float64)
HAND_IMAGE = torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
HAND_MCS = (1 / math.sqrt(1.01) + 0.0 + 0.8 + 1.0) / 4


def test_hand_worked_whole_vocabulary() -> None:
    # Candidates wood (1,0), metal (0,1), glass (-1,0). Ranks 1, 2, then for sample 2 (true
    # wood scores 0): metal is higher and glass ties -> rank 2 or 3, 1/rank = (1/2+1/3)/2.
    result = retrieval_metrics(HAND_IMAGE, HAND_TEXT, HAND_CAPTIONS, group_size=None)
    mrr = (1 + 1 / 2 + 5 / 12 + 1) / 4
    expected = {"mcs": HAND_MCS, "mrr": mrr, "recall@1": 0.5, "recall@5": 1.0, "recall@10": 1.0}
    reference.assert_close(result, expected, tol=1e-12)


def test_hand_worked_groups_of_two() -> None:
    # Group {0,1}: ranks 1, 2. Group {2,3}: candidates wood (0.6,0.8) and glass: ranks 1, 1.
    result = retrieval_metrics(HAND_IMAGE, HAND_TEXT, HAND_CAPTIONS, group_size=2)
    expected = {"mcs": HAND_MCS, "mrr": 0.875, "recall@1": 0.75, "recall@5": 1.0, "recall@10": 1.0}
    reference.assert_close(result, expected, tol=1e-12)


def test_duplicate_true_caption_is_not_a_competitor() -> None:
    # Three samples share "a"; a naive per-sample ranking would give the copies rank > 1.
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    result = retrieval_metrics(image, text, ["a", "a", "a", "b"], group_size=None)
    assert result["mrr"] == 1.0 and result["recall@1"] == 1.0


def test_constant_embeddings_score_chance() -> None:
    captions = [f"c{i % 20}" for i in range(40)]
    result = retrieval_metrics(torch.ones(40, 3), torch.ones(40, 3), captions, group_size=None)
    harmonic = sum(1 / k for k in range(1, 21))
    assert result["mrr"] == pytest.approx(harmonic / 20, abs=1e-12)
    assert result["recall@1"] == pytest.approx(1 / 20, abs=1e-12)
    assert result["recall@5"] == pytest.approx(5 / 20, abs=1e-12)
    assert result["recall@10"] == pytest.approx(10 / 20, abs=1e-12)
    assert result["mcs"] == pytest.approx(1.0)


def test_scale_does_not_matter() -> None:
    image, text, captions = retrieval_data(3, 50)
    reference.assert_close(
        retrieval_metrics(image * 7.0, text * 0.01, captions),
        retrieval_metrics(image, text, captions),
        tol=1e-6,  # float32 rounding of the scaled inputs
    )


@pytest.mark.parametrize("group_size", [64, 5, 1, None])
@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_reference(seed: int, group_size: int | None) -> None:
    image, text, captions = retrieval_data(seed, 30 + 37 * seed, vocabulary=4 + 5 * seed)
    expected = reference.retrieval(image, text, captions, group_size)
    reference.assert_close(retrieval_metrics(image, text, captions, group_size), expected)


@pytest.mark.parametrize("group_size", [64, 5])
def test_shuffled_groups_are_seeded_random_batches(group_size: int) -> None:
    """``group_order="shuffled"``: the groups of the plainly written reference applied to the
    samples taken in the order of ``torch.randperm(N)`` seeded by ``seed``; the metric fed
    in any order gives the same; another seed other groups."""
    image, text, captions = retrieval_data(3, 150, vocabulary=20)
    perm = torch.randperm(150, generator=torch.Generator().manual_seed(7)).tolist()
    expected = reference.retrieval(image[perm], text[perm], [captions[i] for i in perm], group_size)
    got = retrieval_metrics(image, text, captions, group_size, group_order="shuffled", seed=7)
    reference.assert_close(got, expected)
    metric = RetrievalMetrics(group_size, group_order="shuffled", seed=7)
    for rows in torch.arange(150).flip(0).split(40):
        metric.update(image[rows], text[rows], [captions[i] for i in rows.tolist()], rows)
    reference.assert_close(metric.compute(), expected, tol=1e-6)
    other = retrieval_metrics(image, text, captions, group_size, group_order="shuffled", seed=8)
    assert other != got
    with pytest.raises(ValueError, match="group_order"):
        RetrievalMetrics(group_order="random")


def test_group_size_one_is_trivial() -> None:
    image, text, captions = retrieval_data(0, 10)
    result = retrieval_metrics(image, text, captions, group_size=1)
    assert result["mrr"] == result["recall@1"] == 1.0


@pytest.mark.parametrize("group_size", [64, 7, None])
def test_metric_sorts_by_index_and_drops_duplicates(group_size: int | None) -> None:
    image, text, captions = retrieval_data(5, 150, vocabulary=20)
    expected = retrieval_metrics(image, text, captions, group_size)
    metric = RetrievalMetrics(group_size=group_size)
    order = torch.randperm(150, generator=torch.Generator().manual_seed(0))
    # Shuffled batches, then the first 9 samples again (as a padding sampler would repeat them).
    batches = [order[i : i + 32] for i in range(0, 150, 32)] + [order[:9]]
    for rows in batches:
        metric.update(image[rows], text[rows], [captions[i] for i in rows.tolist()], rows)
    reference.assert_close(metric.compute(), expected, tol=1e-6)


def test_metric_accepts_list_index_and_unicode() -> None:
    captions = ["wood", "métal ✓", "", "ガラス"]
    metric = RetrievalMetrics(group_size=None)
    metric.update(HAND_IMAGE[:2], HAND_TEXT[:2], captions[:2], [0, 1])
    metric.update(HAND_IMAGE[2:], HAND_TEXT[2:], captions[2:], [2, 3])
    reference.assert_close(
        metric.compute(), retrieval_metrics(HAND_IMAGE, HAND_TEXT, captions, None), tol=1e-7
    )


def test_empty_metric_and_empty_input() -> None:
    metric = RetrievalMetrics()
    with pytest.warns(UserWarning):
        assert all(math.isnan(v) for v in metric.compute().values())
    assert all(
        math.isnan(v) for v in retrieval_metrics(torch.zeros(0, 4), torch.zeros(0, 4), []).values()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.rand(3), torch.rand(3), ["a"] * 3), r"image_emb must have shape \(N, D\)"),
        ((torch.rand(3, 4), torch.rand(3, 5), ["a"] * 3), "same shape"),
        ((torch.rand(3, 4), torch.rand(3, 4), ["a"] * 2), "2 captions for 3 embeddings"),
        ((torch.rand(3, 4), torch.rand(3, 4), "abc"), "single string"),
        ((torch.rand(3, 4), torch.rand(3, 4), ["a", 2, "b"]), r"captions\[1\] must be a string"),
        (
            (torch.full((3, 4), float("nan")), torch.rand(3, 4), ["a"] * 3),
            "image_emb contains 12 NaN/inf",
        ),
        ((torch.rand(3, 4), torch.full((3, 4), float("inf")), ["a"] * 3), "text_emb contains"),
        ((torch.ones(3, 4, dtype=torch.long), torch.rand(3, 4), ["a"] * 3), "floating-point"),
    ],
)
def test_bad_inputs_raise(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(*args)
    with pytest.raises(ValueError, match=message):
        RetrievalMetrics().update(*args, index=torch.arange(3))


@pytest.mark.parametrize("group_size", [0, -3, 2.5, True])
def test_bad_group_size(group_size: object) -> None:
    with pytest.raises(ValueError, match="group_size"):
        retrieval_metrics(torch.rand(2, 2), torch.rand(2, 2), ["a", "b"], group_size=group_size)
    with pytest.raises(ValueError, match="group_size"):
        RetrievalMetrics(group_size=group_size)


def test_bad_index_and_changing_dim() -> None:
    metric = RetrievalMetrics()
    with pytest.raises(ValueError, match="got 2 indices for 3 samples"):
        metric.update(torch.rand(3, 4), torch.rand(3, 4), ["a"] * 3, [0, 1])
    with pytest.raises(ValueError, match="index values must be >= 0"):
        metric.update(torch.rand(3, 4), torch.rand(3, 4), ["a"] * 3, [0, -1, 2])
    with pytest.raises(ValueError, match="index must be an integer"):
        metric.update(torch.rand(3, 4), torch.rand(3, 4), ["a"] * 3, [0.0, 1.0, 2.0])
    metric.update(torch.rand(3, 4), torch.rand(3, 4), ["a"] * 3, [0, 1, 2])
    with pytest.raises(ValueError, match="embedding size changed"):
        metric.update(torch.rand(3, 5), torch.rand(3, 5), ["a"] * 3, [3, 4, 5])


def test_conflicting_duplicate_index_raises() -> None:
    metric = RetrievalMetrics()
    metric.update(torch.rand(2, 3), torch.rand(2, 3), ["a", "b"], [0, 1])
    metric.update(torch.rand(1, 3), torch.rand(1, 3), ["c"], [1])
    with pytest.raises(ValueError, match="sample index 1 was given twice with different captions"):
        metric.compute()
