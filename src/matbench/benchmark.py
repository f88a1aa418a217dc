"""``matbench benchmark --config suite.yaml``: several ``matbench test`` runs, one table.

A suite file lists runs, each an experiment config tested as ``matbench test`` would::

    name: zero_shot
    variables: {fmd: data/FMD, dms: data/DMS_v1}     # defaults; --set fmd=/data/FMD
    runs:
      - name: fmd
        config: configs/clip/zeroshot_fmd.yaml       # relative to the suite file, or the CWD
        ckpt_path: null
        overrides: ["--data.init_args.root", "{fmd}"]

Every run writes its results JSON (tagged with the suite run's id) into the results
directory; the suite then writes ``suite_<name>_<id>.{md,csv}`` with only its own runs, and
the published reference numbers of the same benchmarks in a separate, marked table.
"""

from __future__ import annotations

import argparse
import csv
import io
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import yaml

from matbench.report import benchmark_of, published_rows, published_table
from matbench.results import atomic_write_text, load_runs, table_rows, write_table


class SuiteError(ValueError):
    """A suite file that cannot be run: names the file and what is wrong."""


def load_suite(path: str | Path, variables: dict[str, str]) -> dict[str, Any]:
    """Read and check a suite file; fill ``{variable}`` placeholders in overrides."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    try:
        suite = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SuiteError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(suite, dict) or not isinstance(suite.get("runs"), list) or not suite["runs"]:
        raise SuiteError(f"{path}: expected a mapping with a non-empty 'runs' list")
    defaults = suite.get("variables") or {}
    if not isinstance(defaults, dict):
        raise SuiteError(
            f"{path}: 'variables' must be a mapping NAME: VALUE, got a {type(defaults).__name__}"
        )
    values = {str(k): str(v) for k, v in defaults.items()}
    values.update(variables)
    runs = []
    for i, run in enumerate(suite["runs"]):
        where = f"{path}: runs[{i}]"
        if not isinstance(run, dict) or not isinstance(run.get("config"), str):
            raise SuiteError(f"{where}: each run needs a 'config' (a path)")
        if not isinstance(run.get("overrides") or [], list):
            raise SuiteError(f"{where}: 'overrides' must be a list of arguments")
        config = Path(run["config"])
        if not config.is_absolute() and not config.is_file():
            config = path.parent / config
        if not config.is_file():
            raise SuiteError(f"{where}: config '{run['config']}' not found")
        overrides = [str(o) for o in run.get("overrides") or []]
        try:
            overrides = [o.format(**values) for o in overrides]
        except KeyError as err:
            raise SuiteError(f"{where}: unknown variable {err} (set it with --set)") from err
        runs.append(
            {
                "name": str(run.get("name", config.stem)),
                "config": str(config),
                "ckpt_path": run.get("ckpt_path"),
                "overrides": overrides,
            }
        )
    return {"name": str(suite.get("name", path.stem)), "runs": runs}


def run_suite(
    suite: dict[str, Any], results_dir: Path, overrides: list[str] | None = None
) -> tuple[Path, list[str]]:
    """Run every entry (each with ``overrides`` appended); return the suite table's path and
    the names of failed runs, which the table lists with their error."""
    from matbench.cli import known_error
    from matbench.cli import main as cli_main

    suite_id = f"{suite['name']}-{uuid.uuid4().hex[:6]}"
    failed: dict[str, str] = {}
    for run in suite["runs"]:
        argv = ["test", "--config", run["config"], *run["overrides"], *(overrides or [])]
        argv += ["--results_dir", str(results_dir), "--tag", suite_id]
        if run["ckpt_path"]:
            argv += ["--ckpt_path", str(run["ckpt_path"])]
        print(f"== {run['name']}: matbench {' '.join(argv)}", flush=True)
        try:
            cli_main([*argv, "--debug"])  # errors come back as exceptions, reported here
        except (Exception, SystemExit) as err:  # noqa: BLE001 - report and go on
            if isinstance(err, SystemExit):
                if not err.code:
                    continue
                message = f"exit status {err.code} (see the output above)"
            else:
                known = known_error(err)
                if known is None:
                    traceback.print_exc()
                message = " ".join(str(known or err).split()) or type(err).__name__
                print(f"error: {message}", flush=True)
            failed[run["name"]] = message
    return write_suite_table(results_dir, suite_id, failed), list(failed)


def write_suite_table(
    results_dir: Path, suite_id: str, failed: dict[str, str] | None = None
) -> Path:
    """Markdown and CSV of the runs tagged ``suite_id`` (and of the ``failed`` runs, by name,
    with their error), with published rows beside them."""
    runs = (
        [r for r in load_runs(results_dir, strict=False) if r.get("tag") == suite_id]
        if results_dir.is_dir()
        else []
    )
    columns, rows = table_rows(runs)
    if failed:
        columns = [*columns, "error"]
        rows += [{"tag": suite_id, "task": name, "error": error} for name, error in failed.items()]
    stem = results_dir / f"suite_{suite_id}"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    atomic_write_text(stem.with_suffix(".csv"), buf.getvalue())
    md = [f"# Suite {suite_id}", "", f"{time.strftime('%Y-%m-%d %H:%M')}", "", "## Measured", ""]
    md.append("| " + " | ".join(columns) + " |")
    md.append("|" + "---|" * len(columns))
    for row in rows:
        md.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    md += ["", published_table(published_rows({benchmark_of(r) for r in runs}))]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
    if runs:
        write_table(results_dir)
    return stem.with_suffix(".md")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="matbench benchmark",
        description="Run every `matbench test` of a suite file and write one results table.",
    )
    parser.add_argument("--config", required=True, help="suite YAML file")
    parser.add_argument("--results_dir", default="results", help="where results are written")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a suite variable, e.g. --set fmd=/data/FMD (repeatable)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="ARG=VALUE",
        help="an argument for every run, e.g. --override trainer.accelerator=cpu or "
        "--override=--data.init_args.num_workers=0 (repeatable)",
    )
    args = parser.parse_args(argv)
    overrides = [o if o.startswith("-") else f"--{o}" for o in args.override]
    variables = {}
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set expects NAME=VALUE, got '{item}'")
        name, value = item.split("=", 1)
        variables[name] = value
    try:
        suite = load_suite(args.config, variables)
    except SuiteError as err:
        parser.exit(2, f"matbench benchmark: error: {err}\n")
    table, failed = run_suite(suite, Path(args.results_dir), overrides)
    print(table.read_text())
    print(f"suite table: {table}")
    if failed:
        print(f"failed runs: {', '.join(failed)}")
        return 1
    return 0
