"""The released MatSeg net: key layout, forward and loading against the official definition.

``ReferenceDesnet`` below is the official ``Desnet.Net`` (psp mode, resize upsampling, ``add``
skip merge) written out plainly, with its dict-driven forward, its numpy BGR 0–255 input and
its normalisation, at a tiny width so that the test is fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from matbench.models.matseg_official import OFFICIAL_ENCODERS, OfficialMatSegNet

WIDTHS, DEPTHS, _ = OFFICIAL_ENCODERS["test_convnext"]


class ReferenceDesnet(nn.Module):
    """Official Desnet.Net, written out (widths parametrised; the release has 128…1024)."""

    def __init__(self, descriptor_depth: int = 8) -> None:
        super().__init__()
        w = WIDTHS
        self.features2keep = {
            2: {"layer": 5, "downscale": 16, "upscale": 2},
            4: {"layer": 3, "downscale": 8, "upscale": 4},
            8: {"layer": 1, "downscale": 4, "upscale": 8},
        }
        self.upscaling_layers = {
            2: {"upscale": 2, "indepth": w[3], "outdepth": w[2], "skip_depth": w[2]},
            4: {"upscale": 4, "indepth": w[2], "outdepth": w[1], "skip_depth": w[1]},
            8: {"upscale": 4, "indepth": w[1], "outdepth": descriptor_depth, "skip_depth": w[0]},
        }
        nexts = (*w[1:], None)
        self.Encoder1 = ConvNeXt(
            [CNBlockConfig(a, b, d) for a, b, d in zip(w, nexts, DEPTHS, strict=True)]
        )
        self.Encoder1.features[0][0] = nn.Conv2d(4, w[0], kernel_size=(4, 4), stride=(4, 4))
        self.PSPLayers = nn.ModuleList()
        self.PSPScales = [1, 1 / 2, 1 / 4, 1 / 8]
        for _ in self.PSPScales:
            self.PSPLayers.append(
                nn.Sequential(
                    nn.Conv2d(w[3], w[3] // 2, stride=1, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(w[3] // 2),
                    nn.GELU(),
                )
            )
        self.SqueezeLayers = nn.Sequential(
            nn.Conv2d(w[3] * 2, w[3], stride=1, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(w[3]),
            nn.GELU(),
        )
        self.upsample_ModuleList = nn.ModuleList()
        for i in self.upscaling_layers:
            dt = self.upscaling_layers[i]
            layer = nn.Sequential(
                nn.Conv2d(dt["indepth"], dt["outdepth"], 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(dt["outdepth"]),
                nn.GELU(),
            )
            dt["upscale_layer"] = layer
            self.upsample_ModuleList.append(layer)
            skip = nn.Sequential(
                nn.Conv2d(dt["skip_depth"], dt["outdepth"], 1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(dt["outdepth"]),
                nn.GELU(),
            )
            dt["skip_layer"] = skip
            self.upsample_ModuleList.append(skip)

    def forward(self, images: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images).transpose(2, 3).transpose(1, 2).float()
        roi = torch.from_numpy(mask.astype(np.float32)).unsqueeze(1)
        for i, (mean, std) in enumerate(zip([123.68, 116.779, 103.939], [65, 65, 65], strict=True)):
            x[:, i] = (x[:, i] - mean) / std
        x = torch.cat([x, roi], 1)
        for i in range(len(self.Encoder1.features)):
            x = self.Encoder1.features[i](x)
            for f in self.features2keep:
                if self.features2keep[f]["layer"] == i:
                    self.features2keep[f]["features"] = x
        size = (x.shape[2], x.shape[3])
        branches = []
        for i, layer in enumerate(self.PSPLayers):
            new = (np.array(size) * self.PSPScales[i]).astype(np.int32)
            new[new < 1] = 1
            y = F.interpolate(x, tuple(int(v) for v in new), mode="bilinear", align_corners=False)
            branches.append(F.interpolate(layer(y), size, mode="bilinear", align_corners=False))
        x = self.SqueezeLayers(torch.cat(branches, dim=1))
        for ii in range(1, 12):
            if ii in self.upscaling_layers:
                x = self.upscaling_layers[ii]["upscale_layer"](x)
                y = self.upscaling_layers[ii]["skip_layer"](self.features2keep[ii]["features"])
                if y.shape[2] != x.shape[2] or y.shape[3] != x.shape[3]:
                    x = F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=False)
                    x += y
        return F.interpolate(x, size=images.shape[1:3], mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def reference() -> ReferenceDesnet:
    torch.manual_seed(0)
    net = ReferenceDesnet(8)
    for module in net.modules():  # non-trivial BatchNorm statistics and affine parameters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def test_key_layout_and_shapes_equal_the_official(reference: ReferenceDesnet) -> None:
    ours = OfficialMatSegNet(8, "test_convnext").state_dict()
    official = reference.state_dict()
    assert list(ours) == list(official)
    assert all(ours[k].shape == official[k].shape for k in ours)
    assert OFFICIAL_ENCODERS["convnext_base"][:2] == ((128, 256, 512, 1024), (3, 3, 27, 3))


def test_forward_equals_the_official(reference: ReferenceDesnet, tmp_path: Path) -> None:
    path = tmp_path / "Defult.torch"
    torch.save(reference.state_dict(), path)  # how the official train.py saves
    ours = OfficialMatSegNet(8, "test_convnext", weights=str(path)).eval()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(1, 70, 45, 3)).astype(np.float32)
    bgr = rgb[..., ::-1].copy()  # what cv2.imread gives the official code
    with torch.no_grad():
        expected = F.normalize(reference(bgr, bgr[:, :, :, 0] * 0), dim=1)
        got = ours(torch.from_numpy(rgb / 255.0).permute(0, 3, 1, 2).float())
    assert got.shape == (1, 8, 70, 45)
    assert torch.allclose(got, expected, atol=1e-4)


def test_loading_errors_name_the_file(reference: ReferenceDesnet, tmp_path: Path) -> None:
    state = reference.state_dict()
    partial = tmp_path / "partial.torch"
    torch.save({k: v for k, v in state.items() if not k.startswith("PSP")}, partial)
    with pytest.raises(ValueError, match="partial.torch.*missing"):
        OfficialMatSegNet(8, "test_convnext", weights=str(partial))
    with pytest.raises(ValueError, match="Defult.torch.*shape mismatch"):
        torch.save(state, tmp_path / "Defult.torch")
        OfficialMatSegNet(16, "test_convnext", weights=str(tmp_path / "Defult.torch"))
    pickled = tmp_path / "pickled.torch"
    torch.save({"net": ReferenceDesnet}, pickled)  # weights_only refuses arbitrary objects
    with pytest.raises(ValueError, match="pickled.torch"):
        OfficialMatSegNet(8, "test_convnext", weights=str(pickled))
    with pytest.raises(FileNotFoundError, match="missing.torch"):
        OfficialMatSegNet(8, "test_convnext", weights=str(tmp_path / "missing.torch"))
    with pytest.raises(ValueError, match="unknown backbone"):
        OfficialMatSegNet(8, "resnet50")


def test_small_images_and_training_step() -> None:
    net = OfficialMatSegNet(8, "test_convnext")
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 3, 20, 60))
    assert out.shape == (1, 8, 20, 60)
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 20, 60), atol=1e-5)
    net.train()(torch.rand(2, 3, 64, 64)).sum().backward()
    assert net.Encoder1.features[0][0].weight.grad is not None
