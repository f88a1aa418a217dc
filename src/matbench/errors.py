"""matbench's errors: each says which file, root or split and what was wrong."""

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


class FileContentError(ValueError):
    """A file exists but its content cannot be used; the message is ``path: problem``.

    Args:
        path: The offending file.
        problem: What is wrong with it (naming the field or entry).
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class DatasetFormatError(FileContentError):
    """A file of a dataset exists but its content breaks the layout.

    Args:
        path: The offending file.
        problem: What is wrong with it.
    """


class CheckpointError(FileContentError):
    """A checkpoint that cannot be used: unreadable, truncated, or of another task.

    Args:
        path: The checkpoint file.
        problem: What is wrong with it.
    """


class ConfigError(FileContentError):
    """A config file (run config, suite YAML) whose content cannot be used.

    Args:
        path: The config file.
        problem: What is wrong with it, naming the field.
    """


class EvaluationError(ValueError):
    """An evaluation that would produce no meaningful number (no sample, nothing scorable)."""


class ResultsWriteError(OSError):
    """Results could not be written; the metrics were printed so that they are not lost.

    Args:
        path: The file or folder that failed.
        problem: What went wrong (the OS error).
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: cannot write results ({problem})")
        self.path = Path(path)
        self.problem = problem
