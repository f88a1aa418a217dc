"""The ``matbench`` command: LightningCLI's fit/validate/test/predict plus a few tools."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.cli import LightningCLI

import matbench
from matbench.datamodules.base import BaseDataModule
from matbench.results import write_run
from matbench.tasks.base import BaseTask

#: Subcommands that are not Lightning runs: name -> ("module:function", one-line help).
#: Each function takes the remaining argv and returns an exit code.
TOOL_COMMANDS: dict[str, tuple[str, str]] = {
    "materials": ("matbench.materials.cli:main", "LVIS-materials sidecars, vocabulary and prior"),
    "embed-text": ("matbench.prediction:embed_text_main", "text embeddings of material queries"),
    "synth": ("matbench.synth.cli:main", "MatSeg scenes or benchmark by pattern infusion"),
    "benchmark": ("matbench.benchmark:main", "run a suite of `test` runs into one table"),
    "report": ("matbench.report:main", "rebuild results tables and plots from JSON files"),
}


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


def _import_components() -> None:
    """Import every task and datamodule so that short class names resolve in YAML."""
    importlib.import_module("matbench.tasks")
    importlib.import_module("matbench.datamodules")


def _tools_epilog() -> str:
    if not TOOL_COMMANDS:
        return ""
    lines = ["other commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in sorted(TOOL_COMMANDS.items())]
    return "\n".join(lines)


def run_tool(name: str, argv: Sequence[str]) -> int:
    target, _ = TOOL_COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(list(argv)) or 0)


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of ``matbench`` and ``python -m matbench``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in ("--version", "-V"):
        print(f"matbench {matbench.__version__}")
        return 0
    if argv and argv[0] in TOOL_COMMANDS:
        code = run_tool(argv[0], argv[1:])
        if args is None:
            sys.exit(code)
        return code
    _import_components()
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
        parser_kwargs={"epilog": _tools_epilog()} if TOOL_COMMANDS else None,
        args=argv,
        auto_configure_optimizers=False,
    )
