"""Every trained task: fit, stop after one epoch, resume from last.ckpt — the weights equal
those of an uninterrupted run with the same seed (augmentations included)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.golden.cases import CASES, common_args, fit_case

EPOCHS = (
    "--trainer.max_steps=-1",
    "--trainer.limit_train_batches=2",
    "--trainer.val_check_interval=2",
    "--trainer.deterministic=true",
)


@pytest.mark.slow
# Two-stream trains with dropout (global RNG) and a memory feature cache, CLIP with cached
# MiniLM caption embeddings: both are carried by the checkpoint. MatSeg crops at random.
@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.fit])
def test_resume_equals_uninterrupted(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    common = common_args(case, tmp_path)
    (straight,) = fit_case(case, tmp_path / "straight", common, *EPOCHS, "--trainer.max_epochs=2")
    (first,) = fit_case(case, tmp_path / "first", common, *EPOCHS, "--trainer.max_epochs=1")
    (resumed,) = fit_case(
        case, tmp_path / "resumed", common, *EPOCHS, "--trainer.max_epochs=2", first
    )
    a = torch.load(straight.split("=", 1)[1], weights_only=True)
    b = torch.load(resumed.split("=", 1)[1], weights_only=True)
    assert a["global_step"] == b["global_step"] > 0
    for key, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][key], value), f"{name}: {key} differs after resume"
