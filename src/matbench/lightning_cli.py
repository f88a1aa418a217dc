"""LightningCLI with matbench's defaults (imported only for Lightning subcommands)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from matbench.datamodules.base import BaseDataModule
from matbench.errors import DatasetNotFoundError, ResultsWriteError
from matbench.results import check_writable, plain, write_run
from matbench.tasks.base import BaseTask, datamodule_class_names, datamodule_dataloader_names
from matbench.utils.deprecation import rename_kwargs, renamed_arguments_of, translate_argv
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
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Name of the run: logs go to logs/<config name>/<run name>/ (default: the "
            "time for fit; for test/predict of a checkpoint, the run that wrote it).",
        )

    def before_instantiate_classes(self) -> None:
        if not self.subcommand:
            return  # only building the classes (no run): no data is read, no logs written
        config = self.config[self.subcommand]
        check_data_roots(config.get("data"), self.subcommand)
        name_run(config, self.subcommand)

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        best = _absolute(getattr(callback, "best_model_path", "") if callback else "")
        last = _absolute(getattr(callback, "last_model_path", "") if callback else "")
        self._summary({"checkpoint": best or last, "last checkpoint": last if best else ""})

    def after_validate(self) -> None:
        self._summary({})

    def after_test(self) -> None:
        writer = next((c for c in self.trainer.callbacks if isinstance(c, ResultsWriter)), None)
        results = writer.paths if writer else []
        plots = [
            str(v)
            for metrics in getattr(self.model, "results", {}).get("test", [])
            for k, v in metrics.items()
            if k.endswith("_png")
        ]
        self._summary({"results": ", ".join(results), "plots": ", ".join(plots)})

    def after_predict(self) -> None:
        written = []
        for callback in self.trainer.callbacks:
            for attribute in ("path", "output_dir"):
                value = getattr(callback, attribute, None)
                if value is not None and Path(value).exists():
                    written.append(str(Path(value).resolve()))
        self._summary({"predictions": ", ".join(written)})

    def _summary(self, items: dict[str, str]) -> None:
        """The last lines of every command: where its outputs are."""
        if not self.trainer.is_global_zero:
            return
        log_dir = self.trainer.log_dir if self.trainer.logger is not None else None
        lines = {"logs": str(Path(log_dir).resolve()) if log_dir else "", **items}
        shown = [f"  {key + ':':<17} {value}" for key, value in lines.items() if value]
        if shown:
            print(f"matbench {self.subcommand} done", *shown, sep="\n", flush=True)

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
        hparams = rename_kwargs(
            str(class_path or model.get("class_path")),
            renamed_arguments_of(class_path or model.get("class_path")),
            hparams,
            where=str(ckpt_path),
        )
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


def check_data_roots(data: Any, stage: str) -> None:
    """DatasetNotFoundError for a missing data folder of the ``data`` config section
    (``class_path`` + ``init_args``), before any class is built."""
    if data is None or not getattr(data, "class_path", None):
        return
    module_name, _, name = str(data.class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return  # the parser reports it
    if not (isinstance(cls, type) and issubclass(cls, BaseDataModule)):
        return
    init_args = data.init_args.as_dict() if hasattr(data.init_args, "as_dict") else {}
    for argument, folder in cls.data_roots(init_args, stage):
        if not Path(folder).expanduser().is_dir():
            dataset = name.removesuffix("DataModule")
            raise DatasetNotFoundError(
                dataset,
                folder,
                ["the dataset folder"],
                hint=f"pass --data.{argument} /path/to/{dataset.lower()} (see the dataset's "
                "docs page for where to download it)",
            )


def _absolute(path: str) -> str:
    return str(Path(path).resolve()) if path else ""


def config_name(config: Any) -> str:
    """``<folder>/<stem>`` of the run's first config file (the experiment; later ones are
    overlays such as ``configs/fast/…``), e.g. ``two_stream/fmd``."""
    files = [str(f) for f in (config.get("config") or []) if f is not None]
    if not files:
        return "matbench"
    path = Path(files[0])
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def name_run(config: Any, subcommand: str) -> None:
    """Name the TensorBoard logger's folder ``logs/<config name>/<run name>``.

    ``fit`` runs are named by ``--run_name`` or the start time. ``test``, ``validate`` and
    ``predict`` of a checkpoint inside a run's ``checkpoints/`` folder log into that run
    (in a ``<subcommand>/`` sub-folder), and without one into ``<config name>/<subcommand>``,
    so repeating them does not open a new log version each time. A logger the user
    configured with a name or version is left alone.
    """
    logger = config.get("trainer", {}).get("logger") if config.get("trainer") else None
    if logger is None or logger is False or not hasattr(logger, "get"):
        return
    if not str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
        return
    args = logger.init_args
    if args.get("name") != "matbench" or args.get("version") is not None:
        return
    run_name = config.get("run_name")
    ckpt = config.get("ckpt_path")
    run_dir = Path(ckpt).resolve().parent.parent if ckpt else None
    if run_dir is not None and Path(ckpt).resolve().parent.name == "checkpoints" and not run_name:
        args.save_dir, args.name, args.version = str(run_dir.parent), "", run_dir.name
    else:
        args.name = config_name(config)
        if subcommand == "fit":
            args.version = run_name or datetime.now().strftime("%Y%m%d-%H%M%S")
        else:
            args.version = run_name or subcommand
    if subcommand != "fit":
        args.sub_dir = subcommand


class SaveConfig(SaveConfigCallback):
    """Saves the run's config next to its logs, and nowhere when there are no logs (it would
    land in the current directory)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is None:
            return
        super().setup(trainer, pl_module, stage)


def weights_label(task: LightningModule, checkpoint: str | None) -> str:
    """What the tested weights were: the checkpoint's run, else the pretrained tags or files
    of the task's weight arguments, else ``random``."""
    if checkpoint:
        return f"checkpoint {Path(checkpoint).name}"
    names = getattr(task, "weight_arguments", ())
    given = [f"{k}={task.hparams[k]}" for k in names if task.hparams.get(k) is not None]
    return ", ".join(given) if given else "random"


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
        self.checkpoint = str(Path(checkpoint).expanduser().resolve()) if checkpoint else None
        self.seed = seed
        self.tag = tag
        self.paths: list[str] = []

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        names = datamodule_dataloader_names(datamodule)
        class_names = datamodule_class_names(datamodule)
        loaders = trainer.test_dataloaders
        loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
        for idx, metrics in enumerate(getattr(pl_module, "results", {}).get("test", [])):
            # each test set records its own datamodule (a cross-dataset run has several)
            data = datamodule.describe_set(idx) if isinstance(datamodule, BaseDataModule) else {}
            if names is not None and idx < len(names):
                data["dataset"] = names[idx]
            elif datamodule is not None:
                data.setdefault("dataset", type(datamodule).__name__.removesuffix("DataModule"))
            if class_names is not None:
                data["class_names"] = class_names
            dataset = getattr(loaders[idx], "dataset", None) if idx < len(loaders) else None
            if dataset is not None and hasattr(dataset, "__len__"):
                data["num_samples"] = len(dataset)
            records = getattr(dataset, "records", None)
            if isinstance(records, list) and records and "has_relations" in records[0]:
                data["has_relations"] = any(r["has_relations"] for r in records)
            record = {
                "task": type(pl_module).__name__,
                "model_name": pl_module.model_name if isinstance(pl_module, BaseTask) else "",
                "model": {k: plain(v) for k, v in pl_module.hparams.items()},
                "weights": weights_label(pl_module, self.checkpoint),
                "checkpoint": self.checkpoint,
                "data": data,
                "protocol": pl_module.protocol() if isinstance(pl_module, BaseTask) else {},
                "metrics": metrics,
                # the sample-weighted mean over every test set (logged as test/loss)
                "loss": getattr(pl_module, "eval_losses", {}).get("test"),
                "seed": self.seed,
                "tag": self.tag,
                "world_size": trainer.world_size,
            }
            try:
                path = write_run(self.results_dir, record).resolve()
            except ResultsWriteError as err:
                # Keep the numbers: print them before failing.
                print(json.dumps({"metrics": plain(metrics)}, indent=1), flush=True)
                print(f"results: could not write {err.path}: {err.problem}", flush=True)
                raise
            self.paths.append(str(path))
            print(f"results: {path}", flush=True)


#: Lightning messages that say nothing about the run (tips for cloud products, a torch
#: deprecation inside Lightning, frozen backbones being in eval mode on purpose…).
QUIET_MESSAGES = (
    r"💡 Tip",
    r"The following callbacks returned in `LightningModule.configure_callbacks` will override",
    r"Loading `train_dataloader` to estimate number of stepping batches",
)
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*module\(s\) in eval mode.*",
    r".*The dirpath has changed from.*",
    r".*LightningCLI's args parameter is intended.*",
    r".*is smaller than the logging interval.*",
    r".*callbacks used to create the checkpoint need to be provided.*",
)


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(re.match(pattern, message) for pattern in QUIET_MESSAGES)


def quiet_lightning() -> None:
    """Silence Lightning's console messages that are noise for matbench runs (idempotent)."""
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # rank_zero_info() logs through these loggers: filter where the records are made
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietFilter) for f in logger.filters):
            logger.addFilter(_QuietFilter())


#: Columns of the subcommands' help: fixed, so that the text does not depend on the terminal
#: (it is shipped pre-generated, see `matbench.cli_help`).
HELP_COLUMNS = 80


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of the epilog that lists the other commands; a fixed width."""

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        kwargs["width"] = HELP_COLUMNS - 2  # as argparse does for an 80-column terminal
        super().__init__(prog, *args, **kwargs)


def parser_kwargs(epilog: str) -> dict[str, Any]:
    """matbench's own descriptions for the main parser and each subcommand's ``--help``."""
    import textwrap

    from matbench.cli import DESCRIPTION, LIGHTNING_COMMANDS

    main = {"prog": "matbench", "description": DESCRIPTION, "formatter_class": _HelpFormatter}
    if epilog:
        main["epilog"] = epilog
    subcommands = {
        name: {
            "description": textwrap.fill(
                f"matbench {name}: {help_}. Options come from the config files (--config) "
                "and dotted overrides (--model.*, --data.*, --trainer.*).",
                HELP_COLUMNS - 2,
            ),
            "formatter_class": _HelpFormatter,
        }
        for name, help_ in LIGHTNING_COMMANDS.items()
    }
    return {**main, **subcommands}


def run(argv: Sequence[str] | None, epilog: str = "", run_subcommand: bool = True) -> MatbenchCLI:
    """Run ``matbench fit|validate|test|predict`` with ``argv`` (None: ``sys.argv``); with
    ``run_subcommand=False`` (and no subcommand in ``argv``) only parse and instantiate the
    classes."""
    quiet_lightning()
    # Import every task and datamodule so that short class names resolve in YAML.
    importlib.import_module("matbench.tasks")
    importlib.import_module("matbench.datamodules")
    if argv is None:
        argv = sys.argv[1:]
    argv = translate_argv(argv)
    return MatbenchCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=SaveConfig,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "logs", "name": "matbench"},
            },
            "enable_progress_bar": True,
        },
        parser_kwargs=parser_kwargs(epilog),
        args=list(argv),
        run=run_subcommand,
        auto_configure_optimizers=False,
    )
