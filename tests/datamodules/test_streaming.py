"""LitData streaming shards: bit-exact round trip, the export command, and a DDP fit."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

pytest.importorskip("litdata")

from litdata import StreamingDataset  # noqa: E402

from matbench.cli import main  # noqa: E402
from matbench.datamodules import LVISMaterialsDataModule, StreamingDataModule  # noqa: E402
from matbench.datamodules.streaming import export_samples, require_litdata  # noqa: E402
from tests.core.toy import ToyDataModule, ToyTask  # noqa: E402
from tests.data.lvis_materials.data import make as make_lvis  # noqa: E402


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


@pytest.fixture
def lvis_root(tmp_path: Path) -> Path:
    return make_lvis(tmp_path / "lvis", num_train=3, num_val=2, size=(96, 72))


def test_round_trip_is_bit_exact(lvis_root: Path, tmp_path: Path) -> None:
    dm = LVISMaterialsDataModule(root=str(lvis_root), image_size=32, context_size=16, flip=False)
    dm.setup("fit")
    source = dm.train_dataset
    order = list(range(len(source)))[::-1]  # any order: samples carry their index
    count = export_samples(source, tmp_path / "train", order=order, progress=False)
    streamed = StreamingDataset(str(tmp_path / "train"))
    assert count == len(streamed) == len(source)
    seen = []
    for i in range(len(streamed)):
        sample = streamed[i]
        _assert_same(source[sample["index"]], sample)
        seen.append(sample["index"])
    assert seen == order
    with pytest.raises(FileExistsError, match="not empty"):
        export_samples(source, tmp_path / "train", progress=False)


def test_export_command_and_datamodule_match_the_source_loader(
    lvis_root: Path, tmp_path: Path
) -> None:
    config = {
        "data": {
            "class_path": "LVISMaterialsDataModule",
            "init_args": {"root": "elsewhere", "image_size": 32, "batch_size": 4},
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "val"
    args = ["data", "export", "--config", str(path), "--split", "val", "--out", str(out)]
    assert main([*args, "--set", f"root={lvis_root}", "--set", "eval_batch_size=3"]) == 0
    source = LVISMaterialsDataModule(root=str(lvis_root), image_size=32, eval_batch_size=3)
    source.setup("validate")
    streaming = StreamingDataModule(val_dir=str(out), eval_batch_size=3)
    assert streaming.class_names == source.class_names and streaming.meta["split"] == "val"
    batches = list(streaming.val_dataloader())
    expected = list(source.val_dataloader())
    assert len(batches) == len(expected)
    for a, b in zip(expected, batches, strict=True):
        _assert_same(a, b)


def test_missing_litdata_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litdata", None)
    with pytest.raises(ImportError, match=r'pip install "matbench\[stream\]"'):
        require_litdata()


def _fit(datamodule: L.LightningDataModule, root: Path, devices: int) -> tuple[dict, dict]:
    L.seed_everything(0)
    task = ToyTask()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_epochs=2,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=datamodule)
    # train/loss is rank 0's own batch loss: it depends on which samples rank 0 read.
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return task.state_dict(), metrics


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_fit_from_shards_equals_fit_from_source(tmp_path: Path) -> None:
    # 8 samples: a 2-process step (4 per rank, gradients averaged) and a single-process step
    # of 8 both follow the mean gradient over all samples, whichever rank reads which.
    source = ToyDataModule(num_samples=8, batch_size=4)
    source.setup("fit")
    for split in ("train", "val"):
        export_samples(getattr(source, f"{split}_dataset"), tmp_path / split, progress=False)
    weights, metrics = _fit(ToyDataModule(num_samples=8, batch_size=8), tmp_path / "a", 1)
    streaming = StreamingDataModule(
        train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"), batch_size=4
    )
    streamed_weights, streamed_metrics = _fit(streaming, tmp_path / "b", 2)
    for name, value in weights.items():
        torch.testing.assert_close(streamed_weights[name], value)
    assert metrics.keys() == streamed_metrics.keys() and "val/count" in metrics
    for key, value in metrics.items():
        assert streamed_metrics[key] == pytest.approx(value, rel=1e-5), key
    assert streamed_metrics["val/count"] == 8 and streamed_metrics["val/index_sum"] == 28
