"""An OpenAI-compatible chat-completions endpoint (GPT-4o-class models, vLLM, llama.cpp, …).

``POST <base_url>/chat/completions`` with ``{"model", "messages", "max_tokens",
"temperature", "top_p", "seed"}``; images travel as ``data:image/png;base64,…`` URLs in
``image_url`` content parts. The key is read from an environment variable, never from a
config file. Requests of a batch run concurrently; HTTP 429 and 5xx answers and network
errors are retried with exponential backoff; any other failure is that request's error.
Only the standard library is used.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from matbench.vlm.base import Backend, Generation, GenerationSettings, Request

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def image_data_url(image: Image.Image) -> str:
    """A PNG ``data:`` URL of an image (lossless: the marked region's outline stays sharp)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_messages(request: Request) -> list[dict[str, Any]]:
    """The chat-completions ``messages`` of one request."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    if not request.images:
        messages.append({"role": "user", "content": request.prompt})
        return messages
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}}
        for image in request.images
    ]
    content.append({"type": "text", "text": request.prompt})
    messages.append({"role": "user", "content": content})
    return messages


class OpenAIChat(Backend):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: The endpoint's model name (e.g. ``gpt-4o``).
        settings: Decoding settings (greedy by default; the seed is sent).
        base_url: API root (``https://api.openai.com/v1`` by default, or ``$OPENAI_BASE_URL``).
        api_key_env: Environment variable holding the key; an endpoint without
            authentication works without it.
        concurrency: Requests in flight at once.
        timeout: Seconds to wait for one answer.
        max_retries: Retries of a request after 429, 5xx or a network error.
        backoff: First retry delay in seconds (doubled each time).
    """

    def __init__(
        self,
        model: str,
        settings: GenerationSettings | None = None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
    ) -> None:
        super().__init__(settings)
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        self.api_key_env = api_key_env
        self.api_key = os.environ.get(api_key_env)
        if self.api_key is None and self.base_url == DEFAULT_BASE_URL:
            raise ValueError(
                f"the OpenAI API needs a key: set the environment variable {api_key_env}"
            )
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.model_id = f"openai:{model}@{self.base_url}"

    def _payload(self, request: Request) -> dict[str, Any]:
        s = self.settings
        return {
            "model": self.model,
            "messages": chat_messages(request),
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
        }

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=json.dumps(payload).encode("utf-8"),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as response:  # noqa: S310
            return json.loads(response.read().decode("utf-8"))

    def _one(self, request: Request) -> Generation:
        payload = self._payload(request)
        delay = self.backoff
        for attempt in range(self.max_retries + 1):
            retry = attempt < self.max_retries
            try:
                answer = self._post(payload)
            except urllib.error.HTTPError as err:
                body = err.read().decode("utf-8", "replace")[:300]
                if err.code in (429, 500, 502, 503, 504) and retry:
                    time.sleep(delay)
                    delay *= 2
                    continue
                return Generation(error=f"HTTP {err.code}: {body}")
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if retry:
                    time.sleep(delay)
                    delay *= 2
                    continue
                return Generation(error=f"{type(err).__name__}: {err}")
            except json.JSONDecodeError as err:
                return Generation(error=f"the endpoint's answer is not JSON ({err})")
            return self._parse(answer)
        return Generation(error="no answer")  # pragma: no cover - the loop always returns

    @staticmethod
    def _parse(answer: Any) -> Generation:
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return Generation(error=f"not a chat completion: {json.dumps(answer)[:200]}")
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not content.strip():
            return Generation(error="empty answer")
        return Generation(text=content.strip())

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        if len(requests) <= 1 or self.concurrency == 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def info(self) -> dict[str, Any]:
        info = super().info()
        info.update(model=self.model, base_url=self.base_url, api_key_env=self.api_key_env)
        return info
