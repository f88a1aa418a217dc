"""Prompted segmenters (SAM, SAM 2, your own) on the MatSeg benchmark and the point-prompt IoU
protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from matbench.metrics import MatSegMetrics
from matbench.metrics.region_iou import RegionIoU
from matbench.models.prompted import Multimask, build_prompted_segmenter
from matbench.prompts import PromptRule, region_prompt, triplet_prompts
from matbench.tasks.base import BaseTask
from matbench.tasks.matseg import MatSegPredictionWriter, eval_protocol, protocol_test_step


def mask_similarity(masks: Tensor, points: Tensor) -> Tensor:
    """Hard-segmentation similarity (MatSeg paper): ``s(a, b) = 1`` when point ``b``'s centre
    lies in the mask prompted from anchor ``a``, else 0.

    Args:
        masks: (N, H, W) bool, one mask per anchor.
        points: (N, 3) integer ``x, y, r``.

    Returns:
        (N, N) float32, row ``a`` = anchor ``a``.
    """
    xy = points[:, :2].long().to(masks.device)
    return masks[:, xy[:, 1], xy[:, 0]].float()


class PromptedMatSegTask(BaseTask):
    """A prompted segmenter evaluated on the MatSeg benchmark (triplet accuracy) or on labelled
    regions (point-prompt IoU). Nothing to train: run ``matbench test`` directly.

    Triplet benchmark: every annotated point is an anchor once; its prompt is built by
    :func:`~matbench.prompts.triplet_prompts` (the anchor plus N−1 seeded further points,
    positive in the anchor's group and negative elsewhere with the ``mixed`` rule); the mask's
    verdict on every point's centre is the similarity row (:func:`mask_similarity`), so ties are
    common and the triplet metric's tie rule (a tie counts half) applies. All prompts of an
    image go through the model together: the image is encoded once.

    Point-prompt IoU: one prompt per ground-truth region (:func:`~matbench.prompts.region_prompt`);
    the mask is compared with the region (:class:`~matbench.metrics.region_iou.RegionIoU`).

    Args:
        model: ``sam``, ``sam2`` or the dotted path of a
            :class:`~matbench.models.prompted.PromptedSegmenter` subclass.
        weights: Hugging Face model name or local folder (``save_pretrained``); None = random
            init.
        config: With ``weights=None``: a model config file or folder (e.g. a tiny test model).
        num_points: Points per prompt (the paper's SAM rows: 1, 2, 4, 8).
        prompt_rule: ``mixed`` or ``positive`` (:mod:`matbench.prompts`).
        prompt_seed: Seed of the prompt draws.
        multimask: ``auto``, ``always`` or ``never`` (:class:`~matbench.models.prompted.HFSamSegmenter`).
        prompt_batch_size: Prompts decoded at once.
        predict_dir: Folder of the predict ``.npz`` files (``points``, ``groups``,
            ``similarity``); a relative folder is under the run's log folder.
    """

    def __init__(
        self,
        model: str = "sam",
        weights: str | None = None,
        config: str | None = None,
        num_points: int = 1,
        prompt_rule: PromptRule = "mixed",
        prompt_seed: int = 0,
        multimask: Multimask = "auto",
        prompt_batch_size: int = 64,
        predict_dir: str = "predictions/prompted",
    ) -> None:
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        super().__init__(ignore=["predict_dir"])
        self.predict_dir = predict_dir

    def configure_models(self) -> None:
        hp = self.hparams
        self.model = build_prompted_segmenter(
            hp.model, hp.weights, hp.config, hp.multimask, hp.prompt_batch_size
        )

    @property
    def model_name(self) -> str:
        name = str(self.hparams.model).rsplit(".", 1)[-1]
        return f"{name} {self.hparams.num_points}pt"

    def build_metric(self, stage: str) -> Metric | None:
        if stage != "test":
            return None
        return RegionIoU(None) if eval_protocol(self) == "region_iou" else MatSegMetrics()

    def configure_callbacks(self) -> list[Any]:
        return [MatSegPredictionWriter(self.predict_dir)]

    def configure_optimizers(self) -> Any:
        raise ValueError(
            f"the prompted model '{self.hparams.model}' is evaluated zero-shot: run "
            "`matbench test` with it directly"
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self.configure_optimizers()

    def forward(self, image: Tensor, points: Tensor, labels: Tensor) -> Tensor:
        """(3, H, W), (P, K, 2), (P, K) → (P, H, W) bool masks."""
        return self.model(image, points, labels)

    def point_similarity(self, image: Tensor, points: Tensor, groups: Tensor, key: str) -> Tensor:
        """The (N, N) hard similarity of the benchmark points of one image."""
        hp = self.hparams
        coords, labels = triplet_prompts(
            points, groups, hp.num_points, hp.prompt_seed, key, hp.prompt_rule
        )
        return mask_similarity(self(image, coords, labels), points)

    def region_masks(self, image: Tensor, regions: Tensor, key: str) -> Tensor:
        """One predicted mask (R, H, W) per region, from its seeded prompt."""
        hp = self.hparams
        if regions.shape[0] == 0:
            return regions.bool()
        prompts = [
            region_prompt(region, hp.num_points, hp.prompt_seed, key, i, hp.prompt_rule)
            for i, region in enumerate(regions)
        ]
        coords = torch.stack([c for c, _ in prompts])
        labels = torch.stack([lab for _, lab in prompts])
        return self(image, coords, labels)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        protocol_test_step(
            self.eval_metric("test", dataloader_idx),
            batch,
            self.region_masks,
            lambda i, image: self.point_similarity(
                image, batch["points"][i], batch["groups"][i], batch["key"][i]
            ),
        )

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, Any]]:
        if "points" not in batch:
            raise ValueError("PromptedMatSegTask predicts on the MatSeg benchmark (points) only")
        out = []
        for i, image in enumerate(batch["image"]):
            points, groups, key = batch["points"][i], batch["groups"][i], batch["key"][i]
            similarity = self.point_similarity(image, points, groups, key)
            out.append(
                {
                    "key": key,
                    "points": points.cpu().numpy(),
                    "groups": groups.cpu().numpy(),
                    "similarity": similarity.cpu().numpy().astype(np.float32),
                }
            )
        return out
