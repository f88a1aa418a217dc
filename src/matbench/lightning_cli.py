"""LightningCLI with matbench's defaults (imported only for Lightning subcommands)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningCLI

from matbench.datamodules.base import BaseDataModule
from matbench.results import write_run
from matbench.tasks.base import BaseTask


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

    def after_test(self) -> None:
        if not self.trainer.is_global_zero:
            return
        task = self.model
        datamodule = self.datamodule
        results_dir = self.config[self.subcommand]["results_dir"]
        data_info = datamodule.describe() if isinstance(datamodule, BaseDataModule) else {}
        names = getattr(datamodule, "dataloader_names", None)
        for idx, metrics in enumerate(getattr(task, "results", {}).get("test", [])):
            data = dict(data_info)
            if names is not None and idx < len(names):
                data["dataset"] = names[idx]
            class_names = getattr(datamodule, "class_names", None)
            if class_names is not None:
                data["class_names"] = [str(c) for c in class_names]
            record = {
                "task": type(task).__name__,
                "model_name": task.model_name if isinstance(task, BaseTask) else "",
                "model": {k: _plain(v) for k, v in task.hparams.items()},
                "checkpoint": self.config[self.subcommand].get("ckpt_path"),
                "data": data,
                "metrics": metrics,
                "seed": self.config[self.subcommand].get("seed_everything"),
                "tag": self.config[self.subcommand].get("tag"),
            }
            path = write_run(results_dir, record)
            print(f"results: {path}")


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of the epilog that lists the other commands."""


def run(argv: Sequence[str], epilog: str = "") -> MatbenchCLI:
    """Run ``matbench fit|validate|test|predict`` with ``argv``."""
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
        args=list(argv),
        auto_configure_optimizers=False,
    )
