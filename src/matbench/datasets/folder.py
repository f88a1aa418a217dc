"""Material classification from folders: ``image/<class>/…`` with optional ``mask/<class>/…``.

This is the shape of the Flickr Material Database, so a user's own photos sorted into one
folder per material work the same way as FMD (:class:`matbench.datasets.fmd.FMD` is this
class plus FMD's fixed class list and checks).

Also here, shared by the material classification datasets:

- appearance descriptions (:func:`load_descriptions`, :data:`FALLBACK_DESCRIPTION`): a sample's
  ``description`` comes from an optional JSON sidecar ``{sample key: description}``; a sample
  missing from it (or every sample, without a sidecar) gets the fixed, class-agnostic
  :data:`FALLBACK_DESCRIPTION`. The fallback is a constant, so it cannot depend on the label;
  a sidecar description that names the sample's own class would hand the answer to the text
  stream: by default its class words are redacted (:data:`LABEL_LEAK_POLICIES`).
- a seeded per-class split (:func:`split_per_class`),
- the sample resize (:func:`resize_sample`); image and mask decoding (:func:`read_image`,
  :func:`read_mask`) is re-exported from :mod:`matbench.datasets.utils`,
- the cheap per-sample fingerprint used by the feature cache (:meth:`MaterialFolder.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from matbench.cache import cached_sample
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.utils import MASK_THRESHOLD, read_image, read_mask

#: Image file extensions read by :class:`MaterialFolder` (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: The description of a sample that has none in the sidecar. A constant: it can never
#: depend on (nor leak) the sample's class.
FALLBACK_DESCRIPTION = "a photo of a material surface"

Sample = dict[str, Any]


# -- decoding (see matbench.datasets.utils) ---------------------------------------------
def file_digest(path: Path) -> str:
    """Short content hash of a file (part of the feature cache key)."""
    return hashlib.blake2b(path.read_bytes(), digest_size=12).hexdigest()


def resize_sample(sample: Sample, size: int | None) -> Sample:
    """Resize ``image`` (bilinear, antialiased) and ``mask`` (nearest) to ``size`` × ``size``.

    The aspect ratio is not kept on purpose: a crop could cut the material region away.
    A dense int64 ``mask`` (label map) is resized by nearest neighbour too.
    """
    if size is None:
        return sample
    image = sample["image"]
    if tuple(image.shape[-2:]) != (size, size):
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)
        sample["image"] = image[0].clamp_(0.0, 1.0)
    mask = sample.get("mask")
    if mask is not None and tuple(mask.shape) != (size, size):
        dtype = mask.dtype
        mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0]
        sample["mask"] = mask.to(dtype)
    return sample


def _is_empty_mask(path: Path) -> bool:
    return not bool(read_mask(path).any())


# -- splits ------------------------------------------------------------------------------------
def split_per_class(
    keys_by_class: Mapping[str, Sequence[str]],
    train_fraction: float = 0.5,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, list[str]]:
    """A seeded per-class split into ``train``, ``val`` and ``test`` key lists.

    For every class the sorted keys are shuffled with ``random.Random(f"{seed}:{class}")``;
    the first ``round(train_fraction * n)`` go to training (the rest to test), and
    ``val_fraction`` of those training keys (at least one when the fraction is positive and
    the class has two or more training keys) are held out for validation. The result only
    depends on the key names, the fractions and the seed.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name in sorted(keys_by_class):
        keys = sorted(keys_by_class[name])
        random.Random(f"{seed}:{name}").shuffle(keys)
        n_train = min(max(1, round(train_fraction * len(keys))), len(keys))
        train, test = keys[:n_train], keys[n_train:]
        n_val = 0
        if val_fraction > 0 and len(train) >= 2:
            n_val = min(max(1, round(val_fraction * len(train))), len(train) - 1)
        split["val"] += sorted(train[:n_val])
        split["train"] += sorted(train[n_val:])
        split["test"] += sorted(test)
    return split


# -- descriptions ------------------------------------------------------------------------------
#: What a dataset does with a sidecar description that names the sample's own class:
#: ``redact`` replaces the class words (and their derived forms) by :data:`REDACTION`,
#: ``fallback`` replaces the whole description by :data:`FALLBACK_DESCRIPTION`, ``keep`` keeps
#: it (the label leaks: for ablations), ``error`` stops with the first such sample.
LABEL_LEAK_POLICIES = ("redact", "fallback", "keep", "error")
#: The word that replaces a class word in a redacted description.
REDACTION = "material"
# Suffixes of the common derived forms: plurals, and adjectives such as wooden, woollen,
# metallic, glassy, stony, leathery, plastics, wood-like.
_DERIVED = r"(?:s|es|en|n|len|y|ey|ic|lic|ish|like|-like)"
# Count key of each policy's outcome ("error" raises before any count is read).
_OUTCOME = {"redact": "redacted", "fallback": "fallback", "keep": "kept", "error": "kept"}


def _class_word_pattern(class_name: str) -> re.Pattern[str] | None:
    """A regex of the words of ``class_name`` (its ``/``-separated parts, before a comma) and
    their derived forms, as whole words, ignoring case; None for a name without such words."""
    head = class_name.lower().split(",")[0]
    forms = []
    for part in (p.strip() for p in head.split("/")):
        if len(part) <= 2:
            continue
        word = re.escape(part)
        forms.append(rf"{word}{_DERIVED}?")
        if part.endswith("e"):  # stone -> stony
            forms.append(rf"{re.escape(part[:-1])}{_DERIVED}")
    if not forms:
        return None
    return re.compile(rf"\b(?:{'|'.join(forms)})\b", re.IGNORECASE)


def names_class(text: str, class_name: str) -> bool:
    """True when ``text`` contains a word of ``class_name`` (one of its ``/``-separated parts,
    or its part before a comma) or a derived form of it (plural, ``wooden``, ``metallic``,
    ``glassy``, ``stony``, ...) as a whole word, ignoring case."""
    pattern = _class_word_pattern(class_name)
    return bool(pattern and pattern.search(text))


def redact_class(text: str, class_name: str) -> str:
    """``text`` with every word of ``class_name`` and its derived forms replaced by
    :data:`REDACTION` (``"a wooden table"`` -> ``"a material table"`` for ``Wood``)."""
    pattern = _class_word_pattern(class_name)
    return pattern.sub(REDACTION, text) if pattern else text


def load_descriptions(path: str | Path) -> dict[str, str]:
    """Read a description sidecar: a JSON object ``{sample key: description}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"description sidecar '{path}' does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DatasetFormatError(path, "expected a JSON object {sample key: description}")
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise DatasetFormatError(
            path, f"{len(bad)} descriptions are not non-empty strings (e.g. key '{bad[0]}')"
        )
    return {str(k): v.strip() for k, v in data.items()}


def assign_descriptions(
    keys: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    sidecar: str | Path | None,
    on_label_leak: str = "redact",
) -> tuple[list[str], dict[str, Any]]:
    """One description per sample: the sidecar's, or :data:`FALLBACK_DESCRIPTION`; and the
    label-leak counts.

    A sidecar description that names the sample's own class (see :func:`names_class`) gives
    the answer away; ``on_label_leak`` (one of :data:`LABEL_LEAK_POLICIES`) decides what
    happens: ``redact`` (default) replaces the class words by :data:`REDACTION`,
    ``fallback`` the whole description by the fallback, ``keep`` keeps it, ``error`` raises
    :class:`DatasetFormatError` naming the sidecar and the first such key. The labels are used
    for this check only.

    Returns:
        The descriptions, and ``{"policy", "described", "leaks", "redacted", "fallback",
        "kept"}``: how many samples had a sidecar description, how many of those named their
        class, and what became of them.
    """
    if on_label_leak not in LABEL_LEAK_POLICIES:
        raise ValueError(
            f"on_label_leak must be one of {LABEL_LEAK_POLICIES}, got '{on_label_leak}'"
        )
    counts: dict[str, Any] = {"policy": on_label_leak, "described": 0, "leaks": 0}
    counts.update({outcome: 0 for outcome in _OUTCOME.values()})
    if sidecar is None:
        return [FALLBACK_DESCRIPTION] * len(keys), counts
    table = load_descriptions(sidecar)
    if keys and table and not any(key in table for key in keys):
        raise DatasetFormatError(
            Path(sidecar),
            f"none of its {len(table)} keys matches a sample (e.g. key '{next(iter(table))}', "
            f"sample '{keys[0]}'): is it the sidecar of another dataset or split?",
        )
    out = []
    first_leak = None
    for key, label in zip(keys, labels, strict=True):
        text = table.get(key)
        if text is None:
            out.append(FALLBACK_DESCRIPTION)
            continue
        counts["described"] += 1
        name = class_names[label]
        if names_class(text, name):
            counts["leaks"] += 1
            first_leak = first_leak or (key, text, name)
            if on_label_leak == "redact":
                text = redact_class(text, name)
            elif on_label_leak == "fallback":
                text = FALLBACK_DESCRIPTION
            counts[_OUTCOME[on_label_leak]] += 1
        out.append(text)
    missing = [k for k in keys if k not in table]
    if missing:
        warnings.warn(
            f"{sidecar}: {len(missing)} of {len(keys)} samples have no description (e.g. "
            f"'{missing[0]}') and get the fallback",
            stacklevel=2,
        )
    if first_leak is not None:
        key, text, name = first_leak
        msg = (
            f"{counts['leaks']} descriptions name their sample's own class (e.g. '{key}': "
            f"'{text}' for class '{name}'), which leaks the label to the text stream"
        )
        if on_label_leak == "error":
            raise DatasetFormatError(Path(sidecar), msg)
        done = {"redact": "redacted", "fallback": "replaced by the fallback", "keep": "kept"}
        warnings.warn(f"{sidecar}: {msg}; they were {done[on_label_leak]}", stacklevel=2)
    return out, counts


# -- the dataset -------------------------------------------------------------------------------
class MaterialFolder(Dataset):
    """Images sorted into ``image/<class>/``, with optional masks at ``mask/<class>/<same name>``.

    Classes are the sub-folders of ``image/`` in alphabetical order (ids 0..C-1); only files
    with an image extension are read, anything else (``Thumbs.db``, ``*.m``) is skipped. A mask
    is any image file with the image's stem under ``mask/<class>/``, converted to one channel
    and binarised (``> 127``); it must have the image's size. A sample without a mask gets an
    all-True mask (the whole image is the material).

    Samples: ``image`` float (3, H, W) in [0, 1], ``mask`` bool (H, W), ``label`` int64,
    ``key`` (``<class>/<file name>``), ``index`` and ``description``. With a feature cache
    attached, see :mod:`matbench.cache`.

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

    #: Set by a task to serve frozen features instead of decoding (see ``matbench.cache``).
    feature_cache: Any = None
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
        empty = [mask for *_, mask in self.samples if mask is not None and _is_empty_mask(mask)]
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

    def __getitem__(self, index: int) -> Sample:
        key, label, _, _ = self.samples[index]
        meta: Sample = {
            "label": torch.tensor(label, dtype=torch.int64),
            "key": key,
            "index": index,
            "description": self.descriptions[index],
        }
        cached = cached_sample(self, index, meta)
        if cached is not None:
            return cached
        sample = self._load(index)
        sample.update(meta)
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
