"""``matbench report RESULTS_DIR``: rebuild the results table and draw comparison plots."""

from __future__ import annotations

import argparse
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from matbench.plots import save_confusion_matrix, save_grouped_bars, save_per_class_accuracy
from matbench.results import atomic_write_text, load_runs, write_table

#: Dataset or datamodule name fragment → benchmark name used by the published rows (the
#: first fragment found wins).
BENCHMARKS = {
    "regioniou": "region_iou",
    "google": "google_test",
    "dms_test21": "dms_test21",
    "fmd": "fmd",
    "dms": "dms",
    "matseg": "matseg",
    "lvis": "lvis_materials",
    "fgovd": "fgovd",
}


def benchmark_of(run: dict[str, Any]) -> str:
    """The benchmark a run belongs to, from its dataset or datamodule name ('' when
    unknown); DMS regions in the ``classes21`` label space are DMS-test-21."""
    data = run.get("data", {})
    name = f"{data.get('dataset', '')} {data.get('datamodule', '')}".lower()
    for fragment, benchmark in BENCHMARKS.items():
        if fragment in name:
            space = (data.get("label_space") or {}).get("name")
            if benchmark == "dms" and space == "classes21":
                return "dms_test21"
            return benchmark
    return ""


def published_rows(benchmarks: set[str] | None = None) -> list[dict[str, Any]]:
    """The reference works' published numbers (``matbench/data/published.json``)."""
    text = resources.files("matbench").joinpath("data/published.json").read_text("utf-8")
    rows = json.loads(text)["rows"]
    return [r for r in rows if benchmarks is None or r["benchmark"] in benchmarks]


def published_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of published rows, marked as such."""
    if not rows:
        return ""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row["metrics"] if k not in keys]
    lines = [
        "## Published numbers (from the reference works; not measured by matbench)",
        "",
        "| benchmark | model | protocol | " + " | ".join(keys) + " | source |",
        "|" + "---|" * (len(keys) + 4),
    ]
    for row in rows:
        values = [f"{row['metrics'][k]:.3f}" if k in row["metrics"] else "" for k in keys]
        lines.append(
            f"| {row['benchmark']} | {row['model']} | {row['protocol']} | "
            + " | ".join(values)
            + f" | {row['source']} |"
        )
    return "\n".join(lines) + "\n"


def _label(run: dict[str, Any]) -> str:
    data = run.get("data", {})
    dataset = data.get("dataset") or data.get("datamodule", "")
    return f"{run.get('model_name') or run.get('task', '')} @ {dataset}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80]


def draw_plots(runs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per-class accuracy bars and confusion matrices per run; triplet accuracy per model."""
    paths = []
    for run in runs:
        metrics, data = run["metrics"], run.get("data", {})
        stem = _slug(f"{run.get('run_id', '')}_{_label(run)}")
        names = data.get("class_names")
        if isinstance(metrics.get("per_class_accuracy"), list):
            paths.append(
                save_per_class_accuracy(
                    metrics["per_class_accuracy"],
                    out_dir / f"{stem}_per_class.png",
                    names,
                    title=_label(run),
                )
            )
        if isinstance(metrics.get("confusion_matrix"), list):
            paths.append(
                save_confusion_matrix(
                    metrics["confusion_matrix"],
                    out_dir / f"{stem}_confusion.png",
                    names,
                    title=_label(run),
                )
            )
    triplet = [r for r in runs if "all_by_point" in r["metrics"]]
    if triplet:
        series = {
            f"{mode} ({by})": [r["metrics"].get(f"{mode}_by_{by}") for r in triplet]
            for mode in ("all", "soft")
            for by in ("point", "material")
        }
        paths.append(
            save_grouped_bars(
                [_label(r) for r in triplet],
                series,
                out_dir / "triplet_accuracy.png",
                ylabel="triplet accuracy",
                title="MatSeg triplet accuracy",
                chance=0.5,
            )
        )
    return paths


def build_report(results_dir: str | Path, published: bool = True) -> Path:
    """Rebuild ``results.{csv,md}``, draw plots into ``plots/`` and write ``report.md``."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory '{results_dir}' does not exist")
    runs = load_runs(results_dir)
    if not runs:
        raise FileNotFoundError(f"no results JSON files in '{results_dir}'")
    _, md_path = write_table(results_dir)
    plots = draw_plots(runs, results_dir / "plots")
    parts = ["# matbench report", "", "## Measured", "", md_path.read_text()]
    if published:
        parts.append(published_table(published_rows({benchmark_of(r) for r in runs})))
    if plots:
        parts += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    report = results_dir / "report.md"
    atomic_write_text(report, "\n".join(parts) + "\n")
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="matbench report",
        description="Rebuild the results table from the JSON files of a results directory, "
        "draw comparison plots, and show published reference numbers beside them.",
    )
    parser.add_argument("results_dir", help="directory of results JSON files")
    parser.add_argument(
        "--no-published", action="store_true", help="leave out the published reference rows"
    )
    args = parser.parse_args(argv)
    try:
        report = build_report(args.results_dir, published=not args.no_published)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"matbench report: error: {err}\n")
    print(f"report: {report}")
    return 0
