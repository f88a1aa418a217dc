"""Every shipped experiment config instantiates: task, datamodule and trainer.

The architectures are the configs' own; only pretrained weights are switched to random init,
as the model hubs are out of reach in tests (the end-to-end tests of each task run the configs
with tiny models)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import yaml

from matbench.datamodules.base import BaseDataModule
from matbench.lightning_cli import run
from matbench.tasks.base import BaseTask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: Trainer-only fragments, composed with an experiment config (tested in test_multinode.py).
FRAGMENTS = {"multinode/ddp_2nodes.yaml"}
WEIGHT_KEYS = ("weights", "backbone_weights", "fusion_weights", "text_weights")
EXPERIMENTS = sorted(
    str(p.relative_to(CONFIGS))
    for p in CONFIGS.rglob("*.yaml")
    if str(p.relative_to(CONFIGS)) not in FRAGMENTS and p.parent.name not in ("suite", "fast")
)
#: Overlays that shrink a run to a CPU smoke test: (overlay, the experiment it goes after).
FAST = {
    "fast/two_stream.yaml": "two_stream/fmd.yaml",
    "fast/matseg.yaml": "matseg/train.yaml",
    "fast/clip.yaml": "clip/lvis_materials.yaml",
}
SUITES = sorted(CONFIGS.glob("suite/*.yaml"))
#: Full-size SAM, MatSeg-release and Materialistic nets (~100M parameters each) are built on the
#: meta device: every module and shape of the architecture, without the memory and init time.
META = ("matseg/sam_", "matseg/official", "matseg/materialistic", "region_iou/")


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
    device = torch.device("meta") if name.startswith(META) else contextlib.nullcontext()
    with device:
        cli = run(["--config", str(CONFIGS / name), *offline], run_subcommand=False)
    assert isinstance(cli.model, BaseTask)
    assert isinstance(cli.datamodule, BaseDataModule)
    assert type(cli.model).__name__ == config["model"]["class_path"].rsplit(".", 1)[-1]
    for key, value in model_args.items():
        if key not in WEIGHT_KEYS:
            assert cli.model.hparams[key] == value, key


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_suite_files_resolve(path: Path) -> None:
    """Suite files name existing experiment configs and only variables they define."""
    from matbench.benchmark import load_suite

    suite = load_suite(path, {})
    assert suite["runs"]
    for run_ in suite["runs"]:
        assert Path(run_["config"]).is_file()
        assert not any("{" in o for o in run_["overrides"])


def test_fmd_dms_matseg_suite_covers_the_three_benchmarks() -> None:
    from matbench.benchmark import load_suite

    suite = load_suite(CONFIGS / "suite" / "fmd_dms_matseg.yaml", {"fmd": "/x/fmd"})
    configs = " ".join(r["config"] for r in suite["runs"])
    assert "zeroshot_fmd" in configs and "zeroshot_dms" in configs and "matseg" in configs
    assert suite["runs"][0]["overrides"] == ["--data.root", "/x/fmd"]


def test_configs_do_not_point_outside_the_project() -> None:
    """Data roots of shipped configs are the documented data/… defaults, not paths that only a
    developer machine has (../shared/…)."""
    for path in CONFIGS.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if "root:" in line and not line.lstrip().startswith("#"):
                assert "../" not in line, f"{path}: {line.strip()} points outside the project"
        assert "shared/" not in path.read_text(), f"{path} points at a developer's folder"


@pytest.mark.parametrize("overlay", sorted(FAST))
def test_fast_overlays(overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each task's fast overlay composes with its experiment into a tiny, step-limited run
    that logs every step."""
    monkeypatch.chdir(CONFIGS.parent)  # the CLIP overlay names its model file from the root
    configs = ["--config", str(CONFIGS / FAST[overlay]), "--config", str(CONFIGS / overlay)]
    cli = run(configs, run_subcommand=False)
    assert cli.trainer.max_steps <= 50 and cli.trainer.log_every_n_steps == 1
    assert sum(p.numel() for p in cli.model.parameters() if p.requires_grad) < 2_000_000
    assert all(cli.model.hparams.get(k) is None for k in WEIGHT_KEYS)
