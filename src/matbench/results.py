"""Results on disk: one JSON per run, and a table (CSV + Markdown) rebuilt from them."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from matbench.errors import ResultsWriteError

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
    """Write ``text`` to ``path`` so that a reader never sees a half-written file.

    The file gets the usual permissions (``0o666`` minus the umask), not the ``0o600`` of a
    temporary file. The temporary file's name holds this host and process id, so that a
    later write can tell a killed writer's leftover (see :func:`clean_stale_tmp`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
_TMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
#: Age after which a temporary file of another host (or of an unknown writer) is stale.
STALE_TMP_SECONDS = 3600.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete the hidden ``.tmp`` files that killed writers left in ``folder``.

    A temporary file of this host whose process is gone is stale at once; one of another host
    (or without a process id) when older than :data:`STALE_TMP_SECONDS`. Returns the deleted
    paths.
    """
    removed = []
    now = time.time()
    for tmp in Path(folder).glob(".*.tmp"):
        match = _TMP_NAME.match(tmp.name)
        try:
            if match and match["host"] == _HOST:
                stale = int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"]))
            else:
                stale = now - tmp.stat().st_mtime > STALE_TMP_SECONDS
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue  # another writer finished or cleaned it
    return removed


@contextmanager
def results_lock(results_dir: Path) -> Iterator[None]:
    """Exclusive lock of a results directory (``.results.lock``), so that concurrent runs
    rebuild its tables one after the other from a complete listing. No-op without ``fcntl``."""
    try:
        import fcntl
    except ImportError:  # Windows: tables may be stale under concurrent writers
        yield
        return
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / ".results.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_writable(results_dir: str | Path) -> Path:
    """Create ``results_dir`` and write and delete a probe file in it, before any evaluation;
    :class:`ResultsWriteError` naming the folder otherwise."""
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=results_dir, prefix=".write-probe.", suffix=".tmp")
        try:
            os.write(fd, b"matbench")
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
    except OSError as err:
        raise ResultsWriteError(
            results_dir, f"the results directory is not writable: {err}"
        ) from err
    return results_dir


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
    try:
        atomic_write_text(path, json.dumps(_json_safe(record), indent=2, sort_keys=False) + "\n")
    except OSError as err:
        raise ResultsWriteError(path, str(err)) from err
    write_table(results_dir)
    return path


def load_runs(results_dir: str | Path, strict: bool = True) -> list[dict[str, Any]]:
    """Every run record in ``results_dir``, oldest first.

    A file that is not a matbench record (unreadable, not JSON, no ``metrics`` mapping)
    raises ValueError naming it, or with ``strict=False`` is skipped with a warning naming it.
    """
    runs = []
    for path in sorted(Path(results_dir).glob("*.json")):
        problem = None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            problem = str(err)
        else:
            if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
                problem = "no 'metrics' mapping"
        if problem is not None:
            if strict:
                raise ValueError(f"{path}: not a matbench results JSON ({problem})")
            warnings.warn(f"{path}: not a matbench results JSON ({problem}); skipped", stacklevel=2)
            continue
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
    """Rebuild ``results.csv`` and ``results.md`` from every JSON in ``results_dir``.

    Under the directory's lock (concurrent runs write complete tables one after the other);
    files that are not matbench records are skipped with a warning; stale temporary files of
    killed writers are removed.
    """
    results_dir = Path(results_dir)
    try:
        with results_lock(results_dir):
            clean_stale_tmp(results_dir)
            return _write_table(results_dir)
    except OSError as err:
        raise ResultsWriteError(getattr(err, "filename", None) or results_dir, str(err)) from err


def _write_table(results_dir: Path) -> tuple[Path, Path]:
    columns, rows = table_rows(load_runs(results_dir, strict=False))
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
