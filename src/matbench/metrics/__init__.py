"""The shared evaluation layer: torchmetrics ``Metric`` classes that are exact under DDP.

Every ``compute()`` returns a dict of plain Python values (floats, ints, lists); the functional
forms in :mod:`matbench.metrics.functional` return the same keys for one call.
"""

from matbench.metrics.classification import ClassificationMetrics
from matbench.metrics.ranking import CandidateRankMetrics
from matbench.metrics.region_iou import RegionIoU
from matbench.metrics.retrieval import RetrievalMetrics
from matbench.metrics.segmentation import SegmentationMetrics
from matbench.metrics.triplet import MatSegMetrics, TripletAccuracy

__all__ = [
    "CandidateRankMetrics",
    "ClassificationMetrics",
    "MatSegMetrics",
    "RegionIoU",
    "RetrievalMetrics",
    "SegmentationMetrics",
    "TripletAccuracy",
]
