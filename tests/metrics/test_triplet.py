"""MatSeg triplet accuracy: hand-worked cases, loop reference, aggregation, errors."""

from __future__ import annotations

import math

import pytest
import torch

from matbench.metrics import MatSegMetrics, TripletAccuracy
from matbench.metrics.functional import triplet as triplet_module
from matbench.metrics.functional import triplet_accuracy
from tests.metrics import reference
from tests.metrics.helpers import triplet_image

# Four points: 0 and 1 in group A, 2 in group B (0.6 to A, 0.3 to C), 3 in group C.
HAND_GROUPS = torch.tensor([0, 0, 1, 2])
HAND_WEIGHT = torch.tensor(
    [
        [1.0, 1.0, 0.6, 0.0],
        [1.0, 1.0, 0.6, 0.0],
        [0.6, 0.6, 1.0, 0.3],
        [0.0, 0.0, 0.3, 1.0],
    ]
)
HAND_SIMILARITY = torch.tensor(
    [
        [1.0, 0.5, 0.8, 0.2],
        [0.5, 1.0, 0.5, 0.5],
        [0.8, 0.5, 1.0, 0.1],
        [0.2, 0.5, 0.1, 1.0],
    ]
)


def test_hand_worked_all_cases(path: str) -> None:
    # acc(a) = 2/3, 1/2 (all ties), 1, 0; top1(a) = 0, 1/3 (three-way tie), 1, 0.
    result = triplet_accuracy(HAND_SIMILARITY, HAND_WEIGHT, HAND_GROUPS)
    reference.assert_close(
        result,
        {
            "by_point": 13 / 24,
            "by_material": 19 / 36,
            "top1_by_point": 1 / 3,
            "top1_by_material": 7 / 18,
        },
        tol=1e-12,
    )


def test_hand_worked_soft_cases(path: str) -> None:
    # Only pivots with 0 < w < 1: acc(a) = 1/2, 1/2, 1, 0.
    result = triplet_accuracy(HAND_SIMILARITY, HAND_WEIGHT, HAND_GROUPS, soft_only=True)
    reference.assert_close(
        result,
        {"by_point": 0.5, "by_material": 0.5, "top1_by_point": 1 / 3, "top1_by_material": 7 / 18},
        tol=1e-12,
    )


def test_perfect_and_constant_predictions(path: str) -> None:
    similarity, weight, groups = triplet_image(0, 15)
    perfect = triplet_accuracy(weight, weight, groups)
    assert perfect == {k: 1.0 for k in perfect}
    # A constant map ties everything: every comparison is half right.
    constant = triplet_accuracy(torch.zeros(15, 15), weight, groups)
    assert constant["by_point"] == 0.5 and constant["by_material"] == 0.5
    expected_top1 = reference.triplet(torch.zeros(15, 15), weight, groups)["top1_by_point"]
    assert constant["top1_by_point"] == pytest.approx(expected_top1, abs=1e-12)
    assert 0 < constant["top1_by_point"] < 1


@pytest.fixture(params=["by_levels", "dense"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through both implementations (few weight levels / dense tensors)."""
    if request.param == "dense":
        monkeypatch.setattr(triplet_module, "_MAX_LEVELS", 0)
    return request.param


@pytest.mark.parametrize("soft_only", [False, True])
@pytest.mark.parametrize("levels", [None, 4])
@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference(seed: int, levels: int | None, soft_only: bool, path: str) -> None:
    n = 3 + 4 * seed
    similarity, weight, groups = triplet_image(seed, n, num_groups=2 + seed % 4, levels=levels)
    expected = reference.triplet(similarity, weight, groups, soft_only)
    reference.assert_close(triplet_accuracy(similarity, weight, groups, soft_only), expected)


@pytest.mark.parametrize("soft_only", [False, True])
def test_many_distinct_weights_match_loop_reference(soft_only: bool) -> None:
    # Continuous weights: more levels than _MAX_LEVELS, so the dense path is taken.
    gen = torch.Generator().manual_seed(11)
    weight = torch.rand(25, 25, generator=gen)
    weight = torch.round((weight + weight.T) / 2 * 20) / 20
    weight.fill_diagonal_(1.0)
    similarity = torch.round(torch.randn(25, 25, generator=gen) * 3) / 3
    groups = torch.arange(25) % 5
    assert torch.unique(weight).numel() > triplet_module._MAX_LEVELS
    expected = reference.triplet(similarity, weight, groups, soft_only)
    reference.assert_close(triplet_accuracy(similarity, weight, groups, soft_only), expected)


def test_anchor_blocks_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    similarity, weight, groups = triplet_image(7, 30, levels=6)
    by_levels = triplet_accuracy(similarity, weight, groups)
    monkeypatch.setattr(triplet_module, "_MAX_LEVELS", 0)
    assert triplet_accuracy(similarity, weight, groups) == by_levels
    monkeypatch.setattr(triplet_module, "_MAX_BLOCK_ELEMENTS", 7 * 30 * 30)  # 5 blocks
    assert triplet_accuracy(similarity, weight, groups) == by_levels


def test_invariant_to_point_order() -> None:
    similarity, weight, groups = triplet_image(3, 20)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    permuted = triplet_accuracy(similarity[perm][:, perm], weight[perm][:, perm], groups[perm])
    reference.assert_close(permuted, triplet_accuracy(similarity, weight, groups), tol=1e-12)


def test_nan_when_no_anchor_is_scorable() -> None:
    one_group = torch.ones(5, 5)
    result = triplet_accuracy(torch.rand(5, 5), one_group, torch.zeros(5, dtype=torch.long))
    assert all(math.isnan(v) for v in result.values())
    assert all(math.isnan(v) for v in triplet_accuracy(torch.eye(2), torch.eye(2), [0, 1]).values())
    assert all(
        math.isnan(v)
        for v in triplet_accuracy(torch.zeros(0, 0), torch.zeros(0, 0), torch.zeros(0)).values()
    )
    # No relation weights strictly between 0 and 1: no soft pivot.
    similarity, weight, groups = triplet_image(2, 10, relations=False)
    assert math.isnan(triplet_accuracy(similarity, weight, groups, soft_only=True)["by_point"])
    assert not math.isnan(triplet_accuracy(similarity, weight, groups)["by_point"])


def _images() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]]:
    images = []
    for seed in range(7):
        has_relations = seed % 3 != 0
        s, w, g = triplet_image(100 + seed, 4 + 3 * seed, relations=has_relations, levels=5)
        images.append((s, w, g, has_relations))
    # Unscorable: every point in one group.
    images.append((torch.rand(4, 4), torch.ones(4, 4), torch.zeros(4, dtype=torch.long), True))
    return images


@pytest.mark.parametrize("soft_only", [False, True])
def test_metric_is_plain_mean_over_images(soft_only: bool) -> None:
    images = _images()
    metric = TripletAccuracy(soft_only=soft_only)
    for s, w, g, has_relations in images:
        metric.update(s, w, g, has_relations)
    result = metric.compute()
    expected = reference.triplet_benchmark(images, soft_only)
    reference.assert_close(result, expected, tol=1e-12)
    assert result["num_skipped"] == 1
    assert result["num_images"] == (7 if not soft_only else 4)
    metric.reset()
    metric.update(*images[1])
    reference.assert_close(metric.compute(), reference.triplet_benchmark(images[1:2], soft_only))


def test_metric_without_images_is_nan() -> None:
    metric = TripletAccuracy()
    with pytest.warns(UserWarning, match="before the ``update``"):
        result = metric.compute()
    assert math.isnan(result["by_point"]) and result["num_images"] == 0


def test_matseg_metrics_hold_all_and_soft() -> None:
    images = _images()
    both = MatSegMetrics()
    for s, w, g, has_relations in images:
        both.update(s, w, g, has_relations)
    result = both.compute()
    for prefix, soft_only in (("all_", False), ("soft_", True)):
        expected = reference.triplet_benchmark(images, soft_only)
        reference.assert_close(
            {k[len(prefix) :]: v for k, v in result.items() if k.startswith(prefix)},
            expected,
            tol=1e-12,
        )
    assert len(result) == 12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.rand(3, 4), torch.rand(3, 4), [0, 1, 2]), "square"),
        ((torch.rand(3), torch.rand(3), [0, 1, 2]), "shape"),
        ((torch.rand(3, 3), torch.rand(4, 4), [0, 1, 2]), "weight must have the shape"),
        ((torch.rand(3, 3), torch.rand(3, 3), [0, 1]), "groups must have 3 entries"),
        ((torch.rand(3, 3), torch.rand(3, 3), [[0, 1, 2]]), "groups must have shape"),
        (
            (
                torch.tensor([[0.0, 1, 2], [1, float("nan"), 0], [0, 0, 0]]),
                torch.rand(3, 3),
                [0, 1, 2],
            ),
            "NaN/inf",
        ),
        (
            (torch.rand(3, 3), torch.full((3, 3), float("inf")), [0, 1, 2]),
            "weight contains 9 NaN/inf",
        ),
        (
            (torch.rand(3, 3), torch.full((3, 3), 2.0), [0, 1, 2]),
            r"weight values must lie in \[0, 1\]",
        ),
        ((torch.rand(3, 3), torch.rand(3, 3), [0.0, 1.5, 2.0]), "groups must be an integer"),
        (
            (torch.ones(3, 3, dtype=torch.long), torch.rand(3, 3), [0, 1, 2]),
            "similarity must be floating",
        ),
        (("a", torch.rand(3, 3), [0, 1, 2]), "similarity must be a tensor"),
    ],
)
def test_bad_inputs_raise(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        triplet_accuracy(*args)
    with pytest.raises(ValueError, match=message):
        TripletAccuracy().update(*args, has_relations=True)


def test_has_relations_must_be_a_flag() -> None:
    s, w, g = triplet_image(0, 5)
    with pytest.raises(ValueError, match="has_relations must be a bool"):
        MatSegMetrics().update(s, w, g, "yes")


def test_half_precision_similarity_is_accepted() -> None:
    similarity, weight, groups = triplet_image(4, 12, levels=3)
    half = similarity.to(torch.bfloat16)
    expected = reference.triplet(half.float(), weight, groups)
    reference.assert_close(triplet_accuracy(half, weight, groups), expected)
