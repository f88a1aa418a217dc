"""Lightning tasks: one per model family, each dataset-agnostic."""

from matbench.tasks.base import BaseTask

__all__ = ["BaseTask"]
