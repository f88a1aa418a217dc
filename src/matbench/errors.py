"""Errors raised by datasets: each says which file or root and what was wrong."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root is missing or lacks files that the layout requires.

    Args:
        dataset: Dataset class name.
        root: The folder that was searched.
        expected: The paths (relative to ``root``) that were expected.
        hint: How to obtain the data.
    """

    def __init__(
        self, dataset: str, root: str | Path, expected: Iterable[str], hint: str = ""
    ) -> None:
        expected = list(expected)
        msg = f"{dataset}: no usable dataset found in root '{root}'. Expected: " + ", ".join(
            expected
        )
        if hint:
            msg += f". {hint}"
        super().__init__(msg)
        self.root = Path(root)
        self.expected = expected


class DatasetFormatError(ValueError):
    """A file of a dataset exists but its content breaks the layout.

    Args:
        path: The offending file.
        problem: What is wrong with it.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem
