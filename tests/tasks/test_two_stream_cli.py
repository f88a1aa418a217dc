"""configs/two_stream/*.yaml end to end through the real CLI: fit → test → predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from matbench.cli import main
from tests.data.dms.data import make as make_dms
from tests.data.fmd.data import make as make_fmd
from tests.golden.cases import TINY_TWO_STREAM

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "two_stream"
TINY = TINY_TWO_STREAM


def run(tmp_path: Path, config: str, root: Path, *args: str):
    return main(
        [
            *args[:1],
            "--config",
            str(CONFIGS / config),
            "--data.root",
            str(root),
            *TINY,
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "logs"),
            *args[1:],
        ]
    )


@pytest.mark.parametrize(
    ("config", "num_classes", "extra"),
    [
        ("fmd.yaml", 10, ["--model.streams=vision"]),
        ("dms.yaml", 46, ["--data.min_pixels=50", "--model.cache_dir={tmp}/cache"]),
    ],
)
def test_fit_test_predict(
    config: str,
    num_classes: int,
    extra: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    if config == "fmd.yaml":
        root = make_fmd(tmp_path / "fmd", per_class=4)
    else:
        root = make_dms(tmp_path / "DMS_v1", per_split=2)
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    run(
        tmp_path,
        config,
        root,
        "fit",
        *extra,
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1",
        "--run_name=r",
    )
    version = tmp_path / "logs" / "two_stream" / Path(config).stem / "r"
    saved = yaml.safe_load((version / "config.yaml").read_text())
    assert saved["model"]["init_args"]["num_classes"] == num_classes
    assert saved["model"]["init_args"]["lr"] == 5e-5
    ckpt = version / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    if config == "fmd.yaml":
        split = json.loads((version / "fmd_split.json").read_text())
        assert split["settings"]["seed"] == 0 and len(split["splits"]["test"]) == 20
    else:
        assert list((tmp_path / "cache").rglob("*.pt"))  # the disk cache of dms.yaml

    results = tmp_path / "results"
    cli = run(
        tmp_path,
        config,
        root,
        "test",
        *extra,
        "--ckpt_path",
        str(ckpt),
        "--results_dir",
        str(results),
    )
    records = [json.loads(p.read_text()) for p in results.glob("*.json")]
    assert len(records) == 1
    metrics = records[0]["metrics"]
    assert records[0]["task"] == "TwoStreamTask"
    for key in ("accuracy", "mean_class_accuracy", "per_class_accuracy", "confusion_matrix"):
        assert key in metrics
    matrix = torch.tensor(metrics["confusion_matrix"])
    assert matrix.shape == (num_classes, num_classes)
    assert int(matrix.sum()) == len(cli.datamodule.test_dataset)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    png = Path(metrics["confusion_matrix_png"])
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"

    cli = run(tmp_path, config, root, "predict", *extra, "--ckpt_path", str(ckpt))
    batches = cli.trainer.predict_loop.predictions
    keys = [k for b in batches for k in b["key"]]
    assert len(keys) == len(cli.datamodule.predict_dataset)
    probs = torch.cat([b["probs"] for b in batches])
    assert probs.shape == (len(keys), num_classes)
    assert torch.allclose(probs.sum(1), torch.ones(len(keys)), atol=1e-5)
    # and written next to the run: one row per sample, the class name first
    rows = (version / "predict" / "predictions.csv").read_text().splitlines()
    assert len(rows) == len(keys) + 1 and rows[0].startswith("key,prediction,probability,")
