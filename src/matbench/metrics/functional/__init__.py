"""Plain functional forms of the matbench metrics (one call, no state)."""

from matbench.metrics.functional.classification import classification_metrics
from matbench.metrics.functional.ranking import candidate_rank_metrics
from matbench.metrics.functional.retrieval import retrieval_metrics
from matbench.metrics.functional.segmentation import (
    class_ids,
    segmentation_confusion,
    segmentation_metrics,
)
from matbench.metrics.functional.triplet import triplet_accuracy

__all__ = [
    "candidate_rank_metrics",
    "class_ids",
    "classification_metrics",
    "retrieval_metrics",
    "segmentation_confusion",
    "segmentation_metrics",
    "triplet_accuracy",
]
