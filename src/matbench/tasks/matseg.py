"""MatSeg: class-agnostic material-state descriptors per pixel, trained on soft-mask scenes and
evaluated on the point benchmark with the triplet metric."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from matbench.metrics import MatSegMetrics
from matbench.metrics.region_iou import DEFAULT_THRESHOLDS, RegionIoU
from matbench.models.losses import matseg_loss  # noqa: F401 - also re-exported
from matbench.models.matseg import MatSegUNet, build_descriptor_model
from matbench.prediction import PerSampleWriter
from matbench.prompts import PromptRule, region_prompt
from matbench.tasks.base import BaseTask


def eval_protocol(task: BaseTask) -> str:
    """``triplet`` (the MatSeg benchmark) or ``region_iou`` (point-prompt IoU), from the
    ``protocol`` attribute of the trainer's datamodule (``triplet`` when it has none)."""
    trainer = task._trainer
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    return str(getattr(datamodule, "protocol", "triplet"))


def protocol_test_step(
    metric: Metric,
    batch: dict[str, Any],
    region_output: Callable[[Tensor, Tensor, str], Tensor],
    point_similarity: Callable[[int, Tensor], Tensor],
) -> None:
    """One test batch of either protocol: region samples (``regions`` key) go to
    ``region_output(image, regions, key)`` (similarity maps or masks) and a
    :class:`~matbench.metrics.region_iou.RegionIoU`; benchmark samples to
    ``point_similarity(i, image)`` ((N, N)) and the triplet metric."""
    if "regions" in batch:
        for image, regions, key, split in zip(
            batch["image"], batch["regions"], batch["key"], batch["split"], strict=True
        ):
            regions = regions.to(image.device)
            metric.update(region_output(image, regions, key), regions, split)
        return
    for i, image in enumerate(batch["image"]):
        similarity = point_similarity(i, image)
        metric.update(
            similarity.float(),
            batch["weight"][i].to(similarity.device),
            batch["groups"][i].to(similarity.device),
            bool(batch["has_relations"][i]),
        )


def point_descriptors(descriptors: Tensor, points: Tensor) -> Tensor:
    """Point descriptors: sum of the unit pixel vectors in each disk, L2-normalised.

    Args:
        descriptors: (D, H, W) unit descriptor map.
        points: (N, 3) integer ``x, y, r``; the disk is ``(u-x)² + (v-y)² <= r²``.

    Returns:
        (N, D) unit vectors.
    """
    _, height, width = descriptors.shape
    out = []
    for x, y, r in points.tolist():
        y0, y1 = max(0, y - r), min(height, y + r + 1)
        x0, x1 = max(0, x - r), min(width, x + r + 1)
        vv = torch.arange(y0, y1, device=descriptors.device).view(-1, 1)
        uu = torch.arange(x0, x1, device=descriptors.device).view(1, -1)
        disk = ((uu - x) ** 2 + (vv - y) ** 2 <= r * r).to(descriptors.dtype)
        out.append((descriptors[:, y0:y1, x0:x1] * disk).sum((1, 2)))
    return F.normalize(torch.stack(out), dim=1)


class MatSegPredictionWriter(PerSampleWriter):
    """Writes one ``<key>.npz`` per predicted sample into ``output_dir``.

    Each file holds ``descriptors`` (D, H, W) float16 when the task writes maps, and
    ``points``, ``groups``, ``point_descriptors`` (N, D) and ``similarity`` (N, N) for benchmark
    samples.

    Args:
        output_dir: Folder of the ``.npz`` files (created); a relative folder is under the
            run's log folder (`matbench.prediction.resolve_output`).
    """

    def write_item(self, item: dict[str, Any], pl_module: Any) -> None:
        key = str(item["key"]).replace("/", "_")
        arrays = {k: v for k, v in item.items() if k != "key"}
        np.savez_compressed(self.output_dir / f"{key}.npz", **arrays)


class MatSegTask(BaseTask):
    """Per-pixel material-state descriptors (MatSeg, Eppel et al., NeurIPS 2024).

    Training (on :class:`~matbench.datamodules.matseg.MatSegDataModule` scenes) uses
    :func:`matseg_loss`; validation reports the same loss on held-out scenes. Test follows the
    published benchmark protocol: the descriptor map at the (resized) image size, unit per pixel,
    point descriptors from disk sums, cosine similarity, and :class:`MatSegMetrics` ("all" and
    "soft" triplet accuracy). Predict writes ``.npz`` files (see
    :class:`MatSegPredictionWriter`).

    ``model="rgb"``, ``"random"`` and ``"dense"`` are baselines without trainable weights, and
    ``"official"`` with ``weights`` is the released MatSeg net: run ``matbench test`` with them
    directly, no checkpoint needed.

    Args:
        model: ``unet`` (:class:`~matbench.models.matseg.MatSegUNet`), ``rgb``, ``random``,
            ``dense`` (:class:`~matbench.models.dense.DenseFeatureDescriptor`, frozen
            foundation-model patch features) or ``official``
            (:class:`~matbench.models.matseg_official.OfficialMatSegNet`).
        backbone: ``unet``: smp encoder, e.g. ``tu-convnext_atto`` (any timm model as ``tu-``);
            ``dense``: a timm ViT (e.g. ``vit_small_patch14_dinov2``), ``open_clip:<arch>`` or
            ``hf:<name or folder>`` (a ``transformers`` ViT);
            ``official``: ``convnext_base`` (the release) or a smaller variant.
        backbone_weights: Pretrained backbone weights (``unet``, ``dense``): hub name or tag,
            local file path, or None.
        backbone_depth: ``unet``: encoder stages used, 1 to 5 (see
            :class:`~matbench.models.matseg.MatSegUNet`).
        weights: Weights of the whole ``official`` net: the released checkpoint's path.
        descriptor_dim: Descriptor channels (``unet``, ``official``, ``random``).
        image_size: ``dense``: longest side a timm ViT sees (None = the image's own size).
        temperature: Softmax temperature of the loss.
        loss_target: ``soft`` fractions (the released training code) or the paper's ``hard``
            target (argmax of the soft maps), see :func:`matseg_loss`.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        lr_schedule: ``cosine`` (decay to 0 at the last step) or ``constant``, after warmup.
        warmup: Linear warmup: a fraction of the run's steps (< 1) or a number of steps.
        seed: Seed of the random baseline.
        num_points: Point-prompt IoU protocol: points per region prompt; the query descriptor is
            the normalised sum of the positive points' pixel descriptors.
        prompt_rule: ``mixed`` or ``positive`` (:mod:`matbench.prompts`).
        prompt_seed: Seed of the prompt draws.
        iou_threshold: Point-prompt IoU protocol: a fixed similarity threshold, or None to
            choose it on the validation images (:class:`~matbench.metrics.region_iou.RegionIoU`).
        predict_output: What predict writes: ``points`` (point descriptors and similarity, for
            benchmark samples), ``map`` (descriptor maps, float16) or ``both``.
        predict_dir: Folder of the predict ``.npz`` files; a relative folder is under the
            run's log folder, beside the other predict outputs.

    ``predict_output`` and ``predict_dir`` are not saved as hyperparameters.
    """

    # the U-Net's renames (its backbone arguments are the task's)
    renamed_arguments = MatSegUNet.renamed_arguments

    def __init__(
        self,
        model: Literal["unet", "rgb", "random", "dense", "official"] = "unet",
        backbone: str = "tu-convnext_atto",
        backbone_weights: str | None = None,
        backbone_depth: int = 5,
        weights: str | None = None,
        descriptor_dim: int = 128,
        image_size: int | None = None,
        temperature: float = 0.2,
        loss_target: Literal["soft", "hard"] = "soft",
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup: float = 0.05,
        seed: int = 0,
        num_points: int = 1,
        prompt_rule: PromptRule = "mixed",
        prompt_seed: int = 0,
        iou_threshold: float | None = None,
        predict_output: Literal["points", "map", "both"] = "points",
        predict_dir: str = "predictions/matseg",
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if loss_target not in ("soft", "hard"):
            raise ValueError(f"loss_target must be 'soft' or 'hard', got {loss_target!r}")
        # Output options are not saved in checkpoints, so that predict can set them afresh
        # (LightningCLI applies a checkpoint's hyperparameters over the command line).
        super().__init__(ignore=["predict_output", "predict_dir"])
        self.predict_output = predict_output
        self.predict_dir = predict_dir

    def configure_models(self) -> None:
        hp = self.hparams
        self.model = build_descriptor_model(
            hp.model,
            hp.backbone,
            hp.backbone_weights,
            hp.descriptor_dim,
            hp.seed,
            hp.get("weights"),
            hp.get("image_size"),
            hp.get("backbone_depth", 5),
        )

    @property
    def model_name(self) -> str:
        hp = self.hparams
        if hp.model == "dense":
            return f"dense {hp.backbone}"
        if hp.model == "official":
            return "matseg official" + ("" if hp.backbone == "convnext_base" else f" {hp.backbone}")
        return str(hp.model)

    def build_metric(self, stage: str) -> Metric | None:
        if stage != "test":
            return None
        if eval_protocol(self) == "region_iou":
            threshold = self.hparams.get("iou_threshold")
            return RegionIoU(DEFAULT_THRESHOLDS if threshold is None else (float(threshold),))
        return MatSegMetrics()

    def configure_callbacks(self) -> list[Any]:
        callbacks = list(super().configure_callbacks())
        callbacks.append(MatSegPredictionWriter(self.predict_dir))
        return callbacks

    def configure_optimizers(self) -> Any:
        if self.hparams.model not in ("unet", "official"):
            raise ValueError(
                f"the '{self.hparams.model}' baseline has no weights to train: run `matbench test` "
                "with it directly"
            )
        return super().configure_optimizers()

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, D, H, W) unit descriptors."""
        return self.model(image)

    # -- training on scenes -----------------------------------------------------------------
    def _scene_loss(self, batch: dict[str, Any]) -> tuple[Tensor, int]:
        descriptors = self(batch["image"])
        return matseg_loss(
            descriptors,
            batch["fractions"],
            batch["valid"],
            batch["roi"],
            self.hparams.temperature,
            self.hparams.get("loss_target", "soft"),
            return_scored=True,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, _ = self._scene_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, scored = self._scene_loss(batch)
        self.log_eval_loss("val", loss, batch["image"].shape[0], scored=scored)

    # -- benchmark ----------------------------------------------------------------------------
    def descriptor_map(self, image: Tensor) -> Tensor:
        """(3, H, W) image → (D, H, W) unit descriptors at the image's size."""
        desc = self(image.unsqueeze(0))
        if desc.shape[-2:] != image.shape[-2:]:
            desc = F.interpolate(desc, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return F.normalize(desc[0], dim=0)

    def point_similarity(self, image: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Descriptor map, point descriptors and their (N, N) cosine similarity."""
        desc = self.descriptor_map(image)
        pts = point_descriptors(desc, points)
        return desc, pts, pts @ pts.T

    def region_scores(self, image: Tensor, regions: Tensor, key: str) -> Tensor:
        """Point-prompt IoU protocol: one similarity map (R, H, W) per region, to the query
        descriptor of its prompt's positive points."""
        hp = self.hparams
        desc = self.descriptor_map(image)
        maps = []
        for index, region in enumerate(regions):
            coords, labels = region_prompt(
                region, hp.num_points, hp.prompt_seed, key, index, hp.prompt_rule
            )
            xy = coords[labels == 1].long()
            query = F.normalize(desc[:, xy[:, 1], xy[:, 0]].sum(1), dim=0)
            maps.append(torch.einsum("d,dhw->hw", query, desc))
        return torch.stack(maps) if maps else desc.new_zeros(0, *desc.shape[-2:])

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        def similarity(i: int, image: Tensor) -> Tensor:
            desc, _, sim = self.point_similarity(image, batch["points"][i])
            if batch_idx < 4 and i == 0:
                self._log_similarity_map(image, desc, batch["points"][i], batch_idx)
            return sim

        protocol_test_step(
            self.eval_metric("test", dataloader_idx), batch, self.region_scores, similarity
        )

    def _log_similarity_map(self, image: Tensor, desc: Tensor, points: Tensor, index: int) -> None:
        """The image beside the similarity of every pixel to its first point, in TensorBoard."""
        writer = self.tensorboard()
        if writer is None or len(points) == 0:
            return
        anchor = point_descriptors(desc, points[:1])[0]
        similarity = (torch.einsum("d,dhw->hw", anchor, desc).clamp(-1, 1) + 1) / 2
        panel = torch.cat([image.float().cpu(), similarity.cpu().expand(3, -1, -1)], dim=2)
        writer.add_image(f"test/similarity_map_{index}", panel.clamp(0, 1), self.global_step)

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, Any]]:
        mode = self.predict_output
        images = batch["image"]
        out = []
        for i in range(len(images)):
            item: dict[str, Any] = {"key": batch["key"][i]}
            desc = self.descriptor_map(images[i])
            if mode in ("map", "both") or "points" not in batch:
                item["descriptors"] = desc.cpu().numpy().astype(np.float16)
            if mode in ("points", "both") and "points" in batch:
                points = batch["points"][i]
                pts = point_descriptors(desc, points)
                item["points"] = points.cpu().numpy()
                item["groups"] = batch["groups"][i].cpu().numpy()
                item["point_descriptors"] = pts.cpu().numpy()
                item["similarity"] = (pts @ pts.T).cpu().numpy()
            out.append(item)
        return out
