"""Model names resolved to kinds, and what each kind supports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from matbench.errors import ConfigError
from matbench.leaderboard.models import build_featurizer, resolve_model, unsupported

TINY_CLIP = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")


@pytest.mark.parametrize(
    ("name", "kind", "arch", "weights"),
    [
        ("ViT-B-32/laion2b_s34b_b79k", "open_clip", "ViT-B-32", "laion2b_s34b_b79k"),
        ("open_clip:ViT-B-16/openai", "open_clip", "ViT-B-16", "openai"),
        ("ViT-B-32", "open_clip", "ViT-B-32", None),
        ("ViT-B-32/none", "open_clip", "ViT-B-32", None),
        ("open_clip:ViT-B-32@/w/clip.pt", "open_clip", "ViT-B-32", "/w/clip.pt"),
        (TINY_CLIP, "open_clip", TINY_CLIP, None),
        ("vit_small_patch14_dinov2.lvd142m", "timm", "vit_small_patch14_dinov2.lvd142m", "timm"),
        ("timm:test_vit@none", "timm", "test_vit", None),
        ("timm:resnet18@/w/r18.pth", "timm", "resnet18", "/w/r18.pth"),
        ("facebook/dinov2-small", "hf", "facebook/dinov2-small", None),
        ("hf:facebook/dinov2-small@none", "hf", "facebook/dinov2-small", "none"),
    ],
)
def test_names_resolve(name: str, kind: str, arch: str, weights: str | None) -> None:
    spec = resolve_model(name)
    assert (spec.kind, spec.arch, spec.weights) == (kind, arch, weights)
    assert spec.name == name


def test_unknown_names_and_bare_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an open_clip architecture"):
        resolve_model("no_such_model_anywhere")
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ConfigError, match="needs its architecture"):
        resolve_model(str(weights))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.ckpt"))


def test_protocols_by_kind() -> None:
    clip, timm = resolve_model(TINY_CLIP), resolve_model("timm:test_vit@none")
    hf = resolve_model("hf:facebook/dinov2-small")
    assert unsupported(clip, "zero_shot") is None and unsupported(clip, "dense") is None
    assert "no text tower" in unsupported(timm, "zero_shot")
    assert "no text tower" in unsupported(hf, "retrieval")
    assert all(unsupported(m, "linear_probe") is None for m in (clip, timm, hf))
    assert unsupported(timm, "dense") is None and unsupported(hf, "dense") is None


def test_slugs_differ_by_weights() -> None:
    a, b = resolve_model("timm:test_vit@none"), resolve_model("timm:test_vit")
    assert a.slug != b.slug and a.identity() != b.identity()


@pytest.fixture
def tiny_dinov2(tmp_path: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    folder = tmp_path / "tiny-dinov2"
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=28, patch_size=14, num_register_tokens=0,
    )  # fmt: skip
    torch.manual_seed(0)
    Dinov2Model(config).save_pretrained(folder)
    return folder


def test_hugging_face_folder_featurizer(tiny_dinov2: Path) -> None:
    folder = tiny_dinov2
    spec = resolve_model(str(folder))
    assert spec.kind == "hf"
    featurizer = build_featurizer(spec)
    assert featurizer.size == 28
    crops, masks = torch.rand(3, 3, 28, 28), torch.ones(3, 28, 28, dtype=torch.bool)
    features = featurizer(crops, masks)
    assert features.shape == (3, 32) and torch.isfinite(features).all()
    # the folder's own weights are loaded (random init would differ)
    again = build_featurizer(resolve_model(str(folder)))
    torch.testing.assert_close(again(crops, masks), features)


def test_hugging_face_dense_descriptors(tiny_dinov2: Path) -> None:
    from transformers import AutoModel

    from matbench.leaderboard.models import task_section
    from matbench.models.dense import DenseFeatureDescriptor

    spec = resolve_model(f"hf:{tiny_dinov2}")
    section, ckpt = task_section(spec, "matseg", "dense")
    assert section["init_args"]["backbone"] == f"hf:{tiny_dinov2}" and ckpt == ""
    dense = DenseFeatureDescriptor(section["init_args"]["backbone"], None)
    image = torch.rand(2, 3, 30, 44)  # resized to 28 x 42: a 2 x 3 patch grid
    out = dense(image)
    assert out.shape == (2, 32, 30, 44)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 30, 44))
    # the patch tokens of the transformers model itself, class token dropped
    net = AutoModel.from_pretrained(tiny_dinov2).eval()
    small = torch.nn.functional.interpolate(image, size=(28, 42), mode="bilinear")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = net(pixel_values=(small - mean) / std).last_hidden_state[:, 1:]
    torch.testing.assert_close(dense.grid(image), tokens.transpose(1, 2).reshape(2, 32, 2, 3))
