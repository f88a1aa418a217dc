"""Dataset errors (defined in :mod:`matbench.errors`, a leaf module any package can import)."""

from matbench.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["DatasetFormatError", "DatasetNotFoundError"]
