"""Fit, stop after one epoch, resume from last.ckpt: equal to an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from matbench.callbacks import BestAndLastCheckpoint
from matbench.cli import main

TOY = Path(__file__).with_name("toy.yaml")


def _fit(root: Path, epochs: int, *extra: str) -> Path:
    main(
        [
            "fit", "--config", str(TOY),
            "--trainer.max_epochs", str(epochs),
            "--trainer.logger.init_args.save_dir", str(root),
            "--data.init_args.num_samples", "24",
            *extra,
        ]
    )  # fmt: skip
    (last,) = root.glob("**/checkpoints/last.ckpt")
    return last


# noise 0.5: random augmentation in the data; group 3: GroupedSampler batches; whole: batches
# cut between "images" (ImageBatchSampler)
@pytest.mark.parametrize(
    ("noise", "group", "whole"),
    [("0.0", "1", "false"), ("0.5", "1", "false"), ("0.5", "3", "false"), ("0.5", "5", "true")],
)
def test_resume_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noise: str, group: str, whole: str
) -> None:
    monkeypatch.chdir(tmp_path)
    aug = ("--data.init_args.noise", noise, "--data.init_args.group", group)
    aug += ("--data.init_args.image_batches", whole)
    straight = torch.load(_fit(tmp_path / "a", 3, *aug), weights_only=True)
    first = _fit(tmp_path / "b", 1, *aug)
    # resuming continues in the run that wrote the checkpoint
    resumed = _fit(tmp_path / "b", 3, *aug, "--ckpt_path", str(first))
    resumed = torch.load(resumed, weights_only=True)
    assert (
        resumed["epoch"] == straight["epoch"] and resumed["global_step"] == straight["global_step"]
    )
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


class _WorseEachEpoch(L.LightningModule):
    """Validation loss 1, 2, 3, …: only the first epoch is the best."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.weight - batch).pow(2).mean()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", float(self.current_epoch + 1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("on_train_epoch_end", [False, True])
def test_last_checkpoint_is_the_last_state_when_validation_gets_worse(
    tmp_path: Path, on_train_epoch_end: bool
) -> None:
    # Lightning 2.6's ModelCheckpoint refreshes last.ckpt only when a top-k file is saved at
    # the same step: a resume from last.ckpt would go back to the best epoch.
    checkpoint = BestAndLastCheckpoint(
        dirpath=tmp_path,
        monitor="val/loss",
        save_last=True,
        save_on_train_epoch_end=on_train_epoch_end,
    )
    loader = torch.utils.data.DataLoader(torch.ones(4, 1), batch_size=2)
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(_WorseEachEpoch(), loader, loader)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    best = torch.load(checkpoint.best_model_path, weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 6)
    assert (best["epoch"], best["global_step"]) == (0, 2)


def test_tasks_checkpoint_best_and_last() -> None:
    from tests.core.toy import ToyTask

    task = ToyTask()
    task._trainer = L.Trainer(max_epochs=1, logger=False, accelerator="cpu")
    task._trainer.state.fn = "fit"
    (checkpoint,) = [c for c in task.configure_callbacks() if isinstance(c, ModelCheckpoint)]
    assert isinstance(checkpoint, BestAndLastCheckpoint) and checkpoint.save_last
