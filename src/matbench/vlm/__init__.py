"""Model back ends shared by every matbench tool that asks a (vision-)language model:
appearance descriptions (``matbench describe``), the zero-shot VLM baseline, captions and
prompt generation.

A back end is named by a spec string:

- ``hf:<hub name or folder>`` — a ``transformers`` image-text-to-text model
  (:class:`~matbench.vlm.hf.TransformersVLM`);
- ``hf-text:<hub name or folder>`` — a ``transformers`` text-only causal LM
  (:class:`~matbench.vlm.hf.TransformersLM`);
- ``openai:<model>`` — an OpenAI-compatible chat-completions endpoint
  (:class:`~matbench.vlm.openai.OpenAIChat`; URL from ``base_url`` or ``$OPENAI_BASE_URL``,
  key from ``$OPENAI_API_KEY``).
"""

from __future__ import annotations

import argparse
from typing import Any

from matbench.vlm.base import Backend, Generation, GenerationSettings, Request

BACKEND_KINDS = ("hf", "hf-text", "openai")

__all__ = [
    "BACKEND_KINDS",
    "Backend",
    "Generation",
    "GenerationSettings",
    "Request",
    "add_model_arguments",
    "backend_from_args",
    "build_backend",
]


def build_backend(
    spec: str,
    settings: GenerationSettings | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 4,
) -> Backend:
    """The back end named by ``spec`` (see the module docstring).

    Args:
        spec: ``hf:<model>``, ``hf-text:<model>`` or ``openai:<model>``.
        settings: Decoding settings (greedy by default).
        device: Torch device of a ``transformers`` model.
        dtype: Torch dtype name of a ``transformers`` model.
        base_url: API root of an ``openai`` back end.
        api_key_env: Environment variable with the ``openai`` back end's key.
        concurrency: Requests in flight at once for an ``openai`` back end.
    """
    kind, sep, name = spec.partition(":")
    if not sep or not name or kind not in BACKEND_KINDS:
        raise ValueError(
            f"unknown model back end '{spec}': use hf:<model name or folder>, "
            "hf-text:<model name or folder> or openai:<model>"
        )
    if kind == "openai":
        from matbench.vlm.openai import OpenAIChat

        return OpenAIChat(
            name, settings, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency
        )
    from matbench.vlm.hf import TransformersLM, TransformersVLM

    cls: Any = TransformersVLM if kind == "hf" else TransformersLM
    return cls(name, settings, device=device, dtype=dtype)


def add_model_arguments(
    parser: argparse.ArgumentParser, max_new_tokens: int = 96, required: bool = True
) -> None:
    """The options that choose and run a back end (``--model``, decoding, device, endpoint),
    shared by every command that asks a model; `backend_from_args` builds it from them.

    Args:
        parser: The command's parser.
        max_new_tokens: The command's default answer length.
        required: Whether ``--model`` must be given.
    """
    parser.add_argument(
        "--model",
        required=required,
        help="back end: hf:<model>, hf-text:<model>, openai:<model>",
    )
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="hf back ends: torch device")
    parser.add_argument("--dtype", default="float32", help="hf back ends: torch dtype")
    parser.add_argument("--base-url", help="openai back end: API root")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    parser.add_argument("--concurrency", type=int, default=4, help="openai: requests in flight")


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The back end chosen by the options of `add_model_arguments`."""
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed
    )
    return build_backend(
        args.model,
        settings,
        device=args.device,
        dtype=args.dtype,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        concurrency=args.concurrency,
    )
