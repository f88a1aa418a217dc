"""The LVIS-materials sidecar: which material(s) each LVIS object is made of.

LVIS has no material labels; matbench adds them in a separate JSON file, the *sidecar*, kept
next to the LVIS annotation file it labels::

    {
      "version": 1,
      "vocabulary": ["glass", "metal", ...],        # every material name used below
      "annotations": {
        "<LVIS annotation id>": {
          "materials": ["metal"],                 # one or more names from "vocabulary"
          "caption": "a dented metal can",        # optional free text
          "source": "prior"                       # optional: "prior", "prediction", "manual"
        },
        ...
      }
    }

Only annotations listed in the sidecar are LVIS-materials objects; the others are skipped.
``matbench materials build`` writes a sidecar from the packaged category prior table
(:mod:`matbench.materials.prior`) and/or a file of per-object predictions, a JSON object
``{"<annotation id>": "metal" | ["metal", "glass"], ...}`` (optionally wrapped as
``{"annotations": {...}}``), e.g. the majority material that a DMS-trained segmenter predicts
inside each mask. When both give a material for an object, one of the two is chosen at random
(probability ``prior_weight`` for the prior), with a fixed seed.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matbench.errors import DatasetFormatError
from matbench.materials.vocabulary import canonical, is_material

SIDECAR_VERSION = 1


@dataclass
class MaterialLabel:
    """Material names (canonical, most important first) and an optional caption of one object."""

    materials: list[str]
    caption: str | None = None
    source: str | None = None


@dataclass
class BuildReport:
    """What :func:`build_sidecar` did."""

    num_objects: int = 0
    from_prior: int = 0
    from_predictions: int = 0
    unlabelled: int = 0
    #: Objects that both sources labelled (where the seeded choice was made).
    both_sources: int = 0
    #: Category name -> number of objects, for categories without a prior material.
    unknown_categories: dict[str, int] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The counts as a plain dict, with the realised share of each source."""
        labelled = self.from_prior + self.from_predictions
        return {
            "objects": self.num_objects,
            "from_prior": self.from_prior,
            "from_predictions": self.from_predictions,
            "unlabelled": self.unlabelled,
            "prior_share": self.from_prior / labelled if labelled else None,
            "both_sources": self.both_sources,
        }

    def summary(self) -> str:
        lines = [
            f"{self.num_objects} objects: {self.from_prior} labelled from the category prior, "
            f"{self.from_predictions} from predictions, {self.unlabelled} left unlabelled",
        ]
        if self.unknown_categories:
            lines.append(
                f"{len(self.unknown_categories)} categories have no prior material (unknown): "
                + ", ".join(f"{k} ({v})" for k, v in sorted(self.unknown_categories.items()))
            )
        return "\n".join(lines)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{what} '{path}' does not exist") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})") from err


def _materials(value: Any, path: Path, where: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DatasetFormatError(path, f"{where}: materials must be a name or a non-empty list")
    out = []
    for name in names:
        if not is_material(name):
            raise DatasetFormatError(path, f"{where}: unknown material '{name}'")
        out.append(canonical(name))
    return list(dict.fromkeys(out))


def read_sidecar(path: str | Path) -> dict[int, MaterialLabel]:
    """Read and validate a sidecar; annotation id -> :class:`MaterialLabel`.

    Material names must be in the file's ``vocabulary``; names are kept as written there
    (a sidecar may use materials outside matbench's own vocabulary).
    """
    path = Path(path)
    data = _read_json(path, "materials sidecar")
    if not isinstance(data, dict) or data.get("version") != SIDECAR_VERSION:
        raise DatasetFormatError(
            path, f"not a materials sidecar (expected version {SIDECAR_VERSION})"
        )
    vocabulary = data.get("vocabulary")
    annotations = data.get("annotations")
    if not isinstance(vocabulary, list) or not all(isinstance(v, str) for v in vocabulary):
        raise DatasetFormatError(path, "'vocabulary' must be a list of material names")
    if not isinstance(annotations, dict):
        raise DatasetFormatError(path, "'annotations' must map annotation ids to labels")
    known = set(vocabulary)
    labels: dict[int, MaterialLabel] = {}
    for key, entry in annotations.items():
        try:
            ann_id = int(key)
        except ValueError as err:
            raise DatasetFormatError(path, f"annotation id '{key}' is not an integer") from err
        if not isinstance(entry, dict) or not isinstance(entry.get("materials"), list):
            raise DatasetFormatError(path, f"annotation {key}: needs a 'materials' list")
        materials = entry["materials"]
        if not materials or not all(isinstance(m, str) and m in known for m in materials):
            raise DatasetFormatError(
                path, f"annotation {key}: materials {materials} are not all in 'vocabulary'"
            )
        caption = entry.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise DatasetFormatError(path, f"annotation {key}: 'caption' must be a string")
        labels[ann_id] = MaterialLabel(list(materials), caption, entry.get("source"))
    return labels


def write_sidecar(
    path: str | Path, labels: dict[int, MaterialLabel], provenance: dict[str, Any] | None = None
) -> Path:
    """Write ``labels`` as a sidecar JSON (vocabulary = the materials used, sorted), with an
    optional ``provenance`` record (how it was built; readers ignore it)."""
    path = Path(path)
    vocabulary = sorted({m for label in labels.values() for m in label.materials})
    annotations = {}
    for ann_id in sorted(labels):
        label = labels[ann_id]
        entry: dict[str, Any] = {"materials": label.materials}
        if label.caption is not None:
            entry["caption"] = label.caption
        if label.source is not None:
            entry["source"] = label.source
        annotations[str(ann_id)] = entry
    data: dict[str, Any] = {"version": SIDECAR_VERSION, "vocabulary": vocabulary}
    if provenance:
        data["provenance"] = provenance
    data["annotations"] = annotations
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def read_predictions(path: str | Path) -> dict[int, list[str]]:
    """Per-object material predictions: ``{"<annotation id>": name | [names]}`` (optionally
    under ``"annotations"``; an entry may be an object with ``materials``, as
    ``matbench materials label`` writes)."""
    return read_predictions_file(path)[0]


def read_predictions_file(path: str | Path) -> tuple[dict[int, list[str]], dict[str, Any]]:
    """:func:`read_predictions` and the file's other top-level fields (``lvis``, ``model``,
    ``counts``… of a ``materials label`` file; empty for a plain mapping)."""
    path = Path(path)
    data = _read_json(path, "predictions file")
    meta: dict[str, Any] = {}
    if isinstance(data, dict) and isinstance(data.get("annotations"), dict):
        meta = {k: v for k, v in data.items() if k != "annotations"}
        data = data["annotations"]
    if not isinstance(data, dict):
        raise DatasetFormatError(path, "expected a JSON object: annotation id -> material(s)")
    out = {}
    for key, value in data.items():
        try:
            ann_id = int(key)
        except ValueError as err:
            raise DatasetFormatError(path, f"annotation id '{key}' is not an integer") from err
        if isinstance(value, dict):
            value = value.get("materials")
        out[ann_id] = _materials(value, path, f"annotation {key}")
    return out, meta


def lvis_identity(lvis: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """What identifies an LVIS version: its category list (ids and names) by digest."""
    pairs = sorted((int(c["id"]), str(c["name"])) for c in lvis.get("categories", []))
    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()
    return {"file": str(path), "num_categories": len(pairs), "categories_sha256": digest}


def check_predictions_match(
    meta: dict[str, Any], ann_ids: set[int], lvis: dict[str, Any], lvis_path: Path, path: Path
) -> None:
    """A predictions file made for another LVIS version, or naming annotations the LVIS file
    does not have, is an error naming both files."""
    recorded = meta.get("lvis")
    if isinstance(recorded, dict) and recorded.get("categories_sha256"):
        here = lvis_identity(lvis, lvis_path)
        if recorded["categories_sha256"] != here["categories_sha256"]:
            raise DatasetFormatError(
                path,
                f"made for another LVIS version: labelled with '{recorded.get('file')}' "
                f"({recorded.get('num_categories')} categories), but '{lvis_path}' has "
                f"{here['num_categories']} categories with other ids or names",
            )
    known = {int(a["id"]) for a in lvis.get("annotations", [])}
    missing = sorted(ann_ids - known)
    if missing:
        raise DatasetFormatError(
            path,
            f"{len(missing)} annotation id(s) do not exist in '{lvis_path}', e.g. "
            + ", ".join(map(str, missing[:5])),
        )


def build_sidecar(
    lvis: dict[str, Any],
    prior: dict[str, Any] | None = None,
    predictions: dict[int, list[str]] | None = None,
    prior_weight: float = 0.5,
    seed: int = 0,
) -> tuple[dict[int, MaterialLabel], BuildReport]:
    """Material labels for the objects of an LVIS annotation dict.

    Args:
        lvis: A parsed LVIS annotation JSON (``annotations`` and ``categories``).
        prior: A prior table (see :func:`matbench.materials.prior.load_prior`), or None.
            Categories are matched by name, then by WordNet synset (LVIS v0.5 names differ).
        predictions: Annotation id -> predicted materials, or None.
        prior_weight: Probability of taking the prior when both sources label an object.
        seed: Seed of that choice.
    """
    if prior is None and predictions is None:
        raise ValueError("build_sidecar needs a prior table, predictions, or both")
    if not 0.0 <= prior_weight <= 1.0:
        raise ValueError(f"prior_weight must be in [0, 1], got {prior_weight}")
    table = (prior or {}).get("categories", {})
    by_synset = {v.get("synset"): v for v in table.values() if v.get("synset")}
    category_materials: dict[int, list[str]] = {}
    category_names: dict[int, str] = {}
    for category in lvis.get("categories", []):
        cid, name = int(category["id"]), str(category["name"])
        category_names[cid] = name
        entry = table.get(name) or by_synset.get(category.get("synset"))
        if entry is not None:
            category_materials[cid] = list(entry["materials"])
    predictions = predictions or {}
    rng = random.Random(seed)
    report = BuildReport()
    unknown: Counter[str] = Counter()
    labels: dict[int, MaterialLabel] = {}
    for ann in sorted(lvis.get("annotations", []), key=lambda a: int(a["id"])):
        ann_id, cid = int(ann["id"]), int(ann["category_id"])
        report.num_objects += 1
        from_prior = category_materials.get(cid) if prior is not None else None
        if prior is not None and from_prior is None:
            unknown[category_names.get(cid, str(cid))] += 1
        predicted = predictions.get(ann_id)
        if from_prior and predicted:
            report.both_sources += 1
            use_prior = rng.random() < prior_weight
        else:
            use_prior = bool(from_prior)
        if use_prior:
            labels[ann_id] = MaterialLabel(list(from_prior), source="prior")
            report.from_prior += 1
        elif predicted:
            labels[ann_id] = MaterialLabel(list(predicted), source="prediction")
            report.from_predictions += 1
        else:
            report.unlabelled += 1
    report.unknown_categories = dict(unknown)
    return labels, report
