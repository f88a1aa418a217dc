"""End to end through the real CLI on fake LVIS-materials: fit -> test -> predict ->
embed-text with the tiny open_clip config and the offline MiniLM text tower; fusion,
re-projection and SigLIP runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from matbench.cli import main
from tests.data.lvis_materials.data import make

TINY = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")
CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "clip" / "lvis_materials.yaml")


def _common(root: Path, *extra: str) -> list[str]:
    return [
        "--config",
        CONFIG,
        f"--model.model={TINY}",
        "--model.weights=null",
        f"--data.root={root}",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--trainer.default_root_dir=out",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


@pytest.mark.slow
def test_fit_test_predict_embed_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    root = make(tmp_path / "lvis")
    common = _common(root)
    main(
        [
            "fit",
            *common,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=3",
            "--model.lr=1e-3",
        ]
    )
    (ckpt,) = sorted(Path("logs").glob("clip/lvis_materials/*/checkpoints/last.ckpt"))
    # TensorBoard shows sample validation crops and their captions
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ckpt.parent.parent), size_guidance={"images": 0})
    events.Reload()
    assert "val/sample_crops" in events.Tags()["images"]
    assert "val/sample_captions/text_summary" in events.Tags()["tensors"]
    split = json.loads((ckpt.parents[1] / "lvis_materials_split.json").read_text())
    assert split["settings"]["split_seed"] == 0 and len(split["splits"]["test"]) == 1
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["text_tower"] == "minilm"
    assert "model.text.proj.weight" in state["state_dict"]

    main(["test", *common, f"--ckpt_path={ckpt}", "--results_dir=results"])
    (result,) = sorted(Path("results").glob("*ClipMaterialTask*.json"))
    record = json.loads(result.read_text())
    metrics = record["metrics"]
    for protocol in ("g64", "all"):
        for key in ("mcs", "mrr", "recall@1", "recall@5", "recall@10"):
            assert f"{protocol}_{key}" in metrics
        assert 0.0 < metrics[f"{protocol}_mrr"] <= 1.0
        assert metrics[f"{protocol}_recall@5"] == 1.0  # 4 materials: always within 5
    assert record["data"]["split"] == "test" and len(record["data"]["split_sha256"]) == 64
    protocol = record["protocol"]  # the config's explicit temperature, then learned
    assert protocol["temperature_source"] == "config"
    assert protocol["initial_temperature"] == pytest.approx(0.07)
    assert protocol["temperature"] != pytest.approx(0.07)

    main(["predict", *common, f"--ckpt_path={ckpt}"])
    # in the run's log folder, beside the other predict outputs
    data = np.load(ckpt.parents[1] / "predict" / "embeddings.npz", allow_pickle=False)
    n = len(data["keys"])  # the test split: objects of one of the 4 validation images
    assert 2 <= n <= 3 and data["embeddings"].shape == (n, 32)
    assert data["index"].tolist() == list(range(n))
    assert set(data["keys"].tolist()) <= {str(k) for k in range(500, 510)}
    assert np.allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, atol=1e-5)

    # The config names the 224 px ViT-B-32: point embed-text at a config with the tiny model.
    tiny_config = tmp_path / "tiny.yaml"
    tiny_config.write_text(
        "model:\n  class_path: matbench.tasks.ClipMaterialTask\n  init_args:\n"
        f"    model: {TINY}\n    text_tower: minilm\n"
    )
    assert (
        main(
            [
                "embed-text",
                "wood",
                "brushed steel",
                "--config",
                str(tiny_config),
                f"--ckpt={ckpt}",
                "--out",
                "text.npz",
            ]
        )
        == 0
    )
    saved = np.load("text.npz")
    assert saved["embeddings"].shape == (2, 32) and saved["texts"].tolist() == [
        "wood",
        "brushed steel",
    ]
    # The same query from the checkpoint alone (hyperparameters saved in it), printed.
    capsys.readouterr()
    assert main(["embed-text", "wood", f"--ckpt={ckpt}"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["text"] == "wood"
    assert np.allclose(line["embedding"], saved["embeddings"][0], atol=1e-5)

    # Zero-shot with the fine-tuned weights: the same text embeddings.
    from matbench.tasks.clip import ZeroShotTask

    zero_shot = ZeroShotTask(
        model=TINY, text_tower="minilm", checkpoint=str(ckpt), templates="name"
    )
    assert np.allclose(zero_shot.embed_text(["wood"])[0].numpy(), saved["embeddings"][0], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        [
            "--model.fusion=true",
            "--model.fusion_backbone=test_vit",
            "--model.fusion_heads=4",
            "--model.fusion_weights=null",
            "--data.context_size=32",
            "--model.text_tower=open_clip",
        ],
        ["--model.reproject=true", "--model.text_tower=open_clip", "--model.loss=siglip"],
    ],
    ids=["fusion", "reproject-siglip"],
)
def test_fusion_and_reprojection_runs(
    extra: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = make(tmp_path / "lvis", num_train=4, num_val=2)
    main(["fit", *_common(root, *extra), "--trainer.fast_dev_run=1"])


def test_embed_text_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["embed-text", "wood"])
    assert "--config and/or --ckpt" in capsys.readouterr().err
