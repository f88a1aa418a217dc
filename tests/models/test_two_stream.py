"""The two-stream model: mask pooling, stream switches, freezing and weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from matbench.models.two_stream import (
    TwoStreamModel,
    VisionStream,
    mask_to_grid,
    masked_max_pool,
)


def reference_pool(grid: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """Plain loops: patch (i, j) is inside when its mean mask value >= threshold."""
    batch, dim, h, w = grid.shape
    ph, pw = mask.shape[1] // h, mask.shape[2] // w
    out = torch.empty(batch, dim)
    for b in range(batch):
        best = torch.full((dim,), float("-inf"))
        for i in range(h):
            for j in range(w):
                cell = mask[b, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw].float().mean()
                if cell >= threshold:
                    best = torch.maximum(best, grid[b, :, i, j])
        out[b] = best
    return out


def test_masked_max_pool_matches_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(3, 5, 4, 4, generator=gen)
    mask = torch.zeros(3, 32, 32, dtype=torch.bool)
    mask[0, :16, :16] = True
    mask[1, 4:30, 10:28] = True
    mask[2] = torch.rand(32, 32, generator=gen) > 0.3
    for threshold in (0.5, 0.25):
        inside = mask_to_grid(mask, (4, 4), threshold)
        assert torch.equal(masked_max_pool(grid, inside), reference_pool(grid, mask, threshold))


def test_tiny_mask_falls_back_to_the_patch_at_its_centroid() -> None:
    grid = torch.randn(2, 3, 4, 4)
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[0, 40:42, 50:52] = True  # 4 pixels, in patch (2, 3) of 16 x 16 patches
    inside = mask_to_grid(mask, (4, 4), 0.5)
    assert inside[0].sum() == 1 and inside[0, 2, 3]
    pooled = masked_max_pool(grid, inside)
    assert torch.equal(pooled[0], grid[0, :, 2, 3])
    # an entirely empty mask pools over every patch: finite, never NaN
    assert inside[1].all() and torch.isfinite(pooled).all()
    assert torch.equal(pooled[1], grid[1].flatten(1).amax(1))


def test_two_pixel_regions_on_either_side_pick_the_centroid_patch() -> None:
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 0, 0] = True
    mask[0, 0, 40] = True  # centroid x = 20 → patch column 1
    inside = mask_to_grid(mask, (4, 4), 0.5)
    assert inside.sum() == 1 and inside[0, 0, 1]


@pytest.fixture(scope="module")
def model() -> TwoStreamModel:
    torch.manual_seed(0)
    return TwoStreamModel(4, backbone="test_vit", image_size=32, text_encoder="minilm")


def test_forward_shapes_and_frozen_streams(model: TwoStreamModel) -> None:
    image = torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 32, 32, dtype=torch.bool)
    mask[:, 8:24, 8:24] = True
    logits = model(image, mask, ["rough and matte", "glossy"])
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert model.feature_dim == model.vision.dim + 384
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head"}
    model.train()
    assert not model.vision.training and not model.text.training and model.head.training
    model.eval()


def test_vision_pools_inside_the_mask(model: TwoStreamModel) -> None:
    image = torch.rand(1, 3, 32, 32)
    left = torch.zeros(1, 32, 32, dtype=torch.bool)
    left[:, :, :16] = True
    grid = model.vision(image)
    assert grid.shape[-2:] == (2, 2)  # test_vit: 16 px patches
    feats = model.vision_features(image, left)
    assert torch.equal(feats, grid[:, :, :, :1].flatten(2).amax(2))


def test_stream_switches() -> None:
    vision = TwoStreamModel(3, backbone="test_vit", image_size=32, streams="vision")
    assert vision.text is None and vision.feature_dim == vision.vision.dim
    text = TwoStreamModel(3, streams="text", text_encoder="minilm")
    assert text.vision is None and text.feature_dim == 384
    assert text(None, None, ["a", "b"]).shape == (2, 3)
    null = TwoStreamModel(3, backbone="test_vit", image_size=32, streams="vision", null_mask=True)
    null.vision.load_state_dict(vision.vision.state_dict())
    image = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[:, :8, :8] = True
    grid = vision.vision(image)
    assert torch.allclose(null.vision_features(image, mask), grid.flatten(2).amax(2))
    assert not torch.allclose(vision.vision_features(image, mask), grid.flatten(2).amax(2))
    full = TwoStreamModel(
        3, backbone="test_vit", image_size=32, streams="vision", freeze_backbone=False
    )
    assert all(p.requires_grad for p in full.vision.parameters()) and not full.frozen
    with pytest.raises(ValueError, match="streams"):
        TwoStreamModel(3, streams="audio")  # type: ignore[arg-type]


def test_vision_weights_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = VisionStream("test_vit", None, image_size=32)
    path = tmp_path / "vit.pth"
    torch.save(source.vit.state_dict(), path)
    loaded = VisionStream("test_vit", str(path), image_size=32)
    for name, value in source.vit.state_dict().items():
        assert torch.equal(value, loaded.vit.state_dict()[name]), name
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        VisionStream("test_vit", str(tmp_path / "missing.pth"), image_size=32)


def test_cache_id_changes_with_weights_and_settings() -> None:
    torch.manual_seed(0)
    a = TwoStreamModel(3, backbone="test_vit", image_size=32, streams="vision")
    torch.manual_seed(0)
    b = TwoStreamModel(3, backbone="test_vit", image_size=32, streams="vision")
    torch.manual_seed(1)
    c = TwoStreamModel(3, backbone="test_vit", image_size=32, streams="vision")
    torch.manual_seed(0)
    d = TwoStreamModel(3, backbone="test_vit", image_size=32, streams="vision", null_mask=True)
    assert a.cache_id() == b.cache_id()
    assert a.cache_id() != c.cache_id()  # other (random) weights
    assert a.cache_id() != d.cache_id()
    b.head[0].weight.data.add_(1.0)  # the head is not part of the identity
    assert a.cache_id() == b.cache_id()


def test_open_clip_text_stream(tmp_path: Path) -> None:
    import json

    import open_clip

    config = tmp_path / "two_stream_tiny_clip.json"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 24,
                "vision_cfg": {
                    "image_size": 32,
                    "layers": 1,
                    "width": 32,
                    "head_width": 16,
                    "patch_size": 16,
                },
                "text_cfg": {
                    "context_length": 16,
                    "vocab_size": 49408,
                    "width": 32,
                    "heads": 2,
                    "layers": 1,
                },
            }
        )
    )
    open_clip.add_model_config(config)
    model = TwoStreamModel(
        3, backbone="test_vit", image_size=32, text_encoder="open_clip:two_stream_tiny_clip"
    )
    assert model.feature_dim == model.vision.dim + 24
    image, mask = torch.rand(2, 3, 32, 32), torch.ones(2, 32, 32, dtype=torch.bool)
    assert model(image, mask, ["glossy", "matte"]).shape == (2, 3)
    assert not any(p.requires_grad for p in model.text.parameters())


def test_cnn_backbone_pools_its_last_feature_map() -> None:
    """A timm CNN (the paper's ResNet-101 comparison; here timm's tiny ``test_resnet``): its last
    feature map is the grid, the mask is reduced to it, features max-pooled inside."""
    model = TwoStreamModel(num_classes=3, backbone="test_resnet", streams="vision").eval()
    stream = model.vision
    assert stream.kind == "cnn" and stream.patch_size == (32, 32)
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[0, 0:40, 0:64] = True  # covers the top cells fully, the bottom ones by 8/32
    mask[1, 50:60, 2:12] = True  # smaller than a cell: the cell at its centroid
    with torch.no_grad():
        grid = stream.vit.forward_features((image - stream.mean) / stream.std)
        got = model.vision_features(image, mask)
    assert grid.shape[-2:] == (2, 2)
    expected = torch.stack([grid[0, :, 0, :].amax(-1), grid[1, :, 1, 0]])
    assert torch.allclose(got, expected)
    assert model(image, mask, ["", ""]).shape == (2, 3)


def test_dinov2_at_448_gives_the_papers_32_by_32_patches() -> None:
    # DINOv2's architecture (patch 14), one block deep to keep the test fast
    stream = VisionStream("vit_small_patch14_dinov2", None, 448, model_kwargs={"depth": 1}).eval()
    with torch.no_grad():
        grid = stream(torch.rand(1, 3, 448, 448))
    assert stream.kind == "vit" and grid.shape == (1, stream.dim, 32, 32)
