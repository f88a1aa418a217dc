"""matbench's errors: each says which file, root or argument and what was wrong.

The command line prints a `MatbenchError` as one ``error: …`` line and its hint, with
exit status 2 and no traceback (``--debug`` or ``MATBENCH_DEBUG=1`` shows it).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class MatbenchError(Exception):
    """Base of the errors a user can fix: bad data, files, weights or settings.

    Attributes:
        hint: What to do about it (printed after the error by the command line).
    """

    hint: str = ""


class DatasetNotFoundError(MatbenchError, FileNotFoundError):
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


class FileContentError(MatbenchError, ValueError):
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


class ConfigFileError(FileContentError):
    """A config file (run config, suite YAML) whose content cannot be used.

    Args:
        path: The config file.
        problem: What is wrong with it, naming the field.
    """


class EvaluationError(MatbenchError, ValueError):
    """An evaluation that would produce no meaningful number (no sample, nothing scorable)."""


class ResultsWriteError(MatbenchError, OSError):
    """Results could not be written; the metrics were printed so that they are not lost.

    Args:
        path: The file or folder that failed.
        problem: What went wrong (the OS error).
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: cannot write results ({problem})")
        self.path = Path(path)
        self.problem = problem


class WeightsError(MatbenchError, ValueError):
    """Pretrained weights that cannot be had: offline hub, missing or wrong file.

    Args:
        argument: The task argument that names the weights (``weights``, ``pretrained``…).
        value: Its value (a hub tag or a file path).
        problem: What went wrong.
    """

    def __init__(self, argument: str, value: str, problem: str) -> None:
        self.argument = argument
        self.value = value
        self.problem = problem
        self.hint = (
            f"offline choices: --model.{argument} null (random init), a local file "
            f"(--model.{argument} /path/to/weights.safetensors), or HF_HUB_OFFLINE=1 to use "
            "only weights already in the Hugging Face cache"
        )
        super().__init__(f"--model.{argument} '{value}': {problem}")


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A weights file that does not exist (a `WeightsError` and a `FileNotFoundError`)."""

    def __init__(self, argument: str, value: str) -> None:
        super().__init__(argument, value, "no such file")


class ConfigError(MatbenchError, ValueError):
    """Settings that do not fit together (e.g. a model's classes and the data's).

    Args:
        message: What does not fit.
        hint: Which argument to pass to fix it.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        self.hint = hint
        super().__init__(message)
