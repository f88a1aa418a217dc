"""MatSeg triplet accuracy aggregated over images, as DDP-exact torchmetrics ``Metric``s."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from matbench.metrics.functional.triplet import (
    TRIPLET_KEYS,
    check_triplet_inputs,
    triplet_image_scores,
)


class _TripletAggregate(Metric):
    """Per-mode sum states: the four per-image values, images scored and images skipped."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def _add_mode(self, prefix: str) -> None:
        self.add_state(f"{prefix}sums", torch.zeros(len(TRIPLET_KEYS), dtype=torch.float64), "sum")
        self.add_state(f"{prefix}num_images", torch.zeros((), dtype=torch.long), "sum")
        self.add_state(f"{prefix}num_skipped", torch.zeros((), dtype=torch.long), "sum")

    def _add_image(
        self,
        prefix: str,
        similarity: Tensor,
        weight: Tensor,
        groups: Tensor,
        soft_only: bool,
        has_relations: bool,
    ) -> None:
        if soft_only and not has_relations:
            return  # not part of the soft benchmark at all (neither scored nor skipped)
        scores = triplet_image_scores(similarity, weight, groups, soft_only)
        if bool(torch.isnan(scores).any()):
            setattr(self, f"{prefix}num_skipped", getattr(self, f"{prefix}num_skipped") + 1)
            return
        sums = getattr(self, f"{prefix}sums")
        setattr(self, f"{prefix}sums", sums + scores.to(sums.device))
        setattr(self, f"{prefix}num_images", getattr(self, f"{prefix}num_images") + 1)

    def _result(self, prefix: str, out_prefix: str = "") -> dict[str, float | int]:
        num_images = int(getattr(self, f"{prefix}num_images"))
        sums = getattr(self, f"{prefix}sums").cpu()
        means = (sums / num_images).tolist() if num_images else [math.nan] * len(TRIPLET_KEYS)
        out: dict[str, float | int] = {
            f"{out_prefix}{key}": value for key, value in zip(TRIPLET_KEYS, means, strict=True)
        }
        out[f"{out_prefix}num_images"] = num_images
        out[f"{out_prefix}num_skipped"] = int(getattr(self, f"{prefix}num_skipped"))
        return out


def _check_has_relations(has_relations: Any) -> bool:
    if not isinstance(has_relations, (bool, int)) and not (
        isinstance(has_relations, Tensor) and has_relations.numel() == 1
    ):
        raise ValueError(f"has_relations must be a bool, got {type(has_relations).__name__}")
    return bool(has_relations)


class TripletAccuracy(_TripletAggregate):
    """MatSeg triplet accuracy: per-image values averaged as a plain mean over images.

    Call :meth:`update` once per image. Per-image values follow
    :func:`matbench.metrics.functional.triplet_accuracy` (ties in similarity count as half
    correct; top-1 ties count as the fraction of the tied points that are right). An image with
    no scorable anchor is skipped and counted in ``num_skipped``. With ``soft_only=True`` only
    images that have a relations file take part (others are ignored, not counted as skipped)
    and only pivots with ``0 < w(a, b) < 1`` are kept.

    All states are sums over images, so the result is exact under DDP.

    Args:
        soft_only: Evaluate the "soft cases" instead of all cases.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    sums: Tensor
    num_images: Tensor
    num_skipped: Tensor

    def __init__(self, soft_only: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.soft_only = bool(soft_only)
        self._add_mode("")

    def update(
        self, similarity: Tensor, weight: Tensor, groups: Tensor, has_relations: bool
    ) -> None:
        """Add one image.

        Args:
            similarity: (N, N) predicted point similarities.
            weight: (N, N) ground-truth weights in [0, 1].
            groups: (N,) integer group id of every point.
            has_relations: Whether the image has a ``group_relations.txt`` file.

        Raises:
            ValueError: On wrong shapes, NaN/inf values, weights outside [0, 1] or bad groups.
        """
        has_relations = _check_has_relations(has_relations)
        similarity, weight, groups = check_triplet_inputs(similarity, weight, groups)
        self._add_image("", similarity, weight, groups, self.soft_only, has_relations)

    def compute(self) -> dict[str, float | int]:
        """``by_point``, ``by_material``, ``top1_by_point``, ``top1_by_material`` (mean over
        scored images, NaN if none), ``num_images`` and ``num_skipped``."""
        return self._result("")


class MatSegMetrics(_TripletAggregate):
    """The MatSeg benchmark: triplet accuracy on "all" cases and on "soft" cases at once.

    Equivalent to a :class:`TripletAccuracy` and a ``TripletAccuracy(soft_only=True)`` fed the
    same images; the result keys are theirs prefixed with ``all_`` and ``soft_``.

    Args:
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    all_sums: Tensor
    all_num_images: Tensor
    all_num_skipped: Tensor
    soft_sums: Tensor
    soft_num_images: Tensor
    soft_num_skipped: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_mode("all_")
        self._add_mode("soft_")

    def update(
        self, similarity: Tensor, weight: Tensor, groups: Tensor, has_relations: bool
    ) -> None:
        """Add one image (arguments as :meth:`TripletAccuracy.update`)."""
        has_relations = _check_has_relations(has_relations)
        similarity, weight, groups = check_triplet_inputs(similarity, weight, groups)
        self._add_image("all_", similarity, weight, groups, False, has_relations)
        self._add_image("soft_", similarity, weight, groups, True, has_relations)

    def compute(self) -> dict[str, float | int]:
        """The :class:`TripletAccuracy` keys prefixed ``all_`` and ``soft_``."""
        return {**self._result("all_", "all_"), **self._result("soft_", "soft_")}
