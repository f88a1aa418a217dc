"""Input checks shared by the metrics: every problem becomes a ValueError that says what is wrong."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def as_tensor(value: Any, name: str) -> Tensor:
    """``value`` as a tensor (lists and numpy arrays are converted); a ValueError otherwise."""
    if isinstance(value, Tensor):
        return value.detach()
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a tensor, got {type(value).__name__}: {err}") from err


def check_ndim(x: Tensor, name: str, ndim: int, shape_doc: str) -> None:
    """Raise unless ``x`` has ``ndim`` dimensions."""
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(x.shape)}")


def check_float(x: Tensor, name: str) -> None:
    """Raise unless ``x`` is floating point and free of NaN/inf."""
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    check_finite(x, name)


def check_finite(x: Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or infinite values, saying how many and where the first is."""
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        first = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{name} contains {bad.shape[0]} NaN/inf value(s) (first at index {first}: "
            f"{x[first].item()})"
        )


def check_integer(x: Tensor, name: str) -> None:
    """Raise unless ``x`` has an integer dtype (bool is not accepted)."""
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {x.dtype}")


def check_labels(x: Tensor, name: str, num_classes: int) -> None:
    """Raise unless every value of the integer tensor ``x`` lies in ``[0, num_classes)``."""
    if x.numel() == 0:
        return
    low, high = torch.aminmax(x)
    if low < 0 or high >= num_classes:
        bad = ((x < 0) | (x >= num_classes)).nonzero()
        first = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{name} has {bad.shape[0]} value(s) outside [0, {num_classes}) "
            f"(first at index {first}: {x[first].item()}; range seen {low.item()}..{high.item()})"
        )


def check_num_classes(num_classes: int) -> None:
    """Raise unless ``num_classes`` is an integer >= 1."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")


def check_strings(values: Sequence[Any], name: str) -> list[str]:
    """``values`` as a list of strings; a ValueError names the first non-string."""
    if isinstance(values, str):
        raise ValueError(f"{name} must be a sequence of strings, got a single string")
    out = list(values)
    for i, value in enumerate(out):
        if not isinstance(value, str):
            raise ValueError(f"{name}[{i}] must be a string, got {type(value).__name__}")
    return out
