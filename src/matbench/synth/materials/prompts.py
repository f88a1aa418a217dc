"""Three-level prompts: (object, material category, sub-material or adjective) triplets.

The two-stream paper asks a language model for triplets such as ``vase / ceramic / porcelain``,
removes impossible pairs (``sponge, metal``) and renders each as a text-to-image prompt. The
object name is what the detector later looks for, so it must name one segmentable thing.

Triplets come from a language model (any :mod:`matbench.vlm` back end: ``hf-text:<model>`` or
``openai:<model>``) or from a user file (JSON list, JSONL or CSV with the columns ``object``,
``material``, ``detail``). The sanity filter drops, and counts by reason: unparseable lines,
objects that are only a material word, pairs of the deny list (the packaged
``matbench/data/synth_deny.json`` plus user additions), materials outside the class list and
duplicates. The list is balanced: every class gets exactly ``per_class`` prompts (a class with
fewer distinct triplets repeats them in order, and says so). It is written as
``prompts.jsonl`` with its SHA-256 beside it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from matbench.datasets.folder import REDACTION, redact_class
from matbench.errors import FileContentError, MatbenchError
from matbench.results import atomic_write_text
from matbench.synth.materials import DEFAULT_TEMPLATE  # noqa: F401 - re-exported

#: What the language model is asked for each class.
LLM_PROMPT = (
    "List {n} different everyday objects that are typically made of {material}. For each "
    "object give one sub-material or adjective that describes its {material} (for ceramic: "
    "porcelain, glazed, terracotta). Name objects that can be seen and outlined in a photo. "
    "Answer with one line per object, in the form: object | sub-material or adjective"
)
LLM_SYSTEM = "You write short, concrete prompts for a text-to-image model."
#: Longest object or detail, in words.
MAX_WORDS = 4
#: Why a candidate triplet was dropped (the keys of :attr:`PromptList.dropped`).
DROP_REASONS = ("unparseable", "object_is_material", "deny_list", "unknown_material", "duplicate")
PROMPTS_FILE = "prompts.jsonl"
RAW_FILE = "prompts_raw.jsonl"
FILTER_FILE = "prompts_filter.json"


class PromptError(MatbenchError, ValueError):
    """Unusable prompts: a class without a single valid triplet, a bad deny list, ..."""


@dataclass(frozen=True)
class Triplet:
    """One three-level prompt: ``object`` made of ``material`` (a class), ``detail`` being a
    sub-material or an adjective."""

    object: str
    material: str
    detail: str

    def text(self, template: str = DEFAULT_TEMPLATE) -> str:
        """The text-to-image prompt."""
        article = "an" if self.object[:1].lower() in "aeiou" else "a"
        text = template.format(
            object=self.object, material=self.material, detail=self.detail, article=article
        )
        return " ".join(text.split())

    @property
    def query(self) -> str:
        """The detector's text query: the object name, lower case, ending with a dot (the
        Grounding DINO convention)."""
        return f"{self.object.lower()}."


# -- deny list ------------------------------------------------------------------------------------
def _normalise(text: str) -> str:
    text = re.sub(r"[^a-z0-9' -]+", " ", text.lower().replace("_", " "))
    return " ".join(text.split())


def _read_pairs(text: str, source: str) -> list[tuple[str, str]]:
    """``object, material`` pairs of a deny file: JSON ``{"pairs": [[object, material], ...]}``
    or ``[[object, material], ...]``, or text with one ``object, material`` pair a line
    (``#`` starts a comment)."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise FileContentError(source, f"not valid JSON ({err})") from err
        rows = data.get("pairs") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in rows
        ):
            raise FileContentError(source, "expected 'pairs': a list of [object, material]")
        return [(_normalise(o), _normalise(m)) for o, m in rows]
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not all(parts):
            raise FileContentError(
                source, f"line {number}: expected 'object, material', got {line!r}"
            )
        pairs.append((_normalise(parts[0]), _normalise(parts[1])))
    return pairs


def load_deny_list(
    extra: Sequence[str | Path] = (), packaged: bool = True
) -> list[tuple[str, str]]:
    """The impossible (object, material) pairs: the packaged list plus the user's files."""
    pairs: list[tuple[str, str]] = []
    if packaged:
        text = resources.files("matbench").joinpath("data/synth_deny.json").read_text("utf-8")
        pairs += _read_pairs(text, "matbench/data/synth_deny.json")
    for path in extra:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"deny list '{path}' does not exist")
        pairs += _read_pairs(path.read_text(encoding="utf-8"), str(path))
    return sorted(set(pairs))


def denied(triplet: Triplet, pairs: Iterable[tuple[str, str]]) -> bool:
    """True when a deny pair's material is the triplet's material and the pair's object words
    appear, as whole words, in the triplet's object (``sponge`` denies ``kitchen sponge``)."""
    obj = f" {_normalise(triplet.object)} "
    material = _normalise(triplet.material)
    return any(m == material and f" {o} " in obj for o, m in pairs)


# -- candidates ---------------------------------------------------------------------------------
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\(?\d+[.)])\s*")


def parse_answer(answer: str, material: str) -> tuple[list[Triplet], int]:
    """The triplets of a language model's answer (``object | detail`` lines; ``object: detail``
    and ``object - detail`` are read too) and the number of lines that were not triplets."""
    triplets, bad = [], 0
    for raw in answer.splitlines():
        line = _BULLET.sub("", raw).strip().strip("\"'`")
        if not line:
            continue
        for sep in ("|", ":", " - ", " \u2013 ", "\t"):
            if sep in line:
                obj, _, detail = line.partition(sep)
                break
        else:
            bad += 1
            continue
        obj, detail = _normalise(obj), _normalise(detail)
        if not obj or not detail or max(len(obj.split()), len(detail.split())) > MAX_WORDS:
            bad += 1
            continue
        triplets.append(Triplet(obj, material, detail))
    return triplets, bad


def read_triplet_file(path: str | Path) -> list[Triplet]:
    """Triplets from a user file: a JSON list or JSONL of ``{"object", "material", "detail"}``
    objects, or a CSV with those three columns (a header row)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    rows: list[Any]
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = {"object", "material", "detail"} - set(reader.fieldnames or [])
        if missing:
            raise FileContentError(path, f"the header lacks the columns {sorted(missing)}")
        rows = list(reader)
    elif path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise FileContentError(path, f"line {number}: not valid JSON ({err})") from err
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise FileContentError(path, f"not valid JSON ({err})") from err
        if not isinstance(rows, list):
            raise FileContentError(path, "expected a list of {object, material, detail}")
    triplets = []
    for number, row in enumerate(rows, 1):
        values = [row.get(k) if isinstance(row, dict) else None for k in Triplet.__annotations__]
        if not all(isinstance(v, str) and v.strip() for v in values):
            raise FileContentError(
                path, f"entry {number}: expected non-empty 'object', 'material' and 'detail'"
            )
        triplets.append(Triplet(*(" ".join(v.split()) for v in values)))
    return triplets


def ask_language_model(
    backend: Any,
    classes: Sequence[str],
    n: int,
    raw_path: Path | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> tuple[list[Triplet], int]:
    """Ask a :mod:`matbench.vlm` back end for ``n`` triplets of every class (one request per
    class, ``batch_size`` classes at a time, with a progress bar); the answers are written to
    ``raw_path`` (JSONL) for the record. Returns the triplets and the number of answer lines
    that were not triplets; a failed request is raised, naming the class."""
    import sys

    from tqdm import tqdm

    from matbench.vlm import Request

    requests = [Request(LLM_PROMPT.format(n=n, material=c), system=LLM_SYSTEM) for c in classes]
    answers = []
    with tqdm(
        total=len(requests), desc="prompts", unit="class", disable=not progress, file=sys.stderr
    ) as bar:
        for start in range(0, len(requests), batch_size):
            answers += backend.generate(requests[start : start + batch_size])
            bar.update(len(requests[start : start + batch_size]))
    triplets: list[Triplet] = []
    unparseable = 0
    raw = []
    for name, request, answer in zip(classes, requests, answers, strict=True):
        raw.append(
            {"class": name, "prompt": request.prompt, "answer": answer.text, "error": answer.error}
        )
        found, bad = parse_answer(answer.text or "", name)
        triplets += found
        unparseable += bad
    if raw_path is not None:
        atomic_write_text(raw_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw))
    failed = [r for r in raw if r["error"] is not None]
    if failed:
        raise PromptError(
            f"the language model failed for {len(failed)} classes (first: "
            f"'{failed[0]['class']}': {failed[0]['error']})"
            + (f"; its answers are in {raw_path}" if raw_path is not None else "")
        )
    return triplets, unparseable


# -- the balanced list ----------------------------------------------------------------------------
@dataclass
class PromptList:
    """The balanced prompt list of a run.

    Attributes:
        by_class: ``per_class`` triplets for every class, in class order.
        unique: Distinct triplets kept per class (fewer than ``per_class``: repeated).
        dropped: Candidates dropped by the sanity filter, by reason (:data:`DROP_REASONS`).
        template: The text-to-image template.
        source: Where the triplets came from (a file or a model id).
    """

    by_class: dict[str, list[Triplet]]
    unique: dict[str, int]
    dropped: dict[str, int]
    template: str
    source: str

    def records(self) -> list[dict[str, Any]]:
        """One JSON record per prompt: ``id`` (``<class>/<index>``), the triplet and text."""
        return [
            {"id": f"{name}/{i}", **asdict(t), "text": t.text(self.template), "query": t.query}
            for name, triplets in self.by_class.items()
            for i, t in enumerate(triplets)
        ]

    def text(self) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records())

    def sha256(self) -> str:
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()

    def write(self, folder: Path) -> str:
        """Write ``prompts.jsonl``, ``prompts.jsonl.sha256`` and the filter's counts
        (``prompts_filter.json``) into ``folder``; return the hash."""
        digest = self.sha256()
        info = {
            "source": self.source,
            "template": self.template,
            "per_class": len(next(iter(self.by_class.values()))),
            "unique": self.unique,
            "dropped": self.dropped,
            "sha256": digest,
        }
        atomic_write_text(folder / FILTER_FILE, json.dumps(info, indent=2) + "\n")
        atomic_write_text(folder / PROMPTS_FILE, self.text())
        atomic_write_text(folder / f"{PROMPTS_FILE}.sha256", f"{digest}  {PROMPTS_FILE}\n")
        return digest


def sanity_filter(
    candidates: Iterable[Triplet], classes: Sequence[str], deny: Sequence[tuple[str, str]]
) -> tuple[dict[str, list[Triplet]], Counter[str]]:
    """Keep the sensible, distinct candidates, per class in order; count the rest by reason."""
    kept: dict[str, list[Triplet]] = {c: [] for c in classes}
    seen: set[tuple[str, str, str]] = set()
    dropped: Counter[str] = Counter()
    for t in candidates:
        if t.material not in kept:
            dropped["unknown_material"] += 1
            continue
        if not set(redact_class(_normalise(t.object), t.material).split()) - {REDACTION}:
            dropped["object_is_material"] += 1
            continue
        if denied(t, deny):
            dropped["deny_list"] += 1
            continue
        key = (_normalise(t.object), t.material, _normalise(t.detail))
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        kept[t.material].append(t)
    return kept, dropped


def balance(
    kept: dict[str, list[Triplet]],
    per_class: int,
    dropped: Counter[str],
    template: str,
    source: str,
) -> PromptList:
    """Exactly ``per_class`` prompts for every class (a class with fewer distinct triplets
    repeats them in order); a class with none is an error."""
    empty = [c for c, t in kept.items() if not t]
    if empty:
        raise PromptError(
            f"no usable triplet for the classes {empty} from {source} (after the sanity "
            f"filter, which dropped {dict(dropped) or 'nothing'}): give more candidates, a "
            "prompt file with those classes, or fewer classes"
        )
    by_class = {c: [t[i % len(t)] for i in range(per_class)] for c, t in kept.items()}
    unique = {c: min(len(t), per_class) for c, t in kept.items()}
    reasons = {r: int(dropped.get(r, 0)) for r in DROP_REASONS}
    return PromptList(by_class, unique, reasons, template, source)


def read_prompt_list(path: Path) -> list[dict[str, Any]]:
    """The records of a written ``prompts.jsonl``."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise FileContentError(path, f"line {number}: not valid JSON ({err})") from err
        records.append(record)
    return records
