"""Weights by local file: formats, containers, mismatches, hashes; frozen modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from matbench.models.utils import Freezable
from matbench.utils.weights import (
    load_state_dict_file,
    load_weights,
    looks_like_path,
    sha256,
    verify_sha256,
)


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "lightning", "ddp"])
def test_load_formats(tmp_path: Path, fmt: str) -> None:
    src, dst = _net(), _net()
    state = src.state_dict()
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pt'}"
    if fmt == "safetensors":
        save_file(state, str(path))
    elif fmt == "lightning":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif fmt == "ddp":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    load_weights(dst, path)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_state_dict_file(tmp_path / "nope.pt")
    other = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="none of its 1 keys match"):
        load_weights(_net(), other)
    wrong = tmp_path / "wrong.pt"
    torch.save({"0.weight": torch.zeros(5, 3)}, wrong)
    with pytest.raises(ValueError, match=r"wrong.pt: shape mismatch for '0.weight'"):
        load_weights(_net(), wrong)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_state_dict_file(garbage)


def test_looks_like_path(tmp_path: Path) -> None:
    assert looks_like_path("weights/model.safetensors")
    assert looks_like_path("./x")
    assert looks_like_path(str(tmp_path))
    assert not looks_like_path("laion2b_s34b_b79k")
    assert not looks_like_path("imagenet")


def test_sha256(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256(f) == digest
    verify_sha256(f, digest[:8])
    with pytest.raises(ValueError, match="does not match"):
        verify_sha256(f, "53aa5117")


class _Frozen(Freezable):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.drop = nn.Dropout(0.5)


def test_frozen_module_stays_in_eval() -> None:
    parent = nn.Module()
    parent.child = _Frozen().freeze()
    parent.train()
    assert not parent.child.training and not parent.child.drop.training
    assert not any(p.requires_grad for p in parent.child.parameters())
    parent.child.freeze(False)
    parent.train()
    assert parent.child.training and all(p.requires_grad for p in parent.child.parameters())


def test_timm_model_by_file_tag_or_random(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    from matbench.utils.weights import create_timm_model, timm_normalization

    torch.manual_seed(0)
    src = create_timm_model("test_vit", None, num_classes=0)
    path = tmp_path / "vit.safetensors"
    save_file(src.state_dict(), str(path))
    torch.manual_seed(1)
    loaded = create_timm_model("test_vit", str(path), num_classes=0)
    for key, value in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    mean, std = timm_normalization(loaded)
    assert mean.shape == std.shape == (1, 3, 1, 1)

    bad = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="other.pt"):
        create_timm_model("test_vit", str(bad), num_classes=0)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_timm_model("test_vit", str(tmp_path / "missing.pth"))

    asked = []
    monkeypatch.setattr(
        timm, "create_model", lambda name, pretrained, **kw: asked.append((name, pretrained))
    )
    create_timm_model("resnet18", "timm")
    create_timm_model("resnet18", "a1_in1k")
    assert asked == [("resnet18", True), ("resnet18.a1_in1k", True)]


def test_timm_file_with_another_image_size_is_resampled(tmp_path: Path) -> None:
    from matbench.utils.weights import create_timm_model

    src = create_timm_model("test_vit", None, num_classes=0, img_size=32)
    path = tmp_path / "vit.pth"
    torch.save(src.state_dict(), path)
    dst = create_timm_model("test_vit", str(path), num_classes=0, img_size=64)
    assert dst.pos_embed.shape[1] > src.pos_embed.shape[1]
    assert torch.equal(dst.patch_embed.proj.weight, src.patch_embed.proj.weight)


def test_sharing_weights_builds_a_model_once_per_scope() -> None:
    """Inside the scope, builds of one key share one build's tensors (a new module tree each:
    one user dropping a sub-module leaves the others' alone); weights changed in place since
    (a checkpoint loaded into them) or converted are detected and built again; outside the
    scope every call builds."""
    from matbench.utils.weights import built_once, sharing_weights

    builds = []

    def build() -> nn.Module:
        builds.append(1)
        return _net()

    assert built_once(("k",), build) is not built_once(("k",), build)
    assert len(builds) == 2
    builds.clear()
    with sharing_weights():
        first, second = built_once(("k",), build), built_once(("k",), build)
        assert len(builds) == 1 and first is not second
        assert first[0].weight is second[0].weight
        del first[1]  # a text encoder drops the image tower of its copy
        assert isinstance(built_once(("k",), build)[1], nn.Linear) and len(builds) == 1
        with torch.no_grad():
            second[0].weight.add_(1.0)  # weights written into in place
        fresh = built_once(("k",), build)
        assert len(builds) == 2 and fresh[0].weight is not second[0].weight
        fresh.double()
        built_once(("k",), build)
        assert len(builds) == 3
        built_once(("other",), build)  # one model kept: the oldest goes
        built_once(("k",), build)
        assert len(builds) == 5
    built_once(("k",), build)
    assert len(builds) == 6


def test_frozen_open_clip_and_timm_builds_are_shared(tmp_path: Path) -> None:
    """The leaderboard's zero-shot model and probe featurizer of one open_clip model read one
    build; a checkpoint given to the zero-shot task is never loaded into a shared build."""
    from matbench.models.clip import create_open_clip
    from matbench.tasks.clip import frozen_clip
    from matbench.utils.weights import create_timm_model, sharing_weights

    tiny = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")
    with sharing_weights():
        zero_shot = frozen_clip(tiny, None, "open_clip", None)
        visual = create_open_clip(tiny, None, frozen=True).visual
        weight = next(visual.parameters())
        assert weight is next(zero_shot.image.visual.parameters())
        assert zero_shot.text.clip.visual is None and visual is not None  # own module trees
        trained = create_open_clip(tiny, None)  # not frozen: its own build
        assert next(trained.visual.parameters()) is not weight
        timm_a = create_timm_model("test_vit", None, frozen=True, num_classes=0)
        timm_b = create_timm_model("test_vit", None, frozen=True, num_classes=0)
        assert next(timm_a.parameters()) is next(timm_b.parameters())
