"""Every shipped experiment config instantiates: task, datamodule and trainer.

The architectures are the configs' own; only pretrained weights are switched to random init,
as the model hubs are out of reach in tests (the end-to-end tests of each task run the configs
with tiny models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from matbench.datamodules.base import BaseDataModule
from matbench.lightning_cli import run
from matbench.tasks.base import BaseTask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: Trainer-only fragments, composed with an experiment config (tested in test_multinode.py).
FRAGMENTS = {"multinode/ddp_2nodes.yaml"}
WEIGHT_KEYS = ("pretrained", "weights", "encoder_weights", "fusion_pretrained")
EXPERIMENTS = sorted(
    str(p.relative_to(CONFIGS))
    for p in CONFIGS.rglob("*.yaml")
    if str(p.relative_to(CONFIGS)) not in FRAGMENTS
)


def test_every_config_is_listed() -> None:
    assert len(EXPERIMENTS) >= 10
    for sub in ("clip", "matseg", "two_stream"):
        assert any(e.startswith(sub + "/") for e in EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_config_instantiates(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((CONFIGS / name).read_text())
    model_args = config["model"].get("init_args", {})
    offline = [f"--model.init_args.{k}=null" for k in WEIGHT_KEYS if model_args.get(k)]
    cli = run(["--config", str(CONFIGS / name), *offline], run_subcommand=False)
    assert isinstance(cli.model, BaseTask)
    assert isinstance(cli.datamodule, BaseDataModule)
    assert type(cli.model).__name__ == config["model"]["class_path"].rsplit(".", 1)[-1]
    for key, value in model_args.items():
        if key not in WEIGHT_KEYS:
            assert cli.model.hparams[key] == value, key
