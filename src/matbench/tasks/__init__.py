"""Lightning tasks: one per model family, each dataset-agnostic."""

from matbench.tasks.base import BaseTask
from matbench.tasks.clip import ClipMaterialTask
from matbench.tasks.dense import DenseMaterialTask
from matbench.tasks.fgovd import FineGrainedMatchingTask
from matbench.tasks.matseg import MatSegTask
from matbench.tasks.prompted import PromptedMatSegTask
from matbench.tasks.two_stream import TwoStreamTask
from matbench.tasks.zeroshot import ZeroShotTask

__all__ = [
    "BaseTask",
    "ClipMaterialTask",
    "DenseMaterialTask",
    "FineGrainedMatchingTask",
    "ZeroShotTask",
    "MatSegTask",
    "PromptedMatSegTask",
    "TwoStreamTask",
]
