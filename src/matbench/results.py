"""Results on disk: one JSON per run, and a table (CSV + Markdown) rebuilt from them."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import tempfile
import uuid
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

#: Packages whose versions every results JSON records.
VERSIONED_PACKAGES = (
    "matbench",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "timm",
    "open_clip_torch",
    "segmentation-models-pytorch",
)
TABLE_STEM = "results"
#: A MatSeg benchmark without relations files has no soft triplet cases.
NO_RELATIONS = "n/a (no group_relations.txt)"


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plain(value: Any) -> Any:
    """``value`` as JSON-ready primitives: containers recursively, anything else as ``str``."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_run(results_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write one run's record as ``<results_dir>/<time>_<task>_<id>.json`` and refresh the table.

    Adds ``run_id``, ``time`` and ``versions`` when absent. Returns the JSON's path.
    """
    results_dir = Path(results_dir)
    record = dict(record)
    record.setdefault("run_id", uuid.uuid4().hex[:8])
    now = datetime.now().astimezone()
    record.setdefault("time", now.isoformat(timespec="microseconds"))
    record.setdefault("versions", package_versions())
    stamp = now.strftime("%Y%m%d-%H%M%S-%f")
    name = f"{stamp}_{record.get('task', 'run')}_{record['run_id']}.json"
    path = results_dir / name
    atomic_write_text(path, json.dumps(_json_safe(record), indent=2, sort_keys=False) + "\n")
    write_table(results_dir)
    return path


def load_runs(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every run record in ``results_dir``, oldest first; unreadable files raise ValueError."""
    runs = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a matbench results JSON ({err})") from err
        if not isinstance(record, dict) or "metrics" not in record:
            raise ValueError(f"{path}: not a matbench results JSON (no 'metrics' key)")
        record["_path"] = str(path)
        runs.append(record)
    runs.sort(key=lambda r: (str(r.get("time", "")), r["_path"]))
    return runs


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics of a run (lists such as confusion matrices are left out)."""
    return {
        k: v
        for k, v in metrics.items()
        if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    }


def table_rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of the results table."""
    fixed = [
        "time",
        "run_id",
        "tag",
        "task",
        "model",
        "weights",
        "checkpoint",
        "dataset",
        "split",
        "samples",
    ]
    metric_cols: list[str] = []
    rows = []
    for run in runs:
        data = run.get("data", {})
        row = {
            "time": run.get("time", ""),
            "run_id": run.get("run_id", ""),
            "task": run.get("task", ""),
            "model": run.get("model_name", ""),
            "checkpoint": run.get("checkpoint") or "",
            "dataset": data.get("dataset", data.get("datamodule", "")),
            "split": data.get("split", ""),
            "tag": run.get("tag") or "",
            "weights": run.get("weights") or "",
            "samples": data.get("num_samples", ""),
        }
        for key, value in headline(run["metrics"]).items():
            if key not in metric_cols:
                metric_cols.append(key)
            if value is None and key.startswith("soft_") and data.get("has_relations") is False:
                value = NO_RELATIONS
            row[key] = value
        rows.append(row)
    return fixed + metric_cols, rows


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def write_table(results_dir: str | Path) -> tuple[Path, Path]:
    """Rebuild ``results.csv`` and ``results.md`` from every JSON in ``results_dir``."""
    results_dir = Path(results_dir)
    columns, rows = table_rows(load_runs(results_dir))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    csv_path = results_dir / f"{TABLE_STEM}.csv"
    atomic_write_text(csv_path, buf.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    md_path = results_dir / f"{TABLE_STEM}.md"
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path
