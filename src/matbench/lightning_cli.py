"""LightningCLI with matbench's defaults (imported only for Lightning subcommands)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI

from matbench.datamodules.base import BaseDataModule
from matbench.errors import ResultsWriteError
from matbench.results import check_writable, plain, write_run
from matbench.tasks.base import BaseTask
from matbench.utils.weights import (
    check_checkpoint_task,
    checkpoint_overrides,
    read_checkpoint_hparams,
)


class MatbenchCLI(LightningCLI):
    """LightningCLI with matbench's defaults and a results JSON after ``test``."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--results_dir",
            type=str,
            default="results",
            help="Where `test` writes its results JSON and the results table.",
        )
        parser.add_argument(
            "--tag",
            type=str | None,
            default=None,
            help="A label stored in the results JSON (a benchmark suite run uses its id).",
        )

    def _parse_ckpt_path(self) -> None:
        """Lightning applies a ``--ckpt_path`` checkpoint's hyperparameters over the config and
        the command line. Here the checkpoint is read with an error naming it, a checkpoint of
        another task is refused, and every value it overrides is reported."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = read_checkpoint_hparams(ckpt_path)
        if not hparams:
            return
        model = self.config[subcommand]["model"]
        init_args = model.get("init_args")
        init_args = init_args.as_dict() if hasattr(init_args, "as_dict") else dict(init_args or {})
        class_path = hparams.pop("_class_path", None)
        if class_path is not None:
            check_checkpoint_task(ckpt_path, class_path, str(model.get("class_path")), init_args)
        overrides = checkpoint_overrides(hparams, init_args)
        if overrides:
            listing = "; ".join(f"{k}: {mine!r} -> {theirs!r}" for k, mine, theirs in overrides)
            warnings.warn(
                f"{ckpt_path}: the checkpoint's hyperparameters override the config/command "
                f"line for model.{', model.'.join(k for k, _, _ in overrides)} ({listing})",
                stacklevel=2,
            )
        if class_path is not None:
            hparams = {"class_path": class_path, "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"Parsing of the hyperparameters of {ckpt_path} failed!\n")
            raise

    def before_test(self) -> None:
        # A callback, not after_test: under ddp_spawn only the workers hold the results.
        config = self.config[self.subcommand]
        # Fail now, not after a long evaluation whose numbers would have nowhere to go.
        check_writable(config["results_dir"])
        self.trainer.callbacks.append(
            ResultsWriter(
                results_dir=config["results_dir"],
                checkpoint=config.get("ckpt_path"),
                seed=config.get("seed_everything"),
                tag=config.get("tag"),
            )
        )


class ResultsWriter(Callback):
    """Writes one results JSON per test dataloader on global rank 0 when testing ends.

    Args:
        results_dir: Folder of the JSON files and the results table.
        checkpoint: The checkpoint tested (recorded as given).
        seed: The run's seed.
        tag: A free label (a suite run's id).
    """

    def __init__(
        self,
        results_dir: str,
        checkpoint: str | None = None,
        seed: int | None = None,
        tag: str | None = None,
    ) -> None:
        self.results_dir = results_dir
        self.checkpoint = checkpoint
        self.seed = seed
        self.tag = tag
        self.paths: list[str] = []

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        names = getattr(datamodule, "dataloader_names", None)
        class_names = getattr(datamodule, "class_names", None)
        for idx, metrics in enumerate(getattr(pl_module, "results", {}).get("test", [])):
            # each test set records its own datamodule (a cross-dataset run has several)
            data = datamodule.describe_set(idx) if isinstance(datamodule, BaseDataModule) else {}
            if names is not None and idx < len(names):
                data["dataset"] = names[idx]
            if class_names is not None:
                data["class_names"] = [str(c) for c in class_names]
            record = {
                "task": type(pl_module).__name__,
                "model_name": pl_module.model_name if isinstance(pl_module, BaseTask) else "",
                "model": {k: plain(v) for k, v in pl_module.hparams.items()},
                "checkpoint": self.checkpoint,
                "data": data,
                "protocol": pl_module.protocol() if isinstance(pl_module, BaseTask) else {},
                "metrics": metrics,
                "seed": self.seed,
                "tag": self.tag,
                "world_size": trainer.world_size,
            }
            try:
                path = write_run(self.results_dir, record)
            except ResultsWriteError as err:
                # Keep the numbers: print them before failing.
                print(json.dumps({"metrics": plain(metrics)}, indent=1), flush=True)
                print(f"results: could not write {err.path}: {err.problem}", flush=True)
                raise
            self.paths.append(str(path))
            print(f"results: {path}", flush=True)


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of the epilog that lists the other commands."""


def run(argv: Sequence[str] | None, epilog: str = "", run_subcommand: bool = True) -> MatbenchCLI:
    """Run ``matbench fit|validate|test|predict`` with ``argv`` (None: ``sys.argv``); with
    ``run_subcommand=False`` (and no subcommand in ``argv``) only parse and instantiate the
    classes."""
    # Import every task and datamodule so that short class names resolve in YAML.
    importlib.import_module("matbench.tasks")
    importlib.import_module("matbench.datamodules")
    return MatbenchCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "logs", "name": "matbench"},
            },
            "enable_progress_bar": True,
        },
        parser_kwargs={"epilog": epilog, "formatter_class": _HelpFormatter} if epilog else None,
        args=None if argv is None else list(argv),
        run=run_subcommand,
        auto_configure_optimizers=False,
    )
