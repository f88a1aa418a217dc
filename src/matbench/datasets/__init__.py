"""Datasets: an on-disk layout read into dict samples (no Lightning here)."""

from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["DatasetFormatError", "DatasetNotFoundError"]
