"""Classification metrics from a confusion matrix and a top-k hit count.

Ties in the scores are broken towards the lower class index, consistently for top-1 (this is
what ``argmax`` does) and top-k: the true class counts as in the top k when fewer than k classes
score higher than it or score equal to it with a lower index.

With fewer than k classes there is no ``top{k}_accuracy`` key (CLIP_benchmark reports NaN for
its top-5 then): a key named top-k always holds a top-k figure.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from matbench.metrics.functional._checks import (
    as_tensor,
    check_float,
    check_integer,
    check_labels,
    check_ndim,
    check_num_classes,
)


def check_top_k(top_k: int) -> None:
    """Raise unless ``top_k`` is an integer >= 1."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")


def check_classification_inputs(
    logits: Any, target: Any, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Validate (N, C) scores and (N,) integer targets; return them as tensors."""
    logits = as_tensor(logits, "logits")
    target = as_tensor(target, "target")
    check_ndim(logits, "logits", 2, f"(N, num_classes) = (N, {num_classes})")
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"logits has {logits.shape[1]} columns but num_classes is {num_classes} "
            f"(shape {tuple(logits.shape)})"
        )
    check_ndim(target, "target", 1, "(N,)")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"logits has {logits.shape[0]} rows but target has {target.shape[0]} entries"
        )
    check_float(logits, "logits")
    check_integer(target, "target")
    check_labels(target, "target", num_classes)
    return logits, target.long()


def classification_counts(
    logits: Tensor, target: Tensor, num_classes: int, top_k: int
) -> tuple[Tensor, Tensor]:
    """The (C, C) confusion matrix (rows target, columns prediction) and the top-k hit count."""
    pred = logits.argmax(1)
    confusion = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    true_score = logits.gather(1, target[:, None])
    classes = torch.arange(num_classes, device=logits.device)
    ahead = (logits > true_score) | ((logits == true_score) & (classes[None, :] < target[:, None]))
    hits = (ahead.sum(1) < top_k).sum()
    return confusion.reshape(num_classes, num_classes), hits


def confusion_metrics(confusion: Tensor) -> dict[str, Any]:
    """Accuracy, class accuracies and IoUs from a confusion matrix (rows target, columns
    prediction, NaN when empty).

    ``confusion`` is (C, C), or (C, C + 1) whose last column counts samples with no
    prediction (an unparsed answer): they count against their class and for no class.
    Class ``c``'s IoU is ``TP / (TP + FP + FN)``; like the class accuracies, it is NaN for a
    class absent from the targets, and ``miou`` and ``mean_class_accuracy`` average only
    the classes present (the DMS convention).
    """
    confusion = confusion.long().cpu()
    n = confusion.shape[0]
    if confusion.ndim != 2 or confusion.shape[1] not in (n, n + 1):
        raise ValueError(f"confusion must be (C, C) or (C, C + 1), got {tuple(confusion.shape)}")
    total = int(confusion.sum())
    support = confusion.sum(1)
    correct = confusion.diagonal()
    predicted = confusion[:, :n].sum(0)
    present = support > 0
    per_class = torch.where(present, correct.double() / support.clamp_min(1), math.nan)
    union = support + predicted - correct
    iou = torch.where(present, correct.double() / union.clamp_min(1), math.nan)
    return {
        "accuracy": float(correct.sum()) / total if total else math.nan,
        "mean_class_accuracy": float(per_class[present].mean()) if present.any() else math.nan,
        "miou": float(iou[present].mean()) if present.any() else math.nan,
        "per_class_accuracy": per_class.tolist(),
        "per_class_iou": iou.tolist(),
        "confusion_matrix": confusion.tolist(),
    }


def classification_from_counts(confusion: Tensor, hits: Tensor, top_k: int) -> dict[str, Any]:
    """The result dict from a confusion matrix and a top-k hit count (NaN when empty); no
    ``top{k}_accuracy`` with fewer than k classes."""
    metrics = confusion_metrics(confusion)
    total = int(confusion.sum())
    out = {"accuracy": metrics.pop("accuracy")}
    if top_k <= confusion.shape[0]:
        out[f"top{top_k}_accuracy"] = float(hits) / total if total else math.nan
    out.update(metrics)
    return out


def classification_metrics(
    logits: Tensor, target: Tensor, num_classes: int, top_k: int = 5
) -> dict[str, Any]:
    """Accuracy, top-k accuracy, balanced accuracy, mIoU, per-class values and confusion matrix.

    Args:
        logits: (N, C) scores (logits or probabilities; only their order matters).
        target: (N,) integer class ids in [0, C).
        num_classes: C.
        top_k: k of the top-k accuracy.

    Returns:
        ``accuracy``, ``top{k}_accuracy`` (``top5_accuracy`` by default; absent when there
        are fewer than k classes),
        ``mean_class_accuracy`` and ``miou`` (means over the classes present in
        ``target``), ``per_class_accuracy`` and ``per_class_iou`` (lists, NaN for classes
        absent from ``target``) and
        ``confusion_matrix`` (list of lists of counts, rows = target, columns = prediction).

    Raises:
        ValueError: On wrong shapes, NaN/inf scores or labels outside [0, C).
    """
    check_num_classes(num_classes)
    check_top_k(top_k)
    logits, target = check_classification_inputs(logits, target, num_classes)
    confusion, hits = classification_counts(logits, target, num_classes, top_k)
    return classification_from_counts(confusion, hits, top_k)
