"""Small Lightning callbacks of matbench runs."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar


class ShortRunLogging(Callback):
    """Logs training curves of runs shorter than ``log_every_n_steps`` (a few steps of a
    smoke test) by lowering the interval to the run's length."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        limits = [trainer.log_every_n_steps]
        if isinstance(trainer.num_training_batches, int):
            limits.append(trainer.num_training_batches)
        if trainer.max_steps and trainer.max_steps > 0:
            limits.append(trainer.max_steps)
        trainer.log_every_n_steps = max(1, min(limits))


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the state at every save point.

    Lightning 2.6 refreshes ``last.ckpt`` only at steps where a top-k file was saved too, so
    after a validation that is not better than the best, ``last.ckpt`` still held the best
    (older) state and a resume from it silently went back in time.
    """

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: Trainer) -> None:
        # Skips sanity checks, fast_dev_run, non-fit stages and a step already saved.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class DemoProgress(Callback):
    """Prints the training loss every ``every`` steps (the demo runs without a progress bar).

    Args:
        every: Steps between two lines.
    """

    def __init__(self, every: int = 25) -> None:
        self.every = every
        self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            loss = trainer.callback_metrics.get("train/loss")
            value = f"{float(loss):.3f}" if loss is not None else "?"
            print(
                f"[demo]   step {step}/{trainer.max_steps}  loss {value}  "
                f"{time.perf_counter() - self.start:.0f} s",
                flush=True,
            )


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, without the ``Epoch 1/-2`` of runs limited by steps
    (``max_epochs=-1``): it shows ``Epoch 1``."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
