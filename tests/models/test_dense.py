"""Dense foundation-model descriptors, the hard-target loss and the region datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from matbench.cli import main
from matbench.datamodules.regions import RegionIoUDataModule
from matbench.datasets.errors import DatasetFormatError
from matbench.datasets.regions import RegionDataset
from matbench.models.dense import DenseFeatureDescriptor
from matbench.models.losses import matseg_loss
from matbench.report import build_report
from tests.data.regions.data import make_labels, make_masks

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_CLIP = Path(__file__).resolve().parents[1] / "models" / "tiny_clip.json"


def test_dense_timm_equals_upsampled_patch_grid() -> None:
    torch.manual_seed(0)
    model = DenseFeatureDescriptor("test_vit", None).eval()
    vit = model.grid.stream
    patch = vit.patch_size[0]
    image = torch.rand(1, 3, 3 * patch - 3, 4 * patch + 5)  # resized to 3 × 4 patches
    with torch.no_grad():
        out = model(image)
        x = F.interpolate(image, size=(3 * patch, 4 * patch), mode="bilinear", align_corners=False)
        tokens = vit.vit.forward_features((x - vit.mean) / vit.std)[:, vit.vit.num_prefix_tokens :]
        grid = tokens.transpose(1, 2).reshape(1, -1, 3, 4)
        size = image.shape[-2:]
        expected = F.normalize(
            F.interpolate(grid, size=size, mode="bilinear", align_corners=False), dim=1
        )
    assert out.shape == (1, model.descriptor_dim, *size)
    assert torch.allclose(out, expected, atol=1e-5)
    assert not any(p.requires_grad for p in model.parameters())


def test_dense_open_clip_tower() -> None:
    model = DenseFeatureDescriptor(f"open_clip:{TINY_CLIP}", None).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 21, 30))
    assert out.shape == (2, 64, 21, 30)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 21, 30), atol=1e-5)


def test_hard_target_is_the_argmax_of_the_soft_maps() -> None:
    gen = torch.Generator().manual_seed(0)
    desc = F.normalize(torch.randn(1, 4, 3, 5, generator=gen), dim=1)
    fractions = torch.zeros(1, 2, 3, 5)
    fractions[0, 0, :, :3] = 1.0
    fractions[0, 1, :, 3:] = 1.0
    fractions[0, :, :, 2] = torch.tensor([0.6, 0.4])[:, None]  # a soft column, mostly 0
    valid = torch.ones(1, 2, dtype=torch.bool)
    roi = torch.ones(1, 3, 5, dtype=torch.bool)
    hard = fractions.clone()
    hard[0, :, :, 2] = torch.tensor([1.0, 0.0])[:, None]
    # the hard loss on soft maps equals the soft loss on their argmax one-hot ...
    assert matseg_loss(desc, fractions, valid, roi, 0.2, "hard").item() == pytest.approx(
        matseg_loss(desc, hard, valid, roi, 0.2, "soft").item()
    )
    # ... and differs from the soft loss where the maps are soft
    assert matseg_loss(desc, fractions, valid, roi, 0.2, "soft").item() != pytest.approx(
        matseg_loss(desc, fractions, valid, roi, 0.2, "hard").item()
    )
    with pytest.raises(ValueError, match="target"):
        matseg_loss(desc, fractions, valid, roi, 0.2, "argmax")  # type: ignore[arg-type]


def test_region_layouts_read_the_same_regions(tmp_path: Path) -> None:
    masks = RegionDataset(make_masks(tmp_path / "m"))
    labels = RegionDataset(make_labels(tmp_path / "l"))
    assert masks.layout == "masks" and labels.layout == "labels"
    assert len(masks) == 3 and len(labels) == 4
    for index in range(3):
        a, b = masks[index], labels[index]
        assert a["key"] == b["key"] and torch.equal(a["regions"], b["regions"])
        assert a["regions"].shape[0] == 3 and a["image"].shape[-2:] == a["regions"].shape[-2:]
    assert labels[0]["region_names"] == ["1000", "2000", "3000"]  # 16-bit label values
    assert labels[3]["regions"].shape[0] == 0
    small = RegionDataset(tmp_path / "l", max_size=10)[0]  # 24 × 32 → 8 × 10
    assert small["image"].shape == (3, 8, 10) and small["regions"].shape == (3, 8, 10)


def test_region_layout_errors(tmp_path: Path) -> None:
    root = make_masks(tmp_path / "m")
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(root / "masks" / "a" / "bad.png")
    with pytest.raises(DatasetFormatError, match="bad.png.*differs"):
        RegionDataset(root)[0]
    (root / "labels").mkdir()
    with pytest.raises(DatasetFormatError, match="exactly one of masks/ and labels/"):
        RegionDataset(root)
    labels = make_labels(tmp_path / "l")
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(labels / "labels" / "a.png")
    with pytest.raises(DatasetFormatError, match="a.png.*single-channel"):
        RegionDataset(labels)[0]
    (labels / "labels" / "b.png").unlink()
    with pytest.raises(DatasetFormatError, match="no label map"):
        RegionDataset(labels)


def test_region_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    dm = RegionIoUDataModule(str(make_labels(tmp_path / "l")), val_fraction=0.5, seed=3)
    dm.setup("test")
    splits = [dm.test_dataset[i]["split"] for i in range(4)]
    assert splits.count("val") == 2 and dm.split(4) == RegionIoUDataModule(
        str(tmp_path / "l"), val_fraction=0.5, seed=3
    ).split(4)
    with pytest.raises(ValueError, match="only serves test"):
        dm.setup("fit")


def test_region_iou_through_the_cli(tmp_path: Path) -> None:
    results = tmp_path / "results"
    cli = main(
        ["test", "--config", str(CONFIGS / "region_iou/official.yaml"),
         f"--data.root={make_masks(tmp_path / 'm')}", "--data.val_fraction=0",
         "--model.model=rgb", "--model.weights=null", "--model.iou_threshold=0.99",
         "--model.num_points=2", f"--results_dir={results}",
         f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"]
    )  # fmt: skip
    metrics = cli.model.results["test"][0]
    # the fake regions are flat colours with a little noise: the RGB direction of a point in
    # a region matches its region well at a cosine of 0.99
    assert metrics["threshold"] == 0.99 and metrics["num_regions"] == 9
    assert metrics["iou"] > 0.5
    record = json.loads(next(results.glob("*.json")).read_text())
    assert record["data"]["protocol"] == "region_iou"
    measured, published = build_report(results).read_text().split("## Published numbers")
    assert "iou_pooled" in measured
    assert "iou_cu" in published and "0.690" in published and "0.870" in published
    assert "SAM, 1 point" not in published  # the triplet rows belong to the other benchmark
