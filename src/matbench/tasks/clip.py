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

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from matbench.errors import ConfigError
from matbench.metrics import ClassificationMetrics, RetrievalMetrics
from matbench.models.clip import (
    ContrastiveLoss,
    MaterialCLIP,
    OpenCLIPTextTower,
    ProjectedMiniLM,
)
from matbench.models.preprocess import RegionPreprocessor
from matbench.tasks.base import (
    BaseTask,
    datamodule_class_names,
    datamodule_object_crops,
    stores_frozen_weights_elsewhere,
)


class ClipMaterialTask(BaseTask):
    """Contrastive fine-tuning of object-crop image embeddings against material captions.

    Batches need ``image`` (B, 3, H, W) object crops in [0, 1], ``caption`` (B strings),
    ``index`` (B,), and ``context`` whole images when ``fusion`` is on; ``predict`` also uses
    ``key``.

    Args:
        model: open_clip architecture name, or a JSON model config path (registered first).
        pretrained: open_clip pretrained tag, local checkpoint file, or None (random init).
        text_tower: ``"open_clip"``, ``"minilm"`` (offline MiniLM, frozen, + a learned
            projection to the image embedding size), ``"minilm-random"`` or a MiniLM folder.
        lock_image: Freeze the image tower.
        lock_text: Freeze the text tower (the MiniLM projection still trains unless set).
        loss: ``"clip"`` (symmetric InfoNCE) or ``"siglip"`` (pairwise sigmoid).
        temperature: Initial temperature; None = the open_clip model's own logit scale (and
            SigLIP bias) when the loss pairs its own towers (see :func:`initial_temperature`),
            else 0.07 for CLIP and 0.1 for SigLIP. The results JSON's ``protocol`` says which.
        learn_temperature: Learn the temperature, or keep it fixed.
        fusion: Late fusion (MHA: object features query whole-image timm features).
        fusion_backbone: timm model of the whole-image features.
        fusion_pretrained: Its weights: a timm tag-like string (hub), a local file, or None.
        fusion_heads: Attention heads of the fusion.
        lock_fusion_backbone: Freeze the fusion backbone.
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

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = None,
        text_tower: str = "open_clip",
        lock_image: bool = False,
        lock_text: bool = False,
        loss: Literal["clip", "siglip"] = "clip",
        temperature: float | None = None,
        learn_temperature: bool = True,
        fusion: bool = False,
        fusion_backbone: str = "resnet18",
        fusion_pretrained: str | None = None,
        fusion_heads: int = 8,
        lock_fusion_backbone: bool = True,
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
            pretrained=hp.pretrained,
            text_tower=hp.text_tower,
            lock_image=hp.lock_image,
            lock_text=hp.lock_text,
            fusion=hp.fusion,
            fusion_backbone=hp.fusion_backbone,
            fusion_pretrained=hp.fusion_pretrained,
            fusion_heads=hp.fusion_heads,
            lock_fusion_backbone=hp.lock_fusion_backbone,
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
        image = self._predict_images(batch)
        return {
            "embeddings": image.float().cpu(),
            "keys": [str(k) for k in batch["key"]],
            "index": torch.as_tensor(batch["index"]).cpu(),
        }

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


# -- zero-shot ---------------------------------------------------------------------------------
#: Template placeholders for the class name: matbench's/open_clip's and CLIP_benchmark's.
PLACEHOLDERS = ("{}", "{c}")
Templates = list[str] | dict[str, list[str]]


def _read_json(source: str, what: str) -> Any:
    path = Path(source).expanduser()
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{what} file '{path}' does not exist") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _by_dataset(
    data: Any, key: str | None, where: str, what: str, own_key: str, default_key: str = ""
) -> Any:
    """The entry of a file keyed by dataset (CLIP_benchmark's format), or ``data`` itself.

    A dict is looked up by ``key``; without it (or when absent), matbench's own single-entry
    key ``own_key``, or the only entry, is used. Returns None when ``key`` is None and the file
    holds several datasets (resolved later, once the datamodule is known). With a ``key`` that
    the file lacks, ``default_key`` is used when present (CLIP_benchmark's templates fall back
    to ``imagenet1k``'s).
    """
    if not isinstance(data, dict):
        return data
    if key is not None and key in data:
        return data[key]
    if own_key in data:
        return data[own_key]
    if len(data) == 1:
        return next(iter(data.values()))
    if key is None:
        return None
    if default_key in data:
        return data[default_key]
    raise ValueError(
        f"{where}: no {what} for dataset '{key}' (it has {sorted(data)}); set "
        "--model.dataset_key to one of them"
    )


def load_templates(templates: str, dataset_key: str | None = None) -> Templates:
    """Prompt templates: a set name of ``matbench/data/templates.json`` (``material``,
    ``name``), or a JSON file holding a list of templates, ``{"templates": [...]}``, or
    CLIP_benchmark's ``--custom_template_file`` format keyed by dataset: ``{dataset:
    [templates]}`` or ``{dataset: {class name: [prompts]}}`` (class-specific prompts, e.g.
    CuPL), looked up by ``dataset_key`` (falling back to ``imagenet1k``'s, as CLIP_benchmark
    does). Templates hold ``{}`` or ``{c}`` for the class name.
    """
    if templates.endswith(".json"):
        data, where = _read_json(templates, "templates"), str(Path(templates).expanduser())
        data = _by_dataset(data, dataset_key, where, "templates", "templates", "imagenet1k")
        if data is None:
            return []  # several datasets and no key yet
    else:
        text = resources.files("matbench").joinpath("data", "templates.json").read_text("utf-8")
        sets = json.loads(text)
        if templates not in sets or templates.startswith("_"):
            names = [k for k in sets if not k.startswith("_")]
            raise ValueError(
                f"unknown template set '{templates}': use one of {names} or a .json file"
            )
        data, where = sets[templates], f"template set '{templates}'"
    if isinstance(data, dict):
        if not data or not all(
            isinstance(v, list) and v and all(isinstance(p, str) for p in v) for v in data.values()
        ):
            raise ValueError(f"{where}: class-specific prompts must map names to prompt lists")
        return data
    if (
        not isinstance(data, list)
        or not data
        or not all(isinstance(t, str) and any(p in t for p in PLACEHOLDERS) for t in data)
    ):
        raise ValueError(
            f"{where}: templates must be a non-empty list of strings with '{{}}' or '{{c}}'"
        )
    return data


def load_class_names(source: str, dataset_key: str | None = None) -> list[str] | None:
    """Class names from a JSON file: a list, or CLIP_benchmark's ``--custom_classname_file``
    format ``{dataset: [names]}`` looked up by ``dataset_key`` (None: not resolvable yet)."""
    where = str(Path(source).expanduser())
    data = _by_dataset(_read_json(source, "class names"), dataset_key, where, "class names", "")
    if data is None:
        return None
    if not isinstance(data, list) or not data or not all(isinstance(n, str) for n in data):
        raise ValueError(f"{where}: class names must be a non-empty list of strings")
    return data


def class_prompts(classes: list[str], names: list[str], templates: Templates) -> list[list[str]]:
    """The prompts of each class: every template filled with the class's prompt name, or a
    class's own prompts (looked up by class name, then prompt name) for class-specific ones."""
    if isinstance(templates, dict):
        out = []
        for cls, name in zip(classes, names, strict=True):
            prompts = templates.get(cls, templates.get(name))
            if prompts is None:
                raise ValueError(f"class-specific prompts: none for class '{cls}'")
            out.append(list(prompts))
        return out
    return [[t.replace("{c}", "{}").format(name) for t in templates] for name in names]


def prompt_name(class_name: str) -> str:
    """A class name as prompt text: ``"Plastic, clear"`` -> ``"clear plastic"``,
    ``"Fabric/cloth"`` -> ``"fabric or cloth"``, ``"stone_natural"`` -> ``"stone natural"``."""
    name = class_name.replace("_", " ").strip().lower()
    if "," in name:
        head, _, modifier = name.partition(",")
        name = f"{modifier.strip()} {head.strip()}"
    return " or ".join(part.strip() for part in name.split("/"))


class ZeroShotTask(ClipMaterialTask):
    """Zero-shot material classification of object/region crops with class-name prompts.

    The class embedding of each class is the mean of its L2-normalised prompt embeddings over
    the templates, renormalised; an image is assigned to the class of highest cosine.
    Metrics (``ClassificationMetrics``): ``accuracy``, ``top5_accuracy``,
    ``mean_class_accuracy``, per-class accuracy and the confusion matrix.

    Samples need ``image`` and ``label``, and ``mask`` (bool region) for ``region="crop"``;
    batches may be stacked tensors or lists (``list_collate``). Class names come from
    ``class_names`` or else the datamodule's ``class_names``. Weights: ``pretrained`` (open_clip)
    or a trained :class:`ClipMaterialTask` checkpoint via ``--ckpt_path`` or ``checkpoint``.

    Args:
        class_names: The classes, in label order: a list, or a JSON file (a list, or
            CLIP_benchmark's ``{dataset: [names]}``); None = the datamodule's ``class_names``.
        class_name_style: ``"readable"`` rewrites names for prompts (``"Plastic, clear"`` ->
            ``"clear plastic"``, see :func:`prompt_name`); ``"raw"`` uses them as they are
            (CLIP_benchmark's way).
        templates: Template set name (``material``, ``name``) or a JSON file (see
            :func:`load_templates`; CLIP_benchmark's template files work as they are).
        dataset_key: Entry of dataset-keyed JSON files (CLIP_benchmark's formats); None = the
            datamodule's short name (``FMDDataModule`` -> ``fmd``).
        region: ``"crop"`` = the object's box padded to >= ``crop_min_size`` px (square),
            blurred outside the mask, cut here from the image as the datamodule gives it;
            ``"full"`` = that whole image (e.g. when the datamodule already crops).
        image_transform: ``"open_clip"`` = the model's own eval transform (open_clip's
            ``preprocess_val``: shortest side resized, bicubic, centre crop, the model's
            mean/std) applied to the region, as open_clip and CLIP_benchmark do;
            ``"squash"`` = the region resized to the model's square input (bilinear).
        crop_min_size: Smallest side of the crop in original pixels.
        crop_blur_sigma: Blur outside the mask, in model-input pixels; 0 = off.
        checkpoint: A ClipMaterialTask checkpoint (``.ckpt``) whose weights to load.
        top_k: k of the top-k accuracy.

    The other arguments are those of :class:`ClipMaterialTask`.
    """

    monitor = "val/accuracy"
    mode = "max"

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = None,
        text_tower: str = "open_clip",
        class_names: list[str] | str | None = None,
        class_name_style: Literal["readable", "raw"] = "readable",
        templates: str = "material",
        dataset_key: str | None = None,
        region: Literal["crop", "full"] = "crop",
        image_transform: Literal["open_clip", "squash"] = "open_clip",
        crop_min_size: int = 50,
        crop_blur_sigma: float = 4.0,
        checkpoint: str | None = None,
        top_k: int = 5,
        fusion: bool = False,
        fusion_backbone: str = "resnet18",
        fusion_heads: int = 8,
        reproject: bool = False,
        reproject_dim: int | None = None,
    ) -> None:
        self._class_embeddings: Tensor | None = None
        self._classes: list[str] | None = None
        self._prompts: dict[str, Any] = {}
        self._preprocessor: RegionPreprocessor | None = None
        super(ClipMaterialTask, self).__init__()  # BaseTask: skip ClipMaterialTask.__init__
        # A ClipMaterialTask checkpoint given by --ckpt_path may hold extra loss parameters
        # (SigLIP bias); the model weights must still match (see load_task_checkpoint).
        self.strict_loading = False
        load_templates(templates, dataset_key)  # fail early on a bad template set or file
        if isinstance(class_names, str):
            load_class_names(class_names, dataset_key)
        if checkpoint is not None:
            self.load_task_checkpoint(checkpoint)

    def configure_models(self) -> None:
        hp = self.hparams
        if hp.fusion:
            raise ValueError(
                "ZeroShotTask: late fusion needs whole-image context that region datasets do not "
                "provide; evaluate fused models on LVIS-materials with ClipMaterialTask"
            )
        self.model = MaterialCLIP(
            model=hp.model,
            # A fine-tuned checkpoint replaces the pretrained weights: do not fetch them,
            # unless it left frozen pretrained towers out.
            pretrained=(
                None
                if hp.checkpoint and not stores_frozen_weights_elsewhere(hp.checkpoint)
                else hp.pretrained
            ),
            text_tower=hp.text_tower,
            lock_image=True,
            lock_text=True,
            reproject=hp.reproject,
            reproject_dim=hp.reproject_dim,
        )

    def configure_losses(self) -> None:
        # Kept so that ClipMaterialTask checkpoints (which hold the temperature) load strictly.
        self.criterion = ContrastiveLoss("clip", learn_temperature=False)

    def load_task_checkpoint(self, path: str) -> None:
        """Load the ``model.*`` weights of a ClipMaterialTask checkpoint."""
        load_clip_task_weights(self.model, path, self.checkpoint_state(path))

    def dataset_key(self) -> str | None:
        """The entry of dataset-keyed JSON files: ``dataset_key``, else the datamodule's short
        name (its class name without ``DataModule``, lower case)."""
        if self.hparams.dataset_key:
            return str(self.hparams.dataset_key)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if datamodule is None:
            return None
        return type(datamodule).__name__.removesuffix("DataModule").lower()

    @property
    def classes(self) -> list[str]:
        """The class names being classified."""
        given = self.hparams.class_names
        if isinstance(given, str):
            names = load_class_names(given, self.dataset_key())
            if names is None:
                raise ValueError(
                    f"{given}: holds class names of several datasets; set --model.dataset_key"
                )
            return names
        if given:
            return list(given)
        names = datamodule_class_names(getattr(self.trainer, "datamodule", None))
        if not names:
            raise ValueError(
                "ZeroShotTask needs class names: pass --model.class_names or use a datamodule "
                "with a class_names attribute"
            )
        return list(names)

    def prompt_names(self, classes: list[str]) -> list[str]:
        """The class names as they go into the templates (``class_name_style``)."""
        if self.hparams.class_name_style == "raw":
            return list(classes)
        return [prompt_name(name) for name in classes]

    @torch.no_grad()
    def class_embeddings(self, classes: list[str]) -> Tensor:
        """(C, D) class embeddings: the mean of each class's L2-normalised prompt embeddings,
        renormalised (CLIP_benchmark's ``zero_shot_classifier``)."""
        templates = load_templates(self.hparams.templates, self.dataset_key())
        if not templates:
            raise ValueError(
                f"{self.hparams.templates}: holds templates of several datasets; set "
                "--model.dataset_key"
            )
        names = self.prompt_names(classes)
        prompts = class_prompts(classes, names, templates)
        flat = [p for per_class in prompts for p in per_class]
        chunks = [self.model.encode_text(flat[i : i + 256]) for i in range(0, len(flat), 256)]
        embeddings = torch.cat(chunks).split([len(p) for p in prompts])
        self._prompts = {
            "class_names": list(classes),
            "prompt_names": names,
            "class_name_style": self.hparams.class_name_style,
            "templates": templates,
            "dataset_key": self.dataset_key(),
        }
        return F.normalize(torch.stack([e.mean(0) for e in embeddings]), dim=-1)

    def _prepare(self) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if self.hparams.region == "crop" and datamodule_object_crops(datamodule):
            raise ConfigError(
                f"ZeroShotTask(region='crop') on {type(datamodule).__name__}, whose samples are "
                "object crops already: the object would be cropped twice",
                hint="set --model.region full, or turn the datamodule's crop off "
                "(--data.object_crop false)",
            )
        classes = self.classes
        self._classes = classes
        self._class_embeddings = self.class_embeddings(classes)

    def build_metric(self, stage: str) -> Metric:
        assert self._classes is not None
        return ClassificationMetrics(len(self._classes), top_k=self.hparams.top_k)

    def on_validation_epoch_start(self) -> None:
        self._prepare()
        super().on_validation_epoch_start()

    def on_test_epoch_start(self) -> None:
        self._prepare()
        super().on_test_epoch_start()

    def on_predict_epoch_start(self) -> None:
        self._prepare()

    @property
    def preprocessor(self) -> RegionPreprocessor:
        """The model-owned preprocessing of the samples' regions (``region``,
        ``image_transform``, ``crop_min_size``, ``crop_blur_sigma``)."""
        if self._preprocessor is None:
            hp = self.hparams
            tower = self.model.image
            self._preprocessor = RegionPreprocessor(
                tower.image_size,
                tower.visual.preprocess_cfg if hp.image_transform == "open_clip" else None,
                image_transform=hp.image_transform,
                region=hp.region,
                crop_min_size=hp.crop_min_size,
                crop_blur_sigma=hp.crop_blur_sigma,
            )
        return self._preprocessor

    def model_transform(self) -> Any:
        """The model's own eval transform without its final ``Normalize`` (open_clip's
        ``preprocess_val``, from the model's ``preprocess_cfg``)."""
        return self.preprocessor.model_transform()

    def preprocess(self, batch: dict[str, Any]) -> Tensor:
        """Model-size (B, 3, S, S) inputs in [0, 1] of a batch (stacked or list-collated): the
        region (``region``) through ``image_transform`` (see :class:`RegionPreprocessor`)."""
        return self.preprocessor(batch["image"], batch.get("mask")).to(self.device)

    def logits(self, batch: dict[str, Any]) -> Tensor:
        """(B, C) cosine similarities of a batch to the class embeddings."""
        if self._class_embeddings is None:
            self._prepare()
        image = self.model.encode_image(self.preprocess(batch))
        return image @ self._class_embeddings.to(image).T

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        raise RuntimeError("ZeroShotTask is evaluation only: use `matbench test` or `validate`")

    def configure_optimizers(self) -> Any:
        return None

    def _eval_step(self, stage: str, batch: dict[str, Any], dataloader_idx: int) -> None:
        labels = batch["label"]
        target = torch.stack(list(labels)) if isinstance(labels, list) else labels
        self.eval_metric(stage, dataloader_idx).update(self.logits(batch), target.to(self.device))

    def _predict_images(self, batch: dict[str, Any]) -> Tensor:
        return self.model.encode_image(self.preprocess(batch))

    def protocol(self) -> dict[str, Any]:
        return {
            **self._prompts,
            "region": self.hparams.region,
            "image_transform": self.preprocessor.describe(),
        }

    def _end_eval(self, stage: str) -> None:
        super()._end_eval(stage)
        for values in self.results.get(stage, []):
            values["class_names"] = list(self._classes or [])
