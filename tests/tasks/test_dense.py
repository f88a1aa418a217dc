"""DenseMaterialTask end to end through the real CLI on fake DMS, and its inference paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matbench.cli import main
from matbench.datasets.dms import DMS46_INDICES, dms46_lut
from matbench.errors import ConfigError
from matbench.models.segmentation import Segmenter, resized_scores, sliding_scores
from matbench.tasks.dense import DenseMaterialTask
from tests.data.dms.data import make
from tests.metrics import reference
from tests.models.tiny_dense import write_mask2former_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dense"


@pytest.fixture(scope="module")
def dms_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("dms") / "DMS_v1", per_split=3, size=(70, 50))


def _args(config: str, root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(CONFIGS / config),
        f"--data.root={root}",
        "--data.image_size=32",
        "--data.batch_size=2",
        "--data.num_workers=0",
        "--model.weights=null",
        "--model.inference_size=48",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
        f"--model.predict_dir={tmp_path / 'pred'}",
        *extra,
    ]


def test_deeplab_fit_test_predict(dms_root: Path, tmp_path: Path) -> None:
    args = _args("dms_resnet50.yaml", dms_root, tmp_path, "--model.backbone=tu-test_resnet")
    cli = main(["fit", *args, "--trainer.max_steps=2", "--trainer.limit_val_batches=1"])
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    results = tmp_path / "results"
    cli = main(["test", *args, f"--ckpt_path={ckpt}", f"--results_dir={results}"])
    metrics = cli.model.results["test"][0]
    record = json.loads(next(results.glob("*.json")).read_text())
    assert record["protocol"]["inference"] == "resize"
    assert record["data"]["split"] == "validation"

    main(["predict", *args, f"--ckpt_path={ckpt}"])
    files = sorted((tmp_path / "pred" / "validation").glob("*.png"))
    assert len(files) == 3
    # The written maps are DMS taxonomy indices at the label maps' own size: scoring them
    # with a plain loop against the label maps gives the test metrics.
    lut = dms46_lut()
    preds, targets = [], []
    for path in files:
        predicted = np.asarray(Image.open(path))
        assert predicted.shape == (50, 70) and set(np.unique(predicted)) <= set(DMS46_INDICES)
        target = np.asarray(Image.open(dms_root / "labels" / "validation" / path.name))
        preds.append(torch.from_numpy(lut[predicted].astype(np.int64))[None])
        targets.append(torch.from_numpy(lut[target].astype(np.int64))[None])
    expected = reference.segmentation(preds, targets, 46)
    for key in ("pixel_accuracy", "mean_class_accuracy", "miou"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key
    assert metrics["dms_script"]["miou"] == pytest.approx(expected["miou"], abs=1e-6)


def test_mask2former_fit_and_sliding_test(dms_root: Path, tmp_path: Path) -> None:
    config = write_mask2former_config(tmp_path / "m2f.json")
    args = _args("dms_mask2former.yaml", dms_root, tmp_path, f"--model.config={config}")
    main(["fit", *args, "--trainer.fast_dev_run=1"])
    # The shorter side scaled to 64, 64 px windows every 32 px: two windows per image.
    slide = ["--model.inference=slide", "--model.inference_size=64", "--model.window=64"]
    cli = main(["test", *args, *slide, "--model.stride=32"])
    metrics = cli.model.results["test"][0]
    assert 0 <= metrics["pixel_accuracy"] <= 1 and len(metrics["per_class_iou"]) == 46


class _Colours(Segmenter):
    """Scores = the image's own channels: any inference must give back the image."""

    size_divisor = 8

    def scores(self, image: torch.Tensor) -> torch.Tensor:
        assert image.shape[-2] % 8 == 0 and image.shape[-1] % 8 == 0
        return image


def test_sliding_windows_cover_and_average() -> None:
    image = torch.rand(1, 3, 40, 60)
    out = sliding_scores(_Colours(), image, size=40, window=24, stride=10)
    assert out.shape == image.shape and torch.allclose(out, image, atol=1e-6)
    out = resized_scores(_Colours(), image, size=60)
    assert torch.allclose(out, image, atol=1e-6)
    with pytest.raises(ConfigError, match="stride"):
        sliding_scores(_Colours(), image, size=40, window=8, stride=9)


def test_bad_settings(dms_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args("dms_resnet50.yaml", dms_root, tmp_path, "--model.backbone=tu-test_resnet")
    with pytest.raises(SystemExit):
        main(["fit", *args, "--data.image_size=null", "--trainer.fast_dev_run=1"])
    assert "trains on batches of one size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["test", *args, "--model.num_classes=10"])
    assert "num_classes=10 but the label maps of DMSDataModule" in capsys.readouterr().err


def test_label_map_outside_dms(tmp_path: Path) -> None:
    from matbench.datasets.dms import DMS
    from matbench.errors import DatasetFormatError

    root = make(tmp_path / "DMS_v1", per_split=1, size=(16, 12))
    (label,) = (root / "labels" / "validation").glob("*.png")
    array = np.asarray(Image.open(label)).copy()
    array[0, 0] = 60
    Image.fromarray(array).save(label)
    with pytest.raises(DatasetFormatError, match=rf"{label.name}: label value 60 is not a DMS"):
        DMS(root, split="validation", mode="dense", index_cache=None)[0]


def test_save_pretrained_keeps_the_architecture_of_named_weights(tmp_path: Path) -> None:
    """A Mask2Former built from weights (a Hub name or folder) takes its shape from their
    config; from_pretrained drops the weights argument (nothing is downloaded), so the saved
    folder must carry that config or the net is rebuilt at the default size."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    config = Mask2FormerConfig.from_json_file(str(write_mask2former_config(tmp_path / "m.json")))
    Mask2FormerForUniversalSegmentation(config).save_pretrained(tmp_path / "hub_weights")
    task = DenseMaterialTask(model="mask2former", weights=str(tmp_path / "hub_weights"))
    task.save_pretrained(tmp_path / "saved")
    (tmp_path / "hub_weights" / "model.safetensors").unlink()  # as if the hub were gone

    loaded = DenseMaterialTask.from_pretrained(tmp_path / "saved")
    for (name, a), (_, b) in zip(
        task.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
