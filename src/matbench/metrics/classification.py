"""Classification metrics as a DDP-exact torchmetrics ``Metric``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from matbench.metrics.functional._checks import check_num_classes
from matbench.metrics.functional.classification import (
    check_classification_inputs,
    check_top_k,
    classification_counts,
    classification_from_counts,
)


class ClassificationMetrics(Metric):
    """Top-1 and top-k accuracy, balanced accuracy, per-class accuracy and confusion matrix.

    States are a confusion matrix and a top-k hit count, both summed across processes, so the
    result under DDP equals the single-process one exactly (given an unpadded sampler).
    Semantics as :func:`matbench.metrics.functional.classification_metrics`; ties in the scores
    go to the lower class index.

    Args:
        num_classes: Number of classes C.
        top_k: k of the top-k accuracy; the key is ``top{k}_accuracy``, absent when there
            are fewer than k classes (CLIP_benchmark: NaN).
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = ClassificationMetrics(num_classes=3, top_k=2)
        >>> metric.update(torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]), torch.tensor([0, 1]))
        >>> metric.compute()["accuracy"], metric.compute()["top2_accuracy"]
        (0.5, 1.0)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confusion: Tensor
    topk_hits: Tensor

    def __init__(self, num_classes: int, top_k: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_num_classes(num_classes)
        check_top_k(top_k)
        self.num_classes = num_classes
        self.top_k = top_k
        self.add_state(
            "confusion",
            torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )
        self.add_state("topk_hits", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            logits: (N, C) logits or probabilities.
            target: (N,) integer class ids in [0, C).

        Raises:
            ValueError: On wrong shapes, NaN/inf scores or labels outside [0, C).
        """
        logits, target = check_classification_inputs(logits, target, self.num_classes)
        confusion, hits = classification_counts(logits, target, self.num_classes, self.top_k)
        self.confusion += confusion.to(self.confusion.device)
        self.topk_hits += hits.to(self.topk_hits.device)

    def compute(self) -> dict[str, Any]:
        """``accuracy``, ``top{k}_accuracy``, ``mean_class_accuracy`` (floats, NaN if empty),
        ``per_class_accuracy`` (list, NaN for classes absent from the targets) and
        ``confusion_matrix`` (list of lists, rows = target)."""
        return classification_from_counts(self.confusion, self.topk_hits, self.top_k)
