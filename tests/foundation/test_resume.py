"""Fit, stop after one epoch, resume from last.ckpt: equal to an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


# noise 0.5: random augmentation in the data; group 3: GroupedSampler batches
@pytest.mark.parametrize(("noise", "group"), [("0.0", "1"), ("0.5", "1"), ("0.5", "3")])
def test_resume_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noise: str, group: str
) -> None:
    monkeypatch.chdir(tmp_path)
    aug = ("--data.init_args.noise", noise, "--data.init_args.group", group)
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
