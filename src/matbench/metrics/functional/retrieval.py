"""Open-vocabulary retrieval metrics: MCS, MRR and Recall@1/5/10 against unique captions.

Protocol (samples in dataset order):

- Embeddings are L2-normalised here, so every similarity is a cosine.
- **MCS** is the mean over all samples of the cosine between a sample's image embedding and the
  text embedding given for that sample's own caption.
- **Ranks**: the samples are cut into consecutive groups of ``group_size`` (the last group may
  be smaller; ``None`` = one group holding the whole dataset, i.e. its whole vocabulary). The
  candidates of a group are its **unique** caption strings, so a duplicate of the true caption
  is not a competitor. A caption's candidate embedding is the text embedding of its first
  occurrence in dataset order within the group (this only matters if one caption was given
  different embeddings). The rank of the true caption is 1 + the number of candidates scored
  higher; candidates scored **exactly equal** to the true caption are resolved as the
  expectation over a uniformly random order of the tied candidates (so a constant embedding
  scores at chance level rather than perfectly).
- **MRR** = mean of 1 / rank; **Recall@k** = fraction of samples with rank <= k.
- **Group order** (``group_order``): ``"dataset"`` cuts the groups in dataset order;
  ``"shuffled"`` first permutes the samples by a permutation that depends only on ``seed``
  and N (:func:`grouping_order`), so the groups are random batches, the same ones on any
  number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from matbench.metrics.functional._checks import (
    as_tensor,
    check_float,
    check_ndim,
    check_strings,
)

#: Recall cut-offs reported.
RECALL_KS = (1, 5, 10)
#: Result keys of :func:`retrieval_metrics`.
RETRIEVAL_KEYS = ("mcs", "mrr", *(f"recall@{k}" for k in RECALL_KS))

# Rows of the (samples x candidates) score matrix computed at once.
_ROW_BLOCK = 4096


def check_group_size(group_size: int | None) -> None:
    """Raise unless ``group_size`` is None or an integer >= 1."""
    if group_size is None:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be None or an integer >= 1, got {group_size!r}")


#: How samples are ordered before the groups are cut.
GROUP_ORDERS = ("dataset", "shuffled")


def check_group_order(group_order: str) -> None:
    """Raise unless ``group_order`` is one of :data:`GROUP_ORDERS`."""
    if group_order not in GROUP_ORDERS:
        raise ValueError(f"group_order must be one of {GROUP_ORDERS}, got {group_order!r}")


def grouping_order(n: int, group_order: str = "dataset", seed: int = 0) -> Tensor:
    """The order (positions in dataset order) in which N samples are cut into groups: the
    identity, or ``torch.randperm(n)`` of a generator seeded with ``seed``."""
    check_group_order(group_order)
    if group_order == "dataset":
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def check_retrieval_inputs(
    image_emb: Tensor, text_emb: Tensor, captions: Sequence[str]
) -> tuple[Tensor, Tensor, list[str]]:
    """Validate embeddings and captions; return them as tensors and a list of strings."""
    image_emb = as_tensor(image_emb, "image_emb")
    text_emb = as_tensor(text_emb, "text_emb")
    check_ndim(image_emb, "image_emb", 2, "(N, D)")
    check_ndim(text_emb, "text_emb", 2, "(N, D)")
    if image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb and text_emb must have the same shape (N, D), got "
            f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    if image_emb.shape[1] == 0:
        raise ValueError("embeddings must have at least one dimension (D >= 1), got D = 0")
    check_float(image_emb, "image_emb")
    check_float(text_emb, "text_emb")
    captions = check_strings(captions, "captions")
    if len(captions) != image_emb.shape[0]:
        raise ValueError(
            f"got {len(captions)} captions for {image_emb.shape[0]} embeddings: "
            "need exactly one caption per sample"
        )
    return image_emb, text_emb, captions


def _harmonic(n: int, device: torch.device) -> Tensor:
    """``H[k] = 1 + 1/2 + ... + 1/k`` for k = 0..n (float64)."""
    steps = 1.0 / torch.arange(1, n + 1, dtype=torch.float64, device=device)
    return torch.cat([torch.zeros(1, dtype=torch.float64, device=device), steps.cumsum(0)])


def in_group_order(
    image_emb: Tensor, text_emb: Tensor, captions: list[str], group_order: str, seed: int
) -> tuple[Tensor, Tensor, list[str]]:
    """The samples (given in dataset order) reordered by :func:`grouping_order`."""
    if group_order == "dataset":
        return image_emb, text_emb, captions
    order = grouping_order(len(captions), group_order, seed)
    device_order = order.to(image_emb.device)
    return image_emb[device_order], text_emb[device_order], [captions[i] for i in order.tolist()]


def retrieval_sums(
    image_emb: Tensor, text_emb: Tensor, captions: Sequence[str], group_size: int | None
) -> tuple[Tensor, int]:
    """Sums over samples of cosine, reciprocal rank and recall hits, and the sample count.

    Inputs are assumed valid and in dataset order.

    Returns:
        A float64 tensor ordered like :data:`RETRIEVAL_KEYS` holding sums, and N.
    """
    n = len(captions)
    device = image_emb.device
    sums = torch.zeros(len(RETRIEVAL_KEYS), dtype=torch.float64, device=device)
    if n == 0:
        return sums, 0
    image = F.normalize(image_emb.double(), dim=1)
    text = F.normalize(text_emb.double(), dim=1)
    sums[0] = (image * text).sum(1).sum()
    size = n if group_size is None else group_size
    ks = torch.tensor(RECALL_KS, dtype=torch.float64, device=device)
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        first: dict[str, int] = {}  # caption -> candidate id, in order of first occurrence
        rows: list[int] = []  # sample giving each candidate's embedding
        target = []
        for i in range(lo, hi):
            cid = first.setdefault(captions[i], len(first))
            if cid == len(rows):
                rows.append(i)
            target.append(cid)
        candidates = text[torch.tensor(rows, device=device)]
        targets = torch.tensor(target, device=device)
        harmonic = _harmonic(len(rows), device)
        for start in range(lo, hi, _ROW_BLOCK):
            stop = min(hi, start + _ROW_BLOCK)
            scores = image[start:stop] @ candidates.T
            true = scores.gather(1, targets[start - lo : stop - lo, None])
            higher = (scores > true).sum(1)
            ties = (scores == true).sum(1) - 1  # other candidates tied with the true one
            # Expected 1/rank and hits when the tied block is ordered uniformly at random:
            # the true caption takes rank higher+1 .. higher+ties+1 with equal probability.
            spread = (ties + 1).double()
            rr = (harmonic[higher + ties + 1] - harmonic[higher]) / spread
            rr = torch.where(ties == 0, 1.0 / (higher + 1).double(), rr)
            hits = (ks[None, :] - higher[:, None].double()).clamp(min=0)
            hits = torch.minimum(hits, spread[:, None]) / spread[:, None]
            sums[1] += rr.sum()
            sums[2:] += hits.sum(0)
    return sums, n


def retrieval_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    captions: Sequence[str],
    group_size: int | None = 64,
    group_order: str = "dataset",
    seed: int = 0,
) -> dict[str, float]:
    """MCS, MRR and Recall@1/5/10 of samples given in dataset order (see the module docstring).

    Args:
        image_emb: (N, D) image embeddings.
        text_emb: (N, D) embedding of each sample's true caption.
        captions: The N caption strings.
        group_size: Samples per ranking group; None ranks against the unique captions of the
            whole dataset.
        group_order: ``"dataset"`` (consecutive samples) or ``"shuffled"`` (seeded random
            groups, see :func:`grouping_order`).
        seed: Seed of the shuffled groups.

    Returns:
        ``mcs``, ``mrr``, ``recall@1``, ``recall@5``, ``recall@10`` as floats (NaN when N = 0).

    Raises:
        ValueError: On mismatched shapes or lengths, NaN/inf values, non-string captions or a
            bad ``group_size``.
    """
    check_group_size(group_size)
    check_group_order(group_order)
    image_emb, text_emb, captions = check_retrieval_inputs(image_emb, text_emb, captions)
    image_emb, text_emb, captions = in_group_order(image_emb, text_emb, captions, group_order, seed)
    sums, n = retrieval_sums(image_emb, text_emb, captions, group_size)
    values = (sums / n).tolist() if n else [math.nan] * len(RETRIEVAL_KEYS)
    return dict(zip(RETRIEVAL_KEYS, values, strict=True))
