"""The MatSeg on-disk formats, in one place: file names, the finished marker, relation weights,
and the readers and writers of the point annotations.

Torch-free (json, re, numpy): the readers in :mod:`matbench.datasets.matseg` and the generators
in :mod:`matbench.synth` (whose worker processes never import torch) both use it. The layouts
are described in ``docs/formats.md``:

Benchmark (point annotations)::

    <root>/images/<stem>.<ext>
    <root>/data/<stem>/data.json              {group id: {"pt_im": [[x, y, r], ...], "pt_pg": ...}}
    <root>/data/<stem>/group_relations.txt    optional: "[a,b,...]" (0.6) or "(a,b,...)" (0.3)

Training scenes (soft masks)::

    <root>/<scene>/Finished.txt               written last: a scene counts only once it exists
    <root>/<scene>/RGB__RGB.jpg
    <root>/<scene>/mask0.png ... (2D) or mask001.png ... (3D), 8-bit soft maps
    <root>/<scene>/ObjectMaskOcluded.png, CameraParameters.json, NoGroundPlane.txt (3D)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matbench.errors import DatasetFormatError

# -- training scenes ---------------------------------------------------------------------------
#: Marker file of a complete scene folder; writers create it last.
FINISHED = "Finished.txt"
#: The scene's photo.
SCENE_IMAGE = "RGB__RGB.jpg"
#: The 3D scenes' mask of the objects as seen by the camera (the official spelling).
OBJECT_MASK = "ObjectMaskOcluded.png"
#: The 3D scenes' camera description.
CAMERA_PARAMETERS = "CameraParameters.json"
#: Marker of a 3D scene rendered without a ground plane.
NO_GROUND_PLANE = "NoGroundPlane.txt"
#: One material's soft mask: ``mask<number>.png`` (any case).
MASK_PATTERN = re.compile(r"^mask(\d+)\.png$", re.IGNORECASE)
#: Soft-mask total (0–255 units) below which a pixel is outside the region of interest.
ROI_MIN_TOTAL = 10.0


def mask_name(number: int, digits: int = 1) -> str:
    """File name of soft mask ``number``: ``mask0.png`` (2D scenes) or, with ``digits=3``,
    ``mask001.png`` (3D scenes, numbered from 1)."""
    return f"mask{number:0{digits}d}.png"


def is_finished(folder: Path) -> bool:
    """True when ``folder`` is a complete scene (it holds :data:`FINISHED`)."""
    return (folder / FINISHED).is_file()


def finished_scenes(root: Path) -> list[Path]:
    """The complete scene folders directly under ``root``, sorted by name."""
    return sorted(p for p in root.iterdir() if is_finished(p))


def mark_finished(folder: Path) -> None:
    """Write the :data:`FINISHED` marker (the last file of a scene)."""
    (folder / FINISHED).write_text("")


def unmark_finished(folder: Path) -> None:
    """Remove the :data:`FINISHED` marker before a scene folder is (re)written."""
    (folder / FINISHED).unlink(missing_ok=True)


# -- benchmark ---------------------------------------------------------------------------------
#: Folders of a benchmark root: the images, and one annotation folder per image stem.
IMAGES_DIR, DATA_DIR = "images", "data"
#: The annotation files of one image.
POINTS_FILE, RELATIONS_FILE = "data.json", "group_relations.txt"
#: Ground-truth weight of two points in the same group, in "[...]" and "(...)" relations.
SAME_WEIGHT, SQUARE_WEIGHT, ROUND_WEIGHT = 1.0, 0.6, 0.3
#: Longest side the benchmark protocol resizes images to (points are scaled and rounded).
EVAL_MAX_SIDE = 700


def annotation_dir(root: Path, stem: str) -> Path:
    """The folder of the annotation files of image ``stem``."""
    return root / DATA_DIR / stem


def check_group_ids(ids: list[str], path: Path) -> None:
    """Group ids are compared after stripping spaces (as ``group_relations.txt`` writes
    them): two ids that become equal (``"1"`` and ``" 1"``) would merge silently."""
    seen: dict[str, str] = {}
    for gid in ids:
        key = str(gid).strip()
        if not key:
            raise DatasetFormatError(path, f"group id {gid!r} is empty")
        if key in seen:
            raise DatasetFormatError(
                path, f"group ids {seen[key]!r} and {gid!r} are the same after removing spaces"
            )
        seen[key] = gid


def parse_points(path: Path) -> dict[str, np.ndarray]:
    """Read ``data.json``: group id → (n, 3) int array of full-resolution ``x, y, r``."""
    top_level_keys: list[list[str]] = []

    def keep_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        top_level_keys.append([k for k, _ in pairs])  # the outermost object comes last
        return dict(pairs)

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=keep_keys)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetFormatError(path, f"cannot be read as JSON ({err})") from err
    if not isinstance(data, dict) or not data:
        raise DatasetFormatError(path, "expected a non-empty object of groups {id: {pt_im: ...}}")
    check_group_ids(top_level_keys[-1], path)  # with repeats, which json.loads would merge
    groups: dict[str, np.ndarray] = {}
    for gid, entry in data.items():
        if not isinstance(entry, dict) or "pt_im" not in entry:
            raise DatasetFormatError(path, f"group '{gid}' has no 'pt_im' list")
        try:
            pts = np.asarray(entry["pt_im"], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DatasetFormatError(path, f"group '{gid}': 'pt_im' is not numeric") from err
        if pts.size == 0:
            continue
        if pts.ndim != 2 or pts.shape[1] != 3 or not np.isfinite(pts).all():
            raise DatasetFormatError(
                path, f"group '{gid}': 'pt_im' must be a list of [x, y, r], got shape {pts.shape}"
            )
        if (pts[:, 2] < 0).any():
            raise DatasetFormatError(path, f"group '{gid}': negative radius")
        groups[str(gid).strip()] = np.rint(pts).astype(np.int64)
    if not groups:
        raise DatasetFormatError(path, "no group holds any point")
    return groups


def parse_relations(path: Path, group_ids: list[str]) -> dict[tuple[str, str], float]:
    """Read ``group_relations.txt``: pair of distinct group ids → weight (0.6 or 0.3).

    One relation per line: ``[a,b,...]`` (weight 0.6) or ``(a,b,...)`` (weight 0.3); every pair
    on a line gets the weight; blank lines and spaces are ignored; a later line overrides an
    earlier one. An unknown group id or a malformed line raises :class:`DatasetFormatError`
    naming the file and the line.
    """
    known = set(group_ids)
    pairs: dict[tuple[str, str], float] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetFormatError(path, f"cannot be read as text ({err})") from err
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line[0] == "[" and line[-1] == "]":
            weight = SQUARE_WEIGHT
        elif line[0] == "(" and line[-1] == ")":
            weight = ROUND_WEIGHT
        else:
            raise DatasetFormatError(
                path, f"line {lineno}: expected '[a,b,...]' or '(a,b,...)', got {raw!r}"
            )
        ids = [tok.strip() for tok in line[1:-1].split(",") if tok.strip()]
        for gid in ids:
            if gid not in known:
                raise DatasetFormatError(
                    path,
                    f"line {lineno}: unknown group id '{gid}' (data.json has groups "
                    f"{sorted(known)})",
                )
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                if a != b:
                    pairs[(a, b)] = pairs[(b, a)] = weight
    return pairs


def write_points(folder: Path, groups: Mapping[Any, Iterable[Sequence[int]]]) -> None:
    """Write ``data.json``: every group's ``[x, y, r]`` points as ``pt_im`` (and the same as
    ``pt_pg``, the display-frame copy that readers ignore)."""
    data = {
        str(gid): {"pt_im": [list(p) for p in points], "pt_pg": [list(p) for p in points]}
        for gid, points in groups.items()
    }
    (folder / POINTS_FILE).write_text(json.dumps(data))


def write_relations(folder: Path, relations: Iterable[tuple[Sequence[Any], float]]) -> None:
    """Write ``group_relations.txt``: one ``[a,b,...]`` (weight :data:`SQUARE_WEIGHT`) or
    ``(a,b,...)`` (:data:`ROUND_WEIGHT`) line per relation; nothing when there is none."""
    lines = []
    for ids, weight in relations:
        if weight not in (SQUARE_WEIGHT, ROUND_WEIGHT):
            raise ValueError(
                f"a relation weight is {SQUARE_WEIGHT} or {ROUND_WEIGHT}, got {weight}"
            )
        body = ",".join(str(i) for i in ids)
        lines.append(f"[{body}]" if weight == SQUARE_WEIGHT else f"({body})")
    if lines:
        (folder / RELATIONS_FILE).write_text("\n".join(lines) + "\n")
