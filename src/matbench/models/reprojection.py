"""FG-CLIP's re-projection of frozen CLIP features and its hinge triplet losses.

Bianchi et al., "Is CLIP the main roadblock for fine-grained open-world perception?" (CBMI
2024), code ``lorebianchi98/FG-CLIP``: the ``linear-mlp`` model (``src/model.py``, ``MLPs``
with ``mlp_dims: []``, ``no_act: True``, ``cosine: True``) is one affine map (``nn.Linear``
with bias, PyTorch's default init) per modality, applied to the *raw* (unnormalised) CLIP
image and text features; the score of a pair is ``sigmoid(cosine)`` of the mapped features.
The ``te-freezed`` / ``ve-freezed`` variants keep the text / image features as they are.
Training (``src/loss.py``, ``configs/train``) is a hinge triplet loss on these scores:
margin 0.2 against every in-batch negative in both directions for caption data, margin 0.05
with the image as anchor against its own hard negatives for FG-OVD; summed over the batch;
Adam.

This differs from :class:`matbench.models.clip.ReProjection` (matbench's identity-started
bias-free linear maps on the CLIP embeddings, trained with the contrastive loss and scored by
plain cosine).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: FG-CLIP checkpoint key of the image / text map (``MLPs.linear_layers[i][0]``).
FGCLIP_KEYS = {"image": "linear_layers.0.0", "text": "linear_layers.1.0"}


class FGCLIPReProjection(nn.Module):
    """FG-CLIP's ``linear-mlp``: an affine map per modality on raw CLIP features.

    Args:
        dim: CLIP embedding size (FG-CLIP: 512, ViT-B/16).
        image: Map the image features (False = FG-CLIP's ``ve-freezed``).
        text: Map the text features (False = FG-CLIP's ``te-freezed``).
        cosine: Score by the cosine of the mapped features (FG-CLIP's ``linear-mlp``
            configs); False = their dot product.
        sigmoid: Pass the score through a sigmoid (FG-CLIP's default).
    """

    def __init__(
        self,
        dim: int = 512,
        image: bool = True,
        text: bool = True,
        cosine: bool = True,
        sigmoid: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.image = nn.Linear(dim, dim) if image else None
        self.text = nn.Linear(dim, dim) if text else None
        self.cosine = cosine
        self.sigmoid = sigmoid

    def project_image(self, features: Tensor) -> Tensor:
        features = features.float()
        return self.image(features) if self.image is not None else features

    def project_text(self, features: Tensor) -> Tensor:
        features = features.float()
        return self.text(features) if self.text is not None else features

    def score(self, image: Tensor, text: Tensor) -> Tensor:
        """Scores of mapped features: (N, D) x (M, D) -> (N, M)."""
        if self.cosine:
            image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        scores = image @ text.T
        return torch.sigmoid(scores) if self.sigmoid else scores

    def load_fgclip(self, path: str | Path) -> None:
        """Load a released FG-CLIP ``linear-mlp`` checkpoint (``fg-ovd_linear-mlp.pt``,
        ``triplet_linear-mlp_te-freezed.pt``, ...) or a state dict of this module.

        Read with ``weights_only``; the keys must be exactly those of this configuration
        (e.g. a ``te-freezed`` file has no text map) and the shapes must match ``dim``.
        """
        from matbench.utils.weights import load_state_dict_file

        state = load_state_dict_file(path)
        if any(k.startswith("linear_layers.") for k in state):
            state = {
                f"{name}.{key[len(prefix) + 1 :]}": value
                for name, prefix in FGCLIP_KEYS.items()
                for key, value in state.items()
                if key.startswith(prefix + ".")
            } | {k: v for k, v in state.items() if not k.startswith("linear_layers.")}
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            hint = (
                " (a te-freezed file has no text map: set reproject_text=False; ve-freezed: "
                "reproject_image=False)"
            )
            raise ValueError(
                f"{path}: not an FG-CLIP linear-mlp checkpoint of this configuration: missing "
                f"{missing}, unexpected {unexpected}{hint}"
            )
        for key, value in state.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise ValueError(
                    f"{path}: '{key}' has shape {tuple(value.shape)}, this model needs "
                    f"{tuple(expected[key].shape)} (FG-CLIP's checkpoints are for 512-d "
                    "ViT-B/16 features)"
                )
        self.load_state_dict(state)


class HingeTripletLoss(nn.Module):
    """FG-CLIP's hinge triplet loss (VSE++ form, ``src/loss.py``), summed over the batch.

    ``"hard_negatives"``: ``scores`` (N, C) of each image against its own candidates, the
    positive in column 0; the image is the only anchor: ``sum_j max(0, m + s_j - s_0)`` over
    the negatives j (or the largest term per row with ``max_violation``).

    ``"captions"``: ``scores`` (N, N) of the images against the batch's captions, matching
    pairs on the diagonal; both directions (image -> captions and caption -> images) against
    every other in-batch item.

    Args:
        kind: ``"hard_negatives"`` (FG-OVD) or ``"captions"`` (caption data).
        margin: The margin (FG-CLIP: 0.05 for FG-OVD, 0.2 for captions); None = that default.
        max_violation: Keep only the hardest negative per anchor (FG-CLIP's configs: False).
    """

    def __init__(
        self,
        kind: str = "hard_negatives",
        margin: float | None = None,
        max_violation: bool = False,
    ) -> None:
        super().__init__()
        if kind not in ("hard_negatives", "captions"):
            raise ValueError(f"triplet loss kind must be 'hard_negatives' or 'captions': {kind}")
        self.kind = kind
        self.margin = float(
            margin if margin is not None else (0.05 if kind == "hard_negatives" else 0.2)
        )
        self.max_violation = max_violation

    def forward(self, scores: Tensor, valid: Tensor | None = None) -> Tensor:
        """The loss; ``valid`` (N, C) bool marks real candidates (hard negatives only)."""
        if self.kind == "captions":
            if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
                raise ValueError(f"caption scores must be (N, N), got {tuple(scores.shape)}")
            diagonal = scores.diagonal()[:, None]
            eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
            cost_caption = (self.margin + scores - diagonal).clamp(min=0).masked_fill(eye, 0)
            cost_image = (self.margin + scores - diagonal.T).clamp(min=0).masked_fill(eye, 0)
            if self.max_violation:
                return cost_caption.max(1).values.sum() + cost_image.max(0).values.sum()
            return cost_caption.sum() + cost_image.sum()
        cost = (self.margin + scores - scores[:, :1]).clamp(min=0)
        drop = torch.zeros_like(cost, dtype=torch.bool)
        drop[:, 0] = True
        if valid is not None:
            drop |= ~valid
        cost = cost.masked_fill(drop, 0)
        return cost.max(1).values.sum() if self.max_violation else cost.sum()
