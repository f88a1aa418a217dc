"""Classification metrics: hand-worked case, loop reference, ties, errors."""

from __future__ import annotations

import math

import pytest
import torch

from matbench.metrics import ClassificationMetrics
from matbench.metrics.functional import classification_metrics
from tests.metrics import reference


def test_hand_worked() -> None:
    logits = torch.tensor(
        [
            [3.0, 1.0, 0.0, -1.0],  # target 0, predicted 0
            [0.0, 2.0, 1.0, 0.5],  # target 2, predicted 1 (2nd)
            [0.1, 0.2, 0.3, 0.0],  # target 0, predicted 2 (3rd)
            [0.0, 0.0, 1.0, 0.0],  # target 2, predicted 2
            [1.0, 1.0, 1.0, 1.0],  # target 1: tie -> class 0 predicted, true class 2nd
        ]
    )
    target = torch.tensor([0, 2, 0, 2, 1])
    result = classification_metrics(logits, target, num_classes=4, top_k=2)
    assert result == {
        "accuracy": 2 / 5,
        "top2_accuracy": 4 / 5,
        "mean_class_accuracy": pytest.approx((1 / 2 + 0 + 1 / 2) / 3),
        # IoU = TP / (TP + FP + FN): class 0 1/(1+1+1), class 1 0/(0+1+1), class 2 1/(1+1+1)
        "miou": pytest.approx((1 / 3 + 0 + 1 / 3) / 3),
        "per_class_accuracy": [0.5, 0.0, 0.5, pytest.approx(math.nan, nan_ok=True)],
        "per_class_iou": [
            pytest.approx(1 / 3),
            0.0,
            pytest.approx(1 / 3),
            pytest.approx(math.nan, nan_ok=True),
        ],
        "confusion_matrix": [[1, 0, 1, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]],
    }


@pytest.mark.parametrize("top_k", [1, 3, 5, 12])
@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_reference(seed: int, top_k: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    num_classes = 3 + 3 * seed
    logits = torch.randn(60, num_classes, generator=gen)
    if seed % 2:
        logits = torch.round(logits * 2) / 2  # frequent ties
    target = torch.randint(0, num_classes, (60,), generator=gen)
    target[target == 1] = 0  # class 1 absent
    expected = reference.classification(logits, target, num_classes, top_k)
    reference.assert_close(classification_metrics(logits, target, num_classes, top_k), expected)
    metric = ClassificationMetrics(num_classes, top_k=top_k)
    for rows in torch.arange(60).split(16):
        metric.update(logits[rows].softmax(1), target[rows])  # probabilities order like logits
    reference.assert_close(metric.compute(), expected, tol=1e-12)


def _clip_benchmark_accuracy(logits: torch.Tensor, target: torch.Tensor, num_classes: int):
    """CLIP_benchmark's ``zeroshot_classification.evaluate`` (single-label), written out: top-1
    and top-5 from ``topk(max(k), dim=1, largest=True, sorted=True)``; with fewer than 5
    classes only top-1 is computed and acc5 is NaN."""
    ks = (1, 5) if num_classes >= 5 else (1,)
    pred = logits.topk(max(ks), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    accs = [float(correct[:k].reshape(-1).float().sum(0, keepdim=True)) / len(target) for k in ks]
    return accs[0], accs[1] if len(accs) > 1 else math.nan


@pytest.mark.parametrize("num_classes", [3, 4, 5, 9])
def test_top5_as_clip_benchmark(num_classes: int) -> None:
    """Without ties, top-1 and top-5 equal CLIP_benchmark's; with fewer than 5 classes, where
    it reports NaN, there is no top5 key (not a top-3 or top-4 figure under another name)."""
    gen = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(50, num_classes, generator=gen)
    target = torch.randint(0, num_classes, (50,), generator=gen)
    acc1, acc5 = _clip_benchmark_accuracy(logits, target, num_classes)
    for result in (
        classification_metrics(logits, target, num_classes, top_k=5),
        ClassificationMetrics(num_classes, top_k=5)(logits, target),
    ):
        assert result["accuracy"] == pytest.approx(acc1)
        if math.isnan(acc5):
            assert not [k for k in result if k.startswith("top")]
        else:
            assert result["top5_accuracy"] == pytest.approx(acc5)


def test_empty_metric_is_nan() -> None:
    metric = ClassificationMetrics(3)
    with pytest.warns(UserWarning):
        result = metric.compute()
    assert math.isnan(result["accuracy"]) and math.isnan(result["mean_class_accuracy"])
    assert result["confusion_matrix"] == [[0] * 3] * 3


@pytest.mark.parametrize(
    ("logits", "target", "message"),
    [
        (torch.rand(4), torch.tensor([0, 1, 2, 0]), r"logits must have shape \(N, num_classes\)"),
        (torch.rand(4, 5), torch.tensor([0, 1, 2, 0]), "5 columns but num_classes is 3"),
        (torch.rand(4, 3), torch.tensor([0, 1, 2]), "4 rows but target has 3"),
        (torch.rand(4, 3), torch.tensor([[0, 1, 2, 0]]), r"target must have shape \(N,\)"),
        (torch.rand(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]), "target must be an integer"),
        (
            torch.rand(4, 3),
            torch.tensor([0, 3, 2, 0]),
            r"outside \[0, 3\) \(first at index \(1,\): 3",
        ),
        (torch.rand(4, 3), torch.tensor([0, -1, 2, 0]), r"outside \[0, 3\)"),
        (
            torch.tensor([[0.0, 1, 2]] * 3 + [[float("nan"), 0, 0]]),
            torch.tensor([0, 1, 2, 0]),
            "logits contains 1 NaN/inf value",
        ),
        (
            torch.ones(4, 3, dtype=torch.long),
            torch.tensor([0, 1, 2, 0]),
            "logits must be a floating-point",
        ),
    ],
)
def test_bad_inputs_raise(logits: torch.Tensor, target: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(logits, target, 3)
    with pytest.raises(ValueError, match=message):
        ClassificationMetrics(3).update(logits, target)


@pytest.mark.parametrize(("num_classes", "top_k"), [(0, 5), (3.0, 5), (3, 0), (3, True)])
def test_bad_arguments(num_classes: object, top_k: object) -> None:
    with pytest.raises(ValueError, match="num_classes|top_k"):
        ClassificationMetrics(num_classes, top_k=top_k)


def test_unanswered_column_counts_against_its_class() -> None:
    """A (C, C + 1) confusion: the last column holds samples without a prediction (the
    zero-shot VLM's unparsed answers); they lower accuracy and IoU and help no class."""
    from matbench.metrics.functional.classification import confusion_metrics

    confusion = torch.tensor([[2, 0, 1], [1, 1, 0]])  # class 0: 2 right, 1 unanswered
    result = confusion_metrics(confusion)
    assert result["accuracy"] == 3 / 5
    assert result["per_class_accuracy"] == [2 / 3, 1 / 2]
    # class 0: TP 2, FP 1, FN 1; class 1: TP 1, FP 0, FN 1
    assert result["per_class_iou"] == [pytest.approx(2 / 4), pytest.approx(1 / 2)]
    with pytest.raises(ValueError, match="confusion must be"):
        confusion_metrics(torch.zeros(2, 4, dtype=torch.long))
