"""MaterialFolder, FMD, DMS and the appearance descriptions."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matbench.datasets.descriptions import (
    FALLBACK_DESCRIPTION,
    assign_descriptions,
    names_class,
    redact_class,
)
from matbench.datasets.dms import DMS, DMS46_INDICES, dms46_class_names, dms46_lut
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.fmd import FMD, FMD_CLASSES, fmd_split
from matbench.datasets.folder import MaterialFolder
from matbench.datasets.utils import split_per_class
from tests.data.dms.data import make as make_dms
from tests.data.fmd.data import make as make_fmd


@pytest.fixture
def fmd_root(tmp_path: Path) -> Path:
    return make_fmd(tmp_path / "fmd", per_class=4)


@pytest.fixture
def dms_root(tmp_path: Path) -> Path:
    return make_dms(tmp_path / "DMS_v1", per_split=2)


# -- MaterialFolder ----------------------------------------------------------------------------
def test_folder_classes_sorted_strays_skipped_and_masks_optional(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for cls, n in (("wood", 2), ("brick", 1)):
        (root / "image" / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (20, 10), (200, 10, 10)).save(root / "image" / cls / f"p{i}.png")
    (root / "image" / "wood" / "notes.txt").write_text("stray")
    (root / "image" / "wood" / ".DS_Store").write_bytes(b"\0")
    (root / "mask" / "wood").mkdir(parents=True)
    mask = np.zeros((10, 20), np.uint8)
    mask[:, :5] = 200  # > 127 = material
    mask[:, 5:8] = 120  # grey, below the threshold
    Image.fromarray(mask).save(root / "mask" / "wood" / "p0.jpg", quality=100)
    data = MaterialFolder(root)
    assert data.classes == ["brick", "wood"]
    assert [s[0] for s in data.samples] == ["brick/p0.png", "wood/p0.png", "wood/p1.png"]
    brick, wood0, wood1 = data[0], data[1], data[2]
    assert brick["label"].item() == 0 and wood0["label"].item() == 1
    assert brick["mask"].dtype == torch.bool and bool(brick["mask"].all())  # no mask: all True
    assert wood0["mask"][:, :5].all() and not wood0["mask"][:, 5:].any()
    assert bool(wood1["mask"].all())
    assert wood0["image"].shape == (3, 10, 20) and wood0["image"].dtype == torch.float32
    assert set(wood0) == {"image", "mask", "label", "key", "index", "description"}


def test_folder_mask_size_mismatch_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    (root / "image" / "a").mkdir(parents=True)
    (root / "mask" / "a").mkdir(parents=True)
    Image.new("RGB", (20, 10)).save(root / "image" / "a" / "x.jpg")
    Image.new("L", (10, 10), 255).save(root / "mask" / "a" / "x.jpg")
    data = MaterialFolder(root)
    with pytest.raises(DatasetFormatError, match=r"mask/a/x\.jpg.*10x10.*20x10"):
        data[0]


def test_folder_missing_root_lists_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"image/<class>"):
        MaterialFolder(tmp_path / "nothing")


def test_folder_resize_keeps_mask_binary(fmd_root: Path) -> None:
    sample = MaterialFolder(fmd_root, image_size=24)[3]
    assert sample["image"].shape == (3, 24, 24) and sample["mask"].shape == (24, 24)
    assert sample["mask"].dtype == torch.bool and sample["mask"].any()


# -- FMD ---------------------------------------------------------------------------------------
def test_fmd_fake_layout(fmd_root: Path) -> None:
    data = FMD(fmd_root)
    assert data.classes == list(FMD_CLASSES)
    assert len(data) == 40  # strays (.m, .asv, Thumbs.db) skipped
    assert all(key.endswith(".jpg") for key, *_ in data.samples)
    sample = data[0]
    assert sample["image"].shape == (3, 48, 64) and sample["mask"].shape == (48, 64)
    assert sample["mask"].any() and not sample["mask"].all()


def test_fmd_missing_mask_or_root(fmd_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"image/fabric/\*\.jpg"):
        FMD(tmp_path / "empty")
    (fmd_root / "mask" / "glass" / "glass_moderate_001_new.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="glass_moderate_001_new"):
        FMD(fmd_root)


def test_fmd_object_crop_uses_the_shared_transform(fmd_root: Path) -> None:
    plain = FMD(fmd_root, image_size=32)[5]
    crop = FMD(fmd_root, image_size=32, object_crop=True, crop_min_size=50)[5]
    assert crop["image"].shape == (3, 32, 32)
    # the crop is centred on the ellipse: the mask covers more of the frame than before
    assert crop["mask"].float().mean() > plain["mask"].float().mean()


def test_fmd_real_names_and_split(shared_data: Path, tmp_path: Path) -> None:
    names = (shared_data / "fmd" / "FMD_image_filelist.txt").read_text().split()
    assert len(names) == 1000
    root = make_fmd(tmp_path / "fmd_full", names=names, size=(8, 6))
    data = FMD(root)
    assert len(data) == 1000
    assert sorted(k for k, *_ in data.samples) == sorted(names)
    counts = np.bincount(data.labels, minlength=10)
    assert counts.tolist() == [100] * 10
    split = fmd_split(root, train_fraction=0.5, seed=0)
    assert len(split["train"]) == 500 and len(split["test"]) == 500 and not split["val"]
    assert not set(split["train"]) & set(split["test"])
    per_class = {c: sum(k.startswith(c + "/") for k in split["train"]) for c in FMD_CLASSES}
    assert set(per_class.values()) == {50}
    assert fmd_split(root, seed=0) == split
    assert fmd_split(root, seed=1)["train"] != split["train"]
    with_val = fmd_split(root, val_fraction=0.1, seed=0)
    assert len(with_val["val"]) == 50 and len(with_val["test"]) == 500
    assert set(with_val["train"]) | set(with_val["val"]) == set(split["train"])


def test_split_per_class_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="train_fraction"):
        split_per_class({"a": ["1", "2"]}, train_fraction=1.0)


# -- DMS ---------------------------------------------------------------------------------------
def test_dms46_mapping_matches_real_taxonomy(shared_data: Path) -> None:
    taxonomy = json.loads((shared_data / "dms" / "taxonomy.json").read_text())
    dropped = {"Fiberglass wool", "Liquid, non-water", "Pearl", "Soap", "Sponge", "Styrofoam"}
    expected = [i for i in taxonomy["semantic_labels"] if taxonomy["names"][i] not in dropped]
    assert len(expected) == 46 and list(DMS46_INDICES) == sorted(expected)
    lut = dms46_lut()
    assert lut[0] == 255 and lut[22] == 255 and lut[14] == 255 and lut[56] == 45
    assert [int(lut[i]) for i in DMS46_INDICES] == list(range(46))
    assert int((lut != 255).sum()) == 46
    names = dms46_class_names(shared_data / "dms")
    assert names[0] == "Animal skin" and names[-1] == "Asphalt" and "Sponge" not in names


def test_dms_dense(dms_root: Path) -> None:
    data = DMS(dms_root, split="train", mode="dense")
    assert len(data) == 2
    sample = data[0]
    assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (48, 64)
    values = set(sample["mask"].unique().tolist())
    assert 255 in values and values <= set(range(46)) | {255}
    label = np.asarray(Image.open(dms_root / "labels" / "train" / f"{sample['key'][6:]}.png"))
    assert (sample["mask"].numpy() == dms46_lut()[label]).all()
    assert (sample["mask"][:4] == 255).all()  # 14 (dropped) and 22 (I cannot tell)


def test_dms_regions(dms_root: Path) -> None:
    data = DMS(dms_root, split="validation", mode="region", min_pixels=50)
    assert len(data) == 2 * 3  # three material blocks per image
    for i in range(len(data)):
        sample = data[i]
        image_key, train_id = sample["key"].split("#")
        assert int(train_id) == sample["label"].item()
        label = np.asarray(Image.open(dms_root / "labels" / f"{image_key}.png"))
        expected = dms46_lut()[label] == sample["label"].item()
        assert (sample["mask"].numpy() == expected).all() and sample["mask"].dtype == torch.bool
        assert sample["description"] == FALLBACK_DESCRIPTION
    too_big = DMS(dms_root, split="validation", mode="region", min_pixels=48 * 64)
    assert len(too_big) == 0


def test_dms_size_mismatch_names_the_file(dms_root: Path) -> None:
    label_path = sorted((dms_root / "labels" / "test").glob("*.png"))[0]
    Image.fromarray(np.zeros((40, 64), np.uint8)).save(label_path)
    with pytest.raises(DatasetFormatError, match=rf"{label_path.name}.*64x40.*64x48"):
        DMS(dms_root, split="test", mode="region")
    with pytest.raises(DatasetFormatError, match=label_path.name):
        DMS(dms_root, split="test", mode="dense")


def test_dms_missing_root_and_images(dms_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"info\.json\.gz.*taxonomy\.json.*labels/test"):
        DMS(tmp_path / "nothing", split="test")
    with gzip.open(dms_root / "info.json.gz", "rt") as f:
        first_test = next(e for e in json.load(f) if e["image_path"].startswith("images/test"))
    (dms_root / first_test["image_path"]).unlink()
    with pytest.raises(DatasetNotFoundError, match=first_test["image_path"]):
        DMS(dms_root, split="test")


def test_dms_rejects_bad_label_values(dms_root: Path) -> None:
    label_path = sorted((dms_root / "labels" / "train").glob("*.png"))[0]
    Image.fromarray(np.full((48, 64), 99, np.uint8)).save(label_path)
    with pytest.raises(DatasetFormatError, match="99"):
        DMS(dms_root, split="train", mode="region")


# -- descriptions ------------------------------------------------------------------------------
def test_fallback_description_cannot_depend_on_the_label(fmd_root: Path) -> None:
    keys = [f"k{i}" for i in range(10)]
    a, _ = assign_descriptions(keys, list(range(10)), FMD_CLASSES, None)
    b, _ = assign_descriptions(keys, [9 - i for i in range(10)], FMD_CLASSES, None)
    assert a == b == [FALLBACK_DESCRIPTION] * 10
    all_names = list(FMD_CLASSES) + dms46_names_for_check()
    assert not any(names_class(FALLBACK_DESCRIPTION, name) for name in all_names)
    data = FMD(fmd_root)
    assert set(data.descriptions) == {FALLBACK_DESCRIPTION}


def dms46_names_for_check() -> list[str]:
    # a few real DMS names (the full list lives in the release's taxonomy.json)
    return ["Wood", "Metal", "Fabric/cloth", "Stone, natural", "Plastic, clear", "Paper"]


def test_sidecar_descriptions_and_label_leak_policies(fmd_root: Path, tmp_path: Path) -> None:
    """A real VLM description that names the class ("a glass surface") does not stop a run:
    by default its class words are redacted; fallback, keep and error on request; each case is
    counted (and the datamodule's describe() puts the counts in the results JSON)."""
    sidecar = tmp_path / "descriptions.json"
    key = "metal/metal_moderate_001_new.jpg"
    other = "glass/glass_moderate_001_new.jpg"
    sidecar.write_text(json.dumps({key: "a cold, shiny and reflective surface"}))
    data = FMD(fmd_root, descriptions=sidecar)
    index = [s[0] for s in data.samples].index(key)
    assert data[index]["description"] == "a cold, shiny and reflective surface"
    assert data[0]["description"] == FALLBACK_DESCRIPTION  # not in the sidecar
    assert data.label_leaks["described"] == 1 and data.label_leaks["leaks"] == 0

    leaky = {key: "brushed Metal with metallic scratches", other: "a glass surface"}
    sidecar.write_text(json.dumps(leaky))
    glass = [s[0] for s in data.samples].index(other)
    with pytest.warns(UserWarning, match="2 descriptions name their sample's own class"):
        data = FMD(fmd_root, descriptions=sidecar)
    assert data.descriptions[index] == "brushed material with material scratches"
    assert data.descriptions[glass] == "a material surface"
    assert data.label_leaks == {
        "policy": "redact",
        "described": 2,
        "leaks": 2,
        "redacted": 2,
        "fallback": 0,
        "kept": 0,
    }
    with pytest.warns(UserWarning, match="replaced by the fallback"):
        data = FMD(fmd_root, descriptions=sidecar, on_label_leak="fallback")
    assert data.descriptions[index] == FALLBACK_DESCRIPTION and data.label_leaks["fallback"] == 2
    with pytest.warns(UserWarning, match="kept"):
        data = FMD(fmd_root, descriptions=sidecar, on_label_leak="keep")
    assert data.descriptions[glass] == "a glass surface" and data.label_leaks["kept"] == 2
    with pytest.raises(DatasetFormatError, match=r"descriptions\.json.*glass surface"):
        FMD(fmd_root, descriptions=sidecar, on_label_leak="error")
    with pytest.raises(ValueError, match="on_label_leak"):
        FMD(fmd_root, descriptions=sidecar, on_label_leak="ignore")
    # another class's name is not a leak (e.g. "looks like glass" for a plastic bottle)
    sidecar.write_text(json.dumps({key: "looks like glass but is not"}))
    assert FMD(fmd_root, descriptions=sidecar).descriptions[index].startswith("looks like glass")


def test_label_leak_counts_in_the_datamodule_description(fmd_root: Path, tmp_path: Path) -> None:
    from matbench.datamodules.fmd import FMDDataModule

    sidecar = tmp_path / "descriptions.json"
    keys = [s[0] for s in FMD(fmd_root).samples]
    sidecar.write_text(json.dumps({k: f"a photo of {k.split('/')[0]}" for k in keys}))
    dm = FMDDataModule(str(fmd_root), descriptions=str(sidecar), image_size=32)
    with pytest.warns(UserWarning, match="redacted"):
        dm.setup("test")
    counts = dm.describe()["label_leaks"]["test"]
    assert counts["policy"] == "redact" and counts["leaks"] == counts["redacted"] > 0
    assert all(d == "a photo of material" for d in dm.test_dataset.descriptions)


def test_sidecar_bad_json_named(fmd_root: Path, tmp_path: Path) -> None:
    sidecar = tmp_path / "bad.json"
    sidecar.write_text("[1, 2]")
    with pytest.raises(DatasetFormatError, match=r"bad\.json"):
        FMD(fmd_root, descriptions=sidecar)


def test_names_class_word_boundaries() -> None:
    assert names_class("Some fabric here", "Fabric/cloth")
    assert names_class("a cloth", "Fabric/cloth")
    assert names_class("natural stones", "Stone, natural")
    assert not names_class("woodland scene", "Wood")
    assert not names_class("a natural look", "Stone, natural")
    # derived forms are the class word too
    for text, name in [
        ("metallic sheen", "Metal"),
        ("a wooden table", "Wood"),
        ("glassy look", "Glass"),
        ("stony ground", "Stone, natural"),
        ("leathery skin", "Leather"),
        ("woollen knit", "Wool"),
        ("wood-like grain", "Wood"),
    ]:
        assert names_class(text, name), text
        assert not names_class(redact_class(text, name), name), text
    assert redact_class("Wooden and wood", "Wood") == "material and material"


def test_fmd_datamodule_split_is_seeded_and_reusable(fmd_root: Path, tmp_path: Path) -> None:
    from matbench.datamodules.fmd import FMDDataModule

    first = FMDDataModule(str(fmd_root), image_size=16, val_fraction=0.5, seed=3)
    first.setup("fit")
    first.setup("test")
    again = FMDDataModule(str(fmd_root), image_size=16, val_fraction=0.5, seed=3)
    again.setup("fit")
    assert again.splits == first.splits
    assert len(first.train_dataset) == 10 and len(first.val_dataset) == 10
    assert len(first.test_dataset) == 20 and first.class_names == list(FMD_CLASSES)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"settings": {}, "splits": first.splits}))
    reused = FMDDataModule(str(fmd_root), image_size=16, seed=99, split_file=str(split_file))
    reused.setup("test")
    assert [s[0] for s in reused.test_dataset.samples] == first.splits["test"]
    assert reused.describe()["split_sha256"] == first.describe()["split_sha256"]
    other = FMDDataModule(str(fmd_root), image_size=16, val_fraction=0.5, seed=4)
    other.setup("fit")
    assert other.describe()["split_sha256"] != first.describe()["split_sha256"]
    batch = next(iter(first.train_dataloader()))
    assert batch["image"].shape == (8, 3, 16, 16) and batch["mask"].dtype == torch.bool


def test_image_decoding_and_empty_mask_check(tmp_path: Path) -> None:
    """read_image converts in NumPy: the same values and memory layout as torch's conversion;
    the empty-mask check follows a rewritten file."""
    from matbench.datasets.utils import decode_rgb, mask_is_empty, read_image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    expected = torch.from_numpy(decode_rgb(tmp_path / "a.png")).permute(2, 0, 1).float().div_(255)
    assert torch.equal(got, expected) and got.stride() == expected.stride()
    mask = np.zeros((30, 40), dtype=np.uint8)
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert mask_is_empty(tmp_path / "m.png")
    mask[5:9, 5:9] = 200
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert not mask_is_empty(tmp_path / "m.png")
