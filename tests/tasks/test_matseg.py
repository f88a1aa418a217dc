"""MatSegTask end to end through the real CLI: fit → test → predict, and the baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from matbench.cli import main
from tests.data.matseg.data import make

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "matseg"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("matseg"))


def _fit_args(data_root: Path, tmp_path: Path) -> list[str]:
    return [
        "--config",
        str(CONFIGS / "train.yaml"),
        "--model.backbone=tu-test_convnext",
        "--model.descriptor_dim=8",
        f"--data.root={data_root / 'scenes'}",
        f"--data.benchmark_root={data_root / 'benchmark'}",
        "--data.min_size=32",
        "--data.max_size=48",
        "--data.val_size=32",
        "--data.batch_size=2",
        "--data.num_workers=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--model.predict_dir={tmp_path / 'pred'}",
    ]


def test_fit_test_predict(data_root: Path, tmp_path: Path) -> None:
    args = _fit_args(data_root, tmp_path)
    main(["fit", *args, "--trainer.fast_dev_run=1"])
    cli = main(["fit", *args, "--trainer.max_steps=2", "--trainer.val_check_interval=2"])
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    assert ckpt.is_file()
    results = tmp_path / "results"
    cli = main(["test", *args, f"--ckpt_path={ckpt}", f"--results_dir={results}"])
    metrics = cli.model.results["test"][0]
    assert metrics["all_num_images"] == 2 and metrics["all_num_skipped"] == 1  # c: one group
    assert 0 <= metrics["all_by_point"] <= 1 and 0 <= metrics["soft_by_point"] <= 1
    record = json.loads(next(results.glob("*.json")).read_text())
    assert record["checkpoint"] == str(ckpt) and record["model_name"] == "unet"
    assert record["data"]["split"] == "benchmark"

    main(["predict", *args, f"--ckpt_path={ckpt}", "--model.predict_output=both"])
    files = sorted((tmp_path / "pred").glob("*.npz"))
    assert [f.stem for f in files] == ["a", "b", "c"]
    with np.load(files[1]) as npz:
        assert npz["descriptors"].shape == (8, 20, 60)
        assert npz["point_descriptors"].shape == (5, 8)
        assert npz["similarity"].shape == (5, 5)
        assert np.allclose(np.linalg.norm(npz["point_descriptors"], axis=1), 1, atol=1e-4)


@pytest.mark.parametrize("baseline", ["rgb", "random"])
def test_baseline_test_without_checkpoint(data_root: Path, tmp_path: Path, baseline: str) -> None:
    results = tmp_path / "results"
    cli = main(
        [
            "test",
            "--config",
            str(CONFIGS / f"{baseline}_baseline.yaml"),
            f"--data.root={data_root / 'benchmark'}",
            f"--results_dir={results}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    metrics = cli.model.results["test"][0]
    assert metrics["all_num_images"] == 2 and metrics["soft_num_images"] == 2
    for key in ("all_by_point", "all_by_material", "soft_by_point", "soft_by_material"):
        assert math.isfinite(metrics[key]) and 0 <= metrics[key] <= 1
    if baseline == "rgb":
        # The fake images are red on the left and blue on the right, and so are the groups
        # (but for b's group 3 on the border), so colour orders most triplets right.
        assert metrics["all_by_point"] > 0.75
    record = json.loads(next(results.glob("*.json")).read_text())
    assert record["checkpoint"] is None and record["model_name"] == baseline


def test_baselines_refuse_to_train(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no weights to train"):
        main(
            [
                "fit",
                *_fit_args(data_root, tmp_path),
                "--model.model=rgb",
                "--trainer.fast_dev_run=1",
            ]
        )
