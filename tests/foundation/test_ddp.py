"""Under DDP every validation/test sample is counted exactly once (no padding duplicates)."""

from __future__ import annotations

import lightning as L
import pytest

from tests.foundation.toy import ToyDataModule, ToyTask


def _trainer(devices: int, tmp_path) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
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
