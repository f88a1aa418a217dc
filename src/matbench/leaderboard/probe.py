"""The linear probe: logistic regression on frozen image features, CLIP_benchmark's protocol.

As CLIP_benchmark's ``metrics/linear_probe.py`` (itself following CLIP's paper, appendix A.3,
with AdamW instead of L-BFGS):

1. **Features, once.** Each sample's region crop (the zero-shot crop: the mask's box padded to
   at least 50 px, square, background blurred) goes through the frozen image model; the
   features are L2-normalised and written to one file per (model, dataset, split) under the
   feature root. Every later run (another sweep, another protocol, ``--skip_existing`` after a
   crash) loads the file instead of running the model.
2. **Logistic regression**: one ``nn.Linear`` layer, cross-entropy, AdamW (learning rate 0.1,
   no warmup, cosine decay over ``epochs`` x batches, batch 64, 10 epochs), seeded before
   the layer is built so that every fit starts from the same weights and batch order.
3. **The regularisation sweep** over the weight decay, on the validation split:
   97 values ``logspace(-6, 2)``; first the 7 values ``logspace(-6, 2, 7)`` (every 16th);
   then around the best index ``i``, the indices ``i - s, i, i + s`` for ``s = 8, 4, 2, 1``
   (clipped to the list), keeping the first best top-1 validation accuracy each time.
4. **The final fit** with the chosen weight decay on train + validation, scored on the test
   split: top-1, top-5 (with 5 classes or more) and mean per-class recall (balanced accuracy),
   plus the per-class accuracies and confusion matrix of matbench's classification metrics.

Differences from CLIP_benchmark, none of which changes a number: fits are memoised by weight
decay index (a fit is deterministic given its seed, and the sweep revisits its peak at every
step); fp32 (no autocast) so that CPU runs are exact; the validation split is the benchmark's
own (a seeded 20 % of train when it has none, as ``--val_proportion 0.2``); the number of
classes is the dataset's (CLIP_benchmark: the largest train label + 1).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from matbench.utils.threads import one_cpu_thread

#: The weight decay grid: 97 values ``logspace(-6, 2)``.
WEIGHT_DECAYS: list[float] = np.logspace(-6, 2, num=97).tolist()
#: The first 7 values tried (every 16th of the grid).
INITIAL_WEIGHT_DECAYS: list[float] = np.logspace(-6, 2, num=7).tolist()
#: Half-widths of the refinement steps around the peak.
STEP_SPANS = (8, 4, 2, 1)


def cosine_lr(base_lr: float, warmup: int, steps: int, step: int) -> float:
    """CLIP_benchmark's (and open_clip's) schedule: linear warmup, then cosine to 0."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup))) * base_lr


def fit_probe(
    features: Tensor,
    targets: Tensor,
    num_classes: int,
    weight_decay: float,
    lr: float = 0.1,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Linear:
    """One logistic-regression fit (the ``train`` of CLIP_benchmark's linear probe)."""
    torch.manual_seed(seed)
    probe = nn.Linear(features.shape[1], num_classes).to(device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    loader = DataLoader(TensorDataset(features, targets), batch_size=batch_size, shuffle=True)
    total = epochs * len(loader)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(lr, 0, total, i + epoch * len(loader))
            optimizer.zero_grad()
            loss = F.cross_entropy(probe(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
    return probe.eval()


@torch.no_grad()
def predict(probe: nn.Linear, features: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits (N, C) of ``features``, in order."""
    device = probe.weight.device
    parts = [
        probe(features[i : i + batch_size].to(device)).cpu()
        for i in range(0, len(features), batch_size)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, probe.out_features)


def top1(logits: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy (the validation score of the sweep)."""
    return float((logits.argmax(1) == targets).float().mean()) if len(targets) else 0.0


def sweep_weight_decay(score: Callable[[int], float]) -> tuple[int, list[int]]:
    """CLIP_benchmark's search of the weight decay grid.

    Args:
        score: Validation accuracy of a fit with ``WEIGHT_DECAYS[index]``.

    Returns:
        The chosen index and the indices evaluated, in order (repeats included).
    """
    visited: list[int] = []

    def peak(indices: Sequence[int], start: int = 0) -> int:
        best, best_acc = start, 0.0
        for index in indices:
            visited.append(index)
            acc = score(index)
            if best_acc < acc:  # strict: the first of equal scores wins
                best, best_acc = index, acc
        return best

    initial = [i for i, value in enumerate(WEIGHT_DECAYS) if value in INITIAL_WEIGHT_DECAYS]
    best = peak(initial)
    for span in STEP_SPANS:
        left, right = max(best - span, 0), min(best + span, len(WEIGHT_DECAYS) - 1)
        best = peak([left, best, right])
    return best, visited


def linear_probe(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor] | None,
    test: tuple[Tensor, Tensor],
    num_classes: int,
    lr: float = 0.1,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Sweep the weight decay on ``val``, fit on train + val, score ``test``.

    Args:
        train: Training features (N, D) and labels (N,).
        val: Validation features and labels; None = no sweep (weight decay 0, as
            CLIP_benchmark without a validation split).
        test: Test features and labels.
        num_classes: C.
        lr: AdamW learning rate.
        epochs: Epochs of every fit.
        batch_size: Batch size of every fit.
        seed: Seed of every fit.
        device: Where the fits run.

    Returns:
        matbench's classification metrics of the test split (``accuracy``,
        ``top5_accuracy``, ``mean_class_accuracy``, per-class values, confusion matrix) and
        ``weight_decay`` (the chosen value), ``sweep`` (indices tried with their validation
        accuracy) and ``fits``.
    """
    from matbench.metrics.functional.classification import classification_metrics

    kwargs = {"lr": lr, "epochs": epochs, "batch_size": batch_size, "seed": seed, "device": device}
    scores: dict[int, float] = {}

    def score(index: int) -> float:
        if index not in scores:  # fits are deterministic: the peak is fitted once
            probe = fit_probe(*train, num_classes, WEIGHT_DECAYS[index], **kwargs)
            scores[index] = top1(predict(probe, val[0]), val[1])
        return scores[index]

    with one_cpu_thread(device):
        if val is not None and len(val[1]):
            best, _ = sweep_weight_decay(score)
            weight_decay = WEIGHT_DECAYS[best]
            final_train = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
        else:
            weight_decay, final_train = 0.0, train
        probe = fit_probe(*final_train, num_classes, weight_decay, **kwargs)
        logits = predict(probe, test[0])
    metrics = classification_metrics(logits, test[1], num_classes, top_k=5)
    metrics["weight_decay"] = weight_decay
    metrics["sweep"] = {f"{WEIGHT_DECAYS[i]:.3g}": scores[i] for i in sorted(scores)}
    metrics["fits"] = len(scores) + 1
    return metrics


# -- features ---------------------------------------------------------------------------------------
class CropCollate:
    """Batches of region crops, cut in the loader's workers (in parallel with the model):
    ``(crops (B, 3, S, S), masks (B, S, S), labels, keys)``."""

    def __init__(self, size: int, crop: dict[str, Any]) -> None:
        self.size = size
        self.crop = crop

    def __call__(
        self, samples: list[dict[str, Any]]
    ) -> tuple[Tensor, Tensor, list[int], list[str]]:
        with one_cpu_thread():  # small per-sample ops (as in loader workers, which have one)
            crops, masks = _sample_crops(samples, self.size, self.crop)
        labels = [int(s["label"]) for s in samples]
        return crops, masks, labels, [str(s.get("key", "")) for s in samples]


def _sample_crops(
    samples: list[dict[str, Any]], size: int, crop: dict[str, Any]
) -> tuple[Tensor, Tensor]:
    from matbench.transforms import crop_object

    crops, masks = [], []
    for sample in samples:
        image = sample["image"].float()
        mask = sample.get("mask")
        region = torch.ones(image.shape[-2:], dtype=torch.bool) if mask is None else mask.bool()
        if region.ndim == 3:
            region = region[0]
        if not bool(region.any()):
            region = torch.ones_like(region)
        out, out_mask, _ = crop_object(image, region, size=size, square=True, **crop)
        crops.append(out)
        masks.append(out_mask)
    return torch.stack(crops), torch.stack(masks)


def extract_features(
    featurizer: nn.Module,
    dataset: Any,
    batch_size: int = 32,
    num_workers: int = 0,
    crop: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """L2-normalised features, labels and keys of every sample, in dataset order.

    The samples are dicts with ``image`` (3, H, W) in [0, 1], ``mask`` and ``label``; each
    region is cut as the zero-shot crop (``crop``: ``min_size``, ``blur_sigma``).
    """
    crop = {"min_size": 50, "blur_sigma": 4.0, **(crop or {})}
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=CropCollate(featurizer.size, crop),
        shuffle=False,
    )
    features, labels, keys = [], [], []
    done = 0
    for crops, masks, batch_labels, batch_keys in loader:
        out = featurizer(crops.to(device), masks.to(device))
        features.append(F.normalize(out.float(), dim=-1).cpu())
        labels += batch_labels
        keys += [k or str(done + i) for i, k in enumerate(batch_keys)]
        done += len(batch_labels)
        if progress is not None:
            progress(done, len(dataset))
    return {
        "features": torch.cat(features) if features else torch.zeros(0, 0),
        "labels": torch.tensor(labels, dtype=torch.long),
        "keys": keys,
    }


def dataset_identity(dataset: Any) -> list[Any]:
    """What a dataset's features depend on: each sample's fingerprint (file hashes and
    preprocessing, when the dataset has them) or its key."""
    if hasattr(dataset, "fingerprint"):
        return [dataset.fingerprint(i) for i in range(len(dataset))]
    return [str(getattr(dataset, "keys", [None] * len(dataset))[i]) for i in range(len(dataset))]


def feature_file(
    root: Path, model_slug: str, model_id: str, dataset: str, split: str, identity: Any
) -> Path:
    """``<root>/<model>/<dataset>_<split>_<hash>.pt``: one file per (model, dataset, split)."""
    text = json.dumps({"model": model_id, "data": identity}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return root / model_slug / f"{dataset}_{split}_{digest}.pt"


def cached_features(
    path: Path, compute: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """The features in ``path``, computed and written atomically when absent; and whether
    the file was there (a cache hit)."""
    from matbench.cache import atomic_torch_save

    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True), True
        except Exception:  # noqa: BLE001 - an unreadable file is recomputed
            pass
    start = time.perf_counter()
    data = compute()
    data["seconds"] = time.perf_counter() - start
    atomic_torch_save(path, data)
    return data, False
