"""The base class of every matbench task."""

from __future__ import annotations

import inspect
import json
import math
import pickle
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from huggingface_hub import PyTorchModelHubMixin
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import Metric

from matbench.cache import gather_entries, pack_entries, unpack_entries
from matbench.callbacks import BestAndLastCheckpoint, ShortRunLogging, StepProgressBar
from matbench.errors import ConfigError, EvaluationError
from matbench.models.utils import Freezable, state_hash
from matbench.utils.deprecation import (
    RenameEntry,
    accept_renamed,
    apply_renames,
    rename_kwargs,
)
from matbench.utils.weights import load_state_dict_file, weights_file


def datamodule_object_crops(datamodule: Any) -> bool:
    """Whether ``datamodule`` declares that its samples are object crops already
    (:attr:`BaseDataModule.object_crops <matbench.datamodules.base.BaseDataModule.object_crops>`)."""
    if datamodule is None or not hasattr(type(datamodule), "object_crops"):
        return False
    return bool(datamodule.object_crops)


def datamodule_class_names(datamodule: Any) -> list[str] | None:
    """The class names ``datamodule`` declares (:attr:`BaseDataModule.class_names
    <matbench.datamodules.base.BaseDataModule.class_names>`), or None: no datamodule, one
    without classes, or a plain ``LightningDataModule`` that does not declare them."""
    if datamodule is None or not hasattr(type(datamodule), "class_names"):
        return None
    names = datamodule.class_names
    return None if names is None else [str(n) for n in names]


def datamodule_dataloader_names(datamodule: Any) -> list[str] | None:
    """The evaluation dataloaders' names ``datamodule`` declares
    (:attr:`BaseDataModule.dataloader_names
    <matbench.datamodules.base.BaseDataModule.dataloader_names>`), or None."""
    if datamodule is None or not hasattr(type(datamodule), "dataloader_names"):
        return None
    names = datamodule.dataloader_names
    return None if names is None else [str(n) for n in names]


def _rename_hub_config(task: Any, renamed: Mapping[str, RenameEntry]) -> None:
    """The Hub mixin records the arguments as passed (before ``__init__``): the config that
    ``save_pretrained`` writes gets the new names too."""
    config = getattr(task, "_hub_mixin_config", None)
    if isinstance(config, dict):
        renamed_config, _ = apply_renames(type(task).__name__, renamed, config, overwrite=True)
        config.clear()
        config.update(renamed_config)


class BaseTask(
    L.LightningModule,
    PyTorchModelHubMixin,
    ABC,
    library_name="matbench",
    tags=["matbench", "material-recognition"],
):
    """Template for tasks: ``configure_models``, ``configure_losses``, ``configure_metrics``.

    Every ``__init__`` argument of a subclass is a primitive, string or Literal, saved as a
    hyperparameter, so that checkpoints reload and ``--print_config`` shows the whole task.

    Evaluation metrics are built by :meth:`build_metric` (one instance per stage and per
    dataloader, created at the start of the epoch on every rank, so that a rank that received
    no sample still takes part in the metric's sync), updated by the subclass through
    :meth:`eval_metric`, and computed, logged and kept in :attr:`results` at epoch end.

    Args:
        ignore: Constructor arguments not to save as hyperparameters.
    """

    #: Logged key that checkpoints monitor, and its direction.
    monitor: str = "val/loss"
    mode: str = "min"
    #: Arguments that name pretrained weights: `from_pretrained` sets them to None, as the
    #: saved weights replace them (nothing is downloaded).
    weight_arguments: tuple[str, ...] = (
        "weights",
        "fusion_weights",
        "backbone_weights",
        "text_weights",
        "checkpoint",
    )
    #: Class names of a classifier (from the training data; kept in checkpoints).
    class_names: list[str] | None = None
    #: Renamed ``__init__`` arguments, old name -> new name (None: removed): the old names
    #: keep working for one release with a deprecation message (see
    #: :mod:`matbench.utils.deprecation`).
    renamed_arguments: dict[str, RenameEntry] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        renamed = cls.__dict__.get("renamed_arguments")
        if renamed and "__init__" in cls.__dict__:
            cls.__init__ = accept_renamed(
                cls.__dict__["__init__"], cls.__name__, renamed, after=_rename_hub_config
            )

    def __init__(self, ignore: Sequence[str] | str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=ignore)
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()
        self._eval_metrics = nn.ModuleDict()
        # Per stage: (sum of loss × scored, scored, seen samples) of the evaluation epoch.
        self._eval_loss_sums: dict[str, Tensor] = {}
        #: Per stage, one dict of computed metrics per dataloader (the latest epoch's).
        self.results: dict[str, list[dict[str, Any]]] = {}
        #: Per stage, the latest epoch's mean loss over every dataloader and rank.
        self.eval_losses: dict[str, float] = {}

    # -- template hooks ----------------------------------------------------------------------
    @abstractmethod
    def configure_models(self) -> None:
        """Create the plain ``nn.Module`` models of the task."""

    def configure_losses(self) -> None:
        """Create the loss functions of the task."""

    def configure_metrics(self) -> None:
        """Prepare anything :meth:`build_metric` needs."""

    def build_metric(self, stage: str) -> Metric | None:
        """A fresh evaluation metric for ``stage`` (``val`` or ``test``); None for none."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (default: every trainable parameter with the
        ``weight_decay`` hyperparameter); empty when nothing trains."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        return [{"params": params, "weight_decay": float(self.hparams.get("weight_decay", 0.01))}]

    def configure_optimizers(self) -> Any:
        """AdamW over `param_groups`, with the ``lr_schedule`` hyperparameter's schedule
        stepped every optimizer step: ``cosine`` (linear warmup over ``warmup`` steps, then
        cosine decay to 0 at the run's last step, as open_clip) or ``constant`` (warmup,
        then the base rate)."""
        groups = self.param_groups()
        if not groups:
            raise ValueError(f"{type(self).__name__} has no trainable parameters")
        optimizer = torch.optim.AdamW(groups, lr=float(self.hparams.get("lr", 1e-4)))
        schedule = str(self.hparams.get("lr_schedule", "constant"))
        warmup = float(self.hparams.get("warmup", 0.0))
        if schedule == "constant" and warmup == 0:
            return optimizer
        # The run's length is known once the training loader exists (at train start); asking
        # for it here would build the loader before the task's on_fit_start hooks.
        factor = LRFactor(schedule, warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_train_start(self) -> None:
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            factors = getattr(scheduler, "lr_lambdas", [])
            if not any(isinstance(f, LRFactor) for f in factors):
                continue
            total = int(self.trainer.estimated_stepping_batches)
            for factor in factors:
                if isinstance(factor, LRFactor):
                    factor.resolve(total)
            step = scheduler.last_epoch
            for group, base, factor in zip(
                scheduler.optimizer.param_groups, scheduler.base_lrs, factors, strict=True
            ):
                group["lr"] = base * factor(step)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        optimizers = self.optimizers(use_pl_optimizer=False)
        optimizer = optimizers[0] if isinstance(optimizers, list) else optimizers
        if optimizer is not None and optimizer.param_groups:
            self.log("train/lr", float(optimizer.param_groups[0]["lr"]), batch_size=1)

    def protocol(self) -> dict[str, Any]:
        """How this run evaluated, beyond the hyperparameters (e.g. the temperature actually
        used, the prompts of a zero-shot classifier): the results JSON's ``protocol``."""
        return {}

    def tensorboard(self) -> Any:
        """The TensorBoard ``SummaryWriter`` of the run on global rank 0, else None (no logger,
        another logger, or another rank): figures are logged only where someone looks."""
        trainer = self._trainer
        if trainer is None or not trainer.is_global_zero:
            return None
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image") and hasattr(experiment, "add_text"):
                return experiment
        return None

    def configure_callbacks(self) -> list[L.Callback]:
        """For ``fit``: a checkpoint of the best ``monitor`` value plus ``last.ckpt`` — unless
        the trainer has a `ModelCheckpoint` of the user's own, which is kept as it is — and
        `ShortRunLogging` (and `StepProgressBar` for runs limited by steps)."""
        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit":
            return []
        callbacks: list[L.Callback] = [ShortRunLogging()]
        bar = trainer.progress_bar_callback
        limited_by_steps = trainer.max_epochs is None or trainer.max_epochs < 0
        if limited_by_steps and type(bar) is RichProgressBar:
            callbacks.append(StepProgressBar())
        checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
        if checkpoints and not all(_is_default_checkpoint(c) for c in checkpoints):
            return callbacks
        # Lightning's own default checkpoint (no settings) is replaced by ours.
        trainer.callbacks[:] = [c for c in trainer.callbacks if c not in checkpoints]
        callbacks.append(
            BestAndLastCheckpoint(monitor=self.monitor, mode=self.mode, save_last=True)
        )
        return callbacks

    @property
    def model_name(self) -> str:
        """Short model name for results tables (the ``model`` hyperparameter when there is one)."""
        for key in ("model", "backbone"):
            if key in self.hparams:
                return str(self.hparams[key])
        return type(self).__name__

    # -- checkpoints -------------------------------------------------------------------------
    def memory_caches(self) -> dict[str, dict[str, Tensor]]:
        """Named in-memory caches of frozen features (``key → 1-D tensor``) to keep in the
        checkpoints of a fit. Features computed in another batch differ in the last bits, so
        a resumed run that recomputed them would drift from an uninterrupted one."""
        return {}

    def restore_memory_cache(self, name: str, entries: dict[str, Tensor]) -> None:
        """Take back one cache of :meth:`memory_caches` when a fit resumes."""

    def frozen_pretrained(self) -> dict[str, Freezable]:
        """Frozen submodules whose weights came from a named or local source (by state-dict
        prefix): checkpoints leave their weights out, as they are rebuilt from the same
        source when the task is built again."""
        found: dict[str, Freezable] = {}
        for name, module in self.named_modules():
            if (
                isinstance(module, Freezable)
                and module.frozen
                and module.weights_source is not None
                and not any(name.startswith(f"{outer}.") for outer in found)
            ):
                found[name] = module
        return found

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        frozen = {}
        state = checkpoint.get("state_dict", {})
        for prefix, module in self.frozen_pretrained().items():
            keys = [k for k in state if k.startswith(f"{prefix}.")]
            if not keys:
                continue
            frozen[prefix] = {"source": module.weights_source, "sha256": state_hash(module)}
            for key in keys:
                del state[key]
        if frozen:
            checkpoint["matbench_frozen"] = frozen
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        try:
            names = datamodule_class_names(datamodule)
        except (OSError, ValueError, RuntimeError):
            names = None  # a datamodule that cannot list its classes yet
        names = names or self.class_names
        if names:  # for matbench.load(…).classify and predictions
            checkpoint["matbench_class_names"] = [str(n) for n in names]
        # Random augmentations draw from these: restoring them makes a resumed run continue
        # exactly as an uninterrupted one would.
        checkpoint["matbench_rng_states"] = _collect_rng_states()
        if self._trainer is not None and self.trainer.state.fn == "fit":
            # every rank dumps the checkpoint (rank 0 writes it): the gather is safe here
            checkpoint["matbench_caches"] = {
                name: pack_entries(gather_entries(store))
                for name, store in self.memory_caches().items()
            }

    def restore_frozen(self, checkpoint: dict[str, Any]) -> None:
        """Put the weights a checkpoint left out (see `frozen_pretrained`) back into its
        ``state_dict`` from this task's own frozen modules, after checking that they are the
        ones the checkpoint was trained with."""
        modules = dict(self.named_modules())
        state = checkpoint.setdefault("state_dict", {})
        for prefix, info in checkpoint.get("matbench_frozen", {}).items():
            module = modules.get(prefix)
            if module is None or state_hash(module) != info["sha256"]:
                raise ConfigError(
                    f"the checkpoint was trained with frozen '{prefix}' weights from "
                    f"'{info['source']}', which it does not store, and this model's differ",
                    hint="build the model with the same weights arguments as the training run "
                    "(the checkpoint's hyperparameters)",
                )
            state.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})

    def checkpoint_state(self, path: str | Path) -> dict[str, Tensor]:
        """The weights of a matbench checkpoint file (or any state-dict file), with the frozen
        weights it left out put back from this task (see `restore_frozen`)."""
        checkpoint = read_checkpoint(path)
        if checkpoint is None:
            return load_state_dict_file(path)
        self.restore_frozen(checkpoint)
        return checkpoint["state_dict"]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.restore_frozen(checkpoint)
        if checkpoint.get("matbench_class_names"):
            self.class_names = list(checkpoint["matbench_class_names"])
        if not self._resuming_fit():
            return
        if "matbench_rng_states" in checkpoint:
            _set_rng_states(checkpoint["matbench_rng_states"])
        for name, packed in checkpoint.get("matbench_caches", {}).items():
            self.restore_memory_cache(name, unpack_entries(packed))

    def _resuming_fit(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.state.fn == "fit"

    # -- Hugging Face Hub conventions ----------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        """``model.safetensors`` (every weight: the folder is self-contained) and
        ``matbench.json`` (task class, class names); the mixin adds ``config.json``."""
        from safetensors.torch import save_model

        from matbench.api import MATBENCH_JSON

        save_model(self, str(save_directory / "model.safetensors"))
        info: dict[str, Any] = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "class_names": self.class_names,
        }
        architecture_files = {}
        for argument, config in self.architecture_configs().items():
            name = f"architecture_{argument}.json"
            (save_directory / name).write_text(json.dumps(config, indent=2) + "\n")
            architecture_files[argument] = name
        if architecture_files:
            info["architecture_files"] = architecture_files
        (save_directory / MATBENCH_JSON).write_text(json.dumps(info, indent=2) + "\n")

    def architecture_configs(self) -> dict[str, dict[str, Any]]:
        """Configurations that `from_pretrained` needs to rebuild this architecture once the
        weights arguments are set to None, by constructor argument: a net whose shape came
        from named weights (e.g. a Hub Mask2Former) would otherwise be rebuilt at its
        default size. `save_pretrained` writes each beside the weights."""
        return {}

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ) -> BaseTask:
        """A task from a `save_pretrained` folder or a Hub repo id: built from its
        ``config.json`` (weights arguments set to None: nothing is downloaded but the repo),
        then its ``model.safetensors`` loaded strictly. ``model_kwargs`` override the config."""
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_model

        from matbench.api import MATBENCH_JSON

        source = str(pretrained_model_name_or_path)

        def fetch(name: str) -> Path:
            if Path(source).is_dir():
                return Path(source) / name
            return Path(
                hf_hub_download(
                    source,
                    name,
                    revision=revision,
                    force_download=force_download,
                    token=token,
                    local_files_only=local_files_only,
                )
            )

        config = json.loads(fetch("config.json").read_text(encoding="utf-8"))
        config = rename_kwargs(cls.__name__, cls.renamed_arguments, config, source)
        params = inspect.signature(cls.__init__).parameters
        kwargs = {k: v for k, v in config.items() if k in params}
        kwargs.update(model_kwargs)
        for name in cls.weight_arguments:
            if name in kwargs:
                kwargs[name] = None  # the saved weights replace them: no download
        info_file = fetch(MATBENCH_JSON)
        info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
        for argument, name in info.get("architecture_files", {}).items():
            if argument in params and argument not in model_kwargs:
                kwargs[argument] = str(fetch(name))
        task = cls(**kwargs)
        load_model(task, str(fetch("model.safetensors")), strict=strict, device=str(map_location))
        task.class_names = info.get("class_names")
        return task.eval()

    # -- evaluation metrics ------------------------------------------------------------------
    def eval_metric(self, stage: str, dataloader_idx: int = 0) -> Metric:
        """The metric of ``stage`` for dataloader ``dataloader_idx``."""
        return self._eval_metrics[f"{stage}_{dataloader_idx}"]

    def log_eval_loss(
        self, stage: str, loss: Tensor, batch_size: int, scored: int | None = None
    ) -> None:
        """Count one evaluation batch's mean loss into ``{stage}/loss``, logged at epoch end as
        the sample-weighted mean over every batch, dataloader and rank. Every rank logs it,
        even one that received no sample, so checkpoints can monitor ``val/loss`` under DDP
        with any validation set size.

        ``scored`` is how many of the ``batch_size`` samples the loss actually scored (the
        mean is over those); an epoch that saw samples but scored none raises
        :class:`~matbench.errors.EvaluationError` instead of logging a meaningless 0."""
        scored = batch_size if scored is None else scored
        sums = self._eval_loss_sums[stage]
        sums[0] += loss.detach().to(sums.dtype) * scored
        sums[1] += scored
        sums[2] += batch_size

    def _num_dataloaders(self, stage: str) -> int:
        loaders = getattr(self.trainer, f"{stage}_dataloaders", None)
        if loaders is None:
            return 1
        return len(loaders) if isinstance(loaders, (list, tuple)) else 1

    def _sync_buffers_for_eval(self) -> None:
        """Under DDP, broadcast buffers (e.g. BatchNorm statistics) from rank 0 once, here,
        where every rank is, and skip DDP's own sync in the first evaluation forward: with
        the unpadded sampler a rank may run fewer batches, or none, and would never join it."""
        ddp = getattr(self._trainer.strategy, "model", None) if self._trainer else None
        if not isinstance(ddp, DistributedDataParallel) or not dist.is_initialized():
            return
        for buffer in ddp.module.buffers():
            dist.broadcast(buffer, src=0)
        ddp.require_forward_param_sync = False

    def _start_eval(self, stage: str) -> None:
        self._sync_buffers_for_eval()
        # (sum of loss × scored samples, scored samples, samples seen)
        self._eval_loss_sums[stage] = torch.zeros(3, dtype=torch.float64, device=self.device)
        for idx in range(self._num_dataloaders(stage)):
            metric = self.build_metric(stage)
            if metric is not None:
                self._eval_metrics[f"{stage}_{idx}"] = metric.to(self.device)

    def _end_eval(self, stage: str) -> None:
        results = []
        n = self._num_dataloaders(stage)
        for idx in range(n):
            key = f"{stage}_{idx}"
            if key not in self._eval_metrics:
                continue
            metric = self._eval_metrics[key]
            values = _to_python(metric.compute())
            metric.reset()
            results.append(values)
            prefix = stage if n == 1 else f"{stage}/{self.dataloader_name(stage, idx)}"
            scalars = {
                f"{prefix}/{k}": float(v)
                for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            # Values are already reduced over all ranks by the metric itself.
            self.log_dict(scalars, sync_dist=False, add_dataloader_idx=False)
        self.results[stage] = results
        self._log_eval_loss(stage)

    def _log_eval_loss(self, stage: str) -> None:
        sums = self._eval_loss_sums.pop(stage, None)
        if sums is None:
            return
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)  # every rank is here, including one without samples
        if sums[2] > 0 and sums[1] == 0:
            # the reduced sums are equal on every rank: all raise together
            raise EvaluationError(
                f"{stage}: none of the {int(sums[2])} {stage} samples could be scored by the "
                f"loss (e.g. no material pixel in any {stage} sample): {stage}/loss would be "
                "meaningless"
            )
        if sums[1] > 0:
            loss = float(sums[0] / sums[1])
            self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=False)
            self.eval_losses[stage] = loss

    def dataloader_name(self, stage: str, idx: int) -> str:
        """Name used in logged keys when a stage has several dataloaders."""
        names = datamodule_dataloader_names(self.trainer.datamodule)
        if names is not None and idx < len(names):
            return str(names[idx])
        return f"dataloader_{idx}"

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")


class EvalSteps:
    """``validation_step`` and ``test_step`` of a task whose evaluation is one
    ``_eval_step(stage, batch, dataloader_idx)`` for both stages (mix in before
    :class:`BaseTask`)."""

    def _eval_step(self, stage: str, batch: Any, dataloader_idx: int) -> Any:
        raise NotImplementedError

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self._eval_step("test", batch, dataloader_idx)


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """A Lightning checkpoint's dict (``state_dict``, ``hyper_parameters``, matbench's keys),
    or None when the file is not one (e.g. a bare state dict)."""
    try:
        checkpoint = torch.load(weights_file(str(path)), map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError):
        return None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        return checkpoint
    return None


def stores_frozen_weights_elsewhere(path: str | Path) -> bool:
    """True when a checkpoint left frozen pretrained weights out (to be rebuilt from their
    source): the model it is loaded into must be built with the same weights arguments."""
    checkpoint = read_checkpoint(path)
    return bool(checkpoint and checkpoint.get("matbench_frozen"))


def pretrained_unless_replaced(pretrained: str | None, checkpoint: str | None) -> str | None:
    """The pretrained weights to build a model with when ``checkpoint``'s weights will be
    loaded into it: None (nothing to fetch) when the checkpoint replaces them all, else
    ``pretrained`` (no checkpoint, or one that left frozen pretrained towers out)."""
    if checkpoint and not stores_frozen_weights_elsewhere(checkpoint):
        return None
    return pretrained


def _is_default_checkpoint(callback: ModelCheckpoint) -> bool:
    """True for the `ModelCheckpoint()` Lightning adds when the user configured none."""
    return (
        callback.monitor is None
        and callback.dirpath is None
        and callback.filename is None
        and callback.save_last is None
        and callback.save_top_k == 1
    )


def warmup_steps(warmup: float, total: int) -> int:
    """``warmup`` as steps: a fraction of ``total`` when below 1, else a step count."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    return int(round(warmup * total)) if warmup < 1 else int(warmup)


class LRFactor:
    """The `lr_lambda` factor of a run whose length is set later (`resolve`, at train start);
    1 until then. A plain object, so ``LambdaLR`` keeps its state in checkpoints.

    Args:
        schedule: ``cosine`` or ``constant``.
        warmup: A fraction of the run's steps (< 1) or a number of steps.
    """

    def __init__(self, schedule: str, warmup: float) -> None:
        lr_lambda(schedule, 0, 0)  # check the name now
        warmup_steps(warmup, 0)
        self.schedule = schedule
        self.warmup = warmup
        self.total: int | None = None

    def resolve(self, total: int) -> None:
        self.total = total

    def __call__(self, step: int) -> float:
        if self.total is None:
            return 1.0
        return lr_lambda(self.schedule, warmup_steps(self.warmup, self.total), self.total)(step)


def lr_lambda(schedule: str, warmup: int, total: int) -> Any:
    """The factor of the base learning rate at each step (``LambdaLR``): linear warmup from
    ``1 / warmup`` to 1 over ``warmup`` steps (open_clip's ``_warmup_lr``), then ``constant``
    or ``cosine`` decay to 0 at step ``total`` (open_clip's ``cosine_lr``)."""
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got '{schedule}'")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant" or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _collect_rng_states() -> dict[str, Any]:
    """torch, numpy and Python RNG states, as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global RNG)
    return {
        "torch": torch.get_rng_state(),
        "numpy": (
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "python": random.getstate(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def _to_python(value: Any) -> Any:
    """Tensors → floats/lists, recursively, NaN kept as float('nan')."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        return value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, dict):
        return {str(k): _to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return float("nan")
    return value
