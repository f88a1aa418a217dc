"""Hostile configs, checkpoints and runs (issue 21, items 4, 9, 12 and 15)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from matbench.benchmark import SuiteError, load_suite
from matbench.cli import main
from matbench.datasets import FMD, LVISMaterials, MaterialFolder
from matbench.datasets.errors import DatasetFormatError
from matbench.errors import CheckpointError, ConfigFileError, EvaluationError
from matbench.tasks import MatSegTask
from tests.core.helpers_robustness import edit_json, jpeg_bomb, png_bomb
from tests.data.fmd.data import make as make_fmd
from tests.data.lvis_materials.data import make as make_lvis
from tests.data.matseg.data import make_benchmark

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RGB_BASELINE = CONFIGS / "matseg" / "rgb_baseline.yaml"
TINY_CLIP = str(Path(__file__).resolve().parents[1] / "models" / "tiny_clip.json")


def _lightning_checkpoint(path: Path, task: L.LightningModule, class_path: str, **hparams) -> Path:
    """A checkpoint as ``matbench fit`` writes it (state dict, hyperparameters with the task's
    ``_class_path``), without training."""
    torch.save(
        {
            "state_dict": task.state_dict(),
            "hyper_parameters": {"_class_path": class_path, **hparams},
            "pytorch-lightning_version": L.__version__,
            "epoch": 0,
            "global_step": 0,
        },
        path,
    )
    return path


# -- 4. a validation set with no scorable sample ------------------------------------------------
def _unscorable_batch(samples: list[int]) -> dict[str, torch.Tensor]:
    n, size = len(samples), 16
    return {
        "image": torch.rand(n, 3, size, size),
        "fractions": torch.zeros(n, 1, size, size),  # no material pixel anywhere
        "valid": torch.ones(n, 1, dtype=torch.bool),
        "roi": torch.zeros(n, size, size, dtype=torch.bool),
    }


def test_validation_without_scorable_sample_is_an_error(tmp_path: Path) -> None:
    """Item 4 (run side): val/loss would be 0.0 and become the best score."""
    task = MatSegTask(model="random", descriptor_dim=8)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    loader = DataLoader(list(range(3)), batch_size=2, collate_fn=_unscorable_batch)
    with pytest.raises(EvaluationError, match=r"val: none of the 3 val samples could be scored"):
        trainer.validate(task, loader)


# -- 9. a checkpoint of another task, and what a checkpoint overrides ---------------------------
def test_checkpoint_of_another_task_is_refused_and_overrides_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 9: a MatSeg checkpoint given to the two-stream config is refused before anything
    is built; a MatSeg checkpoint with other settings reports each value it overrides."""
    monkeypatch.chdir(tmp_path)
    bench = make_benchmark(tmp_path / "bench")
    matseg = _lightning_checkpoint(
        tmp_path / "matseg.ckpt",
        MatSegTask(model="rgb"),
        "matbench.tasks.matseg.MatSegTask",
        model="rgb",
        backbone="tu-convnext_atto",
        seed=3,
    )
    with pytest.raises(CheckpointError, match=r"matseg\.ckpt: holds a MatSegTask but the config"):
        main(
            [
                "test",
                "--debug",
                "--config",
                str(CONFIGS / "two_stream" / "fmd.yaml"),
                f"--data.root={tmp_path}",
                f"--ckpt_path={matseg}",
            ]
        )
    with pytest.warns(UserWarning, match=r"matseg\.ckpt: .*override.*model\.backbone, model\.seed"):
        cli = main(
            [
                "test",
                "--config",
                str(RGB_BASELINE),
                f"--data.root={bench}",
                "--model.backbone=tu-convnext_pico",
                f"--ckpt_path={matseg}",
                f"--results_dir={tmp_path / 'results'}",
            ]
        )
    assert cli.model.hparams.seed == 3 and cli.model.hparams.backbone == "tu-convnext_atto"


# -- 12. bare errors that name no file ---------------------------------------------------------
def _lvis_case(tmp_path: Path, change) -> tuple[Path, Path]:
    root = make_lvis(tmp_path / "lvis", num_train=2, num_val=1)
    ann_file = root / "lvis" / "lvis_v1_train.json"
    edit_json(ann_file, change)
    return ann_file, root / "coco"


def _set_ann(field: str, value):
    return lambda d: d["annotations"][0].update({field: value})


LVIS_CASES = {
    "short bbox": (_set_ann("bbox", [1.0, 2.0, 3.0]), r"annotation 1: 'bbox' must be 4 finite"),
    "NaN bbox": (_set_ann("bbox", [1.0, float("nan"), 3.0, 4.0]), r"annotation 1: 'bbox'"),
    "string coordinates": (
        _set_ann("segmentation", [["10", "10", "20", "10", "20", "20"]]),
        r"annotation 1: segmentation\[0\] has a coordinate '10'",
    ),
    "annotation not an object": (
        lambda d: d["annotations"].__setitem__(0, [1, 2, 3]),
        r"annotations\[0\] is not an object",
    ),
    "category without name": (
        lambda d: d["categories"][0].pop("name") and None,
        r"category 1: 'name' is missing",
    ),
}


@pytest.mark.parametrize("case", sorted(LVIS_CASES))
def test_bad_lvis_fields_name_file_and_field(tmp_path: Path, case: str) -> None:
    """Item 12 (LVIS): found while indexing, not in a loader worker."""
    change, message = LVIS_CASES[case]
    ann_file, images = _lvis_case(tmp_path, change)
    with pytest.raises(DatasetFormatError, match=rf"lvis_v1_train\.json: {message}"):
        LVISMaterials(ann_file, images, sidecar=None)


def test_decompression_bombs_name_the_file(tmp_path: Path) -> None:
    """Item 12 (FMD / folder): a few bytes announcing 3.6 gigapixels."""
    root = make_fmd(tmp_path / "fmd", per_class=2, size=(32, 24))
    photo = root / "image" / "glass" / "glass_moderate_001_new.jpg"
    jpeg_bomb(photo, photo)
    dataset = FMD(root)
    index = next(i for i, s in enumerate(dataset.samples) if s[2] == photo)
    with pytest.raises(DatasetFormatError, match=rf"{photo}: refused as a possible decompression"):
        dataset[index]
    folder = tmp_path / "folder"
    (folder / "image" / "stone").mkdir(parents=True)
    bomb = png_bomb(folder / "image" / "stone" / "bomb.png")
    with pytest.raises(DatasetFormatError, match=rf"{bomb}: refused as a possible decompression"):
        MaterialFolder(folder)[0]


def test_truncated_checkpoint_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 12: `test --ckpt_path` and `embed-text --ckpt` on half a checkpoint."""
    monkeypatch.chdir(tmp_path)
    full = _lightning_checkpoint(
        tmp_path / "full.ckpt", MatSegTask(model="rgb"), "matbench.tasks.MatSegTask", model="rgb"
    )
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    argv = ["test", "--debug", "--config", str(RGB_BASELINE), f"--data.root={tmp_path}"]
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt: cannot be read as a checkpoint"):
        main([*argv, f"--ckpt_path={truncated}"])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt: cannot be read"):
        main(["embed-text", "--debug", "wood", "--ckpt", str(truncated)])


def test_malformed_suite_yaml_names_file_and_field(tmp_path: Path) -> None:
    """Item 12: `variables` as a list, `overrides` as a string, a run without a config."""
    suite = tmp_path / "suite.yaml"
    config = str(RGB_BASELINE)
    for body, field in (
        (f"variables: [a, b]\nruns:\n  - config: {config}\n", "'variables' must be a mapping"),
        (f"runs:\n  - config: {config}\n    overrides: --x\n", r"runs\[0\]: 'overrides' must"),
        ("runs:\n  - name: x\n", r"runs\[0\]: each run needs a 'config'"),
        ("runs: [\n", "not valid YAML"),
    ):
        suite.write_text(body)
        with pytest.raises(SuiteError, match=rf"suite\.yaml: .*{field}"):
            load_suite(suite, {})


def test_embed_text_on_a_non_clip_config_or_checkpoint(tmp_path: Path) -> None:
    """Item 12: embed-text needs a CLIP material model; anything else is named."""
    with pytest.raises(
        ConfigFileError, match=r"rgb_baseline\.yaml: model\.class_path is MatSegTask"
    ):
        main(["embed-text", "--debug", "wood", "--config", str(RGB_BASELINE)])
    matseg = _lightning_checkpoint(
        tmp_path / "matseg.ckpt", MatSegTask(model="rgb"), "matbench.tasks.MatSegTask", model="rgb"
    )
    with pytest.raises(CheckpointError, match=r"matseg\.ckpt: holds a MatSegTask: embed-text"):
        main(["embed-text", "--debug", "wood", "--ckpt", str(matseg)])


# -- 15. the CLIP test loss depends on the number of processes ---------------------------------
def test_clip_test_output_has_no_world_size_dependent_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 15: a contrastive loss over per-rank batches is not an exact metric: `test` leaves
    it out (validation keeps it for checkpoint monitoring: the CLIP fit tests)."""
    monkeypatch.chdir(tmp_path)
    root = make_lvis(tmp_path / "lvis", num_train=2, num_val=2)
    common = [
        "--config",
        str(CONFIGS / "clip" / "lvis_materials.yaml"),
        f"--model.model={TINY_CLIP}",
        "--model.weights=null",
        f"--data.root={root}",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    ]
    cli = main(["test", *common, "--results_dir=results"])
    assert "test/g64_mrr" in cli.trainer.callback_metrics
    assert not any(key.endswith("loss") for key in cli.trainer.callback_metrics)
    (result,) = Path("results").glob("*ClipMaterialTask*.json")
    assert not any("loss" in key for key in json.loads(result.read_text())["metrics"])


# -- a bad file found in a DataLoader worker ---------------------------------------------------
def test_a_bad_file_found_in_a_loader_worker_is_reported_like_one_in_the_main_process(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """PyTorch re-raises a worker's DatasetFormatError (two arguments) as a bare RuntimeError
    holding the worker's traceback; the command line still prints one line naming the file."""
    bench = make_benchmark(tmp_path / "bench")
    broken = bench / "images" / "c.jpeg"
    data = broken.read_bytes()
    broken.write_bytes(data[: data.index(b"\xff\xda") + 16])  # headers kept, scan data cut
    argv = ["test", "--config", str(RGB_BASELINE), f"--data.root={bench}"]
    argv += ["--data.num_workers=1", f"--results_dir={tmp_path / 'results'}"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("error: "))
    assert str(broken) in line and "(raised in DataLoader worker process 0)" in line
    assert "Traceback" not in err
    with pytest.raises(RuntimeError, match="Caught DatasetFormatError in DataLoader worker"):
        main([*argv, "--debug"])
