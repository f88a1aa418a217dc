"""Dense material segmenters: a ``transformers`` Mask2Former and smp DeepLab-style nets.

Both take images in [0, 1] (normalised inside with the ImageNet mean and std, as the DMS
release's scripts and Mask2Former's image processor do) and return per-class scores
(B, C, H/s, W/s) that :func:`semantic_scores` brings to any size, and a training loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matbench.errors import ConfigError
from matbench.utils.weights import load_weights, looks_like_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SegmenterName = Literal["mask2former", "deeplabv3plus", "deeplabv3"]


class Segmenter(nn.Module):
    """Base of the segmenters: ImageNet normalisation and the size divisor of the input.

    Attributes:
        size_divisor: Input sides must be multiples of this (inputs are padded to it).
    """

    size_divisor: int = 32

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalise(self, image: Tensor) -> Tensor:
        return (image - self.mean) / self.std

    def scores(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1], sides multiples of :attr:`size_divisor` → (B, C, H, W)
        class scores (argmax = prediction; averaging over windows is meaningful)."""
        raise NotImplementedError

    def probabilities(self, scores: Tensor) -> Tensor:
        """Class probabilities (B, C, H, W) from :meth:`scores` (softmax over classes)."""
        return scores.softmax(1)

    def loss(self, image: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, int]:
        """Training loss of (B, 3, H, W) images against (B, H, W) label maps, and how many
        images it scored (those with some labelled pixel)."""
        raise NotImplementedError


class SMPSegmenter(Segmenter):
    """A segmentation_models_pytorch DeepLabV3 / DeepLabV3+ with any smp or timm encoder
    (``tu-<timm name>``), trained with pixel cross-entropy (the DMS paper's baseline is a
    ResNet-50 DeepLab-style net).

    Args:
        arch: ``deeplabv3plus`` or ``deeplabv3``.
        backbone: smp encoder name (``resnet50``) or ``tu-<timm model>``.
        weights: Encoder weights: an smp tag (``imagenet``), a local weights file of the whole
            net or of its encoder, or None (random init).
        num_classes: C.
    """

    def __init__(self, arch: str, backbone: str, weights: str | None, num_classes: int) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        cls = {"deeplabv3plus": smp.DeepLabV3Plus, "deeplabv3": smp.DeepLabV3}[arch]
        tag = None if weights is None or looks_like_path(weights) else weights
        self.net = cls(encoder_name=backbone, encoder_weights=tag, classes=num_classes)
        if weights is not None and tag is None:
            load_weights(self.net, weights, strip_prefixes=("module.", "model.net.", "net."))
        self.size_divisor = 16 if arch == "deeplabv3" else 32

    def scores(self, image: Tensor) -> Tensor:
        return self.net(self.normalise(image))

    def loss(self, image: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, int]:
        if self.training and image.shape[0] == 1:
            # The image-pooling branch of ASPP batch-normalises one value per channel, which
            # fails on a batch of one (the last training batch of an epoch may be one): the
            # duplicated batch has the same loss and gradients.
            image, target = image.expand(2, -1, -1, -1), target.expand(2, -1, -1)
        logits = self.scores(image)
        labelled = target != ignore_index
        scored = int(labelled.flatten(1).any(1).sum())
        if not labelled.any():
            return logits.sum() * 0.0, 0
        return F.cross_entropy(logits, target.long(), ignore_index=ignore_index), scored


class Mask2FormerSegmenter(Segmenter):
    """``transformers``' Mask2Former for universal segmentation, used for semantic maps.

    Per-class scores are the query mixture ``softmax(class)[:C] · sigmoid(mask)`` of
    ``post_process_semantic_segmentation``, computed at the input size. Training passes each
    image's binary masks of the classes present (ignored pixels in none of them, as
    detectron2's semantic mapper does) to the model's own Hungarian-matched loss.

    Args:
        weights: A Hub model name or local folder (``from_pretrained``; the class head is
            replaced when its size differs from ``num_classes``), or None.
        config: With ``weights`` None: a ``Mask2FormerConfig`` JSON file or a folder holding
            one (random init); None = the default configuration.
        num_classes: C.
        class_names: Names of the C classes (the config's ``id2label``).
    """

    size_divisor = 32

    def __init__(
        self,
        weights: str | None,
        config: str | None,
        num_classes: int,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

        names = class_names or [str(i) for i in range(num_classes)]
        labels = {
            "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
        }
        if weights is not None:
            self.net = Mask2FormerForUniversalSegmentation.from_pretrained(
                weights, num_labels=num_classes, ignore_mismatched_sizes=True, **labels
            )
        else:
            if config is None:
                cfg = Mask2FormerConfig(num_labels=num_classes, **labels)
            else:
                path = Path(config).expanduser()
                if path.is_dir():
                    path = path / "config.json"
                if not path.is_file():
                    raise ConfigError(f"Mask2Former config '{config}' does not exist")
                cfg = Mask2FormerConfig.from_json_file(str(path))
                cfg.num_labels = num_classes
                cfg.id2label, cfg.label2id = labels["id2label"], labels["label2id"]
            self.net = Mask2FormerForUniversalSegmentation(cfg)
        if self.net.config.num_labels != num_classes:
            raise ConfigError(
                f"Mask2Former '{weights or config}' has {self.net.config.num_labels} classes, "
                f"expected {num_classes}"
            )
        self.unused = self._freeze_unused()

    def _freeze_unused(self) -> list[str]:
        """Freeze the parameters that no output depends on (e.g. the backbone's pooled-output
        norm): DDP refuses parameters without a gradient. Found by one small forward and
        backward in eval mode (no dropout, the global RNG untouched)."""
        params = dict(self.net.named_parameters())
        if any(p.is_meta for p in params.values()):
            return []
        was_training = self.net.training
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            self.net.eval()
            out = self.net(pixel_values=torch.zeros(1, 3, 128, 128))
            total = out.class_queries_logits.sum() + out.masks_queries_logits.sum()
            used = torch.autograd.grad(
                total, [p for p in params.values() if p.requires_grad], allow_unused=True
            )
        self.net.train(was_training)
        trainable = [n for n, p in params.items() if p.requires_grad]
        unused = [n for n, g in zip(trainable, used, strict=True) if g is None]
        for name in unused:
            params[name].requires_grad_(False)
        return unused

    # transformers installs output-capturing forward hooks that are local functions, which
    # cannot be pickled (ddp_spawn pickles the task): the net travels as config and weights.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        modules = dict(state["_modules"])
        net = modules.pop("net")
        state["_modules"] = modules
        state["_net"] = (net.config.to_dict(), net.state_dict(), net.training)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

        config, weights, training = state.pop("_net")
        super().__setstate__(state)
        net = Mask2FormerForUniversalSegmentation(Mask2FormerConfig.from_dict(config))
        net.load_state_dict(weights)
        params = dict(net.named_parameters())
        for name in self.unused:
            params[name].requires_grad_(False)
        self.net = net.train(training)

    def scores(self, image: Tensor) -> Tensor:
        out = self.net(pixel_values=self.normalise(image))
        masks = F.interpolate(
            out.masks_queries_logits, size=image.shape[-2:], mode="bilinear", align_corners=False
        )
        classes = out.class_queries_logits.softmax(-1)[..., :-1]
        return torch.einsum("bqc,bqhw->bchw", classes, masks.sigmoid())

    def probabilities(self, scores: Tensor) -> Tensor:
        """The query mixture is a per-class mass, not a distribution: normalised per pixel."""
        return scores / scores.sum(1, keepdim=True).clamp_min(1e-12)

    def loss(self, image: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, int]:
        mask_labels, class_labels = [], []
        for label in target:
            present = [int(c) for c in torch.unique(label) if int(c) != ignore_index]
            class_labels.append(torch.tensor(present, dtype=torch.long, device=label.device))
            mask_labels.append(
                torch.stack([label == c for c in present]).to(image.dtype)
                if present
                else image.new_zeros(0, *label.shape)
            )
        scored = sum(len(c) > 0 for c in class_labels)
        out = self.net(
            pixel_values=self.normalise(image), mask_labels=mask_labels, class_labels=class_labels
        )
        return out.loss, scored


def build_segmenter(
    model: str,
    backbone: str,
    weights: str | None,
    config: str | None,
    num_classes: int,
    class_names: list[str] | None = None,
) -> Segmenter:
    """The segmenter named by ``model`` (see :class:`SMPSegmenter`, :class:`Mask2FormerSegmenter`)."""
    if model == "mask2former":
        return Mask2FormerSegmenter(weights, config, num_classes, class_names)
    if model in ("deeplabv3plus", "deeplabv3"):
        if config is not None:
            raise ConfigError(f"config is a Mask2Former option; model '{model}' takes a backbone")
        return SMPSegmenter(model, backbone, weights, num_classes)
    raise ConfigError(
        f"unknown segmentation model '{model}': expected mask2former, deeplabv3plus or deeplabv3"
    )


def pad_to_multiple(image: Tensor, divisor: int) -> Tensor:
    """Pad (B, C, H, W) images in [0, 1] with black at the bottom and right to sides that are
    multiples of ``divisor`` (the scores of the padding are cropped off afterwards)."""
    height, width = image.shape[-2:]
    pad_h, pad_w = (-height) % divisor, (-width) % divisor
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
    return image


def resized_scores(segmenter: Segmenter, image: Tensor, size: int) -> Tensor:
    """Scores of (B, 3, H, W) images at (H, W): the image scaled so that its longer side is
    ``size`` (aspect kept, as the DMS release's ``inference.py``), padded to the size divisor,
    the scores cropped back and upsampled bilinearly."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    new = (max(1, round(height * scale)), max(1, round(width * scale)))
    x = image if new == (height, width) else _resize(image, new)
    scores = segmenter.scores(pad_to_multiple(x, segmenter.size_divisor))[..., : new[0], : new[1]]
    return _upsample(scores, (height, width))


def sliding_scores(
    segmenter: Segmenter, image: Tensor, size: int, window: int, stride: int
) -> Tensor:
    """Scores of (B, 3, H, W) images at (H, W) by sliding-window inference: the image scaled
    so that its shorter side is ``size``, ``window`` × ``window`` crops every ``stride`` pixels
    (the last ones flush with the border, as mmsegmentation's ``slide``), scores averaged
    where windows overlap, then upsampled bilinearly."""
    if stride < 1 or window < 1 or stride > window:
        raise ConfigError(f"sliding window: need 1 <= stride <= window, got {stride}, {window}")
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    new = (max(1, round(height * scale)), max(1, round(width * scale)))
    x = image if new == (height, width) else _resize(image, new)
    h, w = new
    total = None
    count = x.new_zeros(1, 1, h, w)
    for top in _starts(h, window, stride):
        for left in _starts(w, window, stride):
            crop = x[..., top : top + window, left : left + window]
            ch, cw = crop.shape[-2:]
            scores = segmenter.scores(pad_to_multiple(crop, segmenter.size_divisor))[..., :ch, :cw]
            if total is None:
                total = x.new_zeros(x.shape[0], scores.shape[1], h, w)
            total[..., top : top + ch, left : left + cw] += scores
            count[..., top : top + ch, left : left + cw] += 1
    assert total is not None
    return _upsample(total / count, (height, width))


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


def _upsample(scores: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
