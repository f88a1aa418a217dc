"""The offline MiniLM text encoder: hash-checked weights, real semantics."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from matbench.models.text import MINILM_SHA256, MiniLMTextEncoder, build_text_encoder, minilm_dir
from matbench.utils.weights import sha256


@pytest.fixture(scope="module")
def encoder() -> MiniLMTextEncoder:
    return MiniLMTextEncoder().freeze()


def test_packaged_weights_hash() -> None:
    assert sha256(minilm_dir() / "model.safetensors") == MINILM_SHA256
    assert MINILM_SHA256.startswith("53aa5117")


def test_embeddings_are_unit_and_meaningful(encoder: MiniLMTextEncoder) -> None:
    with torch.no_grad():
        e = encoder(["wood", "oak wood", "brushed steel", "stainless steel"])
    assert e.shape == (4, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[2, 1]
    encoder.train()  # a frozen encoder ignores train(): deterministic output
    with torch.no_grad():
        assert torch.allclose(encoder(["wood"]), e[:1], atol=1e-6)


def test_tampered_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "model"
    shutil.copytree(minilm_dir(), copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    monkeypatch.setattr("matbench.models.text.minilm_dir", lambda: copy)
    with pytest.raises(ValueError, match="does not match the expected"):
        MiniLMTextEncoder()


def test_local_folder_and_errors(tmp_path: Path) -> None:
    enc = MiniLMTextEncoder(weights=str(minilm_dir()))  # a local folder: loaded, not hashed
    assert enc.dim == 384
    with pytest.raises(FileNotFoundError, match="config.json"):
        MiniLMTextEncoder(weights=str(tmp_path))
    with pytest.raises(ValueError, match="unknown text encoder"):
        build_text_encoder("bert")


def test_one_text_encoder_factory_for_every_task() -> None:
    """The CLIP task's text towers and the two-stream text stream come from one factory with
    one naming scheme, and one open_clip text wrapper."""
    import open_clip

    from matbench.models.clip import MaterialCLIP, ProjectedMiniLM
    from matbench.models.text import OpenCLIPTextEncoder

    tiny = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")
    own = MaterialCLIP(model=tiny, text_tower="open_clip")
    assert type(own.text) is OpenCLIPTextEncoder and not own.text.normalize
    assert not hasattr(own.text.clip, "logit_scale")  # the temperature lives in the loss
    minilm = MaterialCLIP(model=tiny, text_tower=str(minilm_dir()))  # a MiniLM folder
    assert isinstance(minilm.text, ProjectedMiniLM)
    with pytest.raises(ValueError, match="own text tower"):
        MaterialCLIP(model=tiny, text_tower="open_clip:tiny_clip")
    open_clip.add_model_config(tiny)
    separate = build_text_encoder("open_clip:tiny_clip")
    assert type(separate) is OpenCLIPTextEncoder and separate.normalize
    assert torch.allclose(separate(["wood"]).norm(dim=-1), torch.ones(1))
    assert isinstance(build_text_encoder(str(minilm_dir())), MiniLMTextEncoder)
    with pytest.raises(ValueError, match="text_encoder='open_clip'"):
        build_text_encoder("open_clip")  # "its own" means nothing outside a CLIP model
