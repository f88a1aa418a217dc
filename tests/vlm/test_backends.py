"""The model back ends: tiny transformers models built offline, and the chat-completions
client against a local server that speaks the format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matbench.vlm import GenerationSettings, Request, build_backend
from matbench.vlm.openai import OpenAIChat
from matbench.vlm.tiny import make_tiny_lm, make_tiny_vlm
from tests.vlm.server import chat_server


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (30 + 5 * i, 40, 3), dtype=np.uint8)) for i in range(n)
    ]


def test_transformers_vlm_batched_greedy(tiny_vlm: Path) -> None:
    settings = GenerationSettings(max_new_tokens=6, seed=3)
    backend = build_backend(f"hf:{tiny_vlm}", settings)
    assert backend.model_id.startswith(str(tiny_vlm.resolve()))
    requests = [Request("describe the surface", [image]) for image in _images(3)]
    batch = backend.generate(requests)
    assert len(batch) == 3 and all(g.ok for g in batch)
    # greedy decoding of left-padded batches: each answer equals the one-by-one answer
    single = [backend.generate([r])[0].text for r in requests]
    assert [g.text for g in batch] == single
    assert backend.generate(requests)[0].text == batch[0].text
    info = backend.info()
    assert info["greedy"] is True and info["seed"] == 3 and info["max_new_tokens"] == 6


def test_model_id_follows_the_weights(tiny_vlm: Path, tmp_path: Path) -> None:
    from matbench.vlm.hf import model_identity

    other = make_tiny_vlm(tmp_path / "other", seed=1)
    assert model_identity(str(tiny_vlm)) != model_identity(str(other))
    assert model_identity("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_transformers_text_only(tmp_path: Path) -> None:
    backend = build_backend(f"hf-text:{make_tiny_lm(tmp_path / 'lm')}")
    backend.settings.max_new_tokens = 5
    out = backend.generate([Request("describe glossy"), Request("one word", system="answer")])
    assert all(g.ok and g.text for g in out)
    with pytest.raises(ValueError, match="text-only"):
        backend.generate([Request("x", _images(1))])


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="hf:<model name or folder>"):
        build_backend("gpt4:x")


def test_openai_chat_format_retries_and_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(text: str, images: list[Image.Image]) -> str:
        if "empty" in text:
            return "  "
        return f"{len(images)} image(s) of height {images[0].height}" if images else "no image"

    monkeypatch.setenv("MY_KEY", "test-key")
    with chat_server(answer, fail_first=True) as server:
        backend = OpenAIChat(
            "gpt-test",
            GenerationSettings(max_new_tokens=20, seed=7),
            base_url=server.url,
            api_key_env="MY_KEY",
            concurrency=2,
            backoff=0.01,
        )
        requests = [Request("look", [im], system="be brief") for im in _images(3)]
        out = backend.generate([*requests, Request("empty please")])
        assert [g.text for g in out[:3]] == [f"1 image(s) of height {h}" for h in (30, 35, 40)]
        assert out[3].error == "empty answer"
        body = server.log[0]
        assert body["model"] == "gpt-test" and body["seed"] == 7 and body["temperature"] == 0
        assert body["max_tokens"] == 20
        assert body["messages"][0] == {"role": "system", "content": "be brief"}
        # every request failed once with HTTP 500 and was retried
        assert len(server.log) == 8
        backend.max_retries = 0
        monkeypatch.setenv("MY_KEY", "wrong")
        bad = OpenAIChat("gpt-test", base_url=server.url, api_key_env="MY_KEY", max_retries=0)
        failed = bad.generate([Request("look")])[0]
        assert failed.error is not None and failed.error.startswith("HTTP 401")


def test_openai_needs_a_key_for_the_real_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIChat("gpt-4o")


def test_openai_unreachable_endpoint_is_a_per_request_error() -> None:
    backend = OpenAIChat("m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=2)
    out = backend.generate([Request("hi")])
    assert not out[0].ok and "URLError" in out[0].error
