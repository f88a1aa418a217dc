"""Label spaces: a class list and maps into it from other datasets' classes.

A label-space file (JSON) holds ``name``, ``classes`` (the target classes, in id order) and
``maps``: per source dataset (``dms``, ``fmd``, …), ``{source class name: target class}``.
A source class absent from its map has no counterpart: its samples are dropped and counted.
A folder of images whose sub-folders are named after the target classes needs no map.

The packaged ``classes21`` is the two-stream paper's 21-class protocol (see
``matbench/data/classes21.json``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from matbench.datasets.errors import DatasetFormatError

#: Label spaces shipped with matbench, by name.
PACKAGED = {"classes21": "data/classes21.json"}


@dataclass
class LabelSpace:
    """A target class list and maps into it (see the module docstring).

    Attributes:
        name: The space's name (recorded in results).
        classes: Target class names in id order.
        maps: Per source dataset, source class name → target class name.
        source: Where the space was read from.
    """

    name: str
    classes: list[str]
    maps: dict[str, dict[str, str]] = field(default_factory=dict)
    source: str = ""

    def mapping(self, source_classes: Sequence[str], source: str | None) -> list[int | None]:
        """Target id (or None: dropped) of every source class id.

        ``source`` names the map to use; None maps classes by their own name (a folder whose
        sub-folders are the target classes).

        Raises:
            DatasetFormatError: When the map names a class the source does not have (a typo
                would silently drop a whole class), or, without a map, a source class is not
                a target class.
        """
        index = {name: i for i, name in enumerate(self.classes)}
        if source is None:
            unknown = [c for c in source_classes if c not in index]
            if unknown:
                raise DatasetFormatError(
                    self.source,
                    f"classes {unknown} are not in label space '{self.name}' "
                    f"(its classes: {', '.join(self.classes)})",
                )
            return [index[c] for c in source_classes]
        if source not in self.maps:
            raise DatasetFormatError(
                self.source, f"label space '{self.name}' has no map from '{source}'"
            )
        table = self.maps[source]
        unknown = sorted(set(table) - set(source_classes))
        if unknown:
            raise DatasetFormatError(
                self.source,
                f"the '{source}' map of label space '{self.name}' names classes that "
                f"'{source}' does not have: {unknown}",
            )
        return [index[table[c]] if c in table else None for c in source_classes]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.classes), "source": self.source}


def load_label_space(spec: str) -> LabelSpace:
    """A packaged label space by name (``classes21``) or a label-space JSON file."""
    if spec in PACKAGED:
        text = resources.files("matbench").joinpath(PACKAGED[spec]).read_text("utf-8")
        source = f"matbench/{PACKAGED[spec]}"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"label space '{spec}' is neither a packaged one ({', '.join(PACKAGED)}) "
                "nor an existing JSON file"
            )
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetFormatError(source, f"not valid JSON ({err})") from err
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DatasetFormatError(source, "expected 'classes': a non-empty list of names")
    if len(set(classes)) != len(classes):
        raise DatasetFormatError(source, "'classes' lists a name twice")
    maps = data.get("maps", {})
    if not isinstance(maps, dict) or not all(isinstance(m, dict) for m in maps.values()):
        raise DatasetFormatError(source, "'maps' must be {source: {source class: class}}")
    for name, table in maps.items():
        bad = sorted({str(v) for v in table.values()} - set(classes))
        if bad:
            raise DatasetFormatError(
                source, f"the '{name}' map sends classes to unknown target classes {bad}"
            )
    return LabelSpace(
        name=str(data.get("name", Path(source).stem)),
        classes=list(classes),
        maps={k: {str(a): str(b) for a, b in v.items()} for k, v in maps.items()},
        source=source,
    )


def relabel(
    labels: Sequence[int], mapping: Sequence[int | None], source_classes: Sequence[str]
) -> tuple[list[int | None], dict[str, int]]:
    """Map sample labels; also return how many samples of each source class were dropped."""
    new = [mapping[label] for label in labels]
    dropped = Counter(source_classes[old] for old, n in zip(labels, new, strict=True) if n is None)
    return new, dict(sorted(dropped.items()))
