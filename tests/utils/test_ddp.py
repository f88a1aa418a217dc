"""Under DDP every validation/test sample is counted exactly once (no padding duplicates)."""

from __future__ import annotations

import lightning as L
import pytest

from tests.core.toy import ToyDataModule, ToyTask


def _trainer(devices: int, tmp_path, **kwargs) -> L.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


@pytest.mark.ddp
@pytest.mark.parametrize("num_samples", [11, 1])  # odd; and one rank gets nothing
def test_test_metrics_equal_single_process(tmp_path, num_samples: int) -> None:
    L.seed_everything(0)
    single = _trainer(1, tmp_path)
    single.test(ToyTask(), ToyDataModule(num_samples=num_samples, batch_size=2))
    expected = {k: float(v) for k, v in single.callback_metrics.items() if k != "test/loss"}

    L.seed_everything(0)
    ddp = _trainer(2, tmp_path)
    ddp.test(ToyTask(), ToyDataModule(num_samples=num_samples, batch_size=2))
    got = {k: float(v) for k, v in ddp.callback_metrics.items() if k != "test/loss"}

    assert expected["test/count"] == num_samples
    assert expected["test/index_sum"] == sum(range(num_samples))
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.ddp
def test_fit_with_a_rank_without_validation_samples(tmp_path) -> None:
    """One validation sample on two ranks: the monitored val/loss is still logged on every rank
    (the checkpoint needs it) and equals the single-process value. With one training sample
    each rank trains on it, so DDP trains exactly like one process."""
    runs = {}
    for devices in (1, 2):
        L.seed_everything(0)
        root = tmp_path / str(devices)
        trainer = _trainer(devices, root, max_epochs=1, enable_checkpointing=True)
        trainer.fit(ToyTask(), ToyDataModule(num_samples=1, batch_size=2))
        runs[devices] = float(trainer.callback_metrics["val/loss"])
        assert list(root.rglob("*.ckpt")), "no checkpoint written"
    assert runs[2] == pytest.approx(runs[1], abs=1e-6)


@pytest.mark.ddp
@pytest.mark.parametrize("num_samples", [1, 5])
def test_val_loss_is_the_mean_over_all_samples(tmp_path, num_samples: int) -> None:
    """val/loss is weighted by samples across ranks of unequal size (batch_size 2: rank 0
    holds 3 of 5 samples in 2 batches, rank 1 holds 2 in 1)."""
    runs = {}
    for devices in (1, 2):
        L.seed_everything(0)
        trainer = _trainer(devices, tmp_path)
        trainer.validate(ToyTask(), ToyDataModule(num_samples=num_samples, batch_size=2))
        runs[devices] = float(trainer.callback_metrics["val/loss"])
    assert runs[2] == pytest.approx(runs[1], abs=1e-6)
