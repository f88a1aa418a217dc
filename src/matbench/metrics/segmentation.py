"""Dense segmentation metrics (DMS semantics) as a DDP-exact torchmetrics ``Metric``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from matbench.metrics.functional._checks import check_num_classes
from matbench.metrics.functional.segmentation import (
    check_ignore_index,
    segmentation_confusion,
    segmentation_from_confusion,
)


class SegmentationMetrics(Metric):
    """Pixel accuracy, mean class accuracy, mIoU and per-class IoU from one confusion matrix.

    The confusion matrix (rows = target, columns = prediction) counts every pixel whose target
    is not ``ignore_index`` and is summed across processes (exact under DDP). Mean class
    accuracy and mIoU are averaged only over classes that have ground-truth pixels, as in the
    official DMS evaluation; see :mod:`matbench.metrics.functional.segmentation`.

    Args:
        num_classes: Number of classes C (46 for DMS46).
        ignore_index: Target value of pixels that are not evaluated (None: none).
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confusion: Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_num_classes(num_classes)
        check_ignore_index(ignore_index)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confusion",
            torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: (B, H, W) integer class ids in [0, C), or (B, C, H, W) scores (argmax is
                taken over C).
            target: (B, H, W) integer class ids in [0, C), or ``ignore_index``.

        Raises:
            ValueError: On shape mismatches, NaN/inf scores or ids out of range.
        """
        confusion = segmentation_confusion(preds, target, self.num_classes, self.ignore_index)
        self.confusion += confusion.to(self.confusion.device)

    def compute(self) -> dict[str, Any]:
        """``pixel_accuracy``, ``mean_class_accuracy``, ``miou`` (floats, NaN if no pixel),
        ``per_class_iou`` (list, NaN for classes without ground truth) and
        ``confusion_matrix`` (list of lists)."""
        return segmentation_from_confusion(self.confusion)
