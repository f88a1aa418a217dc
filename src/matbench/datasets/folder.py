"""Material classification from folders: ``image/<class>/…`` with optional ``mask/<class>/…``.

This is the shape of the Flickr Material Database, so a user's own photos sorted into one
folder per material work the same way as FMD (:class:`matbench.datasets.fmd.FMD` is this
class plus FMD's fixed class list and checks). The helpers it shares with the other readers
live in :mod:`matbench.datasets.utils` (decoding, resizing, digests, splits) and
:mod:`matbench.datasets.descriptions` (descriptions, label leaks); their names stay importable
from here for one release.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from matbench.datasets.descriptions import (  # noqa: F401 - re-exported (last release's path)
    FALLBACK_DESCRIPTION,
    LABEL_LEAK_POLICIES,
    REDACTION,
    assign_descriptions,
    load_descriptions,
    names_class,
    redact_class,
)
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.utils import (  # noqa: F401 - re-exported (last release's path)
    IMAGE_EXTENSIONS,
    MASK_THRESHOLD,
    Sample,
    file_digest,
    mask_is_empty,
    read_image,
    read_mask,
    resize_sample,
    split_per_class,
)


# -- the dataset -------------------------------------------------------------------------------
class MaterialFolder(Dataset):
    """Images sorted into ``image/<class>/``, with optional masks at ``mask/<class>/<same name>``.

    Classes are the sub-folders of ``image/`` in alphabetical order (ids 0..C-1); only files
    with an image extension are read, anything else (``Thumbs.db``, ``*.m``) is skipped. A mask
    is any image file with the image's stem under ``mask/<class>/``, converted to one channel
    and binarised (``> 127``); it must have the image's size. A sample without a mask gets an
    all-True mask (the whole image is the material).

    Samples: ``image`` float (3, H, W) in [0, 1], ``mask`` bool (H, W), ``label`` int64,
    ``key`` (``<class>/<file name>``), ``index`` and ``description``. A feature cache serves
    them through :class:`matbench.cache.CachedFeatures` (:meth:`fingerprint`, :meth:`sample_meta`).

    Args:
        root: Folder holding ``image/`` (and optionally ``mask/``).
        keys: Only these sample keys (``<class>/<file name>``), e.g. one split; None = all.
        classes: The class names (and order); None = the sub-folders of ``image/``, sorted.
        extensions: Image file extensions to read (lower case, with the dot).
        require_masks: Raise when an image has no mask.
        image_size: Resize image and mask to this square size; None keeps the original size.
        object_crop: Crop around the mask (padded so each side is at least ``crop_min_size``
            pixels, see :func:`matbench.transforms.crop_object`) before resizing.
        crop_min_size: Smallest side of the object crop, in original pixels.
        crop_blur_sigma: Blur outside the mask after the crop (output pixels); 0 = none.
        descriptions: JSON sidecar ``{key: description}``; None = the fallback for all.
        on_label_leak: What to do with sidecar descriptions naming the sample's own class:
            ``"redact"``, ``"fallback"``, ``"keep"`` or ``"error"`` (see
            :func:`assign_descriptions`); the counts are in :attr:`label_leaks`.
        transforms: Optional callable applied to each sample dict last.
        split: Name of the split these keys form (part of the cache fingerprint).
        label_space: Relabel into a label space (``classes21`` or a label-space JSON, see
            :mod:`matbench.datasets.label_space`): through the space's map named
            :attr:`label_source`, or, for a plain folder, by class name. Samples of classes
            without a counterpart are dropped and counted in :attr:`dropped`; ``keys``
            select among the samples before relabelling.
    """

    #: Name of this dataset's map in a label-space file (None: map by class name).
    label_source: str | None = None

    def __init__(
        self,
        root: str | Path,
        keys: Iterable[str] | None = None,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        require_masks: bool = False,
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
        self.root = Path(root).expanduser()
        self.extensions = tuple(e.lower() for e in extensions)
        self.image_size = image_size
        self.object_crop = object_crop
        self.crop_min_size = crop_min_size
        self.crop_blur_sigma = crop_blur_sigma
        self.transforms = transforms
        self.split = split
        self._check_root()
        self.classes = list(classes) if classes is not None else self._find_classes()
        if not self.classes:
            raise DatasetNotFoundError(
                type(self).__name__, self.root, ["image/<class>/<image file>"], "no class folder"
            )
        index = self._scan()
        if keys is not None:
            wanted = list(keys)
            known = {key for key, *_ in index}
            missing = [k for k in wanted if k not in known]
            if missing:
                raise DatasetNotFoundError(
                    type(self).__name__,
                    self.root,
                    [f"image/{k}" for k in missing[:5]],
                    f"{len(missing)} requested samples are missing",
                )
            chosen = set(wanted)
            index = [row for row in index if row[0] in chosen]
        if require_masks:
            no_mask = [key for key, _, _, mask in index if mask is None]
            if no_mask:
                raise DatasetNotFoundError(
                    type(self).__name__,
                    self.root,
                    [
                        f"mask/{Path(k).parent}/{Path(k).stem}.<image extension>"
                        for k in no_mask[:5]
                    ],
                    f"{len(no_mask)} images have no mask",
                )
        #: Samples left out per source class by the label space (none without one).
        self.dropped: dict[str, int] = {}
        self.label_space = None
        if label_space is not None:
            from matbench.datasets.label_space import load_label_space, relabel

            self.label_space = load_label_space(label_space)
            mapping = self.label_space.mapping(self.classes, self.label_source)
            labels, self.dropped = relabel([row[1] for row in index], mapping, self.classes)
            index = [
                (key, new, image, mask)
                for (key, _, image, mask), new in zip(index, labels, strict=True)
                if new is not None
            ]
            self.classes = list(self.label_space.classes)
        self.samples: list[tuple[str, int, Path, Path | None]] = index
        #: Per sample description, and what the label-leak policy did (see
        #: :func:`assign_descriptions`).
        self.descriptions, self.label_leaks = assign_descriptions(
            [s[0] for s in index], [s[1] for s in index], self.classes, descriptions, on_label_leak
        )
        self.data_warnings = self._fallback_counts(descriptions is not None)
        self._settings = json.dumps(
            {
                "size": image_size,
                "crop": [object_crop, crop_min_size, crop_blur_sigma] if object_crop else None,
                "mask_threshold": MASK_THRESHOLD,
                "transforms": repr(transforms) if transforms is not None else None,
            },
            sort_keys=True,
        )

    # -- index ---------------------------------------------------------------------------------
    def _fallback_counts(self, has_sidecar: bool) -> dict[str, int]:
        """Samples that silently fall back (all-black mask: the whole image is pooled; no
        sidecar description), warned about by name and counted for the results JSON."""
        empty = [mask for *_, mask in self.samples if mask is not None and mask_is_empty(mask)]
        if empty:
            warnings.warn(
                f"{len(empty)} masks have no material pixel (all values <= {MASK_THRESHOLD}), "
                f"so their whole image is used: {', '.join(str(p) for p in empty[:5])}",
                stacklevel=3,
            )
        counts = {"empty_masks": len(empty)}
        if has_sidecar:
            counts["fallback_descriptions"] = sum(
                d == FALLBACK_DESCRIPTION for d in self.descriptions
            )
        return {k: v for k, v in counts.items() if v}

    def _expected(self) -> list[str]:
        return ["image/<class>/<image file>", "mask/<class>/<same name> (optional)"]

    def _check_root(self) -> None:
        if not (self.root / "image").is_dir():
            raise DatasetNotFoundError(type(self).__name__, self.root, self._expected())

    def _find_classes(self) -> list[str]:
        return sorted(p.name for p in (self.root / "image").iterdir() if p.is_dir())

    def _is_image(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in self.extensions

    def _scan(self) -> list[tuple[str, int, Path, Path | None]]:
        index = []
        for label, name in enumerate(self.classes):
            folder = self.root / "image" / name
            if not folder.is_dir():
                raise DatasetNotFoundError(
                    type(self).__name__, self.root, [f"image/{name}/"], "a class folder is missing"
                )
            masks: dict[str, Path] = {}
            mask_folder = self.root / "mask" / name
            if mask_folder.is_dir():
                for path in sorted(mask_folder.iterdir()):
                    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                        masks.setdefault(path.stem, path)
            for path in sorted(folder.iterdir()):
                if self._is_image(path):
                    index.append((f"{name}/{path.name}", label, path, masks.get(path.stem)))
        return index

    # -- samples -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        """The class id of every sample, in order."""
        return [s[1] for s in self.samples]

    def fingerprint(self, index: int) -> dict[str, str]:
        """What identifies the input of sample ``index`` (the feature cache key's data part):
        dataset, split, key, and a hash of the file contents, the preprocessing settings and
        the description. Cheap: reads the files' bytes but decodes nothing."""
        key, _, image_path, mask_path = self.samples[index]
        content = [file_digest(image_path), file_digest(mask_path) if mask_path else "-"]
        detail = hashlib.blake2b(
            "|".join([*content, self._settings, self.descriptions[index]]).encode(),
            digest_size=16,
        ).hexdigest()
        return {"dataset": type(self).__name__, "split": self.split, "key": key, "detail": detail}

    def sample_meta(self, index: int) -> Sample:
        """Sample ``index`` without its pixels: ``label``, ``key``, ``index``, ``description``
        (what a feature cache serves with the cached features)."""
        key, label, _, _ = self.samples[index]
        return {
            "label": torch.tensor(label, dtype=torch.int64),
            "key": key,
            "index": index,
            "description": self.descriptions[index],
        }

    def __getitem__(self, index: int) -> Sample:
        sample = self._load(index)
        sample.update(self.sample_meta(index))
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _load(self, index: int) -> Sample:
        _, _, image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        if mask_path is None:
            mask = torch.ones(image.shape[-2:], dtype=torch.bool)
        else:
            mask = read_mask(mask_path)
            if tuple(mask.shape) != tuple(image.shape[-2:]):
                raise DatasetFormatError(
                    mask_path,
                    f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                    f"{image_path} is {image.shape[2]}x{image.shape[1]}",
                )
        sample: Sample = {"image": image, "mask": mask}
        if self.object_crop and bool(mask.any()):
            from matbench.transforms import crop_object

            image, mask, _ = crop_object(
                image,
                mask,
                size=self.image_size,
                min_size=self.crop_min_size,
                blur_sigma=self.crop_blur_sigma,
            )
            sample = {"image": image, "mask": mask}
        return resize_sample(sample, self.image_size)
