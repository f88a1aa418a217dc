"""Hugging Face ``transformers`` back ends: image-text-to-text models and text-only LMs.

Any model that ``AutoModelForImageTextToText`` (Qwen2.5-VL, LLaVA, SmolVLM/Idefics3, …) or
``AutoModelForCausalLM`` loads, by hub name or local folder; its processor's chat template
formats the prompts. Batches are left-padded and decoded greedily by default; only the new
tokens are returned. CPU runs stay in fp32.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from matbench.utils.weights import sha256
from matbench.vlm.base import Backend, Generation, GenerationSettings, Prepared, Request

#: Weight and config files whose contents identify a local model folder.
_IDENTITY_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja")


def model_identity(model: str) -> str:
    """The cache identity of a model: a hub name as given; a local folder as its path plus a
    digest of its weight, config and tokenizer files (a retrained folder gets a new id)."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return model
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in _IDENTITY_SUFFIXES:
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(sha256(path).encode())
    return f"{folder.resolve()}@{digest.hexdigest()[:16]}"


def _dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            name
        ]
    except KeyError:
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got '{name}'") from None


def _conversation(request: Request, with_images: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if not with_images:  # text-only chat templates expect plain string contents
        if request.system:
            messages.append({"role": "system", "content": request.system})
        return [*messages, {"role": "user", "content": request.prompt}]
    if request.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    content: list[dict[str, Any]] = []
    content += [{"type": "image", "image": image} for image in request.images]
    content.append({"type": "text", "text": request.prompt})
    messages.append({"role": "user", "content": content})
    return messages


class _TransformersBackend(Backend):
    """Shared loading, batching and decoding of the two ``transformers`` back ends."""

    def __init__(
        self,
        model: str,
        settings: GenerationSettings | None = None,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> None:
        super().__init__(settings)
        self.name = model
        self.device = torch.device(device)
        self.dtype = _dtype(dtype)
        self.model_id = model_identity(model)
        self.processor, self.model = self._load(model)
        self.model.to(self.device).eval()
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        # decoder-only batches must be padded on the left, or the answers start after padding
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer

    def _load(self, model: str) -> tuple[Any, Any]:
        raise NotImplementedError

    def _inputs(self, requests: Sequence[Request]) -> dict[str, Any]:
        raise NotImplementedError

    def prepare(self, requests: Sequence[Request]) -> Prepared:
        self._check(requests)
        try:
            inputs = self._inputs(requests) if requests else None
        except (RuntimeError, ValueError, TypeError, IndexError, OSError):
            inputs = None  # generate_prepared finds the bad request one by one
        return Prepared(list(requests), inputs)

    @torch.no_grad()
    def _generate_inputs(self, inputs: Any) -> list[Generation]:
        inputs = inputs.to(self.device)
        for key, value in inputs.items():
            if torch.is_floating_point(value):
                inputs[key] = value.to(self.dtype)
        s = self.settings
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "do_sample": not s.greedy}
        if not s.greedy:
            kwargs.update(temperature=s.temperature, top_p=s.top_p)
            torch.manual_seed(s.seed)
        else:
            # the model's generation_config may ask for sampling: greedy means greedy
            kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.model.generate(**inputs, pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        new = out[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [
            Generation(text=t.strip()) if t.strip() else Generation(error="empty answer")
            for t in texts
        ]

    def generate_prepared(self, prepared: Prepared) -> list[Generation]:
        requests = prepared.requests
        if not requests:
            return []
        if prepared.inputs is not None:
            try:
                return self._generate_inputs(prepared.inputs)
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                if len(requests) == 1:
                    return [Generation(error=f"{type(err).__name__}: {err}")]
        elif len(requests) == 1:
            try:
                return self._generate_inputs(self._inputs(requests))
            except (RuntimeError, ValueError, TypeError, IndexError, OSError) as err:
                return [Generation(error=f"{type(err).__name__}: {err}")]
        # one bad request must not fail its batch: retry one by one to find it
        return [self.generate([r])[0] for r in requests]

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        return self.generate_prepared(self.prepare(requests))

    def info(self) -> dict[str, Any]:
        info = super().info()
        info.update(model=self.name, device=str(self.device), dtype=str(self.dtype))
        return info


class TransformersVLM(_TransformersBackend):
    """An image-text-to-text model of ``transformers`` (``AutoModelForImageTextToText``).

    Args:
        model: Hub name (e.g. ``Qwen/Qwen2.5-VL-7B-Instruct``) or local folder with the model
            and its processor (``save_pretrained``).
        settings: Decoding settings (greedy by default).
        device: Torch device.
        dtype: ``float32`` (the CPU default), ``bfloat16`` or ``float16``.
    """

    def _load(self, model: str) -> tuple[Any, Any]:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(model)
        network = AutoModelForImageTextToText.from_pretrained(model, dtype=self.dtype)
        return processor, network

    def _inputs(self, requests: Sequence[Request]) -> dict[str, Any]:
        conversations = [_conversation(r, with_images=True) for r in requests]
        return self.processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )


class TransformersLM(_TransformersBackend):
    """A text-only causal LM of ``transformers`` (``AutoModelForCausalLM``); the tokenizer's
    chat template formats the prompt when it has one, else the prompt is used as is.

    Args:
        model: Hub name or local folder.
        settings: Decoding settings (greedy by default).
        device: Torch device.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
    """

    accepts_images = False

    def _load(self, model: str) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        network = AutoModelForCausalLM.from_pretrained(model, dtype=self.dtype)
        return tokenizer, network

    def _inputs(self, requests: Sequence[Request]) -> dict[str, Any]:
        tokenizer = self.tokenizer
        if getattr(tokenizer, "chat_template", None):
            texts = [
                tokenizer.apply_chat_template(
                    _conversation(r, with_images=False), add_generation_prompt=True, tokenize=False
                )
                for r in requests
            ]
        else:
            texts = [f"{r.system}\n\n{r.prompt}" if r.system else r.prompt for r in requests]
        return tokenizer(texts, return_tensors="pt", padding=True)
