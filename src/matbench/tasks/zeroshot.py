"""Zero-shot material classification with class-name prompts (CLIP_benchmark's protocol).

The classifier of each class is the mean of its L2-normalised prompt embeddings over the
templates, renormalised; an image region goes through the model's own eval transform
(:class:`~matbench.models.preprocess.RegionPreprocessor`). Class-name and template files in
CLIP_benchmark's formats are read as they are.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from matbench.errors import ConfigError
from matbench.metrics import ClassificationMetrics
from matbench.models.preprocess import MODEL_INPUT, RegionInputs, RegionPreprocessor
from matbench.tasks.base import (
    BaseTask,
    EvalSteps,
    datamodule_class_names,
    datamodule_object_crops,
)
from matbench.tasks.clip import (
    drop_legacy_keys,
    embedding_prediction,
    frozen_clip,
    load_clip_task_weights,
)
from matbench.utils.threads import one_cpu_thread

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


class ZeroShotTask(EvalSteps, BaseTask):
    """Zero-shot material classification of object/region crops with class-name prompts.

    The class embedding of each class is the mean of its L2-normalised prompt embeddings over
    the templates, renormalised; an image is assigned to the class of highest cosine.
    Metrics (``ClassificationMetrics``): ``accuracy``, ``top5_accuracy``,
    ``mean_class_accuracy``, per-class accuracy and the confusion matrix.

    Samples need ``image`` and ``label``, and ``mask`` (bool region) for ``region="crop"``;
    batches may be stacked tensors or lists (``list_collate``). Class names come from
    ``class_names`` or else the datamodule's ``class_names``. Weights: ``weights`` (open_clip)
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

        model: open_clip architecture name, or a JSON model config path.
        weights: open_clip pretrained tag, local checkpoint file, or None (random init).
        text_tower: ``"open_clip"``, ``"minilm"``, ``"minilm-random"`` or a MiniLM folder.
        reproject: The model has a linear re-projection (a ClipMaterialTask checkpoint
            trained with ``reproject``).
        reproject_dim: Output size of that re-projection.
    """

    monitor = "val/accuracy"
    mode = "max"
    # fusion was accepted only to be refused: a ZeroShotTask has no late fusion
    renamed_arguments = {
        "pretrained": "weights",
        "fusion": None,
        "fusion_backbone": None,
        "fusion_heads": None,
    }

    def __init__(
        self,
        model: str = "ViT-B-32",
        weights: str | None = None,
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
        reproject: bool = False,
        reproject_dim: int | None = None,
    ) -> None:
        self._class_embeddings: Tensor | None = None
        self._classes: list[str] | None = None
        self._prompts: dict[str, Any] = {}
        self._preprocessor: RegionPreprocessor | None = None
        #: Scale of the cosines in :meth:`probabilities`: CLIP's initial 1 / 0.07, or the
        #: learned one of a ClipMaterialTask checkpoint given by ``--ckpt_path``.
        self.probability_scale = 1.0 / 0.07
        super().__init__()
        load_templates(templates, dataset_key)  # fail early on a bad template set or file
        if isinstance(class_names, str):
            load_class_names(class_names, dataset_key)
        if checkpoint is not None:
            self.load_task_checkpoint(checkpoint)

    def configure_models(self) -> None:
        hp = self.hparams
        self.model = frozen_clip(
            hp.model,
            hp.weights,
            hp.text_tower,
            hp.checkpoint,
            reproject=hp.reproject,
            reproject_dim=hp.reproject_dim,
        )

    def load_task_checkpoint(self, path: str) -> None:
        """Load the ``model.*`` weights of a ClipMaterialTask checkpoint."""
        load_clip_task_weights(self.model, path, self.checkpoint_state(path))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``--ckpt_path`` of a ClipMaterialTask (or ZeroShotTask) checkpoint: its ``model.*``
        weights load strictly; its learned temperature scales :meth:`probabilities`."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        scale = state.get("criterion.logit_scale")
        if scale is not None:
            self.probability_scale = float(torch.as_tensor(scale).exp())
        drop_legacy_keys(state, prefix="model.")
        for key in [k for k in state if not k.startswith("model.")]:
            del state[key]

    # -- model -------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        """L2-normalised embeddings of model-size images."""
        return self.model.encode_image(images)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> Tensor:
        """L2-normalised text embeddings."""
        return self.model.encode_text(list(texts))

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

    def _datamodule(self) -> Any:
        return getattr(self._trainer, "datamodule", None) if self._trainer else None

    def _check_region(self) -> None:
        datamodule = self._datamodule()
        if self.hparams.region == "crop" and datamodule_object_crops(datamodule):
            raise ConfigError(
                f"ZeroShotTask(region='crop') on {type(datamodule).__name__}, whose samples are "
                "object crops already: the object would be cropped twice",
                hint="set --model.region full, or turn the datamodule's crop off "
                "(--data.object_crop false)",
            )

    def setup(self, stage: str) -> None:
        """Check the region setting against the datamodule and hand it the region
        preprocessing, which then runs in its loader workers (:class:`RegionInputs`)."""
        self._check_region()
        datamodule = self._datamodule()
        if hasattr(datamodule, "set_eval_batch_transform"):
            datamodule.set_eval_batch_transform(RegionInputs(self.preprocessor))

    def teardown(self, stage: str) -> None:
        datamodule = self._datamodule()
        if hasattr(datamodule, "set_eval_batch_transform"):
            datamodule.set_eval_batch_transform(None)

    def _prepare(self) -> None:
        self._check_region()
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
        region (``region``) through ``image_transform`` (see :class:`RegionPreprocessor`), or
        the inputs the loader computed already (:class:`RegionInputs`)."""
        if MODEL_INPUT in batch:
            return batch[MODEL_INPUT].to(self.device)
        with one_cpu_thread(self.device):
            inputs = self.preprocessor(batch["image"], batch.get("mask"))
        return inputs.to(self.device)

    def logits(self, batch: dict[str, Any]) -> Tensor:
        """(B, C) cosine similarities of a batch to the class embeddings."""
        if self._class_embeddings is None:
            self._prepare()
        image = self.model.encode_image(self.preprocess(batch))
        return image @ self._class_embeddings.to(image).T

    def probabilities(self, batch: dict[str, Any]) -> Tensor:
        """(B, C) class probabilities: the cosines scaled by :attr:`probability_scale`,
        softmax (CLIP's zero-shot)."""
        return (self.logits(batch) * self.probability_scale).softmax(1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        raise RuntimeError("ZeroShotTask is evaluation only: use `matbench test` or `validate`")

    def configure_optimizers(self) -> Any:
        return None

    def _eval_step(self, stage: str, batch: dict[str, Any], dataloader_idx: int) -> None:
        labels = batch["label"]
        target = torch.stack(list(labels)) if isinstance(labels, list) else labels
        self.eval_metric(stage, dataloader_idx).update(self.logits(batch), target.to(self.device))

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        return embedding_prediction(self.model.encode_image(self.preprocess(batch)), batch)

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
