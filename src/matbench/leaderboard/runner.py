"""The model × benchmark sweep: plan, shard, run, record.

Every (model, benchmark, protocol) is one run with a key (``<model slug>__<benchmark>__
<protocol>``) and one record, ``<out>/runs/<key>.json``, whatever happened: ``ok`` with its
metrics, ``skipped`` with the reason (the model cannot do that protocol), or ``failed`` with
the error (the sweep goes on). ``<out>/runs/<key>/`` holds the run's config (a
``matbench test`` config, or the linear probe's settings) and ``matbench test``'s own results
JSON. With ``skip_existing``, a run whose record says ``ok`` or ``skipped`` is not run again
(failed runs are retried), as CLIP_benchmark's ``--skip_existing``.

Sharding (``--distributed``) follows CLIP_benchmark: the runs are shuffled with the seed and
rank ``r`` of ``w`` takes every ``w``-th, so each rank runs different runs and no process
group is needed; rank and world size come from the launcher's environment (torchrun, SLURM,
MPI).
"""

from __future__ import annotations

import importlib
import json
import os
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from matbench.leaderboard.models import ModelSpec, unsupported
from matbench.leaderboard.registry import Benchmark
from matbench.results import atomic_write_text, package_versions

RUNS_DIR = "runs"
#: save_pretrained folders as Lightning checkpoints (see :func:`folder_checkpoint`).
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class Run:
    """One (model, benchmark, protocol)."""

    model: ModelSpec
    benchmark: Benchmark
    protocol: str

    @property
    def key(self) -> str:
        return f"{self.model.slug}__{self.benchmark.name}__{self.protocol}"


def plan(models: list[ModelSpec], benchmarks: list[Benchmark]) -> list[Run]:
    """The cartesian product: every model on every protocol of every benchmark."""
    return [Run(m, b, p) for m in models for b in benchmarks for p in b.protocols]


def world_info_from_env() -> tuple[int, int, int]:
    """``(local rank, rank, world size)`` from torchrun, MPI or SLURM variables (open_clip's
    and CLIP_benchmark's rule)."""

    def first(names: tuple[str, ...], default: int) -> int:
        for name in names:
            if name in os.environ:
                return int(os.environ[name])
        return default

    local = first(
        ("LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"), 0
    )
    rank = first(("RANK", "PMI_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"), 0)
    world = first(("WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"), 1)
    return local, rank, world


def shard(runs: list[Run], rank: int, world: int, seed: int = 0) -> list[Run]:
    """Rank ``rank``'s share: the runs shuffled with ``seed`` (balanced ranks), every
    ``world``-th from position ``rank``; run in plan order, so that the runs of one model
    follow each other and share its build."""
    order = list(runs)
    random.Random(seed).shuffle(order)
    mine = {id(r) for i, r in enumerate(order) if i % world == rank}
    return [r for r in runs if id(r) in mine]


@dataclass
class ProbeSettings:
    """The linear probe's settings (CLIP_benchmark's defaults)."""

    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    val_proportion: float = 0.2
    crop_min_size: int = 50
    crop_blur_sigma: float = 4.0


@dataclass
class Sweep:
    """Runs and records runs into ``out``.

    Args:
        out: Output folder (records in ``out/runs``).
        roots: Data roots by name (``fmd``, ``dms``, ``matseg``, ...).
        feature_root: Folder of cached features (default ``out/features``).
        device: Torch device of the linear probe; ``auto`` = CUDA (this rank's) when present.
        skip_existing: Leave runs with an ``ok`` or ``skipped`` record alone.
        probe: Linear probe settings.
        batch_size: Feature extraction batch size.
        num_workers: Loader workers (feature extraction, ``matbench test``).
        overrides: Extra ``matbench test`` arguments for every Lightning run.
    """

    out: Path
    roots: dict[str, str]
    feature_root: Path | None = None
    device: str = "auto"
    skip_existing: bool = False
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    batch_size: int = 32
    num_workers: int | None = None
    overrides: list[str] = field(default_factory=list)
    local_rank: int = 0
    rank: int = 0
    feature_hits: int = 0
    feature_misses: int = 0

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.feature_root = Path(self.feature_root or self.out / "features")

    # -- records ----------------------------------------------------------------------------------
    def record_path(self, run: Run) -> Path:
        return self.out / RUNS_DIR / f"{run.key}.json"

    def run_dir(self, run: Run) -> Path:
        return self.out / RUNS_DIR / run.key

    def existing(self, run: Run) -> dict[str, Any] | None:
        path = self.record_path(run)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def write_record(self, run: Run, record: dict[str, Any]) -> Path:
        from matbench.results import _json_safe

        path = self.record_path(run)
        atomic_write_text(path, json.dumps(_json_safe(record), indent=1) + "\n")
        return path

    # -- running ----------------------------------------------------------------------------------
    def run_all(
        self,
        runs: list[Run],
        after_run: Callable[[Run, dict[str, Any]], None] | None = None,
    ) -> dict[str, int]:
        """Run ``runs`` in order; returns counts by status (``existing`` for skipped ones).
        Consecutive runs of one model share its weights (built or read once, see
        :func:`~matbench.utils.weights.sharing_weights`). ``after_run(run, record)`` is
        called after each run that ran (``benchmarks/leaderboard.py`` times the bare
        forwards there)."""
        from matbench.utils.weights import sharing_weights

        with sharing_weights():
            return self._run_all(runs, after_run)

    def _run_all(
        self, runs: list[Run], after_run: Callable[[Run, dict[str, Any]], None] | None
    ) -> dict[str, int]:
        counts = {"ok": 0, "failed": 0, "skipped": 0, "existing": 0}
        for i, run in enumerate(runs, 1):
            previous = self.existing(run) if self.skip_existing else None
            if previous is not None and previous.get("status") in ("ok", "skipped"):
                print(f"[{i}/{len(runs)}] {run.key}: exists ({previous['status']}), skipped")
                counts["existing"] += 1
                continue
            print(f"[{i}/{len(runs)}] {run.key}", flush=True)
            record = self.run_one(run)
            counts[record["status"]] += 1
            detail = record.get("reason") or record.get("error") or _headline_text(run, record)
            print(f"[{i}/{len(runs)}] {run.key}: {record['status']} {detail}", flush=True)
            if after_run is not None:
                after_run(run, record)
        return counts

    def run_one(self, run: Run) -> dict[str, Any]:
        """Run one and write its record; a failure is recorded, never raised."""
        record: dict[str, Any] = {
            "key": run.key,
            "model": run.model.to_dict(),
            "benchmark": run.benchmark.name,
            "protocol": run.protocol,
            "headline": run.benchmark.headline.get(run.protocol, ""),
            "time": datetime.now().astimezone().isoformat(timespec="seconds"),
            "rank": self.rank,
            "versions": package_versions(),
        }
        reason = unsupported(run.model, run.protocol)
        if reason is not None:
            record.update(status="skipped", reason=reason, metrics={})
            self.write_record(run, record)
            return record
        start = time.perf_counter()
        try:
            if run.protocol == "linear_probe":
                result = self._linear_probe(run)
            else:
                result = self._lightning_test(run)
        except (Exception, SystemExit) as err:  # noqa: BLE001 - recorded, the sweep goes on
            from matbench.cli import known_error

            known = known_error(err) if isinstance(err, Exception) else None
            message = " ".join(str(known or err).split()) or type(err).__name__
            if isinstance(err, SystemExit):
                message = f"exit status {err.code}"
            record.update(
                status="failed",
                error=f"{type(known or err).__name__}: {message}",
                traceback=traceback.format_exc(limit=-8),
                metrics={},
            )
        else:
            record.update(status="ok", **result)
        record["seconds"] = time.perf_counter() - start
        images = record.get("images") or 0
        record["images_per_second"] = images / record["seconds"] if images else None
        self.write_record(run, record)
        return record

    def _device(self) -> str:
        import torch

        if self.device != "auto":
            return self.device
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"

    def _lightning_test(self, run: Run) -> dict[str, Any]:
        """``matbench test`` of a generated config, in this process."""
        from matbench.cli import main as cli_main
        from matbench.leaderboard.models import folder_checkpoint, task_section

        run_dir = self.run_dir(run)
        run_dir.mkdir(parents=True, exist_ok=True)
        for old in run_dir.glob("*.json"):
            old.unlink()  # a retried run: only this attempt's results
        spec = folder_checkpoint(run.model, self.out / CHECKPOINTS_DIR)
        model, ckpt = task_section(spec, run.benchmark.name, run.protocol)
        data = run.benchmark.data_section(self.roots)
        if self.num_workers is not None:
            data["init_args"]["num_workers"] = self.num_workers
        device = self._device()
        config = {
            "seed_everything": 0,
            "trainer": {
                "accelerator": "gpu" if device.startswith("cuda") else "cpu",
                "devices": [int(device.split(":")[1])] if device.startswith("cuda:") else 1,
                "precision": "32-true",
                "logger": False,
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "default_root_dir": str(run_dir),
            },
            "model": model,
            "data": data,
        }
        config_path = run_dir / "config.yaml"
        atomic_write_text(config_path, yaml.safe_dump(config, sort_keys=False))
        argv = ["test", "--config", str(config_path), "--results_dir", str(run_dir)]
        argv += [f"--tag={run.key}", *self.overrides, "--debug"]  # a key may start with "-"
        if ckpt:
            argv += ["--ckpt_path", ckpt]
        cli_main(argv)
        written = sorted(run_dir.glob("*.json"))
        if not written:
            raise RuntimeError(f"matbench test wrote no results JSON into {run_dir}")
        result = json.loads(written[-1].read_text(encoding="utf-8"))
        data_info = result.get("data", {})
        return {
            "metrics": result.get("metrics", {}),
            "data": {k: data_info.get(k) for k in ("dataset", "class_names", "num_samples")},
            "config": self._relative(config_path),
            "results": self._relative(written[-1]),
            "images": data_info.get("num_samples"),
            "weights": result.get("weights"),
        }

    def _relative(self, path: Path) -> str:
        return os.path.relpath(path, self.out)

    def _linear_probe(self, run: Run) -> dict[str, Any]:
        import torch

        from matbench.leaderboard.models import build_featurizer
        from matbench.leaderboard.probe import (
            cached_features,
            dataset_identity,
            extract_features,
            feature_file,
            linear_probe,
        )

        settings = self.probe
        data = run.benchmark.data_section(self.roots, probe=True)
        if self.num_workers is not None:
            data["init_args"]["num_workers"] = self.num_workers
        run_dir = self.run_dir(run)
        config_path = run_dir / "config.yaml"
        config = {
            "protocol": "linear_probe (CLIP_benchmark)",
            "model": run.model.to_dict(),
            "data": data,
            "probe": vars(settings),
        }
        atomic_write_text(config_path, yaml.safe_dump(config, sort_keys=False))
        module_name, _, cls_name = data["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), cls_name)
        datamodule = cls(**data["init_args"])
        datamodule.setup("fit")
        datamodule.setup("test")
        splits = {
            "train": datamodule.train_dataset,
            "val": datamodule.val_dataset,
            "test": datamodule.test_dataset,
        }
        crop = {"min_size": settings.crop_min_size, "blur_sigma": settings.crop_blur_sigma}
        device = self._device()
        model_id = run.model.identity()
        featurizer = None
        features: dict[str, dict[str, Any]] = {}
        images = 0
        for split, dataset in splits.items():
            if dataset is None:
                continue
            identity = {"samples": dataset_identity(dataset), "crop": crop}
            path = feature_file(
                self.feature_root, run.model.slug, model_id, run.benchmark.name, split, identity
            )

            def compute(dataset: Any = dataset, split: str = split) -> dict[str, Any]:
                nonlocal featurizer
                if featurizer is None:  # loaded only when some split is not cached
                    featurizer = build_featurizer(run.model, device)
                print(f"  features of {run.benchmark.name}/{split}: {len(dataset)} samples")
                return extract_features(
                    featurizer,
                    dataset,
                    batch_size=self.batch_size,
                    num_workers=int(data["init_args"].get("num_workers", 0)),
                    crop=crop,
                    device=device,
                )

            features[split], hit = cached_features(path, compute)
            self.feature_hits += int(hit)
            self.feature_misses += int(not hit)
            images += 0 if hit else len(features[split]["labels"])
        train = (features["train"]["features"], features["train"]["labels"])
        test = (features["test"]["features"], features["test"]["labels"])
        val = None
        if "val" in features and set(features["val"]["keys"]) != set(features["test"]["keys"]):
            val = (features["val"]["features"], features["val"]["labels"])
        elif settings.val_proportion > 0:  # no validation split: a seeded part of train
            generator = torch.Generator().manual_seed(settings.seed)
            order = torch.randperm(len(train[1]), generator=generator)
            cut = len(order) - int(round(len(order) * settings.val_proportion))
            val = (train[0][order[cut:]], train[1][order[cut:]])
            train = (train[0][order[:cut]], train[1][order[:cut]])
        class_names = [str(c) for c in datamodule.class_names]
        metrics = linear_probe(
            train,
            val,
            test,
            len(class_names),
            lr=settings.lr,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            seed=settings.seed,
            device=device,
        )
        return {
            "metrics": metrics,
            "data": {
                "dataset": run.benchmark.name,
                "class_names": class_names,
                "num_samples": len(test[1]),
                "train_samples": len(train[1]),
                "val_samples": 0 if val is None else len(val[1]),
            },
            "config": self._relative(config_path),
            "images": images,
            "weights": run.model.weights or ("random" if run.model.random_init else None),
        }


def _headline_text(run: Run, record: dict[str, Any]) -> str:
    key = run.benchmark.headline.get(run.protocol, "")
    value = record.get("metrics", {}).get(key)
    return f"{key}={value:.4f}" if isinstance(value, float) else ""


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every run record under ``out/runs``, sorted by benchmark, protocol, model."""
    records = []
    for path in sorted((Path(out) / RUNS_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "key" in record and "status" in record:
            record["record"] = os.path.relpath(path, out)
            records.append(record)
    return records
