"""MatSeg models (U-Net, baselines), the loss and the point protocol."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from matbench.models.losses import matseg_loss
from matbench.models.matseg import (
    MatSegUNet,
    PyramidPooling,
    RandomDescriptor,
    RGBDescriptor,
    build_descriptor_model,
)
from matbench.tasks.matseg import point_descriptors


@pytest.fixture(scope="module")
def unet() -> MatSegUNet:
    torch.manual_seed(0)
    return MatSegUNet("tu-test_convnext", descriptor_dim=16).eval()


@pytest.mark.parametrize("size", [(33, 47), (64, 64), (17, 9), (1, 70)])
def test_unet_output_size_and_unit_norm(unet: MatSegUNet, size: tuple[int, int]) -> None:
    with torch.no_grad():
        out = unet(torch.rand(2, 3, *size))
    assert out.shape == (2, 16, *size)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, *size), atol=1e-5)


def test_unet_trains_with_batch_of_one(unet: MatSegUNet) -> None:
    model = MatSegUNet("tu-test_convnext", descriptor_dim=8).train()
    out = model(torch.rand(1, 3, 32, 32))  # 1×1 deepest map: pyramid pooling must still train
    out.sum().backward()
    assert all(p.grad is not None for p in model.ppm.parameters())


def test_unet_local_weights_and_unknown_encoder(tmp_path: Path) -> None:
    reference = timm.create_model("test_convnext")
    with torch.no_grad():
        reference.stem[0].weight.fill_(0.125)
    path = tmp_path / "encoder.pth"
    torch.save(reference.state_dict(), path)
    model = MatSegUNet("tu-test_convnext", backbone_weights=str(path), descriptor_dim=4)
    stem = dict(model.encoder.named_parameters())["model.stem_0.weight"]
    assert torch.all(stem == 0.125)
    with pytest.raises(FileNotFoundError):
        MatSegUNet("tu-test_convnext", backbone_weights=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth"):  # timm alone would only log it
        MatSegUNet("tu-test_convnext", backbone_weights=str(wrong))
    with pytest.raises(Exception, match="nonexistent_net"):
        MatSegUNet("tu-nonexistent_net")


@pytest.mark.parametrize("depth", [1, 3])
def test_shallow_unet(depth: int, tmp_path: Path) -> None:
    reference = timm.create_model("resnet18", pretrained=False)
    with torch.no_grad():
        reference.conv1.weight.fill_(0.125)
    path = tmp_path / "encoder.pth"
    torch.save(reference.state_dict(), path)
    model = MatSegUNet(
        "tu-resnet18", backbone_weights=str(path), descriptor_dim=8, backbone_depth=depth
    ).eval()
    assert model.stride == 2**depth
    assert len(model.encoder.out_channels) == depth + 1
    assert torch.all(dict(model.encoder.named_parameters())["model.conv1.weight"] == 0.125)
    # the later stages are not built at all
    assert not any(name.startswith("model.layer4") for name, _ in model.encoder.named_parameters())
    with torch.no_grad():
        out = model(torch.rand(2, 3, 21, 38))
    assert out.shape == (2, 8, 21, 38)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 21, 38), atol=1e-5)


def test_unet_depth_and_decoder_errors() -> None:
    with pytest.raises(ValueError, match="backbone_depth must be 1 to 5, got 6"):
        MatSegUNet("tu-test_convnext", backbone_depth=6)
    with pytest.raises(ValueError, match=r"one entry per encoder stage \(3\)"):
        MatSegUNet("tu-test_convnext", decoder_channels=(32, 16), backbone_depth=3)


def test_pyramid_pooling_keeps_shape() -> None:
    ppm = PyramidPooling(12)
    x = torch.randn(2, 12, 5, 7)
    assert ppm(x).shape == x.shape


def test_rgb_baseline() -> None:
    image = torch.rand(2, 3, 5, 6)
    image[0, :, 0, 0] = 0
    out = RGBDescriptor()(image)
    assert out.shape == image.shape
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 5, 6), atol=1e-5)
    assert torch.allclose(out[1], F.normalize(image[1] + 1e-4, dim=0))
    assert torch.allclose(out[0, :, 0, 0], torch.full((3,), 3**-0.5), atol=1e-4)


def test_random_baseline_is_seeded_and_image_independent() -> None:
    a = RandomDescriptor(8, seed=1)(torch.rand(1, 3, 7, 9))
    b = RandomDescriptor(8, seed=1)(torch.zeros(2, 3, 7, 9))
    c = RandomDescriptor(8, seed=2)(torch.rand(1, 3, 7, 9))
    assert a.shape == (1, 8, 7, 9) and b.shape == (2, 8, 7, 9)
    assert torch.equal(a[0], b[0]) and torch.equal(b[0], b[1])
    assert not torch.allclose(a, c)
    assert torch.allclose(a.norm(dim=1), torch.ones(1, 7, 9), atol=1e-5)


def test_build_descriptor_model() -> None:
    assert isinstance(build_descriptor_model("rgb"), RGBDescriptor)
    assert build_descriptor_model("random", descriptor_dim=5).descriptor_dim == 5
    with pytest.raises(ValueError, match="unknown MatSeg model"):
        build_descriptor_model("sam")


def _two_material_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    fractions = torch.zeros(1, 3, 4, 6)
    fractions[0, 0, :, :3] = 1
    fractions[0, 1, :, 3:] = 1
    valid = torch.tensor([[True, True, False]])  # third material is padding
    roi = torch.ones(1, 4, 6, dtype=torch.bool)
    return fractions, valid, roi, fractions[:, :2].argmax(1)


def test_loss_perfect_descriptors_low_and_swapped_high() -> None:
    fractions, valid, roi, labels = _two_material_case()
    basis = torch.eye(4)[:2]  # material k → unit vector e_k
    perfect = basis[labels].permute(0, 3, 1, 2)
    swapped = basis[1 - labels].permute(0, 3, 1, 2)
    low = matseg_loss(perfect, fractions, valid, roi, 0.2)
    # Hand value: similarity 1 to the own mean, 0 to the other: -log(e^5 / (e^5 + 1)).
    assert low.item() == pytest.approx(math.log1p(math.exp(-5)), rel=1e-4)
    constant = F.normalize(torch.ones(1, 4, 4, 6), dim=1)
    assert matseg_loss(constant, fractions, valid, roi, 0.2).item() == pytest.approx(
        torch.log(torch.tensor(2.0)).item(), abs=1e-5
    )
    assert low < 0.01
    # Means come from the descriptors themselves, so a swap is as good as the original.
    assert matseg_loss(swapped, fractions, valid, roi, 0.2).item() == pytest.approx(low.item())


def test_loss_soft_targets_and_roi() -> None:
    fractions, valid, roi, labels = _two_material_case()
    desc = F.normalize(torch.randn(1, 4, 4, 6, requires_grad=True), dim=1)
    roi_small = roi.clone()
    roi_small[0, :, 2:4] = False  # the columns where a soft mix would sit are left out
    mixed = fractions.clone()
    mixed[0, 0, :, 2:4] = 0.5
    mixed[0, 1, :, 2:4] = 0.5
    a = matseg_loss(desc, mixed, valid, roi_small, 0.2)
    b = matseg_loss(desc, fractions, valid, roi_small, 0.2)
    assert a.item() == pytest.approx(b.item())  # outside the ROI nothing counts
    a.backward()
    empty = matseg_loss(desc, torch.zeros_like(fractions), valid, roi, 0.2)
    assert empty.item() == 0 and empty.requires_grad


def test_point_descriptors_are_disk_sums() -> None:
    desc = F.normalize(torch.randn(5, 12, 10), dim=0)
    points = torch.tensor([[3, 4, 2], [0, 0, 1], [9, 11, 0]])
    out = point_descriptors(desc, points)
    v, u = torch.meshgrid(torch.arange(12), torch.arange(10), indexing="ij")
    for k, (x, y, r) in enumerate(points.tolist()):
        disk = (u - x) ** 2 + (v - y) ** 2 <= r * r
        expected = F.normalize(desc[:, disk].sum(1), dim=0)
        assert torch.allclose(out[k], expected, atol=1e-6)
    assert torch.allclose(out[2], desc[:, 11, 9], atol=1e-6)  # r = 0: the centre pixel only
