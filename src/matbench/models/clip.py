"""Material CLIP models: open_clip towers, the offline MiniLM text tower, late fusion,
re-projection and the contrastive losses (CLIP, SigLIP) with cross-rank feature gathering.

Plain ``nn.Module`` code (no Lightning): :class:`matbench.tasks.clip.ClipMaterialTask` wraps it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.errors import ConfigError
from matbench.models.hf_clip import (
    HF_PREFIX,
    HFCLIPText,
    HFCLIPVisual,
    create_hf_clip,
    hf_logit_scale,
)
from matbench.models.text import (
    MINILM_NAME,
    MiniLMTextEncoder,
    OpenCLIPTextEncoder,
    build_text_encoder,
)
from matbench.models.utils import Freezable
from matbench.utils.deprecation import renamed_arguments
from matbench.utils.weights import (
    built_once,
    create_timm_model,
    loading_weights,
    timm_normalization,
)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def resolve_model_name(model: str) -> str:
    """An open_clip architecture name; a path to a JSON model config registers it first
    (``configs/clip/tiny.json`` becomes the architecture ``tiny``)."""
    import open_clip

    if model.endswith(".json"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config '{model}' does not exist")
        open_clip.add_model_config(path)
        return path.stem
    return model


def create_open_clip(
    model: str, weights: str | None, argument: str = "weights", frozen: bool = False
) -> nn.Module:
    """An open_clip model by architecture name (or JSON config path); ``weights`` a tag,
    a local file or None; ``argument`` names it in errors. ``frozen``: the caller only reads
    the weights, so inside :func:`~matbench.utils.weights.sharing_weights` one build serves
    every such caller."""
    import open_clip

    config = model
    model = resolve_model_name(model)
    if model not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip architecture '{model}' (see open_clip.list_models(), or register "
            "a config with open_clip.add_model_config)"
        )

    def build() -> nn.Module:
        with loading_weights(argument, weights):
            return open_clip.create_model(model, pretrained=weights)

    if not frozen:
        return build()
    return built_once(("open_clip", config, model, weights), build)


class ImageTower(Freezable):
    """The image tower of an open_clip model, taking images in [0, 1].

    Normalises with the model's mean/std and resizes to its input size when needed.

    Args:
        visual: ``clip.visual`` of an open_clip model.
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        self.register_buffer(
            "mean", torch.tensor(cfg.get("mean", OPENAI_MEAN)).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(cfg.get("std", OPENAI_STD)).view(1, 3, 1, 1), persistent=False
        )
        size = getattr(visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.dim = int(getattr(visual, "output_dim", 0)) or int(
            self.forward(torch.zeros(1, 3, *self.image_size)).shape[-1]
        )

    def forward(self, images: Tensor) -> Tensor:
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", antialias=True)
        return self.visual((images - self.mean) / self.std)


#: The CLIP model's own text tower: the one open_clip text wrapper (name kept for imports).
OpenCLIPTextTower = OpenCLIPTextEncoder


class ProjectedMiniLM(nn.Module):
    """Frozen offline MiniLM (384-d, hash-checked weights) + a learned linear projection.

    Embeddings of the frozen encoder are cached per string (captions repeat a lot: there are
    only ~160 material names), so only the projection costs anything in training.

    Args:
        dim: Output dimension (the image embedding size).
        weights: ``"minilm"`` (packaged), a Hugging Face folder, or None (random, for tests).
        cache_size: Most strings kept in the cache.
        encoder: The MiniLM encoder, when built already (``weights`` is then unused).
    """

    def __init__(
        self,
        dim: int,
        weights: str | None = MINILM_NAME,
        cache_size: int = 65536,
        encoder: MiniLMTextEncoder | None = None,
    ) -> None:
        super().__init__()
        self.encoder = (encoder or MiniLMTextEncoder(weights=weights)).freeze()
        self.proj = nn.Linear(self.encoder.dim, dim, bias=False)
        nn.init.normal_(self.proj.weight, std=self.encoder.dim**-0.5)
        self.cache_size = cache_size
        #: Frozen embeddings by string (kept in fit checkpoints by the task, for exact resume).
        self.cache: dict[str, Tensor] = {}

    @torch.no_grad()
    def base(self, texts: list[str]) -> Tensor:
        """The frozen 384-d MiniLM embeddings (cached)."""
        device = self.proj.weight.device
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            out = self.encoder(todo).float().cpu()
            if len(self.cache) + len(todo) > self.cache_size:
                self.cache.clear()
            self.cache.update(zip(todo, out, strict=True))
        return torch.stack([self.cache[t] for t in texts]).to(device)

    def forward(self, texts: list[str]) -> Tensor:
        return self.proj(self.base(texts))


@renamed_arguments({"pretrained": "weights", "lock_backbone": "freeze_backbone"})
class LateFusion(nn.Module):
    """Late fusion of whole-image context into an object embedding (the talk's experiment).

    Multi-head attention with the object's CLIP image embedding as the query and the tokens of a
    timm backbone run on the whole image as keys and values, added residually:
    ``out = obj + W_o · MHA(LN(obj), LN(ctx), LN(ctx))``. The output projection starts at zero,
    so that the fused model starts as the object model.

    Args:
        dim: Object embedding size.
        backbone: Any timm model name (CNNs give h·w tokens, ViTs their patch tokens).
        weights: ``"timm"`` (timm's default weights), a timm tag, a local file, or None
            (see :func:`matbench.utils.weights.create_timm_model`).
        num_heads: Attention heads (``dim`` must be divisible by it).
        freeze_backbone: Freeze the context backbone.
    """

    def __init__(
        self,
        dim: int,
        backbone: str = "resnet18",
        weights: str | None = None,
        num_heads: int = 8,
        freeze_backbone: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion: embedding size {dim} is not divisible by {num_heads} heads")
        net = create_timm_model(backbone, weights, argument="fusion_weights", num_classes=0)
        self.backbone = _FrozenBackbone(net).freeze(freeze_backbone)
        self.backbone.weights_source = weights
        mean, std = timm_normalization(net)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.context_proj = nn.Linear(net.num_features, dim)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def context_tokens(self, context: Tensor) -> Tensor:
        """(B, N, dim) tokens of whole images in [0, 1]."""
        features = self.backbone((context - self.mean) / self.std)
        if features.ndim == 4:  # (B, C, h, w) -> (B, h*w, C)
            features = features.flatten(2).transpose(1, 2)
        return self.context_proj(features)

    def forward(self, obj: Tensor, context: Tensor) -> Tensor:
        tokens = self.norm_kv(self.context_tokens(context))
        query = self.norm_q(obj).unsqueeze(1)
        fused, _ = self.attn(query, tokens, tokens, need_weights=False)
        return obj + fused.squeeze(1)


class _FrozenBackbone(Freezable):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.forward_features(x)


class ReProjection(nn.Module):
    """A learned linear re-projection of frozen embeddings (FG-CLIP's finding: material is in
    CLIP latents but not separable by cosine). Image and text get their own map, both
    initialised to the identity (or a random orthogonal map when ``out_dim`` differs).

    Args:
        dim: Input embedding size.
        out_dim: Output size (default ``dim``).
    """

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or dim
        self.image = nn.Linear(dim, out_dim, bias=False)
        self.text = nn.Linear(dim, out_dim, bias=False)
        for layer in (self.image, self.text):
            if out_dim == dim:
                nn.init.eye_(layer.weight)
            else:
                nn.init.orthogonal_(layer.weight)

    def forward(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        return self.image(image), self.text(text)


@renamed_arguments(
    {
        "pretrained": "weights",
        "lock_image": "freeze_image",
        "lock_text": "freeze_text",
        "fusion_pretrained": "fusion_weights",
        "lock_fusion_backbone": "freeze_fusion_backbone",
    }
)
class MaterialCLIP(nn.Module):
    """Object image embedding and material text embedding in one space.

    Args:
        model: open_clip architecture name (e.g. ``ViT-B-32``, or a registered config), or
            ``hf:<name or folder>``: a Hugging Face ``transformers`` ``CLIPModel``
            (:mod:`matbench.models.hf_clip`).
        weights: open_clip tag, local checkpoint, or None (random); for a Hugging Face model,
            None (its own weights) or ``"none"`` (random init from its config).
        text_tower: ``"open_clip"`` (the model's own), ``"minilm"`` (offline MiniLM, frozen,
            + learned projection), ``"minilm-random"`` (same, random weights: tests) or a
            Hugging Face MiniLM folder.
        freeze_image: Freeze the image tower.
        freeze_text: Freeze the text tower (the MiniLM projection always trains).
        fusion: Late fusion with whole-image features (needs ``context`` images).
        fusion_backbone: timm backbone of the fusion.
        fusion_weights: Its weights (timm tag/True-like string, local file, or None).
        fusion_heads: Attention heads of the fusion.
        freeze_fusion_backbone: Freeze the fusion backbone.
        reproject: Re-project frozen embeddings (both towers and the fusion are frozen).
        reproject_dim: Re-projection output size (default: the embedding size).
        frozen: The open_clip weights are only read (evaluation): inside
            :func:`~matbench.utils.weights.sharing_weights`, one build serves every such model.
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        weights: str | None = None,
        text_tower: str = "open_clip",
        freeze_image: bool = False,
        freeze_text: bool = False,
        fusion: bool = False,
        fusion_backbone: str = "resnet18",
        fusion_weights: str | None = None,
        fusion_heads: int = 8,
        freeze_fusion_backbone: bool = True,
        reproject: bool = False,
        reproject_dim: int | None = None,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        hf_name = model[len(HF_PREFIX) :] if model.startswith(HF_PREFIX) else None
        if hf_name is not None:  # a transformers CLIPModel
            clip = create_hf_clip(hf_name, weights, frozen=frozen)
            visual: nn.Module = HFCLIPVisual(clip, hf_name)
            self.logit_scale_init, self.logit_bias_init = hf_logit_scale(clip), None
        else:
            clip = create_open_clip(model, weights, argument="weights", frozen=frozen)
            model = resolve_model_name(model)
            visual = clip.visual
            #: The open_clip model's own logit scale and bias (None: it has none), read before
            #: the towers are split; the loss starts from them when it pairs the same towers.
            self.logit_scale_init = _scalar(getattr(clip, "logit_scale", None))
            self.logit_bias_init = _scalar(getattr(clip, "logit_bias", None))
        self.image = ImageTower(visual)
        self.image.weights_source = weights
        self.dim = self.image.dim
        if text_tower.startswith("open_clip:"):
            raise ValueError(
                f"text_tower '{text_tower}': a CLIP material model pairs its image tower with "
                "its own text tower ('open_clip') or a projected MiniLM"
            )
        if hf_name is not None and text_tower == "open_clip":  # the model's own tower
            text: nn.Module = HFCLIPText(clip, hf_name)
        else:
            text = build_text_encoder(
                text_tower,
                weights if text_tower == "open_clip" else None,
                argument="text_tower",
                own_clip=(clip, model),
                name_argument="text_tower",
            )
        # a MiniLM gets a learned projection to the image embedding size
        self.text: nn.Module = (
            ProjectedMiniLM(self.dim, encoder=text) if isinstance(text, MiniLMTextEncoder) else text
        )
        self.fusion = (
            LateFusion(
                self.dim, fusion_backbone, fusion_weights, fusion_heads, freeze_fusion_backbone
            )
            if fusion
            else None
        )
        self.reprojection = ReProjection(self.dim, reproject_dim) if reproject else None
        if reproject:
            freeze_image = freeze_text = True
            if self.fusion is not None:
                for p in self.fusion.parameters():
                    p.requires_grad_(False)
        self.image.freeze(freeze_image)
        if isinstance(self.text, ProjectedMiniLM):
            if freeze_text or reproject:
                self.text.proj.requires_grad_(False)
        else:
            self.text.freeze(freeze_text)
        self.output_dim = reproject_dim or self.dim

    def encode_image(
        self, images: Tensor, context: Tensor | None = None, normalize: bool = True
    ) -> Tensor:
        """Object embeddings of (B, 3, H, W) crops in [0, 1] (and whole images for fusion)."""
        features = self.image(images)
        if self.fusion is not None:
            if context is None:
                raise ValueError(
                    "late fusion needs whole-image 'context' samples: set the datamodule's "
                    "context_size"
                )
            features = self.fusion(features, context)
        if self.reprojection is not None:
            features = self.reprojection.image(features)
        return F.normalize(features, dim=-1) if normalize else features

    def open_clip_state_dict(self) -> dict[str, Tensor]:
        """The weights as a plain open_clip CLIP model's state dict (image tower under
        ``visual.``, the text tower, ``logit_scale``): what ``open_clip.create_model(arch,
        pretrained=file)`` loads. Only models made of open_clip's own towers can be exported."""
        if not isinstance(self.text, OpenCLIPTextTower) or self.fusion or self.reprojection:
            raise ConfigError(
                "only a CLIP model with open_clip's own text tower, without late fusion or "
                "re-projection, exports to a plain open_clip checkpoint",
                hint="save it with save_pretrained instead",
            )
        state = {f"visual.{k}": v for k, v in self.image.visual.state_dict().items()}
        state.update(self.text.clip.state_dict())
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def encode_text(self, texts: list[str], normalize: bool = True) -> Tensor:
        """Embeddings of caption strings."""
        features = self.text(list(texts))
        if self.reprojection is not None:
            features = self.reprojection.text(features)
        return F.normalize(features, dim=-1) if normalize else features


def _scalar(value: Tensor | None) -> float | None:
    return None if value is None else float(value.detach().reshape(-1)[0])


# -- losses ----------------------------------------------------------------------------------


# The losses moved to matbench.models.losses; their names stay importable from here.
from matbench.models.losses import ContrastiveLoss, gather_with_local_grad  # noqa: E402, F401
