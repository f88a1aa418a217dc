"""The LVIS category -> material prior table: how it is built, and how it is read.

The table (``matbench/data/lvis_material_prior.json``) maps each LVIS v1 category name to the
material(s) an object of that category is most often made of, most likely first, over the
vocabulary of :mod:`matbench.materials.vocabulary`. It is the "frequency-based" recipe of
LVIS-materials: every object of a category gets the category's material.

It is built once from the LVIS v1 category list (name, synonyms, synset and definition) by the
rules below, in priority order, whose curated tables are data
(``matbench/data/lvis_prior_rules.json``, read by :func:`load_rules`), and the output is
committed::

    python -m matbench.materials.prior \
        --categories ../shared/data/lvis/lvis_v1_categories.json \
        --out src/matbench/data/lvis_material_prior.json

1. ``category_materials``: a hand-curated answer for a category (by its LVIS name).
2. A material word in the category's name or synonyms (``paper_plate`` -> paper,
   ``wooden_spoon`` -> wood), from the unambiguous words of ``name_words``.
3. The definition says what the object is made of (``made of leather``, ``a glass container``,
   ``a wooden ...``), from the words of ``def_words``.
4. The head noun of the name (its last word, e.g. ``beer_bottle`` -> bottle) in ``head_nouns``.
5. The kind of thing that the head of the definition names (food, animal, plant, garment...)
   from ``kind_words``.

Labels that name a kind of object rather than a material ("fruit", "vegetable") are then
replaced by the rules' ``remap`` ("food", DMS46's class): the entry keeps the rule's labels
under ``remapped_from``. This hand-written table is the offline fallback of the measured prior
(``matbench materials prior --from-predictions``, :func:`measured_prior`).

A category that no rule decides is listed under ``unknown`` and gets no prior material: the
table does not guess. Objects of unknown categories are labelled only by per-object
predictions (see :mod:`matbench.materials.sidecar`).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from matbench.errors import DatasetFormatError
from matbench.materials.vocabulary import canonical, is_material

PRIOR_FILE = "lvis_material_prior.json"
PRIOR_VERSION = 1

RULES_FILE = "lvis_prior_rules.json"
RULES_VERSION = 1


@dataclass(frozen=True)
class PriorRules:
    """The curated tables of the rules (``matbench/data/lvis_prior_rules.json``).

    Attributes:
        category_materials: LVIS v1 name -> materials (empty: unknown on purpose).
        name_words: Material word of a name or synonym -> material.
        def_words: Word of a definition -> material.
        def_adjective_exclude: First adjectives of a definition that do not give a material.
        head_nouns: Last word of a name -> materials.
        kind_words: Word of a definition's head -> the kind's material.
        remap: Labels that name a kind of object rather than a material -> the material that
            replaces them when the table is loaded (None: unknown).
    """

    category_materials: dict[str, tuple[str, ...]]
    name_words: dict[str, str]
    def_words: dict[str, str]
    def_adjective_exclude: frozenset[str]
    head_nouns: dict[str, tuple[str, ...]]
    kind_words: dict[str, str]
    remap: dict[str, str | None]


def read_rules(path: str | Path) -> PriorRules:
    """Read and check a rules file (every label a vocabulary material)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(path, f"cannot be read as JSON ({err})") from err
    if not isinstance(data, dict) or data.get("version") != RULES_VERSION:
        raise DatasetFormatError(path, f"not a prior rules file (expected version {RULES_VERSION})")
    try:
        rules = PriorRules(
            category_materials={k: tuple(v) for k, v in data["category_materials"].items()},
            name_words=dict(data["name_words"]),
            def_words=dict(data["def_words"]),
            def_adjective_exclude=frozenset(data["def_adjective_exclude"]),
            head_nouns={k: tuple(v) for k, v in data["head_nouns"].items()},
            kind_words=dict(data["kind_words"]),
            remap=dict(data.get("remap", {})),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise DatasetFormatError(path, f"missing or malformed table ({err!r})") from err
    labels = [
        *(m for v in rules.category_materials.values() for m in v),
        *rules.name_words.values(),
        *rules.def_words.values(),
        *(m for v in rules.head_nouns.values() for m in v),
        *rules.kind_words.values(),
        *(m for m in rules.remap.values() if m is not None),
    ]
    bad = sorted({m for m in labels if not is_material(m)})
    if bad:
        raise DatasetFormatError(path, f"labels that are not vocabulary materials: {bad}")
    return rules


@lru_cache(maxsize=1)
def load_rules() -> PriorRules:
    """The packaged rules (``matbench/data/lvis_prior_rules.json``)."""
    with resources.as_file(resources.files("matbench").joinpath("data", RULES_FILE)) as path:
        return read_rules(path)


def __getattr__(name: str) -> Any:
    # The tables were module constants before they moved to the data file: keep the names.
    tables = {
        "CATEGORY_MATERIALS": "category_materials",
        "NAME_WORDS": "name_words",
        "DEF_WORDS": "def_words",
        "HEAD_NOUNS": "head_nouns",
        "KIND_WORDS": "kind_words",
    }
    if name in tables:
        return getattr(load_rules(), tables[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_HEAD_STOP = re.compile(
    r"\s(?:that|which|who|with|for|used|of|in|on|to|having|from|made|related|by|at|"
    r"containing|consisting|designed|worn|where|when|usually|often|typically|as)\s|[,;(]"
)
_MADE_OF = re.compile(
    r"\b(?:made|constructed|built|fashioned|formed|woven|knitted|consisting)"
    r"\s+(?:mainly\s+|chiefly\s+|mostly\s+|usually\s+|often\s+|typically\s+)?(?:of|from)\s+"
    r"(?:a\s+|an\s+|the\s+)?([a-z]+)"
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _def_head(definition: str) -> list[str]:
    text = " " + definition.lower().strip() + " "
    match = _HEAD_STOP.search(text)
    head = text[: match.start()] if match else text
    return [w for w in _words(head) if w not in ("a", "an", "the", "any", "one", "some")]


def _singular(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("ves", "f"), ("ses", "s"), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + repl
    return word


def assign(
    category: dict[str, Any], rules: PriorRules | None = None
) -> tuple[tuple[str, ...], str]:
    """The prior materials of one LVIS category and the rule that decided them (or unknown),
    before :func:`remap_materials`."""
    rules = rules or load_rules()
    name = str(category["name"])
    if name in rules.category_materials:
        materials = rules.category_materials[name]
        return (materials, "curated") if materials else ((), "unknown (curated)")
    names = [name, *category.get("synonyms", [])]
    for alias in names:
        base = alias.split("_(")[0]
        for word in base.lower().replace("-", "_").split("_")[:-1] or []:
            if word in rules.name_words:
                return (rules.name_words[word],), f"name word '{word}'"
    definition = str(category.get("def", "")).lower()
    made = _MADE_OF.search(definition)
    if made and made.group(1) in rules.def_words:
        return (rules.def_words[made.group(1)],), f"definition: '{made.group(0)}'"
    head = _def_head(definition)
    if len(head) >= 2 and head[0] in rules.def_words and head[0] not in rules.def_adjective_exclude:
        return (rules.def_words[head[0]],), f"definition adjective '{head[0]}'"
    for alias in names:
        base = alias.split("_(")[0].lower().replace("-", "_")
        head_noun = base.split("_")[-1]
        for word in (head_noun, _singular(head_noun)):
            if word in rules.head_nouns:
                return rules.head_nouns[word], f"head noun '{word}'"
    for word in reversed(head):
        for w in (word, _singular(word)):
            if w in rules.kind_words:
                return (rules.kind_words[w],), f"kind '{w}' in definition"
    return (), "unknown"


def remap_materials(
    materials: tuple[str, ...] | list[str], rules: PriorRules | None = None
) -> list[str]:
    """Canonical materials with the rules' ``remap`` applied (labels mapped to None dropped,
    duplicates merged, order kept)."""
    remap = (rules or load_rules()).remap
    out = []
    for material in materials:
        name = canonical(material)
        name = remap.get(name, name)
        if name is not None:
            out.append(name)
    return list(dict.fromkeys(out))


def build_prior(
    categories: list[dict[str, Any]], rules: PriorRules | None = None, remap: bool = True
) -> dict[str, Any]:
    """The prior table of a list of LVIS categories (see the module docstring).

    Args:
        categories: LVIS category records (``id``, ``name``, ``synonyms``, ``synset``, ``def``).
        rules: The rule tables (default: the packaged ones).
        remap: Apply the rules' ``remap`` (entries it changed keep the rule's own labels
            under ``remapped_from``); False gives the rules' labels as they are.
    """
    rules = rules or load_rules()
    table: dict[str, Any] = {}
    unknown: list[str] = []
    for category in sorted(categories, key=lambda c: int(c["id"])):
        raw, rule = assign(category, rules)
        original = list(dict.fromkeys(canonical(m) for m in raw))
        materials = remap_materials(original, rules) if remap else original
        if not materials:
            unknown.append(str(category["name"]))
            continue
        entry = {
            "id": int(category["id"]),
            "synset": str(category.get("synset", "")),
            "materials": materials,
            "rule": rule,
        }
        if materials != original:
            entry["remapped_from"] = original
        table[str(category["name"])] = entry
    return {
        "version": PRIOR_VERSION,
        "source": "LVIS v1 categories (name, synonyms, def); rules of matbench.materials.prior",
        "num_categories": len(categories),
        "categories": table,
        "unknown": unknown,
    }


@lru_cache(maxsize=1)
def load_prior() -> dict[str, Any]:
    """The packaged prior table (``matbench/data/lvis_material_prior.json``)."""
    text = resources.files("matbench").joinpath("data", PRIOR_FILE).read_text(encoding="utf-8")
    table = json.loads(text)
    if table.get("version") != PRIOR_VERSION:
        raise ValueError(f"{PRIOR_FILE}: unsupported prior table version {table.get('version')}")
    return table


def read_prior(path: str | Path) -> dict[str, Any]:
    """A prior table file (the packaged one's format, e.g. from :func:`measured_prior`)."""
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"prior table '{path}' does not exist") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})") from err
    if not isinstance(table, dict) or table.get("version") != PRIOR_VERSION:
        raise DatasetFormatError(path, f"not a prior table (expected version {PRIOR_VERSION})")
    if not isinstance(table.get("categories"), dict):
        raise DatasetFormatError(path, "'categories' must map category names to entries")
    for name, entry in table["categories"].items():
        materials = entry.get("materials") if isinstance(entry, dict) else None
        if not isinstance(materials, list) or not materials:
            raise DatasetFormatError(path, f"category '{name}': needs a 'materials' list")
        bad = [m for m in materials if not (isinstance(m, str) and is_material(m))]
        if bad:
            raise DatasetFormatError(path, f"category '{name}': unknown material(s) {bad}")
    return table


def measured_prior(
    lvis: dict[str, Any],
    predictions: dict[int, list[str]],
    min_objects: int = 10,
    fallback: dict[str, Any] | None = None,
    source: str = "predictions",
) -> dict[str, Any]:
    """The category prior measured from per-object predictions (``materials label``): each
    category's most frequent predicted material, with the frequencies of all of them.

    Args:
        lvis: The LVIS annotation dict the predictions label (categories, annotations).
        predictions: Annotation id -> materials (the first counts).
        min_objects: Categories with fewer labelled objects are not measured: they take the
            ``fallback`` table's entry (matched by name, then synset) or become unknown.
        fallback: A prior table (e.g. :func:`load_prior`, the hand-written one), or None.
        source: What the predictions were (recorded in the table).
    """
    if min_objects < 1:
        raise ValueError(f"min_objects must be >= 1, got {min_objects}")
    category_of = {int(a["id"]): int(a["category_id"]) for a in lvis.get("annotations", [])}
    counts: dict[int, Counter[str]] = {}
    for ann_id, materials in predictions.items():
        if ann_id in category_of and materials:
            counts.setdefault(category_of[ann_id], Counter())[materials[0]] += 1
    old = (fallback or {}).get("categories", {})
    by_synset = {v.get("synset"): v for v in old.values() if v.get("synset")}
    table: dict[str, Any] = {}
    unknown: list[str] = []
    measured = fell_back = 0
    for category in sorted(lvis.get("categories", []), key=lambda c: int(c["id"])):
        cid, name = int(category["id"]), str(category["name"])
        seen = counts.get(cid, Counter())
        n = sum(seen.values())
        base = {"id": cid, "synset": str(category.get("synset", "")), "objects": n}
        if n >= min_objects:
            ranked = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))
            table[name] = {
                **base,
                "materials": [ranked[0][0]],
                "frequencies": {m: c / n for m, c in ranked},
                "rule": "measured",
            }
            measured += 1
            continue
        entry = old.get(name) or by_synset.get(category.get("synset"))
        if entry is not None:
            table[name] = {
                **base,
                "materials": list(entry["materials"]),
                "rule": f"fallback ({entry.get('rule', 'hand-written')})",
            }
            fell_back += 1
        else:
            unknown.append(name)
    return {
        "version": PRIOR_VERSION,
        "source": f"measured from {source} (min_objects={min_objects}); "
        + ("hand-written table as fallback" if fallback else "no fallback"),
        "num_categories": len(lvis.get("categories", [])),
        "min_objects": min_objects,
        "num_measured": measured,
        "num_fallback": fell_back,
        "categories": table,
        "unknown": unknown,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m matbench.materials.prior",
        description="Build the LVIS category -> material prior table from the category list.",
    )
    parser.add_argument(
        "--categories", required=True, help="lvis_v1_categories.json (or an LVIS annotation JSON)"
    )
    parser.add_argument("--out", required=True, help="output JSON")
    args = parser.parse_args(argv)
    path = Path(args.categories)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: cannot read the category list ({err})") from err
    categories = data["categories"] if isinstance(data, dict) else data
    table = build_prior(categories)
    Path(args.out).write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    known = len(table["categories"])
    print(
        f"{known}/{len(categories)} categories with a prior material, {len(table['unknown'])} unknown"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
