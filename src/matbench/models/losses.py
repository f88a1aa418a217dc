"""Training losses: the contrastive image-text losses (CLIP, SigLIP) with their cross-rank
gather, and the MatSeg descriptor loss. Plain functions and ``nn.Module`` s, no Lightning."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.utils.distributed import world_and_rank


def gather_with_local_grad(x: Tensor) -> tuple[Tensor, int]:
    """All ranks' rows of ``x`` concatenated (rank order) and the offset of this rank's rows.

    The rows of this rank keep their autograd graph (open_clip's ``gather_with_grad=False``
    scheme): a loss of the whole gathered batch, computed on every rank, then gives each rank
    the exact gradient through its own features. Ranks may hold different row counts.
    Outside a distributed run, returns ``(x, 0)``.
    """
    world, rank = world_and_rank()
    if world == 1:
        return x, 0
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    chunks = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    parts = [chunk[:n] for chunk, n in zip(chunks, counts, strict=True)]
    parts[rank] = x
    return torch.cat(parts), sum(counts[:rank])


class ContrastiveLoss(nn.Module):
    """CLIP (symmetric InfoNCE) or SigLIP (pairwise sigmoid) loss with a learnable temperature.

    As in open_clip, the loss uses ``exp(logit_scale)`` as it is; the parameter is kept in
    ``[0, log(max_scale)]`` by :meth:`clamp_` after each optimizer step (the task calls it).
    Clamping inside the loss instead would zero the gradient at the cap, and a scale that
    reached it could never come back down.

    Under DDP the features of every rank are gathered (:func:`gather_with_local_grad`) and
    every rank reports the loss of the global batch. Gradients are those of open_clip's
    ``ClipLoss(gather_with_grad=False)`` and ``SigLipLoss(rank, world_size)``:

    - CLIP: each rank back-propagates the global loss through its own features (DDP's average
      then scales the step by 1/world-size, as open_clip's does);
    - SigLIP: each rank back-propagates the sum of its own images' pair terms against every
      text, divided by its batch size, and its own texts receive the terms of every rank's
      images (open_clip's neighbour exchange with gradient). After DDP's average this is the
      exact gradient of the global loss (with unequal batches too: the divisor is then the
      mean batch size per rank).

    Args:
        kind: ``"clip"`` or ``"siglip"``.
        temperature: Initial temperature (logit scale = 1 / temperature); default 0.07 for
            CLIP and 0.1 for SigLIP.
        learn_temperature: Learn the temperature (the talk: higher recall/MRR, lower MCS) or
            keep it fixed.
        bias: Initial SigLIP logit bias (learned with the temperature).
        max_scale: Upper bound of the logit scale, applied by :meth:`clamp_`.
        gather: Gather features across ranks (when distributed).
    """

    def __init__(
        self,
        kind: str = "clip",
        temperature: float | None = None,
        learn_temperature: bool = True,
        bias: float = -10.0,
        max_scale: float = 100.0,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if kind not in ("clip", "siglip"):
            raise ValueError(f"loss must be 'clip' or 'siglip', got '{kind}'")
        temperature = temperature if temperature is not None else (0.07 if kind == "clip" else 0.1)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.kind = kind
        self.max_scale = max_scale
        self.gather = gather
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature
        )
        self.logit_bias = (
            nn.Parameter(torch.tensor(float(bias)), requires_grad=learn_temperature)
            if kind == "siglip"
            else None
        )

    @property
    def scale(self) -> Tensor:
        return self.logit_scale.exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale.detach())

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the logit scale in ``[0, log(max_scale)]`` (open_clip: after each step)."""
        self.logit_scale.clamp_(0.0, math.log(self.max_scale))

    def forward(self, image: Tensor, text: Tensor, gather: bool | None = None) -> Tensor:
        """Loss of L2-normalised (B, D) image and text embeddings (row i matches row i)."""
        if image.shape != text.shape:
            raise ValueError(f"image {tuple(image.shape)} and text {tuple(text.shape)} differ")
        gather = self.gather if gather is None else gather
        if gather:
            all_image, offset = gather_with_local_grad(image)
            all_text, _ = gather_with_local_grad(text)
        else:
            (all_image, offset), all_text = (image, 0), text
        # Every rank computes the loss of the global batch; only its own rows carry a graph.
        n = all_image.shape[0]
        logits = self.scale * all_image @ all_text.T
        if self.kind == "clip":
            targets = torch.arange(n, device=image.device)
            return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        labels = 2 * torch.eye(n, device=image.device, dtype=logits.dtype) - 1
        terms = -F.logsigmoid(labels * (logits + self.logit_bias))
        loss = terms.sum() / n
        if n == image.shape[0]:
            return loss
        # open_clip's per-rank SigLIP gradient: own rows (images x every text, through the
        # scale, bias and own texts) plus, for own texts only, every other rank's images.
        own = torch.zeros(n, dtype=torch.bool, device=image.device)
        own[offset : offset + image.shape[0]] = True
        fixed = all_image.detach() @ all_text.T * self.scale.detach() + self.logit_bias.detach()
        others = -F.logsigmoid(labels * fixed)[~own][:, own]
        # Divided by the mean batch per rank (open_clip: its batch; ranks hold equal ones), so
        # that DDP's average is the exact global gradient also when the batches differ.
        world, _ = world_and_rank()
        surrogate = (terms[own].sum() + others.sum()) * (world / n)
        # The value is the global loss; the gradient is open_clip's.
        return loss.detach() + surrogate - surrogate.detach()


def matseg_loss(
    descriptors: Tensor,
    fractions: Tensor,
    valid: Tensor,
    roi: Tensor,
    temperature: float = 0.2,
    target: Literal["soft", "hard"] = "soft",
    return_scored: bool = False,
) -> Tensor | tuple[Tensor, int]:
    """The MatSeg descriptor loss (``docs/formats.md``, MatSeg training scenes).

    Per image and material, the mean descriptor over the pixels where the material's fraction
    exceeds 0.5 (re-normalised); per pixel, the cosine similarity to every material's mean; a
    softmax over materials at ``temperature``; the cross-entropy against the target, averaged
    over the region-of-interest pixels that hold some kept material, then over the images that
    have such pixels. The target is the soft fractions renormalised over the kept materials
    (``soft``, what the released training code does) or the paper's hard target, a one-hot of
    the material with the highest fraction per pixel (``hard``; ties go to the lower index).

    Args:
        descriptors: (B, D, H, W) unit descriptors.
        fractions: (B, M, H, W) soft fractions (0 for padded materials).
        valid: (B, M) bool, real (not padded) materials.
        roi: (B, H, W) bool region of interest.
        temperature: Softmax temperature.
        target: ``soft`` or ``hard`` (see above).
        return_scored: Also return how many images had a usable pixel (the loss's count).

    Returns:
        Scalar loss (0 with a gradient path when no image has a usable pixel), and with
        ``return_scored`` the number of scored images.
    """
    b, d = descriptors.shape[:2]
    desc = descriptors.reshape(b, d, -1)
    frac = fractions.reshape(b, fractions.shape[1], -1) * roi.reshape(b, 1, -1)
    dominant = (frac > 0.5).to(desc.dtype)
    counts = dominant.sum(-1)  # (B, M)
    present = valid & (counts > 0)
    means = torch.einsum("bdp,bmp->bmd", desc, dominant) / counts.clamp(min=1).unsqueeze(-1)
    means = F.normalize(means, dim=-1)
    logits = torch.einsum("bmd,bdp->bmp", means, desc) / temperature
    logits = logits.masked_fill(~present.unsqueeze(-1), float("-inf"))
    log_prob = torch.log_softmax(logits, dim=1).masked_fill(~present.unsqueeze(-1), 0.0)
    if target not in ("soft", "hard"):
        raise ValueError(f"target must be 'soft' or 'hard', got {target!r}")
    kept = frac * present.unsqueeze(-1)
    mass = kept.sum(1)  # (B, P)
    used = mass > 1e-6
    if target == "hard":
        kept = F.one_hot(kept.argmax(1), kept.shape[1]).transpose(1, 2).to(desc.dtype)
        target_map = kept * used.unsqueeze(1)
    else:
        target_map = kept / mass.clamp(min=1e-6).unsqueeze(1)
    per_pixel = -(target_map * log_prob).sum(1)  # (B, P)
    n_used = used.sum(-1)
    per_image = (per_pixel * used).sum(-1) / n_used.clamp(min=1)
    has = n_used > 0
    loss = per_image[has].mean() if has.any() else descriptors.sum() * 0.0
    return (loss, int(has.sum())) if return_scored else loss
