"""Zero-shot classification: prompts, templates, a perfect model on a fake folder dataset, a
user class list, and the FMD/DMS configs through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from matbench.cli import main
from matbench.datamodules.base import list_collate
from matbench.datamodules.folder import MaterialFolderDataModule
from matbench.tasks.clip import ZeroShotTask, load_templates, prompt_name

TINY = str(Path(__file__).with_name("tiny_clip.json"))
COLOURS = {"glass": (40, 200, 230), "metal": (160, 160, 170), "wood": (140, 90, 30)}
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "clip"


def test_prompt_names_and_templates(tmp_path: Path) -> None:
    assert prompt_name("Plastic, clear") == "clear plastic"
    assert prompt_name("Fabric/cloth") == "fabric or cloth"
    assert prompt_name("Wood") == "wood"
    templates = load_templates("material")
    assert len(templates) >= 5 and all("{}" in t for t in templates)
    assert load_templates("name") == ["{}"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(["a {} thing", "{} texture"]))
    assert load_templates(str(path)) == ["a {} thing", "{} texture"]
    path.write_text(json.dumps(["no slot"]))
    with pytest.raises(ValueError, match="t.json"):
        load_templates(str(path))
    with pytest.raises(ValueError, match="unknown template set"):
        load_templates("nope")


def _folder(root: Path) -> Path:
    """A fake material folder: image/<class>/*.png and mask/<class>/*.png."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for i in range(4):
            image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
            mask = np.zeros((60, 80), dtype=np.uint8)
            y, x = 10 + 5 * i, 15 + 6 * i
            mask[y : y + 20, x : x + 30] = 255
            image[mask > 0] = colour
            for kind, array in (("image", image), ("mask", mask)):
                (root / kind / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / kind / name / f"{name}_{i}.png")
    return root


def _perfect(task: ZeroShotTask, names: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Image: nearest class colour at the crop centre; text: the class named in the prompt."""
    colours = torch.tensor([COLOURS[n] for n in names], dtype=torch.float32) / 255
    seen = []

    def image(images: torch.Tensor, context=None) -> torch.Tensor:
        seen.append(images.shape)
        h, w = images.shape[-2:]
        centre = images[:, :, h // 2, w // 2]
        return F.one_hot(torch.cdist(centre, colours).argmin(1), len(names)).float()

    def text(prompts: list[str]) -> torch.Tensor:
        ids = [next(i for i, n in enumerate(names) if n in p) for p in prompts]
        return F.one_hot(torch.tensor(ids), len(names)).float()

    monkeypatch.setattr(task.model, "encode_image", image)
    monkeypatch.setattr(task.model, "encode_text", text)
    task._seen_shapes = seen


def test_perfect_model_on_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dm = MaterialFolderDataModule(
        str(_folder(tmp_path / "folder")), image_size=64, train_fraction=0.5, val_fraction=0.0
    )
    task = ZeroShotTask(model=TINY, crop_blur_sigma=2.0)
    _perfect(task, ["glass", "metal", "wood"], monkeypatch)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(task, datamodule=dm, verbose=False)
    metrics = task.results["test"][0]
    assert metrics["accuracy"] == 1.0 and metrics["mean_class_accuracy"] == 1.0
    assert metrics["class_names"] == ["glass", "metal", "wood"]
    assert np.trace(np.array(metrics["confusion_matrix"])) == 6
    # Inputs are object crops at the model's size.
    assert all(tuple(s[-2:]) == (32, 32) for s in task._seen_shapes)


def test_user_class_list_and_list_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["wood", "glass", "metal"]  # the user's own order
    task = ZeroShotTask(model=TINY, class_names=names, templates="name")
    _perfect(task, names, monkeypatch)
    samples = []
    for i, name in enumerate(["metal", "wood", "glass", "glass"]):
        h = 40 + 10 * i
        image = torch.rand(3, h, 50)
        mask = torch.zeros(h, 50, dtype=torch.bool)
        mask[h // 2 - 10 : h // 2 + 10, 15:35] = True
        image[:, mask] = torch.tensor(COLOURS[name], dtype=torch.float32)[:, None] / 255
        samples.append({"image": image, "mask": mask, "label": torch.tensor(names.index(name))})
    loader = DataLoader(samples, batch_size=2, collate_fn=list_collate)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(task, dataloaders=loader, verbose=False)
    assert task.results["test"][0]["accuracy"] == 1.0
    assert task.results["test"][0]["class_names"] == names
    no_names = ZeroShotTask(model=TINY)
    with pytest.raises(ValueError, match="class names"):
        trainer.test(no_names, dataloaders=loader, verbose=False)


def _cli_test(
    config: str, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str
) -> dict:
    monkeypatch.chdir(tmp_path)
    main(
        [
            "test",
            "--config",
            str(CONFIGS / config),
            f"--model.model={TINY}",
            "--model.pretrained=null",
            f"--data.root={root}",
            "--data.batch_size=4",
            "--data.num_workers=0",
            "--trainer.enable_progress_bar=false",
            "--results_dir=results",
            *extra,
        ]
    )
    (path,) = sorted((tmp_path / "results").glob("*ZeroShotTask*.json"))
    return json.loads(path.read_text())


def test_zeroshot_fmd_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.data.fmd.data import make

    root = make(tmp_path / "fmd", per_class=2)
    record = _cli_test("zeroshot_fmd.yaml", root, tmp_path, monkeypatch)
    metrics = record["metrics"]
    assert len(metrics["class_names"]) == 10 and metrics["class_names"][0] == "fabric"
    assert 0.0 <= metrics["accuracy"] <= metrics["top5_accuracy"] <= 1.0
    assert np.array(metrics["confusion_matrix"]).sum() == 10  # one test image per class


def test_zeroshot_dms_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.data.dms.data import make

    root = make(tmp_path / "DMS_v1")
    # The fake's regions are small: keep them all.
    record = _cli_test("zeroshot_dms.yaml", root, tmp_path, monkeypatch, "--data.min_pixels=16")
    metrics = record["metrics"]
    assert len(metrics["class_names"]) == 46
    assert np.array(metrics["confusion_matrix"]).sum() > 0
    assert 0.0 <= metrics["accuracy"] <= metrics["top5_accuracy"] <= 1.0
