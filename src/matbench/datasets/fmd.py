"""The Flickr Material Database (Sharan, Rosenholtz, Adelson): 10 materials, 100 images each.

Layout (the zip's members start at ``image/`` and ``mask/``)::

    <root>/image/<class>/<class>_moderate_001_new.jpg …   (512 x 384 RGB JPEG)
    <root>/mask/<class>/<same file name>                  (JPEG mask: white = material)

Stray files of the release (``fabric/normalizeImage.m``, ``foliage/Thumbs.db``) are skipped:
only ``.jpg`` files are read. There is no official split; :func:`fmd_split` makes the common
per-class 50/50 split from a seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from matbench.datasets.errors import DatasetNotFoundError
from matbench.datasets.folder import MaterialFolder
from matbench.datasets.utils import Sample, split_per_class

#: The 10 FMD classes; ids are alphabetical (the documented order).
FMD_CLASSES = (
    "fabric",
    "foliage",
    "glass",
    "leather",
    "metal",
    "paper",
    "plastic",
    "stone",
    "water",
    "wood",
)


class FMD(MaterialFolder):
    """The Flickr Material Database as a :class:`MaterialFolder` with FMD's specifics.

    Every image needs its mask (``mask/<class>/<same name>``); masks are converted to one
    channel and binarised (``> 127``) and must have the image's size.

    Args:
        root: Folder holding ``image/`` and ``mask/`` (the zip's content).
        keys: Only these sample keys (``<class>/<file name>``, e.g. from :func:`fmd_split`).
        image_size: Resize image and mask to this square size; None keeps 512 x 384.
        object_crop: Crop around the mask first (see :class:`MaterialFolder`).
        crop_min_size: Smallest side of the object crop, in original pixels.
        crop_blur_sigma: Blur outside the mask after the crop; 0 = none.
        descriptions: JSON sidecar ``{key: description}``; None = the class-agnostic fallback.
        on_label_leak: ``"redact"``, ``"fallback"``, ``"keep"`` or ``"error"``: what to do with
            descriptions naming their own class (see
            :func:`matbench.datasets.descriptions.assign_descriptions`).
        transforms: Optional callable applied to each sample dict last.
        split: Name of the split these keys form.
        label_space: Relabel into a label space through its ``fmd`` map (e.g. ``classes21``);
            FMD classes without a counterpart are dropped and counted in :attr:`dropped`.
    """

    label_source = "fmd"

    def __init__(
        self,
        root: str | Path,
        keys: Iterable[str] | None = None,
        image_size: int | None = None,
        object_crop: bool = False,
        crop_min_size: int = 50,
        crop_blur_sigma: float = 0.0,
        descriptions: str | Path | None = None,
        on_label_leak: str = "redact",
        transforms: Callable[[Sample], Sample] | None = None,
        split: str = "all",
        label_space: str | None = None,
    ) -> None:
        super().__init__(
            root,
            keys=keys,
            classes=FMD_CLASSES,
            extensions=(".jpg",),
            require_masks=True,
            image_size=image_size,
            object_crop=object_crop,
            crop_min_size=crop_min_size,
            crop_blur_sigma=crop_blur_sigma,
            descriptions=descriptions,
            on_label_leak=on_label_leak,
            transforms=transforms,
            split=split,
            label_space=label_space,
        )

    def _expected(self) -> list[str]:
        return [f"image/{c}/*.jpg" for c in FMD_CLASSES] + [f"mask/{c}/*.jpg" for c in FMD_CLASSES]

    def _check_root(self) -> None:
        missing = [
            f"{kind}/{name}/"
            for kind in ("image", "mask")
            for name in FMD_CLASSES
            if not (self.root / kind / name).is_dir()
        ]
        if missing:
            hint = "Unzip FMD so that image/ and mask/ are directly inside the root"
            if (self.root / "FMD" / "image").is_dir():
                hint = f"The data seems to be in '{self.root / 'FMD'}': use that as the root"
            raise DatasetNotFoundError(
                type(self).__name__, self.root, self._expected(), f"missing: {missing[:4]}. {hint}"
            )


def fmd_keys(root: str | Path) -> dict[str, list[str]]:
    """Every sample key of an FMD copy, per class (stray files skipped)."""
    dataset = FMD(root)
    keys: dict[str, list[str]] = {name: [] for name in FMD_CLASSES}
    for key, label, _, _ in dataset.samples:
        keys[FMD_CLASSES[label]].append(key)
    return keys


def fmd_split(
    root: str | Path, train_fraction: float = 0.5, val_fraction: float = 0.0, seed: int = 0
) -> dict[str, list[str]]:
    """The seeded per-class split of an FMD copy (see
    :func:`matbench.datasets.utils.split_per_class`): ``train``, ``val`` and ``test`` keys."""
    return split_per_class(fmd_keys(root), train_fraction, val_fraction, seed)
