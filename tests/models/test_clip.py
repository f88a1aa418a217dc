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

from matbench.models.clip import LateFusion, MaterialCLIP, ReProjection
from matbench.models.losses import ContrastiveLoss

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


def test_scale_at_the_cap_comes_back_down() -> None:
    """open_clip's rule: the loss uses the scale as it is (same value and gradient as open_clip's
    losses), the parameter is clamped to [0, log 100] after the step. A scale at the cap
    whose loss wants it lower moves down (a clamp inside the loss would zero its gradient)."""
    from open_clip.loss import ClipLoss, SigLipLoss

    image, text = _pair(n=8, seed=3)  # random pairs: a lower scale lowers the loss
    for kind, reference in (("clip", ClipLoss()), ("siglip", SigLipLoss())):
        criterion = ContrastiveLoss(kind, temperature=0.01, bias=-3.0)  # scale 100: the cap
        loss = criterion(image, text)
        loss.backward()
        scale = torch.tensor(math.log(100.0), requires_grad=True)
        bias = torch.tensor(-3.0, requires_grad=True) if kind == "siglip" else None
        expected = reference(image, text, scale.exp(), *([bias] if bias is not None else []))
        expected.backward()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6), kind
        assert criterion.logit_scale.grad.item() == pytest.approx(scale.grad.item(), rel=1e-5)
        assert criterion.logit_scale.grad > 0, kind
        torch.optim.SGD(criterion.parameters(), lr=0.01).step()
        criterion.clamp_()
        assert 0 < criterion.scale.item() < 100, kind
    criterion = ContrastiveLoss("clip")
    for start, clamped in ((math.log(150.0), math.log(100.0)), (-1.0, 0.0), (2.0, 2.0)):
        criterion.logit_scale.data.fill_(start)
        criterion.clamp_()
        assert criterion.logit_scale.item() == pytest.approx(clamped)


def test_task_clamps_the_scale_after_each_optimizer_step() -> None:
    from matbench.tasks.clip import ClipMaterialTask

    task = ClipMaterialTask(model=TINY, temperature=0.005)  # scale 200, above the cap
    assert task.criterion.scale.item() == pytest.approx(200.0)
    task.optimizer_step(0, 0, torch.optim.SGD(task.parameters(), lr=0.0))
    assert task.criterion.scale.item() == pytest.approx(100.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    from open_clip.loss import ClipLoss, SigLipLoss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    image, text = _pair(n=8, d=5, seed=2)
    result: dict[str, dict] = {}
    references = {
        "clip": ClipLoss(rank=rank, world_size=world),
        "siglip": SigLipLoss(rank=rank, world_size=world),
    }
    for sizes in ([4, 4], [5, 3]):  # equal batches (open_clip needs them), then unequal
        lo = sum(sizes[:rank])
        for kind, reference in references.items():
            for impl in ("matbench", "open_clip"):
                if impl == "open_clip" and sizes[0] != sizes[1]:
                    continue
                local_image = image[lo : lo + sizes[rank]].clone().requires_grad_(True)
                local_text = text[lo : lo + sizes[rank]].clone().requires_grad_(True)
                criterion = ContrastiveLoss(kind, temperature=0.2, bias=-1.0)
                if impl == "matbench":
                    loss = criterion(local_image, local_text)
                else:
                    bias = [criterion.logit_bias] if kind == "siglip" else []
                    loss = reference(local_image, local_text, criterion.scale, *bias)
                loss.backward()
                result[f"{kind}/{impl}/{sizes[0]}"] = {
                    "loss": loss.detach(),
                    "image": local_image.grad,
                    "text": local_text.grad,
                    "scale": criterion.logit_scale.grad,
                    "bias": None if criterion.logit_bias is None else criterion.logit_bias.grad,
                }
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


def _close(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or torch.allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.ddp
def test_gathered_loss_equals_open_clip_and_the_global_batch(tmp_path: Path) -> None:
    """2 gloo processes. Per rank, the gradients of the features, scale and bias equal those of
    open_clip's ClipLoss(rank, world_size) and SigLipLoss(rank, world_size); DDP's average of
    the per-rank gradients is the global batch's (SigLIP) or 1/2 of it (CLIP, as open_clip);
    every rank's loss equals the single-process loss of the global batch, also with unequal
    batches."""
    out = str(tmp_path / "r")
    mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    image, text = _pair(n=8, d=5, seed=2)
    for kind in ("clip", "siglip"):
        for part in ranks:
            ours, theirs = part[f"{kind}/matbench/4"], part[f"{kind}/open_clip/4"]
            for key in ("image", "text", "scale", "bias"):
                assert _close(ours[key], theirs[key]), (kind, key)
        image.grad = text.grad = None
        whole = ContrastiveLoss(kind, temperature=0.2, bias=-1.0)
        global_image, global_text = image.clone().requires_grad_(), text.clone().requires_grad_()
        loss = whole(global_image, global_text)
        loss.backward()
        factor = 2.0 if kind == "siglip" else 1.0  # DDP divides the feature gradients by 2
        for size in (4, 5):
            parts = [part[f"{kind}/matbench/{size}"] for part in ranks]
            for part in parts:
                assert torch.allclose(part["loss"], loss.detach(), atol=1e-6), (kind, size)
            for key, grad in (("image", global_image.grad), ("text", global_text.grad)):
                got = torch.cat([part[key] for part in parts])
                assert torch.allclose(got, factor * grad, atol=1e-6), (kind, size, key)
            mean_scale = (parts[0]["scale"] + parts[1]["scale"]) / 2
            assert torch.allclose(mean_scale, whole.logit_scale.grad, atol=1e-6), (kind, size)


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
    locked = MaterialCLIP(model=TINY, freeze_image=True)
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


def test_open_clip_text_tower_cuts_padding_with_the_same_features() -> None:
    model = MaterialCLIP(model=TINY, text_tower="open_clip").eval()
    tower = model.text
    texts = ["metal", "a close-up photo of rusty corroded metal", "", "polished wood"]
    tokens = tower.tokenizer(texts)
    lengths = []
    hook = tower.clip.transformer.register_forward_pre_hook(
        lambda module, args: lengths.append(args[0].shape[1])
    )
    with torch.no_grad():
        full = tower.clip.encode_text(tokens)  # open_clip's forward over all 16 positions
        trimmed = tower.encode_tokens(tokens)
    hook.remove()
    # ran up to the longest caption's end-of-text token, not over the padding
    assert lengths == [16, int((tokens > 0).sum(1).max())] and lengths[1] < 16
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)
