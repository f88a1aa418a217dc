"""Fine-grained matching with hard negatives: FG-OVD evaluation and FG-CLIP's re-projection.

Every object crop is scored against its own candidates (the positive sentence and its hard
negatives) and ranked by :class:`matbench.metrics.CandidateRankMetrics`. The CLIP towers are
frozen; what may train is a re-projection of their features:

- ``reproject="none"``: the model as it is (zero-shot open_clip, or a ClipMaterialTask
  checkpoint), scored by cosine -- FG-OVD's evaluation of CLIP;
- ``reproject="fgclip"``: FG-CLIP's ``linear-mlp`` (:class:`FGCLIPReProjection`: affine maps
  on raw features, ``sigmoid(cosine)``), trained with its hinge triplet loss; its released
  checkpoints load by path (``reprojection_weights``);
- ``reproject="linear"``: matbench's identity-started linear re-projection
  (:class:`matbench.models.clip.ReProjection`, scored by cosine), trained with the same loss.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from matbench.metrics import CandidateRankMetrics
from matbench.models.reprojection import FGCLIPReProjection, HingeTripletLoss
from matbench.tasks.base import BaseTask, EvalSteps
from matbench.tasks.clip import frozen_clip, load_clip_task_weights


class FineGrainedMatchingTask(EvalSteps, BaseTask):
    """Rank each object's positive sentence above its hard negatives (FG-OVD, FG-CLIP).

    Batches need ``image`` (N, 3, S, S) crops in [0, 1] and ``candidates`` (per object, the
    positive sentence then its negatives); the ``"captions"`` loss uses ``caption`` instead
    (so any captioned datamodule trains it); ``predict`` also uses ``key`` and ``index``.
    Text features are computed once per distinct sentence and kept (the towers are frozen).
    ``train/loss`` is FG-CLIP's batch sum; ``val/loss`` and ``test/loss`` are per object (the
    sum over all evaluated objects divided by their number), independent of batching.

    Args:
        model: open_clip architecture name or JSON config path (FG-CLIP: ViT-B-16).
        weights: open_clip tag or local file (FG-CLIP: ``openai``); None = random.
        text_tower: ``"open_clip"``, ``"minilm"``, ``"minilm-random"`` or a MiniLM folder.
        checkpoint: A ClipMaterialTask checkpoint whose model weights to evaluate (with the
            same model/text_tower settings; ``reproject="linear"`` for one trained with
            ``reproject: true``).
        reproject: ``"none"``, ``"fgclip"`` or ``"linear"`` (see the module docstring).
        reproject_image: FG-CLIP: map the image features (False = ``ve-freezed``).
        reproject_text: FG-CLIP: map the text features (False = ``te-freezed``).
        reprojection_weights: FG-CLIP ``linear-mlp`` checkpoint (or this task's re-projection
            state dict) to start from or evaluate; FG-CLIP starts its FG-OVD training from its
            caption-trained ``triplet_linear-mlp`` weights.
        cosine: FG-CLIP's scores use the cosine of the mapped features (False: dot product).
        sigmoid: FG-CLIP's scores pass through a sigmoid.
        loss: ``"hard_negatives"`` (image-anchored, FG-OVD data) or ``"captions"`` (in-batch,
            both directions).
        margin: Triplet margin; None = FG-CLIP's (0.05 hard negatives, 0.2 captions).
        max_violation: Only the hardest negative per anchor.
        max_negatives: Ranks reported for n = 1 ... this; None = the datamodule's
            ``reported_negatives`` (FG-CLIP: transparency 2, pattern 7, else 10).
        lr: Adam learning rate (FG-CLIP: 1e-5 on FG-OVD, 5e-5 on captions).
        text_cache_size: Most sentence features kept in memory (and in fit checkpoints, for
            exact resume: 262144 ViT-B/16 features are 0.5 GB).
    """

    monitor = "val/loss"
    mode = "min"
    renamed_arguments = {"pretrained": "weights"}

    def __init__(
        self,
        model: str = "ViT-B-16",
        weights: str | None = None,
        text_tower: str = "open_clip",
        checkpoint: str | None = None,
        reproject: Literal["none", "fgclip", "linear"] = "none",
        reproject_image: bool = True,
        reproject_text: bool = True,
        reprojection_weights: str | None = None,
        cosine: bool = True,
        sigmoid: bool = True,
        loss: Literal["hard_negatives", "captions"] = "hard_negatives",
        margin: float | None = None,
        max_violation: bool = False,
        max_negatives: int | None = None,
        lr: float = 1e-5,
        text_cache_size: int = 262_144,
    ) -> None:
        if reproject not in ("none", "fgclip", "linear"):
            raise ValueError(f"reproject must be 'none', 'fgclip' or 'linear', got '{reproject}'")
        if reprojection_weights is not None and reproject != "fgclip":
            raise ValueError("reprojection_weights are FG-CLIP weights: set reproject='fgclip'")
        #: Raw text-tower features by sentence (frozen tower: computed once per sentence).
        self.text_cache: dict[str, Tensor] = {}
        super().__init__()
        if checkpoint is not None:
            load_clip_task_weights(self.model, checkpoint, self.checkpoint_state(checkpoint))
        if reprojection_weights is not None:
            self.fgclip.load_fgclip(reprojection_weights)

    # -- template hooks ----------------------------------------------------------------------
    def configure_models(self) -> None:
        hp = self.hparams
        self.model = frozen_clip(
            hp.model, hp.weights, hp.text_tower, hp.checkpoint, reproject=hp.reproject == "linear"
        )
        self.fgclip = (
            FGCLIPReProjection(
                self.model.dim,
                image=hp.reproject_image,
                text=hp.reproject_text,
                cosine=hp.cosine,
                sigmoid=hp.sigmoid,
            )
            if hp.reproject == "fgclip"
            else None
        )

    def configure_losses(self) -> None:
        hp = self.hparams
        self.criterion = HingeTripletLoss(hp.loss, hp.margin, hp.max_violation)

    def build_metric(self, stage: str) -> CandidateRankMetrics:
        limit = self.hparams.max_negatives
        if limit is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            limit = getattr(datamodule, "reported_negatives", 10)
        return CandidateRankMetrics(max_negatives=int(limit))

    def memory_caches(self) -> dict[str, dict[str, Tensor]]:
        return {"fgovd_text": self.text_cache}

    def restore_memory_cache(self, name: str, entries: dict[str, Tensor]) -> None:
        if name == "fgovd_text":
            self.text_cache.update(entries)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                "FineGrainedMatchingTask has nothing to train with reproject='none' (the CLIP "
                "towers are frozen): use reproject='fgclip' or 'linear', or `matbench test`"
            )
        return torch.optim.Adam(params, lr=float(self.hparams.lr))

    # -- features ----------------------------------------------------------------------------
    @torch.no_grad()
    def text_features(self, sentences: list[str]) -> Tensor:
        """Raw text-tower features (M, D) of ``sentences``, each distinct sentence encoded
        once over the task's life."""
        todo = [s for s in dict.fromkeys(sentences) if s not in self.text_cache]
        if len(self.text_cache) + len(todo) > self.hparams.text_cache_size:
            self.text_cache.clear()
            todo = list(dict.fromkeys(sentences))
        for start in range(0, len(todo), 256):
            chunk = todo[start : start + 256]
            features = self.model.text(chunk).float().cpu()
            self.text_cache.update(zip(chunk, features, strict=True))
        if not sentences:
            return torch.zeros(0, self.model.dim, device=self.device)
        return torch.stack([self.text_cache[s] for s in sentences]).to(self.device)

    def embed(self, images: Tensor, sentences: list[str]) -> tuple[Tensor, Tensor]:
        """Image and text features in the scoring space (before the score function)."""
        image = self.model.encode_image(images, normalize=False).float()
        text = self.text_features(sentences)
        if self.model.reprojection is not None:
            text = self.model.reprojection.text(text)
        if self.fgclip is not None:
            image, text = self.fgclip.project_image(image), self.fgclip.project_text(text)
        return image, text

    def similarity(self, image: Tensor, text: Tensor) -> Tensor:
        """(N, M) scores: FG-CLIP's score function, else cosine."""
        if self.fgclip is not None:
            return self.fgclip.score(image, text)
        return F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T

    def candidate_scores(
        self, images: Tensor, candidates: list[list[str]]
    ) -> tuple[Tensor, Tensor]:
        """(N, C) scores of every object against its candidates (positive first), padded,
        and the (N, C) bool mask of real candidates."""
        if len(candidates) != images.shape[0]:
            raise ValueError(f"{len(candidates)} candidate lists for {images.shape[0]} images")
        if any(not c for c in candidates):
            raise ValueError("every object needs at least its positive sentence")
        unique = list(dict.fromkeys(s for c in candidates for s in c))
        column = {s: i for i, s in enumerate(unique)}
        image, text = self.embed(images, unique)
        scores = self.similarity(image, text)
        width = max(len(c) for c in candidates)
        index = torch.zeros(len(candidates), width, dtype=torch.long)
        valid = torch.zeros(len(candidates), width, dtype=torch.bool)
        for row, sentences in enumerate(candidates):
            index[row, : len(sentences)] = torch.tensor([column[s] for s in sentences])
            valid[row, : len(sentences)] = True
        index, valid = index.to(scores.device), valid.to(scores.device)
        return scores.gather(1, index), valid

    def caption_scores(self, images: Tensor, captions: list[str]) -> Tensor:
        """(N, N) scores of the batch's images against the batch's captions."""
        image, text = self.embed(images, list(captions))
        return self.similarity(image, text)

    def forward(self, images: Tensor) -> Tensor:
        """L2-normalised object embeddings in the scoring space."""
        image = self.model.encode_image(images, normalize=False).float()
        if self.fgclip is not None:
            image = self.fgclip.project_image(image)
        return F.normalize(image, dim=-1)

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if self.criterion.kind == "captions":
            loss = self.criterion(self.caption_scores(batch["image"], batch["caption"]))
        elif "candidates" not in batch:
            raise ValueError(
                "the hard-negative loss needs 'candidates' in every batch (FGOVDDataModule); "
                "use loss='captions' with captioned datamodules"
            )
        else:
            loss = self.criterion(*self.candidate_scores(batch["image"], batch["candidates"]))
        self.log("train/loss", loss, batch_size=batch["image"].shape[0], prog_bar=True)
        return loss

    def _eval_step(self, stage: str, batch: dict[str, Any], dataloader_idx: int) -> None:
        n = batch["image"].shape[0]
        if n == 0:
            return
        if "candidates" not in batch:
            raise ValueError("evaluation needs 'candidates' in every batch (FGOVDDataModule)")
        scores, valid = self.candidate_scores(batch["image"], batch["candidates"])
        loss = None
        if self.criterion.kind != "captions":
            loss = self.criterion(scores, valid)
        elif stage == "val":
            # contrastive over the per-rank batch: depends on the number of processes, so
            # kept for checkpoint monitoring and left out of the (exact) test output
            loss = self.criterion(self.caption_scores(batch["image"], batch["caption"]))
        if loss is not None:
            # per object: the training loss is a batch sum, but evaluation batches are whole
            # images, whose sizes vary (and differ under DDP); the mean per object does not.
            self.log_eval_loss(stage, loss / n, n)
        self.eval_metric(stage, dataloader_idx).update(scores.detach().float(), valid.sum(1))

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        return {
            "embeddings": self(batch["image"]).float().cpu(),
            "keys": [str(k) for k in batch["key"]],
            "index": torch.as_tensor(batch["index"]).cpu(),
        }
