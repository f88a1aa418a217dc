"""MatSeg descriptor models: a U-Net with a pyramid-pooling block, and two baselines.

Every model maps an image batch (B, 3, H, W) in [0, 1] to a per-pixel descriptor map
(B, D, H, W) of unit vectors, at exactly the input's height and width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.utils.deprecation import renamed_arguments
from matbench.utils.weights import (
    check_timm_weights_file,
    load_weights,
    loading_weights,
    looks_like_path,
    weights_file,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: smp ``encoder_weights`` values that mean "the timm default pretrained tag" for ``tu-`` names.
_DEFAULT_TAGS = {"imagenet", "true", "default", "timm"}
#: The U-Net decoder's channels at full depth (five blocks, deepest first).
DECODER_CHANNELS = (256, 128, 64, 32, 16)


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: average-pool at several grid sizes, project, upsample, fuse.

    Keeps the channel count, so it can sit between an encoder and its decoder. Group norm
    (one group) instead of batch norm, so a 1×1 pooled map with a batch of one still trains.

    Args:
        channels: Channels in and out.
        bins: Pooled grid sizes.
    """

    def __init__(self, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = max(1, channels // len(bins))
        self.bins = bins
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, reduced, 1, bias=False), nn.ReLU(inplace=True))
            for _ in bins
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + reduced * len(bins), channels, 3, padding=1, bias=False),
            nn.GroupNorm(1, channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(
                branch(F.adaptive_avg_pool2d(x, b)), size=size, mode="bilinear", align_corners=False
            )
            for b, branch in zip(self.bins, self.branches, strict=True)
        ]
        return self.fuse(torch.cat([x, *pooled], dim=1))


def _build_encoder(encoder: str, encoder_weights: str | None, depth: int = 5) -> nn.Module:
    """The smp encoder with weights by hub name or local file (see `MatSegUNet`)."""
    from segmentation_models_pytorch.encoders import get_encoder

    name, smp_weights, kwargs, local = encoder, encoder_weights, {}, None
    if encoder_weights is not None and looks_like_path(encoder_weights):
        local = encoder_weights
        if encoder.startswith("tu-"):
            # timm loads the file itself, with its own key filtering for features_only
            # models, but only logs keys that do not match: check the file first.
            check_timm_weights_file(encoder[3:], str(weights_file(encoder_weights)))
            smp_weights, kwargs = True, {"pretrained_cfg_overlay": {"file": encoder_weights}}
            local = None
        else:
            smp_weights = None
    elif encoder_weights is not None and encoder.startswith("tu-"):
        if encoder_weights.lower() not in _DEFAULT_TAGS and "." not in encoder:
            name = f"{encoder}.{encoder_weights}"
        smp_weights = True
    encoder_module = get_encoder(name, in_channels=3, depth=depth, weights=smp_weights, **kwargs)
    if local is not None:
        load_weights(encoder_module, local)
    return encoder_module


@renamed_arguments({"encoder": "backbone", "encoder_weights": "backbone_weights"})
class MatSegUNet(nn.Module):
    """U-Net descriptor network (MatSeg appendix A): encoder, pyramid pooling, U-Net decoder,
    a ``descriptor_dim`` head and per-pixel L2 normalisation.

    The encoder is any segmentation_models_pytorch encoder, including every timm model as
    ``tu-<timm name>`` (default a ConvNeXt). ImageNet normalisation happens inside. Inputs of any
    size are padded (edge replication) to the encoder stride and the output is cropped back, so
    the descriptor map has exactly the input's height and width.

    ``backbone_depth`` below 5 keeps only the encoder's first stages (smp's ``encoder_depth``):
    a shallower, faster net whose descriptors see a smaller neighbourhood (stride
    ``2 ** backbone_depth``). Trained from scratch on little data, the first three stages of a
    ResNet-18 learn lighting-invariant texture that the full depth does not (``docs/index.md``,
    the demo).

    Args:
        backbone: smp encoder name, e.g. ``tu-convnext_atto`` or ``tu-convnext_base``.
        backbone_weights: Pretrained encoder weights: a hub name (smp's ``imagenet``; for ``tu-`` encoders
            ``imagenet`` means timm's default tag and any other value a timm tag), a local file
            path (a timm/smp encoder state dict), or None for random initialisation.
        descriptor_dim: Channels of the descriptor map.
        decoder_channels: Channels of the decoder blocks, one per encoder stage; by default the
            last ``backbone_depth`` of (256, 128, 64, 32, 16).
        backbone_depth: Encoder stages used, 1 to 5 (the pyramid pooling sits on the last).
    """

    def __init__(
        self,
        backbone: str = "tu-convnext_atto",
        backbone_weights: str | None = None,
        descriptor_dim: int = 128,
        decoder_channels: tuple[int, ...] | None = None,
        backbone_depth: int = 5,
    ) -> None:
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        if not 1 <= backbone_depth <= 5:
            raise ValueError(f"backbone_depth must be 1 to 5, got {backbone_depth}")
        if decoder_channels is None:
            decoder_channels = DECODER_CHANNELS[len(DECODER_CHANNELS) - backbone_depth :]
        if len(decoder_channels) != backbone_depth:
            raise ValueError(
                f"decoder_channels needs one entry per encoder stage ({backbone_depth}), got "
                f"{tuple(decoder_channels)}"
            )
        self.descriptor_dim = descriptor_dim
        with loading_weights("backbone_weights", backbone_weights):
            self.encoder = _build_encoder(backbone, backbone_weights, backbone_depth)
        channels = list(self.encoder.out_channels)
        self.stride = 2 ** (len(channels) - 1)
        self.ppm = PyramidPooling(channels[-1])
        self.decoder = UnetDecoder(
            encoder_channels=channels, decoder_channels=decoder_channels, n_blocks=backbone_depth
        )
        self.head = nn.Conv2d(decoder_channels[-1], descriptor_dim, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, D, H, W) unit descriptors."""
        height, width = image.shape[-2:]
        x = (image - self.mean) / self.std
        pad_h = (-height) % self.stride
        pad_w = (-width) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        features = list(self.encoder(x))
        features[-1] = self.ppm(features[-1])
        out = self.head(self.decoder(features))
        out = out[..., :height, :width]
        return F.normalize(out, dim=1)


class RGBDescriptor(nn.Module):
    """Baseline: each pixel's descriptor is its unit RGB vector (black → the grey direction)."""

    descriptor_dim = 3

    def forward(self, image: Tensor) -> Tensor:
        return F.normalize(image.clamp(min=0) + 1e-4, dim=1)


class RandomDescriptor(nn.Module):
    """Baseline: seeded random unit descriptors (the chance level).

    The map is a fixed function of (seed, height, width): every pixel position of an image of a
    given size always gets the same Gaussian-direction unit vector, whatever the image content.

    Args:
        descriptor_dim: Channels of the descriptor map.
        seed: Seed of the random field.
    """

    def __init__(self, descriptor_dim: int = 128, seed: int = 0) -> None:
        super().__init__()
        self.descriptor_dim = descriptor_dim
        self.seed = seed
        self._cache: tuple[tuple[int, int], Tensor] | None = None

    def field(self, height: int, width: int) -> Tensor:
        """The (D, height, width) unit random field."""
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(self.descriptor_dim, height, width, generator=generator)
        return F.normalize(noise, dim=0)

    def forward(self, image: Tensor) -> Tensor:
        size = (image.shape[-2], image.shape[-1])
        if self._cache is None or self._cache[0] != size:
            # Benchmark images mostly share one size: keep the last field.
            self._cache = (size, self.field(*size))
        field = self._cache[1].to(image.device)
        return field.unsqueeze(0).expand(image.shape[0], -1, -1, -1)


def build_descriptor_model(
    model: str,
    backbone: str = "tu-convnext_atto",
    backbone_weights: str | None = None,
    descriptor_dim: int = 128,
    seed: int = 0,
    weights: str | None = None,
    image_size: int | None = None,
    backbone_depth: int = 5,
) -> nn.Module:
    """A MatSeg descriptor model by kind.

    ``unet`` (:class:`MatSegUNet` with ``backbone``, ``backbone_weights``, ``backbone_depth``), ``rgb``
    (:class:`RGBDescriptor`), ``random`` (:class:`RandomDescriptor`), ``dense``
    (:class:`~matbench.models.dense.DenseFeatureDescriptor`: ``backbone`` a timm ViT or
    ``open_clip:<arch>``, ``backbone_weights`` its weights, ``image_size`` the longest side it
    sees) or ``official`` (:class:`~matbench.models.matseg_official.OfficialMatSegNet`:
    ``backbone`` one of its ConvNeXt variants, ``weights`` the released checkpoint).
    """
    if model == "unet":
        return MatSegUNet(backbone, backbone_weights, descriptor_dim, backbone_depth=backbone_depth)
    if model == "rgb":
        return RGBDescriptor()
    if model == "random":
        return RandomDescriptor(descriptor_dim, seed)
    if model == "dense":
        from matbench.models.dense import DenseFeatureDescriptor

        return DenseFeatureDescriptor(backbone, backbone_weights, image_size)
    if model == "official":
        from matbench.models.matseg_official import OfficialMatSegNet

        return OfficialMatSegNet(descriptor_dim, backbone, weights)
    raise ValueError(
        f"unknown MatSeg model {model!r}: expected 'unet', 'rgb', 'random', 'dense' or 'official'"
    )
