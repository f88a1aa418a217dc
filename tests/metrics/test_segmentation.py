"""Segmentation metrics (DMS semantics): hand-worked case, loop reference, ignore, errors."""

from __future__ import annotations

import math

import pytest
import torch

from matbench.metrics import SegmentationMetrics
from matbench.metrics.functional import class_ids, segmentation_confusion, segmentation_metrics
from matbench.metrics.functional.segmentation import (
    _fast_confusion,
    _general_confusion,
    top_class,
)
from tests.metrics import reference


def test_hand_worked() -> None:
    target = torch.tensor([[[0, 0, 1, 255], [1, 1, 255, 2]]])
    preds = torch.tensor([[[0, 1, 1, 2], [1, 0, 0, 3]]])
    result = segmentation_metrics(preds, target, num_classes=4)
    # Pixels kept: (0,0) (0,1) (1,1) (1,1) (1,0) (2,3); class 3 has no ground truth.
    assert result["confusion_matrix"] == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 0, 1], [0] * 4]
    assert result["pixel_accuracy"] == 3 / 6
    assert result["mean_class_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    # IoU: class 0 1/(2+2-1), class 1 2/(3+3-2), class 2 0/(1+0-0).
    assert result["per_class_iou"][:3] == pytest.approx([1 / 3, 1 / 2, 0.0])
    assert math.isnan(result["per_class_iou"][3])
    assert result["miou"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)


def _batches(seed: int, num_classes: int, ignore_index: int | None, shape=(2, 9, 11)):
    gen = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(3):
        target = torch.randint(0, num_classes, shape, generator=gen)
        target[target == num_classes - 1] = 0  # last class absent from the ground truth
        pred = torch.where(
            torch.rand(shape, generator=gen) < 0.6,
            target,
            torch.randint(0, num_classes, shape, generator=gen),
        )
        if ignore_index is not None:
            target[torch.rand(shape, generator=gen) < 0.2] = ignore_index
        preds.append(pred)
        targets.append(target)
    return preds, targets


@pytest.mark.parametrize(
    ("ignore_index", "target_dtype"),
    [
        (255, torch.long),
        (255, torch.uint8),
        (None, torch.long),
        (0, torch.int32),
        (-1, torch.long),
        (100_000, torch.long),
        (255, torch.int16),
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_matches_loop_reference(
    seed: int, ignore_index: int | None, target_dtype: torch.dtype
) -> None:
    num_classes = 5 + seed
    preds, targets = _batches(seed, num_classes, ignore_index)
    targets = [t.to(target_dtype) for t in targets]
    expected = reference.segmentation(preds, targets, num_classes, ignore_index)
    metric = SegmentationMetrics(num_classes, ignore_index=ignore_index)
    for pred, target in zip(preds, targets, strict=True):
        metric.update(pred.to(torch.int32), target)
    reference.assert_close(metric.compute(), expected, tol=1e-12)


@pytest.mark.parametrize("ignore_index", [255, None, 0, -1, 100_000])
def test_torch_paths_equal_the_cpu_path(ignore_index: int | None) -> None:
    # CPU tensors are counted with NumPy; other devices use the torch paths, run here on CPU.
    preds, targets = _batches(7, 6, ignore_index)
    targets[0][0, 0, :3] = torch.tensor([6, 9, 254])  # neither classes nor ignore_index
    for pred, target in zip(preds, targets, strict=True):
        p, t = pred.reshape(-1), target.reshape(-1)
        fast = _fast_confusion(p, t, 6, ignore_index)
        outside = ((t < 0) | (t >= 6)) & (t != (-2 if ignore_index is None else ignore_index))
        if not outside.any():
            cpu = segmentation_confusion(pred, target, 6, ignore_index)
            assert torch.equal(_general_confusion(p, t, 6, ignore_index), cpu)
            assert torch.equal(fast, cpu) if ignore_index != -1 else fast is None
        else:
            assert fast is None
            with pytest.raises(ValueError, match=r"target \(pixels other than"):
                _general_confusion(p, t, 6, ignore_index)
            with pytest.raises(ValueError, match=r"target \(pixels other than"):
                segmentation_confusion(pred, target, 6, ignore_index)


def test_top_class_equals_torch_max_on_ties_and_nan() -> None:
    scores = torch.randint(0, 3, (2, 7, 5, 6), generator=torch.Generator().manual_seed(0))
    for x, dim in ((scores.float(), 1), (scores[0].double(), 0), (scores, 1)):  # ties
        values, ids = top_class(x, dim)
        assert torch.equal(values, x.amax(dim)) and torch.equal(ids, x.argmax(dim))
    scores = scores.float()
    scores[0, 4, 1, 1] = scores[1, 2, 0, 0] = scores[1, 5, 0, 0] = math.nan
    assert torch.equal(class_ids(scores), scores.argmax(1))


def test_dms_script_values_on_a_hand_worked_case() -> None:
    # Class 2 is predicted but absent from the ground truth: 0 in the script's lists, NaN in
    # ours; both means are over the 2 present classes.
    target = torch.tensor([[[0, 0, 1, 1]]])
    preds = torch.tensor([[[0, 2, 1, 1]]])
    result = segmentation_metrics(preds, target, num_classes=3)
    script = result["dms_script"]
    assert math.isnan(result["per_class_iou"][2]) and script["per_class_iou"][2] == 0.0
    assert script["miou"] == pytest.approx(result["miou"]) == pytest.approx((1 / 2 + 1) / 2)
    assert script["mean_class_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert script["pixel_accuracy"] == pytest.approx(3 / 4)


def test_logits_are_argmaxed() -> None:
    preds, targets = _batches(4, 6, 255)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 9, 11, generator=gen)
    logits.scatter_(1, preds[0][:, None], 10.0)
    assert torch.equal(
        segmentation_confusion(logits, targets[0], 6),
        segmentation_confusion(preds[0], targets[0], 6),
    )


def test_nothing_evaluated_is_nan() -> None:
    result = segmentation_metrics(
        torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255), 3
    )
    assert math.isnan(result["pixel_accuracy"]) and math.isnan(result["miou"])
    assert all(math.isnan(v) for v in result["per_class_iou"])


@pytest.mark.parametrize(
    ("preds", "target", "message"),
    [
        (
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.tensor([[[0, 3], [1, 255]]]),
            r"target \(pixels other than ignore_index=255\) has 1 value\(s\) outside \[0, 3\)",
        ),
        (
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.tensor([[[0, -2], [1, 255]]]),
            r"outside \[0, 3\)",
        ),
        (
            torch.tensor([[[0, 3], [1, 0]]]),
            torch.zeros(1, 2, 2, dtype=torch.long),
            r"preds has 1 value\(s\) outside \[0, 3\)",
        ),
        (
            torch.tensor([[[0, -1], [1, 0]]]),
            torch.zeros(1, 2, 2, dtype=torch.long),
            "preds has 1 value",
        ),
        (torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long), "same"),
        (
            torch.zeros(2, 2, dtype=torch.long),
            torch.zeros(1, 2, 2, dtype=torch.long),
            r"preds must be class ids \(B, H, W\)",
        ),
        (
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.zeros(2, 2, dtype=torch.long),
            r"target must have shape \(B, H, W\)",
        ),
        (torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2), "target must be an integer"),
        (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), "preds must be an integer"),
        (torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), "C = num_classes = 3"),
        (
            torch.full((1, 3, 2, 2), float("nan")),
            torch.zeros(1, 2, 2, dtype=torch.long),
            "preds contains 12 NaN/inf",
        ),
        (
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.tensor([[[0, 2**33], [1, 0]]]),
            r"outside \[0, 3\)",
        ),
    ],
)
def test_bad_inputs_raise(preds: torch.Tensor, target: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        segmentation_metrics(preds, target, 3)
    with pytest.raises(ValueError, match=message):
        SegmentationMetrics(3).update(preds, target)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetrics(0)
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationMetrics(3, ignore_index=2.5)
