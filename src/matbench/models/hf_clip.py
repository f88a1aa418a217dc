"""Hugging Face ``transformers`` CLIP models (``CLIPModel``, by hub name or ``save_pretrained``
folder) as the towers matbench's CLIP code takes.

:class:`HFCLIPVisual` behaves as an open_clip image tower (``preprocess_cfg``, ``image_size``,
``output_dim``; called on normalised images), so :class:`~matbench.models.clip.ImageTower`
and the region preprocessing use it unchanged; its ``preprocess_cfg`` restates the model's
``CLIPImageProcessor`` (shortest side resized, bicubic, centre crop, its mean and std).
:class:`HFCLIPText` encodes caption strings with the model's own tokenizer. Both return the
projected features, as ``CLIPModel.get_image_features`` / ``get_text_features`` compute them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from matbench.models.text import hf_tokens
from matbench.models.utils import Freezable

#: Prefix of model names that select a Hugging Face CLIP model (``hf:openai/clip-vit-base-patch32``).
HF_PREFIX = "hf:"
#: Weights strings that mean random initialisation from the model's config.
RANDOM = ("none", "random")
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def hf_clip_config(name: str) -> Any | None:
    """The ``transformers`` config of ``name`` (hub name or folder) when it is a CLIP model
    (image and text towers), else None; None too when no config can be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return None
    has_towers = hasattr(config, "vision_config") and hasattr(config, "text_config")
    return config if getattr(config, "model_type", "") == "clip" and has_towers else None


def create_hf_clip(name: str, weights: str | None = None, frozen: bool = False) -> nn.Module:
    """A ``transformers`` ``CLIPModel`` in eval mode: its own weights, or random init from its
    config when ``weights`` is ``"none"``. ``frozen``: only read, so inside
    :func:`~matbench.utils.weights.sharing_weights` one build serves every such caller."""
    from transformers import AutoConfig, CLIPModel

    from matbench.utils.weights import built_once, loading_weights

    def build() -> nn.Module:
        with loading_weights("weights", name):
            if weights in RANDOM:
                return CLIPModel(AutoConfig.from_pretrained(name)).eval()
            return CLIPModel.from_pretrained(name).eval()

    return built_once(("hf_clip", name, weights), build) if frozen else build()


def _processor_settings(name: str, size: int) -> dict[str, Any]:
    """The image processor's crop size, mean and std (``preprocessor_config.json`` of a
    folder; the OpenAI CLIP values otherwise)."""
    settings: dict[str, Any] = {"size": size, "mean": _OPENAI_MEAN, "std": _OPENAI_STD}
    file = Path(name).expanduser() / "preprocessor_config.json"
    if file.is_file():
        cfg = json.loads(file.read_text(encoding="utf-8"))
        crop = cfg.get("crop_size", size)
        settings["size"] = int(crop.get("height", size) if isinstance(crop, dict) else crop)
        settings["mean"] = tuple(cfg.get("image_mean", _OPENAI_MEAN))
        settings["std"] = tuple(cfg.get("image_std", _OPENAI_STD))
    return settings


class HFCLIPVisual(nn.Module):
    """The image tower of a ``CLIPModel`` as an open_clip visual: ``(B, 3, S, S)`` normalised
    images to projected features.

    Args:
        clip: The ``CLIPModel``.
        name: Its hub name or folder (for the image processor's settings).
    """

    def __init__(self, clip: nn.Module, name: str) -> None:
        super().__init__()
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection
        settings = _processor_settings(name, int(clip.config.vision_config.image_size))
        size = settings["size"]
        self.image_size = (size, size)
        self.output_dim = int(clip.config.projection_dim)
        #: open_clip's ``PreprocessCfg`` fields of the model's CLIPImageProcessor.
        self.preprocess_cfg = {
            "size": self.image_size,
            "mode": "RGB",
            "mean": settings["mean"],
            "std": settings["std"],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
            "fill_color": 0,
        }

    def forward(self, images: Tensor) -> Tensor:
        return self.visual_projection(self.vision_model(pixel_values=images).pooler_output)


class HFCLIPText(Freezable):
    """The text tower of a ``CLIPModel``: caption strings to projected features, tokenised by
    the model's own tokenizer (padded to the batch's longest caption).

    Args:
        clip: The ``CLIPModel``.
        name: Its hub name or folder (for the tokenizer).
    """

    def __init__(self, clip: nn.Module, name: str) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        from matbench.utils.weights import loading_weights

        with loading_weights("weights", name):
            self.tokenizer = AutoTokenizer.from_pretrained(name)
        self.text_model = clip.text_model
        self.text_projection = clip.text_projection
        self.context_length = int(clip.config.text_config.max_position_embeddings)
        self.dim = int(clip.config.projection_dim)

    def forward(self, texts: list[str]) -> Tensor:
        device = self.text_projection.weight.device
        tokens = hf_tokens(self.tokenizer, texts, self.context_length, device)
        out = self.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
        return self.text_projection(out.pooler_output)


def hf_logit_scale(clip: nn.Module) -> float | None:
    """The model's learned logit scale (as open_clip's ``logit_scale``, a log)."""
    scale = getattr(clip, "logit_scale", None)
    return None if scale is None else float(torch.as_tensor(scale).detach().reshape(-1)[0])
