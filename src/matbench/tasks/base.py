"""The base class of every matbench task."""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import Metric

from matbench.cache import gather_entries, pack_entries, unpack_entries
from matbench.errors import EvaluationError


class BaseTask(L.LightningModule, ABC):
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

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__} has no trainable parameters")
        lr = float(self.hparams.get("lr", 1e-4))
        optimizer = torch.optim.AdamW(
            params, lr=lr, weight_decay=float(self.hparams.get("weight_decay", 0.01))
        )
        return optimizer

    def protocol(self) -> dict[str, Any]:
        """How this run evaluated, beyond the hyperparameters (e.g. the temperature actually
        used, the prompts of a zero-shot classifier): the results JSON's ``protocol``."""
        return {}

    def configure_callbacks(self) -> list[L.Callback]:
        return [ModelCheckpoint(monitor=self.monitor, mode=self.mode, save_last=True)]

    @property
    def model_name(self) -> str:
        """Short model name for results tables (the ``model`` hyperparameter when there is one)."""
        for key in ("model", "backbone", "encoder"):
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Random augmentations draw from these: restoring them makes a resumed run continue
        # exactly as an uninterrupted one would.
        checkpoint["matbench_rng_states"] = _collect_rng_states()
        if self._trainer is not None and self.trainer.state.fn == "fit":
            # every rank dumps the checkpoint (rank 0 writes it): the gather is safe here
            checkpoint["matbench_caches"] = {
                name: pack_entries(gather_entries(store))
                for name, store in self.memory_caches().items()
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self._resuming_fit():
            return
        if "matbench_rng_states" in checkpoint:
            _set_rng_states(checkpoint["matbench_rng_states"])
        for name, packed in checkpoint.get("matbench_caches", {}).items():
            self.restore_memory_cache(name, unpack_entries(packed))

    def _resuming_fit(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.state.fn == "fit"

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

    def dataloader_name(self, stage: str, idx: int) -> str:
        """Name used in logged keys when a stage has several dataloaders."""
        names = getattr(self.trainer.datamodule, "dataloader_names", None)
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
