"""The released MatSeg descriptor net (``Desnet.Net`` of the official code), rebuilt so that its
released checkpoint loads key for key.

Architecture (official ``Desnet.py``, ``psp`` mode, resize upsampling, ``add`` skip merge):

- input: the image in **BGR** channel order and 0–255 values, normalised per channel with mean
  ``(123.68, 116.779, 103.939)`` (applied to B, G, R in that order, as the official code does on
  OpenCV images) and std 65, plus a fourth channel, the region-of-interest mask, which the
  official evaluation and demos always set to zero;
- encoder ``Encoder1``: torchvision ConvNeXt-base whose stem convolution takes the 4 channels;
  the outputs of feature stages 1, 3 and 5 (strides 4, 8, 16) are kept as skips;
- PSP: the deepest map resized (bilinear) to scales 1, 1/2, 1/4 and 1/8 of its size (floored,
  at least 1), each through conv3×3 (C → C/2) + BatchNorm + GELU, resized back, concatenated
  and squeezed by conv3×3 (2C → C) + BatchNorm + GELU;
- three upsampling steps: conv3×3 + BatchNorm + GELU at the current resolution (C→512→256→D for
  ConvNeXt-base), then the skip through conv1×1 + BatchNorm + GELU, the current map resized
  (bilinear) to the skip's size and the two added. As in the official code, a skip is only added
  when the two sizes differ (they always do, except for tiny inputs);
- the stride-4 map (D channels) is resized (bilinear) to the input's size; matbench then
  L2-normalises it per pixel (the official evaluation does the same before the point sums).

State-dict keys are the official ones (``Encoder1.features…``, ``Encoder1.classifier…`` which the
net keeps but never uses, ``PSPLayers.i``, ``SqueezeLayers``, ``upsample_ModuleList.k`` in the
order upscale 1, skip 1, upscale 2, skip 2, upscale 3, skip 3).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.utils.deprecation import renamed_arguments
from matbench.utils.weights import load_exact_state

#: Official input normalisation, applied to the channels of a BGR image in this order.
BGR_MEAN = (123.68, 116.779, 103.939)
BGR_STD = (65.0, 65.0, 65.0)
#: Encoder variants: stage widths, stage depths, stochastic-depth rate. ``convnext_base`` is the
#: released net's; ``test_convnext`` is a tiny one for tests.
OFFICIAL_ENCODERS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float]] = {
    "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3), 0.5),
    "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3), 0.4),
    "convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3), 0.1),
    "test_convnext": ((16, 32, 64, 128), (1, 1, 1, 1), 0.0),
}
#: Encoder feature stages kept as skips, deepest first (strides 16, 8, 4).
SKIP_STAGES = (5, 3, 1)
PSP_SCALES = (1.0, 1 / 2, 1 / 4, 1 / 8)
#: Shortest input side the encoder can take (its total stride).
MIN_SIDE = 32


def _conv_bn_gelu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=kernel, stride=1, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.GELU(),
    )


@renamed_arguments({"encoder": "backbone"})
class OfficialMatSegNet(nn.Module):
    """The released MatSeg net (see the module docstring), taking RGB images in [0, 1].

    Args:
        descriptor_dim: Output channels (128 in the release).
        backbone: A key of :data:`OFFICIAL_ENCODERS` (``convnext_base`` for the release).
        weights: Path of a checkpoint in the official key layout (``torch.save`` of the net's
            ``state_dict``, e.g. the released ``Defult.torch``), read with ``weights_only``;
            every key must match and every shape agree, else a ValueError names the file.
            None = random initialisation.
    """

    def __init__(
        self, descriptor_dim: int = 128, backbone: str = "convnext_base", weights: str | None = None
    ) -> None:
        super().__init__()
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt

        if backbone not in OFFICIAL_ENCODERS:
            raise ValueError(
                f"unknown backbone '{backbone}' for the official MatSeg net: expected one of "
                f"{sorted(OFFICIAL_ENCODERS)}"
            )
        widths, depths, drop = OFFICIAL_ENCODERS[backbone]
        self.descriptor_dim = descriptor_dim
        nexts = (*widths[1:], None)
        blocks = [CNBlockConfig(w, n, d) for w, n, d in zip(widths, nexts, depths, strict=True)]
        self.Encoder1 = ConvNeXt(blocks, stochastic_depth_prob=drop)
        self.Encoder1.features[0][0] = nn.Conv2d(4, widths[0], kernel_size=4, stride=4)
        deep = widths[-1]
        self.PSPLayers = nn.ModuleList(_conv_bn_gelu(deep, deep // 2, 3) for _ in PSP_SCALES)
        self.SqueezeLayers = _conv_bn_gelu(deep // 2 * len(PSP_SCALES), deep, 3)
        steps = [  # (in, out, skip channels) of the three upsampling steps
            (widths[3], widths[2], widths[2]),
            (widths[2], widths[1], widths[1]),
            (widths[1], descriptor_dim, widths[0]),
        ]
        layers: list[nn.Module] = []
        for cin, cout, skip in steps:
            layers += [_conv_bn_gelu(cin, cout, 3), _conv_bn_gelu(skip, cout, 1)]
        self.upsample_ModuleList = nn.ModuleList(layers)
        self.register_buffer("mean", torch.tensor(BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(BGR_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            load_official_weights(self, weights)

    def preprocess(self, image: Tensor) -> Tensor:
        """RGB in [0, 1] → the official 4-channel input (normalised BGR, zero ROI channel)."""
        bgr = image.flip(1) * 255.0
        x = (bgr - self.mean) / self.std
        return torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)

    def _psp(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        branches = []
        for scale, layer in zip(PSP_SCALES, self.PSPLayers, strict=True):
            # np.int32 truncation of the official code: floor for positive sizes
            new = (max(1, int(size[0] * scale)), max(1, int(size[1] * scale)))
            y = F.interpolate(x, size=new, mode="bilinear", align_corners=False)
            y = F.interpolate(layer(y), size=size, mode="bilinear", align_corners=False)
            branches.append(y)
        return self.SqueezeLayers(torch.cat(branches, dim=1))

    def forward_raw(self, image: Tensor) -> Tensor:
        """The official net's output: (B, D, H/4, W/4) descriptors, not normalised."""
        x = self.preprocess(image)
        skips = {}
        for index, stage in enumerate(self.Encoder1.features):
            x = stage(x)
            if index in SKIP_STAGES:
                skips[index] = x
        x = self._psp(x)
        for step, stage in enumerate(SKIP_STAGES):
            x = self.upsample_ModuleList[2 * step](x)
            y = self.upsample_ModuleList[2 * step + 1](skips[stage])
            if y.shape[-2:] != x.shape[-2:]:  # the official merge sits inside this test
                x = F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)
                x = x + y
        return x

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] → (B, D, H, W) unit descriptors.

        A side shorter than :data:`MIN_SIDE` px (where the official net cannot run: its
        stride-2 convolutions would see a map of one pixel) is padded to it by edge
        replication, and the output cropped back.
        """
        height, width = image.shape[-2:]
        pad_h, pad_w = max(0, MIN_SIDE - height), max(0, MIN_SIDE - width)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
        raw = self.forward_raw(image)
        out = F.interpolate(raw, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return F.normalize(out[..., :height, :width], dim=1)


def load_official_weights(net: OfficialMatSegNet, path: str | Path) -> None:
    """Load a checkpoint in the official key layout into ``net``: every key of the file and of
    the net must match and every shape agree (ValueError naming the file otherwise)."""
    load_exact_state(net, path, "the official MatSeg net")
