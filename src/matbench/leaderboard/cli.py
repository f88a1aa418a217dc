"""``matbench leaderboard``: run models × benchmarks and write the leaderboard page."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXAMPLE = """examples:
  matbench leaderboard --models ViT-B-32/laion2b_s34b_b79k,timm:vit_small_patch14_dinov2.lvd142m \\
      --benchmarks fmd,dms_test21,matseg --root fmd=data/fmd --root dms=data/DMS_v1 \\
      --root matseg=data/matseg/benchmark --out leaderboard --skip_existing
  torchrun --nproc_per_node 4 -m matbench leaderboard --config sweep.yaml --distributed
  matbench leaderboard --build_only --out leaderboard      # the page from existing records
  matbench leaderboard --list                               # benchmarks and protocols
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matbench leaderboard",
        description="Evaluate every model on every material benchmark (zero-shot, linear "
        "probe, dense descriptors, retrieval: what each model supports) and write a static "
        "HTML leaderboard, Markdown and CSV, with the published numbers beside them.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        action="append",
        default=[],
        help="comma-separated models: open_clip ARCH/PRETRAINED, timm:NAME, hf:ORG/NAME, "
        "a .ckpt or save_pretrained folder (repeatable; '@none' = random init)",
    )
    parser.add_argument(
        "--benchmarks", action="append", default=[], help="comma-separated registry names"
    )
    parser.add_argument("--config", help="YAML with models, benchmarks, roots and options")
    parser.add_argument(
        "--root", action="append", default=[], metavar="NAME=PATH", help="a data root"
    )
    parser.add_argument("--roots", help="YAML/JSON file NAME: PATH of data roots")
    parser.add_argument("--out", default=None, help="output folder (default leaderboard)")
    parser.add_argument("--feature_root", default=None, help="feature cache (default OUT/features)")
    parser.add_argument(
        "--skip_existing", action="store_true", help="skip runs whose record is ok or skipped"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="shard the runs over ranks (RANK/WORLD_SIZE of torchrun, SLURM or MPI)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the shard shuffle and probe"
    )
    parser.add_argument("--device", default=None, help="linear probe device (default auto)")
    parser.add_argument("--batch_size", type=int, default=None, help="feature batch size")
    parser.add_argument("--num_workers", type=int, default=None, help="loader workers")
    parser.add_argument("--probe_lr", type=float, default=None, help="linear probe LR (0.1)")
    parser.add_argument("--probe_epochs", type=int, default=None, help="probe epochs (10)")
    parser.add_argument("--probe_batch_size", type=int, default=None, help="probe batch (64)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="ARG=VALUE",
        help="a `matbench test` argument for every zero-shot/dense/retrieval run",
    )
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument("--build_only", action="store_true", help="only write the page")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--example_data",
        metavar="DIR",
        help="write the offline example data (MatSeg benchmark, texture folder) and exit",
    )
    return parser


def _split(values: list[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v.strip() for value in values for v in str(value).split(",") if v.strip()]


def _read_mapping(path: str, what: str) -> dict[str, Any]:
    import yaml

    from matbench.errors import ConfigFileError

    file = Path(path)
    if not file.is_file():
        raise ConfigFileError(file, f"{what} file not found")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigFileError(file, f"not valid YAML/JSON ({err})") from err
    if not isinstance(data, dict):
        raise ConfigFileError(file, f"expected a mapping, got a {type(data).__name__}")
    return data


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Command line over the ``--config`` file over the defaults."""
    from matbench.errors import ConfigError, ConfigFileError

    config = _read_mapping(args.config, "config") if args.config else {}
    known = {
        "models", "benchmarks", "roots", "out", "feature_root", "skip_existing", "seed",
        "device", "batch_size", "num_workers", "probe", "overrides", "title",
    }  # fmt: skip
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigFileError(
            Path(args.config), f"unknown keys {unknown}; known: {', '.join(sorted(known))}"
        )
    roots = {str(k): str(v) for k, v in (config.get("roots") or {}).items()}
    if args.roots:
        roots.update({str(k): str(v) for k, v in _read_mapping(args.roots, "roots").items()})
    for item in args.root:
        if "=" not in item:
            raise ConfigError(f"--root expects NAME=PATH, got '{item}'")
        name, path = item.split("=", 1)
        roots[name.strip()] = path
    probe = dict(config.get("probe") or {})
    for key in ("lr", "epochs", "batch_size"):
        value = getattr(args, f"probe_{key}")
        if value is not None:
            probe[key] = value
    overrides = [str(o) for o in config.get("overrides") or []] + list(args.override)
    return {
        "models": _split(args.models) or _split(config.get("models")),
        "benchmarks": _split(args.benchmarks) or _split(config.get("benchmarks")),
        "roots": roots,
        "out": Path(args.out or config.get("out") or "leaderboard"),
        "feature_root": args.feature_root or config.get("feature_root"),
        "skip_existing": args.skip_existing or bool(config.get("skip_existing")),
        "seed": args.seed if args.seed is not None else int(config.get("seed", 0)),
        "device": args.device or config.get("device") or "auto",
        "batch_size": args.batch_size or int(config.get("batch_size", 32)),
        "num_workers": args.num_workers
        if args.num_workers is not None
        else config.get("num_workers"),
        "probe": probe,
        "overrides": [o if o.startswith("-") else f"--{o}" for o in overrides],
        "title": args.title or config.get("title") or "matbench leaderboard",
    }


def list_benchmarks() -> str:
    from matbench.leaderboard.registry import BENCHMARKS

    lines = [f"{'benchmark':<16} {'roots':<8} {'protocols':<28} title"]
    for b in BENCHMARKS.values():
        lines.append(f"{b.name:<16} {','.join(b.roots):<8} {','.join(b.protocols):<28} {b.title}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_benchmarks())
        return 0
    if args.example_data:
        from matbench.leaderboard.example import write_example_data

        roots = write_example_data(Path(args.example_data))
        print(json.dumps({k: str(v) for k, v in roots.items()}, indent=1))
        return 0
    opts = settings(args)
    from matbench.leaderboard.page import write_leaderboard

    if not args.build_only:
        code = sweep(opts, distributed=args.distributed)
    else:
        code = 0
    paths = write_leaderboard(opts["out"], title=opts["title"])
    for path in paths:
        print(f"leaderboard: {path}")
    return code


def sweep(
    opts: dict[str, Any],
    distributed: bool = False,
    after_run: Callable[[Any, dict[str, Any]], None] | None = None,
) -> int:
    """Resolve, plan, shard and run (``after_run``: see :meth:`Sweep.run_all`); 1 when a run
    failed."""
    from matbench.errors import ConfigError
    from matbench.leaderboard.models import resolve_model
    from matbench.leaderboard.registry import get_benchmark
    from matbench.leaderboard.runner import ProbeSettings, Sweep, plan, shard, world_info_from_env

    if not opts["models"] or not opts["benchmarks"]:
        raise ConfigError(
            "give the models and the benchmarks",
            hint="--models M1,M2 --benchmarks B1,B2 (or a --config YAML); --list shows them",
        )
    models = [resolve_model(m) for m in opts["models"]]
    benchmarks = [get_benchmark(b) for b in opts["benchmarks"]]
    for benchmark in benchmarks:
        benchmark.data_section(opts["roots"])  # every root given, before anything runs
    runs = plan(models, benchmarks)
    local_rank, rank, world = world_info_from_env() if distributed else (0, 0, 1)
    mine = shard(runs, rank, world, opts["seed"]) if world > 1 else runs
    print(
        f"leaderboard: {len(runs)} runs ({len(models)} models x {len(benchmarks)} benchmarks)"
        + (f", rank {rank}/{world} runs {len(mine)}" if world > 1 else ""),
        flush=True,
    )
    probe = ProbeSettings(**{**opts["probe"], "seed": opts["seed"]})
    runner = Sweep(
        out=opts["out"],
        roots=opts["roots"],
        feature_root=Path(opts["feature_root"]) if opts["feature_root"] else None,
        device=opts["device"],
        skip_existing=opts["skip_existing"],
        probe=probe,
        batch_size=opts["batch_size"],
        num_workers=opts["num_workers"],
        overrides=opts["overrides"],
        local_rank=local_rank,
        rank=rank,
    )
    counts = runner.run_all(mine, after_run)
    print("leaderboard: " + ", ".join(f"{v} {k}" for k, v in counts.items()), flush=True)
    return 1 if counts["failed"] else 0
