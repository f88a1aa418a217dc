"""Two-stream material classification (frozen DINOv2 + description text → MLP), with a
feature cache so that, with frozen streams, later epochs only train the MLP."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from matbench.cache import FeatureCache
from matbench.errors import ConfigError
from matbench.models.two_stream import TwoStreamModel
from matbench.plots import save_confusion_matrix
from matbench.tasks.base import BaseTask, datamodule_class_names


def check_fits_data(task: TwoStreamTask, datamodule: Any) -> None:
    """ConfigError unless the task's classes and input size are the datamodule's: a 10-way
    head on 3 classes trains silently wrong, and labels past the head fail mid-epoch."""
    if datamodule is None:
        return
    h = task.hparams
    names = datamodule_class_names(datamodule)
    data_name = type(datamodule).__name__
    if names is not None and len(names) != h.num_classes:
        raise ConfigError(
            f"the model has num_classes={h.num_classes} but {data_name} has {len(names)} classes",
            hint=f"pass --model.num_classes {len(names)} (a checkpoint's class count is fixed: "
            "test it on data with the classes it was trained on)",
        )
    size = getattr(datamodule, "hparams", {}).get("image_size")
    if size is not None and h.streams != "text" and int(size) != int(h.image_size):
        raise ConfigError(
            f"the model was built for image_size={h.image_size} but {data_name} gives "
            f"{size}x{size} images",
            hint=f"pass --data.image_size {h.image_size} (or --model.image_size {size} when "
            "training a new model)",
        )


def default_cache_dir() -> Path:
    """The disk feature cache's default folder: ``$XDG_CACHE_HOME/matbench/features``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "matbench" / "features"


class TwoStreamTask(BaseTask):
    """Classify material regions from frozen ViT patch features pooled in the region's mask
    and the frozen text embedding of the region's appearance description.

    Batches hold ``image`` (B, 3, H, W), ``mask`` bool (B, H, W), ``label`` (B,) and
    ``description`` (B strings); see :class:`matbench.models.two_stream.TwoStreamModel`.

    Feature cache: when both streams are frozen (``freeze_backbone=True``) and ``feature_cache`` is
    not ``"off"``, each sample's stream features are computed once and reused (keyed by the
    model's weights and settings and the sample's dataset, split, key, file contents,
    preprocessing and description; see :mod:`matbench.cache`). It is attached to the
    datamodule's datasets, so that a cached sample is not even decoded. It is not used for
    the training set when the datamodule's ``augment`` is on (augmentation changes the input
    each epoch), nor at all with ``freeze_backbone=False``; a message says so.

    Args:
        num_classes: Number of material classes.
        backbone: timm ViT of the vision stream (DINOv2 ViT-S/14 by default).
        weights: Vision weights: None (random init), ``"timm"``, a timm tag or a local file.
        image_size: Input size the ViT's position embedding is built for.
        text_encoder: ``"minilm"`` (offline all-MiniLM-L6-v2), ``"minilm-random"`` or
            ``"open_clip:<arch>"``.
        text_weights: Text encoder weights (a MiniLM folder, or an open_clip tag/checkpoint).
        streams: ``"both"``, ``"vision"`` or ``"text"``.
        null_mask: Pool over all patches instead of the region's (ablation).
        patch_fraction: Fraction of a patch inside the mask for it to be pooled.
        freeze_backbone: Freeze the vision stream (True: frozen streams, only the MLP trains;
            False: the ViT is trained too). Replaces ``finetune: head|full``.
        hidden_dim: MLP hidden width.
        dropout: MLP dropout.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        lr_schedule: ``cosine`` (decay to 0 at the last step) or ``constant``, after warmup.
        warmup: Linear warmup: a fraction of the run's steps (< 1) or a number of steps.
        feature_cache: ``"memory"``, ``"disk"`` or ``"off"``.
        cache_dir: Folder of the disk cache (default ``$XDG_CACHE_HOME/matbench/features``,
            i.e. ``~/.cache/matbench/features``).
        top_k: k of the top-k accuracy.
    """

    # the task's arguments are its model's: the same renames
    renamed_arguments = TwoStreamModel.renamed_arguments

    def __init__(
        self,
        num_classes: int = 10,
        backbone: str = "vit_small_patch14_dinov2",
        weights: str | None = None,
        image_size: int = 224,
        text_encoder: str = "minilm",
        text_weights: str | None = None,
        streams: Literal["both", "vision", "text"] = "both",
        null_mask: bool = False,
        patch_fraction: float = 0.5,
        freeze_backbone: bool = True,
        hidden_dim: int = 512,
        dropout: float = 0.1,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup: float = 0.05,
        feature_cache: Literal["memory", "disk", "off"] = "memory",
        cache_dir: str | None = None,
        top_k: int = 5,
    ) -> None:
        super().__init__()
        #: The feature cache (created at the first fit/validate/test/predict), or None.
        self.cache: FeatureCache | None = None
        #: Why the cache is not used, or not for every split (None when it is fully used).
        self.cache_disabled_reason: str | None = None
        # Memory-cache entries from the checkpoint a fit resumes from, by cache name.
        self._restored_caches: dict[str, dict[str, Tensor]] = {}

    # -- template hooks ------------------------------------------------------------------------
    def configure_models(self) -> None:
        h = self.hparams
        if h.feature_cache not in ("memory", "disk", "off"):
            raise ValueError(f"feature_cache must be memory, disk or off, got '{h.feature_cache}'")
        self.model = TwoStreamModel(
            num_classes=h.num_classes,
            backbone=h.backbone,
            weights=h.weights,
            image_size=h.image_size,
            text_encoder=h.text_encoder,
            text_weights=h.text_weights,
            streams=h.streams,
            null_mask=h.null_mask,
            patch_fraction=h.patch_fraction,
            freeze_backbone=h.freeze_backbone,
            hidden_dim=h.hidden_dim,
            dropout=h.dropout,
        )

    def configure_losses(self) -> None:
        self.criterion = nn.CrossEntropyLoss()

    def build_metric(self, stage: str) -> Metric:
        from matbench.metrics import ClassificationMetrics

        return ClassificationMetrics(self.hparams.num_classes, top_k=self.hparams.top_k)

    @property
    def model_name(self) -> str:
        h = self.hparams
        name = f"two_stream[{h.streams}]:{h.backbone}+{h.text_encoder}"
        return (
            name
            + (":null_mask" if h.null_mask else "")
            + (":full" if not h.freeze_backbone else "")
        )

    def configure_callbacks(self) -> list[Any]:
        callbacks = list(super().configure_callbacks())
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == "predict":
            from lightning.pytorch.callbacks import BasePredictionWriter

            from matbench.prediction import ClassProbabilityWriter

            if not any(isinstance(c, BasePredictionWriter) for c in trainer.callbacks):
                callbacks.append(ClassProbabilityWriter())
        return callbacks

    def setup(self, stage: str) -> None:
        check_fits_data(self, getattr(self.trainer, "datamodule", None))

    # -- feature cache -------------------------------------------------------------------------
    def _setup_cache(self, refresh: bool = True) -> None:
        """Create the cache (again if the frozen weights changed) and attach it to the
        datamodule's datasets."""
        h = self.hparams
        if h.feature_cache == "off":
            self.cache_disabled_reason = "feature_cache is 'off'"
            return
        if not self.model.frozen:
            if self.cache_disabled_reason is None:
                self.cache_disabled_reason = "freeze_backbone=False trains the backbone"
                warnings.warn(
                    "feature cache not used: freeze_backbone=False trains the backbone",
                    stacklevel=2,
                )
            return
        if self.cache is None or refresh:
            # the weights may have changed since (a checkpoint loaded for test/predict)
            model_id = self.model.cache_id()
            if self.cache is None or self.cache.model_id != model_id:
                directory = None
                if h.feature_cache == "disk":
                    directory = Path(h.cache_dir or default_cache_dir()).expanduser()
                self.cache = FeatureCache(model_id, directory=directory)
                restored = self._restored_caches.pop(self._cache_name(model_id), None)
                if restored is not None:
                    self.cache.update(restored)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(type(datamodule), "use_feature_cache"):
            self.cache_disabled_reason = "no matbench datamodule: datasets cannot be fingerprinted"
            return
        served = datamodule.use_feature_cache(self.cache)
        if "train" not in served and datamodule.augment and datamodule.train_dataset is not None:
            if self.cache_disabled_reason is None:
                self.cache_disabled_reason = "training-time augmentation changes the input"
                warnings.warn(
                    "feature cache not used for training: the datamodule's augmentation "
                    "changes the input every epoch",
                    stacklevel=2,
                )

    @staticmethod
    def _cache_name(model_id: str) -> str:
        return f"features:{model_id}"

    def memory_caches(self) -> dict[str, dict[str, Tensor]]:
        # A disk cache persists by itself.
        if self.cache is None or self.cache.directory is not None:
            return {}
        return {self._cache_name(self.cache.model_id): self.cache.entries}

    def restore_memory_cache(self, name: str, entries: dict[str, Tensor]) -> None:
        # The cache is created at fit start, after the checkpoint is loaded.
        self._restored_caches[name] = entries

    def on_fit_start(self) -> None:
        self._setup_cache()

    def on_validation_start(self) -> None:
        # every epoch during fit: the identity was checked at fit start
        self._setup_cache(refresh=self.trainer.state.fn != "fit")

    def on_test_start(self) -> None:
        self._setup_cache()

    def on_predict_start(self) -> None:
        self._setup_cache()

    def stream_features(self, batch: dict[str, Any]) -> Tensor:
        """The batch's stream features, from the cache where possible."""
        descriptions = list(batch["description"])
        if "cached" not in batch or self.cache is None:
            return self.model.features(batch.get("image"), batch.get("mask"), descriptions)
        cache = self.cache
        cached: Tensor = batch["cached"]
        n = cached.numel()
        rows: list[Tensor | None] = [None] * n
        if bool(cached.any()):
            for pos, row in zip(
                torch.nonzero(cached).flatten().tolist(), batch["features"], strict=True
            ):
                rows[pos] = row
        fresh = torch.nonzero(~cached).flatten().tolist()
        hits = int(cached.sum())
        compute: list[int] = []  # indices into the image rows
        for image_row, pos in enumerate(fresh):
            found = cache.lookup(batch["fingerprint"][pos])
            if found is None:
                compute.append(image_row)
            else:
                rows[pos] = found.to(self.device)
                hits += 1
        cache.hits += hits
        cache.misses += len(compute)
        if compute:
            sel = torch.tensor(compute, device=self.device)
            with torch.no_grad():
                new = self.model.features(
                    batch["image"].index_select(0, sel),
                    batch["mask"].index_select(0, sel),
                    [descriptions[fresh[i]] for i in compute],
                )
            for i, feats in zip(compute, new, strict=True):
                cache.put(batch["fingerprint"][fresh[i]], feats)
                rows[fresh[i]] = feats
        return torch.stack([r.to(self.device, torch.float32) for r in rows])

    # -- steps ---------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> Tensor:
        return self.model.classify(self.stream_features(batch))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch)
        loss = self.criterion(logits, batch["label"])
        n = logits.shape[0]
        self.log("train/loss", loss, batch_size=n, prog_bar=True)
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        self.log("train/accuracy", acc, batch_size=n)
        return loss

    def _eval_step(self, stage: str, batch: dict[str, Any], dataloader_idx: int) -> Tensor:
        logits = self(batch)
        loss = self.criterion(logits, batch["label"])
        self.log_eval_loss(stage, loss, logits.shape[0])
        self.eval_metric(stage, dataloader_idx).update(logits, batch["label"])
        return loss

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        return self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._eval_step("test", batch, dataloader_idx)

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        logits = self(batch)
        probs = logits.softmax(1)
        return {
            "key": list(batch["key"]),
            "logits": logits,
            "probs": probs,
            "pred": probs.argmax(1),
        }

    # -- results -------------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        if self.cache is not None:
            self.log_dict(
                {"cache/hits": float(self.cache.hits), "cache/misses": float(self.cache.misses)}
            )

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        # log_dir broadcasts from rank 0: every rank must ask for it
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        if not self.trainer.is_global_zero:
            return
        names = datamodule_class_names(self.trainer.datamodule)
        results = self.results.get("test", [])
        for idx, metrics in enumerate(results):
            matrix = metrics.get("confusion_matrix")
            if matrix is None:
                continue
            suffix = "" if len(results) == 1 else f"_{self.dataloader_name('test', idx)}"
            path = out_dir / f"confusion_matrix_test{suffix}.png"
            save_confusion_matrix(matrix, path, names, title=f"{self.model_name} — test")
            metrics["confusion_matrix_png"] = str(path)
            writer = self.tensorboard()
            if writer is not None:
                from PIL import Image

                pixels = np.asarray(Image.open(path).convert("RGB"))
                writer.add_image(f"test/confusion_matrix{suffix}", pixels, dataformats="HWC")
