"""Open-vocabulary retrieval metrics as a DDP-exact torchmetrics ``Metric``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from matbench.metrics.functional._checks import as_tensor, check_integer, check_ndim
from matbench.metrics.functional.retrieval import (
    RETRIEVAL_KEYS,
    check_group_order,
    check_group_size,
    check_retrieval_inputs,
    in_group_order,
    retrieval_sums,
)

# Every "cat" state is 1-D with a fixed dtype, so that a rank that saw no sample can take part
# in the all-gather with an empty tensor of the right dtype and number of dimensions.
_CAT_STATES = {
    "image_emb": torch.float32,
    "text_emb": torch.float32,
    "caption_codes": torch.int32,
    "caption_lengths": torch.long,
    "sample_index": torch.long,
}


class RetrievalMetrics(Metric):
    """MCS, MRR and Recall@1/5/10 of images against the unique captions of their group.

    Each update appends the samples (embeddings flattened, captions as Unicode code points, and
    the dataset ``index`` of every sample) to ``cat`` states. At compute, the samples gathered
    from all processes are sorted by index (dataset order) and duplicate indices are dropped
    (keeping one copy), so a padded distributed sampler cannot count a sample twice, and the
    groups of ``group_size`` are formed in dataset order whatever the sharding. The protocol is
    :func:`matbench.metrics.functional.retrieval_metrics`; embeddings are kept as float32.

    Args:
        group_size: Samples ranked together; None ranks every sample against the whole
            vocabulary of the dataset.
        group_order: ``"dataset"``: groups of consecutive samples in dataset order;
            ``"shuffled"``: the samples (in dataset order) are first permuted by a permutation
            seeded with ``seed`` (random batches, the same on any number of processes).
        seed: Seed of the shuffled groups.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    emb_dim: Tensor

    def __init__(
        self,
        group_size: int | None = 64,
        group_order: str = "dataset",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_group_size(group_size)
        check_group_order(group_order)
        self.group_size = group_size
        self.group_order = group_order
        self.seed = seed
        for name in _CAT_STATES:
            self.add_state(name, [], dist_reduce_fx="cat")
        self.add_state("emb_dim", torch.zeros((), dtype=torch.long), dist_reduce_fx="max")

    def update(
        self,
        image_emb: Tensor,
        text_emb: Tensor,
        captions: Sequence[str],
        index: Tensor | Sequence[int],
    ) -> None:
        """Add a batch.

        Args:
            image_emb: (N, D) image embeddings.
            text_emb: (N, D) embeddings of each sample's true caption.
            captions: The N caption strings.
            index: (N,) position of every sample in the dataset.

        Raises:
            ValueError: On mismatched shapes or lengths, NaN/inf values, non-string captions,
                negative or non-integer indices, or an embedding size that changed.
        """
        image_emb, text_emb, captions = check_retrieval_inputs(image_emb, text_emb, captions)
        index = as_tensor(index, "index")
        check_ndim(index, "index", 1, "(N,)")
        if index.shape[0] != len(captions):
            raise ValueError(f"got {index.shape[0]} indices for {len(captions)} samples")
        if index.numel():
            check_integer(index, "index")
            if index.min() < 0:
                raise ValueError(f"index values must be >= 0, got minimum {index.min().item()}")
        dim = image_emb.shape[1]
        if int(self.emb_dim) not in (0, dim):
            raise ValueError(
                f"embedding size changed between updates: {int(self.emb_dim)} before, {dim} now"
            )
        self.emb_dim = torch.tensor(dim, dtype=torch.long, device=self.emb_dim.device)
        device = self.emb_dim.device
        codes, lengths = _encode(captions)
        self.image_emb.append(image_emb.detach().to(device, torch.float32).reshape(-1))
        self.text_emb.append(text_emb.detach().to(device, torch.float32).reshape(-1))
        self.caption_codes.append(codes.to(device))
        self.caption_lengths.append(lengths.to(device))
        self.sample_index.append(index.to(device, torch.long))

    def _sync_dist(
        self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None
    ) -> None:
        # torchmetrics gives an empty list state a float32 placeholder; ours must match the
        # dtype of the other ranks' data. (The pre-sync states are cached and restored.)
        for name, dtype in _CAT_STATES.items():
            if isinstance(getattr(self, name), list) and not getattr(self, name):
                setattr(self, name, [torch.empty(0, dtype=dtype, device=self.device)])
        super()._sync_dist(dist_sync_fn, process_group)

    def _samples(self) -> tuple[Tensor, Tensor, list[str]]:
        """All samples in dataset order without duplicate indices."""
        states = {name: _cat(getattr(self, name), dtype) for name, dtype in _CAT_STATES.items()}
        dim = max(int(self.emb_dim), 1)
        image = states["image_emb"].reshape(-1, dim)
        text = states["text_emb"].reshape(-1, dim)
        captions = _decode(states["caption_codes"], states["caption_lengths"])
        index = states["sample_index"]
        order = torch.sort(index, stable=True).indices
        index = index[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        positions = order.tolist()
        kept = 0
        for pos in range(1, len(positions)):  # a repeated sample must be the same sample
            if keep[pos]:
                kept = pos
            elif captions[positions[pos]] != captions[positions[kept]]:
                raise ValueError(
                    f"sample index {int(index[pos])} was given twice with different captions "
                    f"({captions[positions[kept]]!r} and {captions[positions[pos]]!r})"
                )
        order = order[keep]
        return image[order], text[order], [captions[i] for i in order.tolist()]

    def compute(self) -> dict[str, float]:
        """``mcs``, ``mrr``, ``recall@1``, ``recall@5``, ``recall@10`` (NaN if no sample)."""
        image, text, captions = in_group_order(*self._samples(), self.group_order, self.seed)
        sums, n = retrieval_sums(image, text, captions, self.group_size)
        values = (sums / n).tolist() if n else [math.nan] * len(RETRIEVAL_KEYS)
        return dict(zip(RETRIEVAL_KEYS, values, strict=True))


def _cat(state: Tensor | list[Tensor], dtype: torch.dtype) -> Tensor:
    if isinstance(state, Tensor):
        return state.to(dtype)
    if not state:
        return torch.empty(0, dtype=dtype)
    return torch.cat([s.to(dtype) for s in state])


def _encode(captions: list[str]) -> tuple[Tensor, Tensor]:
    """Captions as one int32 tensor of Unicode code points plus their lengths."""
    joined = "".join(captions).encode("utf-32-le")
    codes = torch.frombuffer(bytearray(joined), dtype=torch.int32) if joined else None
    if codes is None:
        codes = torch.empty(0, dtype=torch.int32)
    return codes, torch.tensor([len(c) for c in captions], dtype=torch.long)


def _decode(codes: Tensor, lengths: Tensor) -> list[str]:
    text = codes.cpu().numpy().tobytes().decode("utf-32-le")
    out, pos = [], 0
    for length in lengths.tolist():
        out.append(text[pos : pos + length])
        pos += length
    return out
