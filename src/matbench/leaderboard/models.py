"""Model names of ``matbench leaderboard --models``, resolved to what each model can do.

A name is one of (a ``kind:`` prefix may always be given to say which):

============================================  ==================================================
``open_clip:ViT-B-32/laion2b_s34b_b79k``      open_clip ``arch/pretrained`` (the prefix may be
                                              left out when ``arch`` is an open_clip name);
                                              ``arch`` alone, or ``/none``, is random init;
                                              ``arch@file.pt`` loads a local file; a ``.json``
                                              model config path is an architecture too
``timm:vit_small_patch14_dinov2.lvd142m``     a timm model with its pretrained weights
                                              (``name@none`` = random init, ``name@file``)
``hf:facebook/dinov2-small``                  a Hugging Face ``transformers`` image model, by
                                              hub name or local folder (``@none`` = random init
                                              from its config); a ``CLIPModel`` is image-text
``runs/x/checkpoints/last.ckpt``              a matbench checkpoint (``.ckpt``) or
                                              ``save_pretrained`` folder
============================================  ==================================================

What a kind supports: image-text models (open_clip, a Hugging Face CLIP model, a CLIP material
checkpoint or folder) run zero-shot and retrieval; every image model runs the linear probe;
ViTs and CNNs (open_clip ViT towers, timm, Hugging Face ViTs, a MatSeg checkpoint) run dense
descriptors. The rest is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.errors import ConfigError

KINDS = ("open_clip", "timm", "hf", "matbench")
#: Weight strings that mean random initialisation.
RANDOM = ("none", "random")


@dataclass(frozen=True)
class ModelSpec:
    """A resolved ``--models`` entry.

    Args:
        name: The name as given (the leaderboard's row label).
        kind: ``open_clip``, ``timm``, ``hf`` or ``matbench``.
        arch: open_clip architecture (or JSON config path), timm name, Hugging Face name or
            folder, or the matbench checkpoint path.
        weights: open_clip pretrained tag or file, timm ``"timm"``/tag/file, Hugging Face
            ``None`` (its own weights); None = random init (open_clip, timm).
        task: A matbench checkpoint's task class name.
    """

    name: str
    kind: str
    arch: str
    weights: str | None = None
    task: str = ""

    @property
    def random_init(self) -> bool:
        return self.kind != "matbench" and self.weights in (None, *RANDOM)

    @property
    def slug(self) -> str:
        """A file-name-safe id: readable part + hash of the whole name."""
        short = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("_")[-48:]
        return f"{short}-{hashlib.sha1(self.name.encode()).hexdigest()[:8]}"

    def identity(self) -> str:
        """What the features depend on: kind, arch, weights and local files' contents."""
        from matbench.utils.weights import sha256

        parts = [self.kind, self.arch, str(self.weights)]
        for value in (self.arch, self.weights):
            path = Path(str(value)).expanduser()
            if value and path.is_file():
                parts.append(sha256(path))
            elif value and path.is_dir():
                for file in sorted(p for p in path.rglob("*") if p.is_file()):
                    parts.append(f"{file.name}:{sha256(file)}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "arch": self.arch,
            "weights": self.weights,
            "task": self.task,
        }


def _split_weights(text: str) -> tuple[str, str | None]:
    if "@" in text:
        name, weights = text.rsplit("@", 1)
        return name, weights or None
    return text, None


def _open_clip_names() -> set[str]:
    import open_clip

    return set(open_clip.list_models())


def _timm_known(name: str) -> bool:
    import timm

    return bool(timm.is_model(name.split(".", 1)[0]))


def _checkpoint_task(path: Path) -> str:
    """The task class name of a matbench checkpoint or ``save_pretrained`` folder."""
    from matbench.api import MATBENCH_JSON, _task_class
    from matbench.tasks.base import read_checkpoint

    if path.is_dir():
        info = json.loads((path / MATBENCH_JSON).read_text(encoding="utf-8"))
        return _task_class(info.get("class_path"), {}).__name__
    data = read_checkpoint(path)
    if data is None:
        raise ConfigError(f"{path}: not a matbench checkpoint (.ckpt) or model folder")
    hparams = dict(data.get("hyper_parameters") or {})
    return _task_class(hparams.get("_class_path"), hparams).__name__


def resolve_model(text: str) -> ModelSpec:
    """A ``--models`` entry as a :class:`ModelSpec`; :class:`ConfigError` when it names
    nothing matbench can load."""
    text = text.strip()
    if not text:
        raise ConfigError("empty model name")
    prefix, _, rest = text.partition(":")
    if prefix in KINDS and rest:
        return _resolve_kind(text, prefix, rest)
    path = Path(text).expanduser()
    if path.suffix == ".ckpt" or (path.is_dir() and (path / "matbench.json").is_file()):
        return _resolve_kind(text, "matbench", text)
    if path.is_dir() and (path / "config.json").is_file():
        return _resolve_kind(text, "hf", text)
    name, weights = _split_weights(text)
    if name.endswith(".json"):
        return _resolve_kind(text, "open_clip", text)
    if path.is_file():
        raise ConfigError(
            f"model '{text}': a weights file needs its architecture",
            hint="name it as timm:NAME@FILE or open_clip:ARCH@FILE",
        )
    arch = name.split("/", 1)[0]
    if arch in _open_clip_names() or name.startswith("hf-hub:"):
        return _resolve_kind(text, "open_clip", text)
    if "/" in name:
        return _resolve_kind(text, "hf", text)
    if _timm_known(name):
        return _resolve_kind(text, "timm", text)
    raise ConfigError(
        f"model '{text}': not an open_clip architecture, timm model, Hugging Face name, "
        "local file or matbench checkpoint",
        hint="prefix the kind to be explicit: open_clip:ARCH/TAG, timm:NAME, hf:ORG/NAME",
    )


def _resolve_kind(text: str, kind: str, rest: str) -> ModelSpec:
    if kind == "matbench":
        path = Path(rest).expanduser()
        if not path.exists():
            raise ConfigError(f"model '{text}': checkpoint {path} does not exist")
        return ModelSpec(text, "matbench", str(path), None, _checkpoint_task(path))
    name, weights = _split_weights(rest)
    if kind == "open_clip":
        if weights is None and not name.startswith("hf-hub:"):
            if ".json/" in name:  # a model config path with a tag: configs/tiny.json/none
                cut = name.index(".json/") + len(".json")
                name, weights = name[:cut], name[cut + 1 :]
            elif "/" in name and not name.endswith(".json"):
                name, weights = name.split("/", 1)
        weights = None if weights in RANDOM else weights
        return ModelSpec(text, "open_clip", name, weights)
    if kind == "timm":
        if not _timm_known(name):
            raise ConfigError(f"model '{text}': unknown timm model '{name}'")
        if weights is None:
            weights = "timm"  # the name's pretrained weights, as timm.create_model does
        return ModelSpec(text, "timm", name, None if weights in RANDOM else weights)
    return ModelSpec(text, "hf", name, weights if weights in RANDOM else None)


# -- what a model can do --------------------------------------------------------------------------
_IMAGE_TEXT_TASKS = ("ClipMaterialTask", "ZeroShotTask")


def unsupported(spec: ModelSpec, protocol: str) -> str | None:
    """Why ``spec`` cannot run ``protocol`` (None when it can)."""
    if protocol in ("zero_shot", "retrieval"):
        if spec.kind == "open_clip" or spec.task in _IMAGE_TEXT_TASKS or is_hf_clip(spec):
            return None
        return f"{_describe(spec)} has no text tower: zero-shot needs an image-text model"
    if protocol == "linear_probe":
        return None
    if protocol == "dense":
        if is_hf_clip(spec):
            return (
                "dense descriptors of a Hugging Face CLIP model are not wired (only its pooled "
                "image features are): the same weights as an open_clip model run them"
            )
        if spec.kind in ("open_clip", "timm", "hf") or spec.task == "MatSegTask":
            return None
        return f"{_describe(spec)} has no dense descriptors"
    raise ConfigError(f"unknown protocol '{protocol}'")


def is_hf_clip(spec: ModelSpec) -> bool:
    """A Hugging Face ``transformers`` CLIP model (image and text towers)."""
    from matbench.models.hf_clip import hf_clip_config

    return spec.kind == "hf" and hf_clip_config(spec.arch) is not None


def _describe(spec: ModelSpec) -> str:
    if spec.kind == "matbench":
        return f"a {spec.task} checkpoint"
    return {"timm": "a timm image model", "hf": "a Hugging Face image model"}.get(
        spec.kind, spec.kind
    )


def folder_checkpoint(spec: ModelSpec, cache: Path) -> ModelSpec:
    """``spec`` with a matbench ``save_pretrained`` folder replaced by a Lightning checkpoint
    of the same task (written once per folder content into ``cache``): every weight, the
    arguments :meth:`~matbench.tasks.base.BaseTask.from_pretrained` builds it with (weights
    arguments None, architecture files) and its class names. What runs on a ``.ckpt``
    (``matbench test --ckpt_path``, a task's ``checkpoint`` argument) then runs on the folder.
    Other models are returned as they are."""
    import dataclasses

    if spec.kind != "matbench" or not Path(spec.arch).is_dir():
        return spec
    path = Path(cache) / f"{spec.slug}-{spec.identity()[:16]}.ckpt"
    if not path.is_file():
        import lightning

        from matbench.api import load
        from matbench.cache import atomic_torch_save

        task = load(spec.arch).task
        hparams = {k: v for k, v in task.hparams.items() if k != "ignore"}
        hparams["_class_path"] = f"{type(task).__module__}.{type(task).__qualname__}"
        hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
        checkpoint = {
            "state_dict": task.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": lightning.__version__,
        }
        if task.class_names:
            checkpoint["matbench_class_names"] = list(task.class_names)
        atomic_torch_save(path, checkpoint)
    return dataclasses.replace(spec, arch=str(path))


def task_section(spec: ModelSpec, benchmark: str, protocol: str) -> tuple[dict[str, Any], str]:
    """The ``model`` section of a ``matbench test`` config for a Lightning protocol, and the
    checkpoint to test ('' = none)."""
    if protocol == "dense":
        if spec.kind == "matbench":
            return _checkpoint_section(spec), spec.arch
        encoder = spec.arch if spec.kind == "timm" else f"{spec.kind}:{spec.arch}"
        return {
            "class_path": "matbench.tasks.MatSegTask",
            "init_args": {"model": "dense", "backbone": encoder, "backbone_weights": spec.weights},
        }, ""
    clip_args = _clip_arguments(spec)
    if protocol == "retrieval":
        if spec.kind == "matbench" and spec.task == "ClipMaterialTask":
            return _checkpoint_section(spec), spec.arch
        return {"class_path": "matbench.tasks.ClipMaterialTask", "init_args": clip_args}, ""
    if protocol == "zero_shot":
        if benchmark == "fgovd_material":
            return {
                "class_path": "matbench.tasks.FineGrainedMatchingTask",
                "init_args": {**clip_args, "max_negatives": 10},
            }, ""
        return {
            "class_path": "matbench.tasks.ZeroShotTask",
            "init_args": {**clip_args, "templates": "material", "region": "crop"},
        }, ""
    raise ConfigError(f"protocol '{protocol}' is not a matbench test run")


def _clip_arguments(spec: ModelSpec) -> dict[str, Any]:
    if spec.kind == "open_clip":
        return {"model": spec.arch, "weights": spec.weights, "text_tower": "open_clip"}
    if spec.kind == "hf":
        from matbench.models.hf_clip import HF_PREFIX

        return {"model": HF_PREFIX + spec.arch, "weights": spec.weights, "text_tower": "open_clip"}
    hparams = _hparams(spec)
    args = {k: hparams[k] for k in ("model", "weights", "text_tower") if k in hparams}
    args["weights"] = None  # the checkpoint's weights replace them
    return {**args, "checkpoint": spec.arch}


def _hparams(spec: ModelSpec) -> dict[str, Any]:
    from matbench.tasks.base import read_checkpoint
    from matbench.utils.deprecation import rename_kwargs, renamed_arguments_of

    data = read_checkpoint(spec.arch) or {}
    hparams = dict(data.get("hyper_parameters") or {})
    # a checkpoint of the last release holds the old argument names
    task = hparams.get("_class_path") or spec.task
    return rename_kwargs(str(task), renamed_arguments_of(task), hparams, spec.arch)


def _checkpoint_section(spec: ModelSpec) -> dict[str, Any]:
    import importlib
    import inspect

    hparams = _hparams(spec)
    class_path = hparams.pop("_class_path", None) or f"matbench.tasks.{spec.task}"
    module, _, name = class_path.rpartition(".")
    accepted = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    # the saved hyperparameters hold bookkeeping too (e.g. what save_hyperparameters ignored)
    init_args = {k: v for k, v in hparams.items() if k in accepted and k != "ignore"}
    return {"class_path": class_path, "init_args": init_args}


# -- frozen image features (linear probe) ---------------------------------------------------------
class ImageFeaturizer(nn.Module):
    """A frozen image model as ``(crops (B, 3, S, S) in [0, 1], masks (B, S, S)) → (B, D)``.

    Args:
        net: Callable on normalised crops (or on crops and masks, ``uses_mask``).
        size: Crop side the model takes.
        mean: Normalisation mean (None = the net normalises itself).
        std: Normalisation std.
        uses_mask: ``net`` takes ``(images, masks)``.
    """

    def __init__(
        self,
        net: nn.Module,
        size: int,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        uses_mask: bool = False,
    ) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.size = int(size)
        self.uses_mask = uses_mask
        self.normalise = mean is not None
        self.register_buffer("mean", torch.tensor(mean or (0.0,) * 3).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(std or (1.0,) * 3).view(1, 3, 1, 1), False)

    @torch.no_grad()
    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        if self.normalise:
            images = (images - self.mean) / self.std
        out = self.net(images, masks) if self.uses_mask else self.net(images)
        return out.flatten(1).float()


class _HFImage(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        out = self.model(pixel_values=images)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled
        return out.last_hidden_state[:, 0]


class _MatbenchImage(nn.Module):
    """A matbench task's image features: CLIP embedding, two-stream vision features
    (mask max-pooled) or MatSeg descriptors averaged inside the mask."""

    def __init__(self, task: nn.Module, kind: str) -> None:
        super().__init__()
        self.task = task
        self.kind = kind

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        if self.kind in _IMAGE_TEXT_TASKS:
            return self.task.model.encode_image(images)
        if self.kind == "TwoStreamTask":
            return self.task.model.vision_features(images, masks)
        if self.kind == "MatSegTask":
            desc = self.task(images)
            if desc.shape[-2:] != images.shape[-2:]:
                desc = F.interpolate(desc, size=images.shape[-2:], mode="bilinear")
            weight = masks[:, None].float()
            return (desc * weight).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1.0)
        raise ConfigError(f"no image features for a {self.kind} checkpoint")


def build_featurizer(spec: ModelSpec, device: str | torch.device = "cpu") -> ImageFeaturizer:
    """The frozen image model of ``spec`` for feature extraction (eval mode, fp32)."""
    if spec.kind == "open_clip":
        from matbench.models.clip import ImageTower, create_open_clip

        tower = ImageTower(create_open_clip(spec.arch, spec.weights, frozen=True).visual)
        featurizer = ImageFeaturizer(tower, tower.image_size[0])
    elif spec.kind == "timm":
        from matbench.utils.weights import create_timm_model, timm_normalization

        net = create_timm_model(spec.arch, spec.weights, frozen=True, num_classes=0)
        mean, std = timm_normalization(net)
        size = (getattr(net, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1]
        featurizer = ImageFeaturizer(net, size, tuple(mean.flatten()), tuple(std.flatten()))
    elif spec.kind == "hf":
        featurizer = _hf_featurizer(spec)
    else:
        from matbench.api import load

        task = load(spec.arch).task
        size = 224
        if spec.task in _IMAGE_TEXT_TASKS:
            size = task.model.image.image_size[0]
        elif spec.task == "TwoStreamTask":
            size = int(task.hparams.get("image_size", 224))
        featurizer = ImageFeaturizer(_MatbenchImage(task, spec.task), size, uses_mask=True)
    return featurizer.to(device).eval()


def _hf_featurizer(spec: ModelSpec) -> ImageFeaturizer:
    if is_hf_clip(spec):  # the projected image features, as its zero-shot uses them
        from matbench.models.clip import ImageTower
        from matbench.models.hf_clip import HFCLIPVisual, create_hf_clip

        visual = HFCLIPVisual(create_hf_clip(spec.arch, spec.weights, frozen=True), spec.arch)
        tower = ImageTower(visual)
        return ImageFeaturizer(tower, tower.image_size[0])
    from transformers import AutoConfig, AutoModel

    from matbench.utils.weights import built_once, loading_weights

    def build() -> nn.Module:
        with loading_weights("model", spec.arch):
            if spec.weights in RANDOM:
                return AutoModel.from_config(AutoConfig.from_pretrained(spec.arch))
            return AutoModel.from_pretrained(spec.arch)

    model = built_once(("hf", spec.arch, spec.weights), build)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    processor = Path(spec.arch).expanduser() / "preprocessor_config.json"
    if processor.is_file():
        cfg = json.loads(processor.read_text(encoding="utf-8"))
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    size = getattr(model.config, "image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else int(size)
    return ImageFeaturizer(_HFImage(model), size, mean, std)
