"""Dense material segmentation (DMS46): a segmenter per pixel, the official DMS metrics."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchmetrics import Metric

from matbench.errors import ConfigError
from matbench.metrics import SegmentationMetrics
from matbench.metrics.functional import class_ids
from matbench.models.segmentation import (
    Mask2FormerSegmenter,
    SegmenterName,
    build_segmenter,
    resized_scores,
    sliding_scores,
)
from matbench.prediction import PerSampleWriter
from matbench.tasks.base import BaseTask, EvalSteps, datamodule_class_names


def train_ids_to_dms(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """DMS46 train ids (0..45) → DMS taxonomy indices, the label format of the release;
    other label spaces (``num_classes`` ≠ 46) keep their ids."""
    from matbench.datasets.dms import DMS46_INDICES

    if num_classes != len(DMS46_INDICES):
        return label_map.astype(np.uint8)
    return np.asarray(DMS46_INDICES, dtype=np.uint8)[label_map]


class LabelMapWriter(PerSampleWriter):
    """Writes each predicted label map as ``<output_dir>/<key>.png`` (key ``<split>/<stem>``),
    single channel, at the image's own size: DMS taxonomy indices for DMS46 models (the
    release's label format, readable by :func:`matbench.datasets.dms.read_label`), the
    model's class ids otherwise.

    Args:
        output_dir: Folder of the PNG files (created).
    """

    def write_item(self, item: dict[str, Any], pl_module: Any) -> None:
        path = self.output_dir / f"{item['key']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = train_ids_to_dms(item["labels"], pl_module.hparams.num_classes)
        Image.fromarray(labels, mode="L").save(path)


class DenseMaterialTask(EvalSteps, BaseTask):
    """Per-pixel material classes (DMS46 by default) on ``DMSDataModule(mode="dense")``.

    Training: the segmenter's own loss (pixel cross-entropy for DeepLab, the Hungarian-matched
    mask and class losses for Mask2Former) on the training crops. Validation and test: the
    image is segmented at the configured size (``resize``: longer side ``inference_size``,
    aspect kept, as the release's ``inference.py``; ``slide``: shorter side
    ``inference_size``, ``window`` crops every ``stride`` pixels, scores averaged), the
    scores are upsampled to the label map and
    :class:`~matbench.metrics.SegmentationMetrics` (pixel accuracy, mean class accuracy,
    mIoU, per-class IoU, and the release script's values for absent classes) is exact under
    DDP. Use the datamodule's ``eval_full_size`` to score the full-resolution label maps.
    Predict writes PNG label maps (:class:`LabelMapWriter`).

    Args:
        model: ``mask2former`` (``transformers``) or ``deeplabv3plus`` / ``deeplabv3``
            (segmentation_models_pytorch).
        backbone: DeepLab encoder: an smp name (``resnet50``) or ``tu-<timm model>``.
        weights: Mask2Former: a Hub name or local folder; DeepLab: encoder weights (an smp
            tag such as ``imagenet``, or a local file); None = random init.
        config: Mask2Former with ``weights`` None: a config JSON (or folder) for random init.
        num_classes: Classes of the label maps (46 for DMS46).
        ignore_index: Label value of unscored pixels.
        inference: ``resize`` or ``slide`` (see above).
        inference_size: Longer (``resize``) or shorter (``slide``) side the model sees.
        window: ``slide``: crop side.
        stride: ``slide``: step between crops (default two thirds of ``window``).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        lr_schedule: ``cosine`` or ``constant`` after warmup.
        warmup: Linear warmup: a fraction of the run (< 1) or a number of steps.
        predict_dir: Folder of the predicted PNG label maps (not saved in checkpoints); a
            relative folder is under the run's log folder.
    """

    monitor = "val/miou"
    mode = "max"

    def __init__(
        self,
        model: SegmenterName = "deeplabv3plus",
        backbone: str = "resnet50",
        weights: str | None = None,
        config: str | None = None,
        num_classes: int = 46,
        ignore_index: int = 255,
        inference: Literal["resize", "slide"] = "resize",
        inference_size: int = 512,
        window: int = 512,
        stride: int | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup: float = 0.0,
        predict_dir: str = "predictions/dense",
    ) -> None:
        if inference not in ("resize", "slide"):
            raise ConfigError(f"inference must be 'resize' or 'slide', got '{inference}'")
        if inference_size < 1 or window < 1:
            raise ConfigError("inference_size and window must be >= 1")
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        self.predict_dir = predict_dir
        super().__init__(ignore=["predict_dir"])

    def configure_models(self) -> None:
        hp = self.hparams
        self.model = build_segmenter(
            hp.model, hp.backbone, hp.weights, hp.get("config"), hp.num_classes
        )

    def architecture_configs(self) -> dict[str, dict[str, Any]]:
        # A Mask2Former loaded from named weights takes its shape from their config.
        if isinstance(self.model, Mask2FormerSegmenter):
            return {"config": self.model.net.config.to_dict()}
        return {}

    def setup(self, stage: str) -> None:
        # Label ids beyond the model's classes would fail deep in the metric: say it here.
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        names = datamodule_class_names(datamodule)
        if names is not None and len(names) != self.hparams.num_classes:
            raise ConfigError(
                f"DenseMaterialTask has num_classes={self.hparams.num_classes} but the label "
                f"maps of {type(datamodule).__name__} ('{datamodule.hparams.get('root')}') have "
                f"{len(names)} classes",
                hint=f"set --model.num_classes {len(names)}",
            )

    @property
    def model_name(self) -> str:
        hp = self.hparams
        return str(hp.model) if hp.model == "mask2former" else f"{hp.model} {hp.backbone}"

    def build_metric(self, stage: str) -> Metric | None:
        return SegmentationMetrics(self.hparams.num_classes, ignore_index=self.hparams.ignore_index)

    def configure_callbacks(self) -> list[Any]:
        return [*super().configure_callbacks(), LabelMapWriter(self.predict_dir)]

    def protocol(self) -> dict[str, Any]:
        hp = self.hparams
        info: dict[str, Any] = {"inference": hp.inference, "inference_size": hp.inference_size}
        if hp.inference == "slide":
            info.update(window=hp.window, stride=self.stride)
        return info

    @property
    def stride(self) -> int:
        stride = self.hparams.get("stride")
        return int(stride) if stride is not None else max(1, 2 * int(self.hparams.window) // 3)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, C, H, W) class scores by the configured inference."""
        hp = self.hparams
        if hp.inference == "slide":
            return sliding_scores(self.model, image, hp.inference_size, hp.window, self.stride)
        return resized_scores(self.model, image, hp.inference_size)

    def probabilities(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, C, H, W) class probabilities (see :meth:`forward`)."""
        return self.model.probabilities(self(image))

    def segment(self, images: Tensor | list[Tensor]) -> list[Tensor]:
        """Class scores (C, H, W) of each image at its own size: one forward for a stacked
        batch, one per image for a list of images of different sizes."""
        if isinstance(images, Tensor):
            return list(self(images))
        return [self(image.unsqueeze(0))[0] for image in images]

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        image, target = batch["image"], batch["mask"]
        if not isinstance(image, Tensor):
            raise ConfigError(
                "DenseMaterialTask trains on batches of one size: set the datamodule's image_size"
            )
        loss, _ = self.model.loss(image, target, self.hparams.ignore_index)
        self.log("train/loss", loss, prog_bar=True, batch_size=image.shape[0])
        return loss

    def _eval_step(self, stage: str, batch: dict[str, Any], dataloader_idx: int) -> None:
        metric = self.eval_metric(stage, dataloader_idx)
        for scores, target in zip(self.segment(batch["image"]), batch["mask"], strict=True):
            metric.update(class_ids(scores, 0).unsqueeze(0), target.unsqueeze(0))

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, Any]]:
        out = []
        for scores, key in zip(self.segment(batch["image"]), batch["key"], strict=True):
            labels = class_ids(scores, 0).to(torch.uint8 if scores.shape[0] <= 256 else torch.int32)
            out.append({"key": str(key), "labels": labels.cpu().numpy()})
        return out
