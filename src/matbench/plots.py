"""Figures for results: confusion matrices, per-class accuracy, triplet accuracy per model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _names(class_names: Sequence[str] | None, n: int) -> list[str]:
    if class_names is not None and len(class_names) == n:
        return [str(c) for c in class_names]
    return [str(i) for i in range(n)]


def save_confusion_matrix(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Save a confusion matrix (rows = target) as a PNG, each row normalised to recall."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {counts.shape}")
    recall = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    n = counts.shape[0]
    names = _names(class_names, n)
    side = max(4.0, 0.35 * n + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=7 if n > 20 else 9)
    ax.set_yticks(range(n), names, fontsize=7 if n > 20 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    color = "white" if recall[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_title(_wrap(title, 50))
    return _save(fig, path)


def save_per_class_accuracy(
    accuracies: Sequence[float | None],
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Save per-class accuracy as bars; classes without test samples are left blank."""
    plt = _pyplot()
    values = np.array([np.nan if a is None else float(a) for a in accuracies])
    names = _names(class_names, len(values))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(values) + 2), 3.5))
    ax.bar(range(len(values)), np.nan_to_num(values, nan=0.0), color="tab:blue")
    ax.set_xticks(range(len(values)), names, rotation=90, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(_wrap(title, 60))
    return _save(fig, path)


def non_empty(series: dict[str, Sequence[float | None]]) -> dict[str, Sequence[float | None]]:
    """The series that have at least one value (an all-empty one would be a legend entry
    without bars, e.g. soft triplet accuracy of a benchmark without relations)."""
    return {name: values for name, values in series.items() if any(v is not None for v in values)}


def save_grouped_bars(
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    path: str | Path,
    ylabel: str,
    title: str = "",
    chance: float | None = None,
) -> Path:
    """Bars per label, one colour per series (e.g. triplet accuracy "all" and "soft"); a
    series without any value is left out, and the legend sits beside the axes, off the bars."""
    plt = _pyplot()
    series = non_empty(series)
    n, k = len(labels), max(len(series), 1)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * n + 2), 4))
    for i, (name, values) in enumerate(series.items()):
        heights = [np.nan if v is None else float(v) for v in values]
        ax.bar(np.arange(n) + (i - (k - 1) / 2) * width, heights, width, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(n), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title, 60))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


def _wrap(title: str, width: int) -> str:
    """A long title broken into lines (a model @ dataset label can be long)."""
    import textwrap

    return "\n".join(textwrap.wrap(title, width)) if title else ""


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # "tight" keeps the title and the legend beside the axes inside the image
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
