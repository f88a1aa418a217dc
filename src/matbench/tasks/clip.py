"""CLIP fine-tuning for open-vocabulary material embeddings, and zero-shot classification.

Retrieval metrics (``val``/``test``) use both protocols of
:class:`matbench.metrics.RetrievalMetrics`, each key prefixed by its protocol:

- ``g<group_size>_*`` (``g64_mcs``, ``g64_mrr``, ``g64_recall@1/5/10``): samples are ranked
  within groups of ``group_size`` against the group's unique captions (the talk's table uses
  random batches of 64): seeded random groups by default (``group_order: shuffled``, the same
  groups on any number of processes), or consecutive samples in dataset order (``dataset``);
- ``all_*``: every sample is ranked against the unique captions of the whole split.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from matbench.metrics import RetrievalMetrics
from matbench.models.clip import (
    MaterialCLIP,
    OpenCLIPTextTower,
    ProjectedMiniLM,
)
from matbench.models.losses import ContrastiveLoss
from matbench.models.preprocess import RegionPreprocessor
from matbench.tasks.base import BaseTask, pretrained_unless_replaced


class ClipMaterialTask(BaseTask):
    """Contrastive fine-tuning of object-crop image embeddings against material captions.

    Batches need ``image`` (B, 3, H, W) object crops in [0, 1], ``caption`` (B strings),
    ``index`` (B,), and ``context`` whole images when ``fusion`` is on; ``predict`` also uses
    ``key``.

    Args:
        model: open_clip architecture name, or a JSON model config path (registered first).
        weights: open_clip pretrained tag, local checkpoint file, or None (random init).
        text_tower: ``"open_clip"``, ``"minilm"`` (offline MiniLM, frozen, + a learned
            projection to the image embedding size), ``"minilm-random"`` or a MiniLM folder.
        freeze_image: Freeze the image tower.
        freeze_text: Freeze the text tower (the MiniLM projection still trains unless set).
        loss: ``"clip"`` (symmetric InfoNCE) or ``"siglip"`` (pairwise sigmoid).
        temperature: Initial temperature; None = the open_clip model's own logit scale (and
            SigLIP bias) when the loss pairs its own towers (see :func:`initial_temperature`),
            else 0.07 for CLIP and 0.1 for SigLIP. The results JSON's ``protocol`` says which.
        learn_temperature: Learn the temperature, or keep it fixed.
        fusion: Late fusion (MHA: object features query whole-image timm features).
        fusion_backbone: timm model of the whole-image features.
        fusion_weights: Its weights: a timm tag-like string (hub), a local file, or None.
        fusion_heads: Attention heads of the fusion.
        freeze_fusion_backbone: Freeze the fusion backbone.
        reproject: Train only a linear re-projection of the frozen embeddings.
        reproject_dim: Output size of the re-projection (default: the embedding size).
        group_size: Group size of the grouped retrieval protocol.
        group_order: ``"shuffled"``: seeded random groups (random batches, as in the talk);
            ``"dataset"``: consecutive samples in dataset order (LVIS: annotation ids, which
            cluster by image, so a group holds fewer distinct captions).
        group_seed: Seed of the shuffled groups.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to gains, biases and the temperature).
        lr_schedule: ``cosine`` (decay to 0 at the last step, as open_clip) or ``constant``,
            after warmup.
        warmup: Linear warmup: a fraction of the run's steps (< 1) or a number of steps.
    """

    monitor = "val/loss"
    mode = "min"
    # the task's arguments are its model's: the same renames
    renamed_arguments = MaterialCLIP.renamed_arguments

    def __init__(
        self,
        model: str = "ViT-B-32",
        weights: str | None = None,
        text_tower: str = "open_clip",
        freeze_image: bool = False,
        freeze_text: bool = False,
        loss: Literal["clip", "siglip"] = "clip",
        temperature: float | None = None,
        learn_temperature: bool = True,
        fusion: bool = False,
        fusion_backbone: str = "resnet18",
        fusion_weights: str | None = None,
        fusion_heads: int = 8,
        freeze_fusion_backbone: bool = True,
        reproject: bool = False,
        reproject_dim: int | None = None,
        group_size: int = 64,
        group_order: Literal["shuffled", "dataset"] = "shuffled",
        group_seed: int = 0,
        lr: float = 1e-5,
        weight_decay: float = 0.1,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup: float = 0.05,
    ) -> None:
        super().__init__()

    # -- template hooks ----------------------------------------------------------------------
    def configure_models(self) -> None:
        hp = self.hparams
        self.model = MaterialCLIP(
            model=hp.model,
            weights=hp.weights,
            text_tower=hp.text_tower,
            freeze_image=hp.freeze_image,
            freeze_text=hp.freeze_text,
            fusion=hp.fusion,
            fusion_backbone=hp.fusion_backbone,
            fusion_weights=hp.fusion_weights,
            fusion_heads=hp.fusion_heads,
            freeze_fusion_backbone=hp.freeze_fusion_backbone,
            reproject=hp.reproject,
            reproject_dim=hp.reproject_dim,
        )

    def configure_losses(self) -> None:
        hp = self.hparams
        temperature, bias, self.temperature_source = initial_temperature(
            self.model, hp.loss, hp.temperature
        )
        self.criterion = ContrastiveLoss(
            hp.loss, temperature, learn_temperature=hp.learn_temperature, bias=bias
        )
        self._initial_temperature = self.criterion.temperature

    def protocol(self) -> dict[str, Any]:
        criterion = self.criterion
        info: dict[str, Any] = {
            "loss": criterion.kind,
            "temperature_source": self.temperature_source,
            "initial_temperature": self._initial_temperature,
            "temperature": criterion.temperature,
            "group_size": int(self.hparams.group_size),
            "group_order": self.hparams.group_order,
            "group_seed": int(self.hparams.group_seed),
        }
        if criterion.logit_bias is not None:
            info["logit_bias"] = float(criterion.logit_bias.detach())
        return info

    def build_metric(self, stage: str) -> Metric | MetricCollection | None:
        group = int(self.hparams.group_size)
        return MetricCollection(
            {
                f"g{group}": RetrievalMetrics(
                    group, self.hparams.group_order, self.hparams.group_seed
                ),
                "all": RetrievalMetrics(None),
            },
            compute_groups=True,
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        drop_legacy_keys(checkpoint.get("state_dict", {}), prefix="model.")
        super().on_load_checkpoint(checkpoint)

    def memory_caches(self) -> dict[str, dict[str, Tensor]]:
        text = self.model.text
        return {"minilm_text": text.cache} if isinstance(text, ProjectedMiniLM) else {}

    def restore_memory_cache(self, name: str, entries: dict[str, Tensor]) -> None:
        if name == "minilm_text" and isinstance(self.model.text, ProjectedMiniLM):
            self.model.text.cache.update(entries)

    # -- model -------------------------------------------------------------------------------
    def forward(self, images: Tensor, context: Tensor | None = None) -> Tensor:
        """L2-normalised object embeddings."""
        return self.model.encode_image(images, context)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> Tensor:
        """L2-normalised text embeddings (the open-vocabulary query)."""
        return self.model.encode_text(list(texts))

    def _embed(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        image = self.model.encode_image(batch["image"], batch.get("context"))
        text = self.model.encode_text(list(batch["caption"]))
        return image, text

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        image, text = self._embed(batch)
        loss = self.criterion(image, text)
        n = image.shape[0]
        self.log("train/loss", loss, batch_size=n, prog_bar=True)
        self.log("train/temperature", self.criterion.temperature, batch_size=n)
        return loss

    def _eval_step(self, stage: str, batch: dict[str, Any], dataloader_idx: int) -> None:
        image, text = self._embed(batch)
        if stage == "val":
            # No collective per batch: under DDP, ranks may hold different numbers of batches.
            # A contrastive loss over a per-rank batch depends on the number of processes, so
            # it is kept for checkpoint monitoring and left out of the (exact) test output.
            loss = self.criterion(image, text, gather=False)
            self.log_eval_loss(stage, loss, image.shape[0])
        self.eval_metric(stage, dataloader_idx).update(
            image, text, list(batch["caption"]), batch["index"]
        )

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step("val", batch, dataloader_idx)
        if batch_idx == 0 and dataloader_idx == 0:
            self._log_samples(batch)

    def _log_samples(self, batch: dict[str, Any], n: int = 8) -> None:
        """The first validation crops and their captions, in TensorBoard (once per epoch)."""
        writer = self.tensorboard()
        images = batch.get("image")
        if writer is None or not isinstance(images, Tensor) or "caption" not in batch:
            return
        step = self.global_step
        writer.add_images("val/sample_crops", images[:n].float().clamp(0, 1).cpu(), step)
        captions = [f"{i}: {c}" for i, c in enumerate(list(batch["caption"])[:n])]
        writer.add_text("val/sample_captions", "  \n".join(captions), step)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        return embedding_prediction(self._predict_images(batch), batch)

    def _predict_images(self, batch: dict[str, Any]) -> Tensor:
        images = batch["image"]
        if isinstance(images, (list, tuple)):  # regions at their own size (LVIS predict)
            images = self.preprocessor(images).to(self.device)
        return self.model.encode_image(images, batch.get("context"))

    @property
    def preprocessor(self) -> RegionPreprocessor:
        """The model's own eval transform (open_clip's ``preprocess_val``) of regions that a
        datamodule cut out at their own size (LVIS-materials ``predict``)."""
        if getattr(self, "_preprocessor", None) is None:
            tower = self.model.image
            self._preprocessor = RegionPreprocessor(
                tower.image_size, tower.visual.preprocess_cfg, region="full", crop_blur_sigma=0.0
            )
        return self._preprocessor

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.criterion.clamp_()  # open_clip: the scale is clamped after each step

    def export_open_clip(self, path: str | Path) -> Path:
        """Write the model as a plain open_clip checkpoint (``.pt`` or ``.safetensors``) with
        the learned temperature as its ``logit_scale`` (and SigLIP's ``logit_bias`` when the
        architecture has one); load it with ``open_clip.create_model(<arch>, pretrained=path)``."""
        state = self.model.open_clip_state_dict()
        state["logit_scale"] = self.criterion.logit_scale.detach().cpu().clone().reshape(())
        if self.criterion.logit_bias is not None and self.model.logit_bias_init is not None:
            state["logit_bias"] = self.criterion.logit_bias.detach().cpu().clone().reshape(())
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        else:
            torch.save({"state_dict": state}, path)
        return path

    def param_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                "ClipMaterialTask has no trainable parameters: every tower is locked and the "
                "temperature is fixed"
            )
        # open_clip's exclusion: no decay for gains, biases and the logit scale
        return [
            {
                "params": [p for p in params if p.ndim >= 2],
                "weight_decay": float(self.hparams.weight_decay),
            },
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]


def frozen_clip(
    model: str,
    weights: str | None,
    text_tower: str,
    checkpoint: str | None,
    reproject: bool = False,
    reproject_dim: int | None = None,
) -> MaterialCLIP:
    """A CLIP material model with both towers frozen, for evaluation-only tasks: built without
    its pretrained ``weights`` when ``checkpoint`` replaces them (see
    :func:`~matbench.tasks.base.pretrained_unless_replaced`); otherwise its open_clip weights
    are only read, and shared within :func:`~matbench.utils.weights.sharing_weights`."""
    return MaterialCLIP(
        model=model,
        weights=pretrained_unless_replaced(weights, checkpoint),
        text_tower=text_tower,
        freeze_image=True,
        freeze_text=True,
        reproject=reproject,
        reproject_dim=reproject_dim,
        frozen=checkpoint is None,
    )


def load_clip_task_weights(
    model: MaterialCLIP, path: str, state: dict[str, Tensor] | None = None
) -> None:
    """Load the ``model.*`` weights of a `ClipMaterialTask` checkpoint into ``model`` (built
    with the same model/text_tower/reproject settings); ``state``: the checkpoint's weights
    when already read (with frozen parts put back, see `BaseTask.checkpoint_state`)."""
    from matbench.utils.weights import load_state_dict_file

    state = dict(load_state_dict_file(path) if state is None else state)
    model_state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    drop_legacy_keys(model_state)
    if not model_state:
        raise ValueError(f"{path}: no 'model.*' weights (not a ClipMaterialTask checkpoint?)")
    missing, unexpected = model.load_state_dict(model_state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match this model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); use the same model/text_tower/reproject settings"
        )


def drop_legacy_keys(state: dict[str, Any], prefix: str = "") -> None:
    """Remove the open_clip text model's own logit scale and bias from a state dict: checkpoints
    written before the temperature moved into the loss still hold them."""
    for name in ("logit_scale", "logit_bias"):
        state.pop(f"{prefix}text.clip.{name}", None)


def initial_temperature(
    model: MaterialCLIP, loss: str, temperature: float | None
) -> tuple[float | None, float, str]:
    """The loss's starting temperature and SigLIP bias, and where they come from.

    An explicit ``temperature`` wins (``"config"``). Otherwise, when the loss pairs the open_clip
    model's own two towers and the model was trained with the same kind of loss (a logit bias
    means sigmoid), the model's own ``logit_scale`` and ``logit_bias`` are used (``"model"``:
    fine-tuning a pretrained model continues from its temperature, ~1/100 for LAION ViT-B-32).
    Else the loss's defaults (``"default"``). Returns ``(temperature or None, bias, source)``.
    """
    default_bias = -10.0
    if temperature is not None:
        return temperature, default_bias, "config"
    scale, bias = model.logit_scale_init, model.logit_bias_init
    own_text = isinstance(model.text, OpenCLIPTextTower)
    if own_text and scale is not None and (bias is not None) == (loss == "siglip"):
        return math.exp(-scale), default_bias if bias is None else bias, "model"
    return None, default_bias, "default"


def embedding_prediction(embeddings: Tensor, batch: dict[str, Any]) -> dict[str, Any]:
    """What ``predict`` returns per batch for the embedding writer: the embeddings, sample
    keys and indices, on the CPU."""
    return {
        "embeddings": embeddings.float().cpu(),
        "keys": [str(k) for k in batch["key"]],
        "index": torch.as_tensor(batch["index"]).cpu(),
    }


#: Zero-shot classification moved to :mod:`matbench.tasks.zeroshot`; these names stay
#: importable from here for one release.
_MOVED_TO_ZEROSHOT = (
    "PLACEHOLDERS",
    "Templates",
    "ZeroShotTask",
    "class_prompts",
    "load_class_names",
    "load_templates",
    "prompt_name",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_ZEROSHOT:
        from matbench.tasks import zeroshot

        return getattr(zeroshot, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
