"""CLIP/SigLIP losses, cross-rank gathering, late fusion, re-projection, towers."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from matbench.models.clip import ContrastiveLoss, LateFusion, MaterialCLIP, ReProjection

TINY = str(Path(__file__).with_name("tiny_clip.json"))


def _pair(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        F.normalize(torch.randn(n, d, generator=g), dim=-1),
        F.normalize(torch.randn(n, d, generator=g), dim=-1),
    )


def _clip_reference(image: torch.Tensor, text: torch.Tensor, t: float) -> float:
    """Plainly written symmetric InfoNCE."""
    n = image.shape[0]
    total = 0.0
    for i in range(n):
        row = [float(image[i] @ text[j]) / t for j in range(n)]
        col = [float(text[i] @ image[j]) / t for j in range(n)]
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
        total += -col[i] + math.log(sum(math.exp(v) for v in col))
    return total / (2 * n)


def _siglip_reference(image: torch.Tensor, text: torch.Tensor, t: float, b: float) -> float:
    n = image.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = float(image[i] @ text[j]) / t + b
            label = 1.0 if i == j else -1.0
            total += math.log(1 + math.exp(-label * z))
    return total / n


def test_clip_loss_matches_reference() -> None:
    image, text = _pair()
    loss = ContrastiveLoss("clip", temperature=0.1)
    assert loss(image, text).item() == pytest.approx(_clip_reference(image, text, 0.1), rel=1e-5)
    assert loss.temperature == pytest.approx(0.1)
    # A perfect pairing with a low temperature has a near-zero loss.
    eye = torch.eye(6, 8)
    assert ContrastiveLoss("clip", temperature=0.01)(eye, eye).item() < 1e-6


def test_siglip_loss_matches_reference() -> None:
    image, text = _pair(seed=1)
    loss = ContrastiveLoss("siglip", temperature=0.1, bias=-2.0)
    assert loss(image, text).item() == pytest.approx(
        _siglip_reference(image, text, 0.1, -2.0), rel=1e-5
    )


def test_temperature_learnable_or_fixed() -> None:
    image, text = _pair()
    learn = ContrastiveLoss("clip", temperature=0.07, learn_temperature=True)
    learn(image, text).backward()
    assert learn.logit_scale.grad is not None and learn.logit_scale.grad != 0
    fixed = ContrastiveLoss("clip", temperature=0.07, learn_temperature=False)
    assert not fixed.logit_scale.requires_grad
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveLoss("clip", temperature=0.0)
    with pytest.raises(ValueError, match="clip' or 'siglip"):
        ContrastiveLoss("triplet")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    image, text = _pair(n=7, d=5, seed=2)
    sizes = [4, 3]  # ranks hold different batch sizes
    lo = sum(sizes[:rank])
    result = {}
    for kind in ("clip", "siglip"):
        local_image = image[lo : lo + sizes[rank]].clone().requires_grad_(True)
        local_text = text[lo : lo + sizes[rank]].clone().requires_grad_(True)
        criterion = ContrastiveLoss(kind, temperature=0.2, learn_temperature=False)
        loss = criterion(local_image, local_text)
        loss.backward()
        result[kind] = {"loss": loss.detach(), "gi": local_image.grad, "gt": local_text.grad}
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.ddp
def test_gathered_loss_equals_global_batch(tmp_path: Path) -> None:
    """2 gloo processes: each rank's loss and its features' gradients equal those of the
    global batch computed in one process (CLIP and SigLIP)."""
    out = str(tmp_path / "r")
    mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    parts = [torch.load(f"{out}.{r}") for r in range(2)]
    for kind in ("clip", "siglip"):
        image, text = _pair(n=7, d=5, seed=2)
        image.requires_grad_(True)
        text.requires_grad_(True)
        loss = ContrastiveLoss(kind, temperature=0.2, learn_temperature=False)(image, text)
        loss.backward()
        for part in parts:
            assert torch.allclose(part[kind]["loss"], loss.detach(), atol=1e-6), kind
        assert torch.allclose(torch.cat([p[kind]["gi"] for p in parts]), image.grad, atol=1e-6)
        assert torch.allclose(torch.cat([p[kind]["gt"] for p in parts]), text.grad, atol=1e-6)


def test_late_fusion_shapes_and_identity_at_init() -> None:
    fusion = LateFusion(32, backbone="test_vit", num_heads=4)
    obj = torch.randn(3, 32)
    context = torch.rand(3, 3, 64, 64)
    out = fusion(obj, context)
    assert out.shape == (3, 32)
    assert torch.allclose(out, obj)  # zero-initialised output projection
    assert not any(p.requires_grad for p in fusion.backbone.parameters())
    # Once trained (non-zero output projection), the context changes the embedding.
    torch.nn.init.normal_(fusion.attn.out_proj.weight)
    assert not torch.allclose(fusion(obj, context), fusion(obj, torch.rand(3, 3, 64, 64)))
    cnn = LateFusion(32, backbone="test_convnext", num_heads=2)
    tokens = cnn.context_tokens(torch.rand(2, 3, 64, 64))
    assert tokens.ndim == 3 and tokens.shape[0] == 2 and tokens.shape[2] == 32
    with pytest.raises(ValueError, match="divisible"):
        LateFusion(30, backbone="test_vit", num_heads=4)


def test_reprojection_identity_and_dim() -> None:
    proj = ReProjection(16)
    x, y = torch.randn(2, 16), torch.randn(2, 16)
    a, b = proj(x, y)
    assert torch.equal(a, x) and torch.equal(b, y)
    a, b = ReProjection(16, 8)(x, y)
    assert a.shape == b.shape == (2, 8)


@pytest.fixture(scope="module")
def minilm_model() -> MaterialCLIP:
    return MaterialCLIP(
        model=TINY, text_tower="minilm", fusion=True, fusion_backbone="test_vit", fusion_heads=4
    )


def test_material_clip_on_off(minilm_model: MaterialCLIP) -> None:
    images = torch.rand(2, 3, 48, 40)  # resized to the model's 32 px
    context = torch.rand(2, 3, 64, 64)
    emb = minilm_model.encode_image(images, context)
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="context"):
        minilm_model.encode_image(images)
    text = minilm_model.encode_text(["wood", "brushed steel"])
    assert text.shape == (2, 32)
    # MiniLM is frozen, its projection trains.
    assert not any(p.requires_grad for p in minilm_model.text.encoder.parameters())
    assert minilm_model.text.proj.weight.requires_grad
    plain = MaterialCLIP(model=TINY, text_tower="open_clip")
    assert plain.fusion is None and plain.reprojection is None
    assert plain.encode_image(images).shape == (2, 32)
    assert plain.encode_text(["wood"]).shape == (1, 32)


def test_reproject_freezes_towers_and_locks() -> None:
    model = MaterialCLIP(model=TINY, reproject=True, reproject_dim=16)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"reprojection.image.weight", "reprojection.text.weight"}
    assert model.encode_image(torch.rand(2, 3, 32, 32)).shape == (2, 16)
    assert model.encode_text(["glass"]).shape == (1, 16)
    locked = MaterialCLIP(model=TINY, lock_image=True)
    assert not any(p.requires_grad for p in locked.image.parameters())
    assert all(p.requires_grad for p in locked.text.parameters())
    locked.train()
    assert not locked.image.training and locked.text.training


def test_weights_by_file_and_bad_names(tmp_path: Path) -> None:
    model = MaterialCLIP(model=TINY)
    import open_clip

    clip = open_clip.create_model("tiny_clip")
    torch.nn.init.constant_(clip.visual.proj, 0.5)
    path = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), path)
    loaded = MaterialCLIP(model=TINY, pretrained=str(path))
    assert torch.equal(loaded.image.visual.proj, torch.full_like(model.image.visual.proj, 0.5))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        MaterialCLIP(model=TINY, pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        MaterialCLIP(model="No-Such-ViT")
    with pytest.raises(ValueError, match="text_tower"):
        MaterialCLIP(model=TINY, text_tower="bert")
