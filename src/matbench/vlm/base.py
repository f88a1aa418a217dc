"""What every model back end shares: requests, generations, settings and the interface.

A back end turns a batch of :class:`Request` (a prompt, optionally with images) into one
:class:`Generation` per request. Failures are per request (``Generation.error``), so that one
bad region never ends a long run; a back end raises only for errors of its own setup (no such
model, no API key).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

#: How a region is shown to the model: outlined, set-of-marks label, or cropped.
MARKERS = ("outline", "som", "crop")


@dataclass
class Request:
    """One prompt for a model.

    Args:
        prompt: The user message.
        images: Images shown with the prompt, in order (an image-text model shows them
            before the text); empty for text-only generation.
        system: An optional system message.
    """

    prompt: str
    images: list[Image.Image] = field(default_factory=list)
    system: str | None = None


@dataclass
class Generation:
    """The answer to one request: ``text`` or, when it failed, ``error`` (the reason)."""

    text: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@dataclass
class Prepared:
    """A batch of requests and what a back end computed from them ahead of generation."""

    requests: list[Request]
    inputs: Any = None


@dataclass
class GenerationSettings:
    """Decoding settings shared by the back ends.

    Args:
        max_new_tokens: Longest answer, in tokens.
        temperature: 0 = greedy decoding (the default, deterministic); > 0 samples.
        top_p: Nucleus sampling mass (used only when sampling).
        seed: Seed of the sampling (recorded in every provenance; sent to endpoints that
            accept one).
    """

    max_new_tokens: int = 96
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Backend(ABC):
    """A model that answers batches of requests.

    Attributes:
        model_id: What identifies the model's answers (name or folder plus a digest of its
            weights where known): part of every cache key.
        accepts_images: Whether requests may carry images.
    """

    model_id: str = ""
    accepts_images: bool = True

    def __init__(self, settings: GenerationSettings | None = None) -> None:
        self.settings = settings or GenerationSettings()

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """One :class:`Generation` per request, in order."""

    def prepare(self, requests: Sequence[Request]) -> Prepared:
        """The CPU-side preparation of a batch (a processor's tokenising and image
        preprocessing), separate from :meth:`generate_prepared` so that a pipeline can
        prepare the next batch in another thread while the model answers this one."""
        return Prepared(list(requests))

    def generate_prepared(self, prepared: Prepared) -> list[Generation]:
        """:meth:`generate` of a batch made by :meth:`prepare`."""
        return self.generate(prepared.requests)

    def info(self) -> dict[str, Any]:
        """What a provenance file records about the back end."""
        s = self.settings
        return {
            "backend": type(self).__name__,
            "model_id": self.model_id,
            "max_new_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "greedy": s.greedy,
            "seed": s.seed,
        }

    def _check(self, requests: Sequence[Request]) -> None:
        if not self.accepts_images and any(r.images for r in requests):
            raise ValueError(f"{type(self).__name__} is text-only: requests must have no images")
