"""The 21-class protocol: the packaged label space, its maps from DMS46 and FMD (checked
against the real DMS taxonomy and FMD file list), and the readers' relabelling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matbench.datamodules import DMSDataModule, FMDDataModule, MaterialFolderDataModule
from matbench.datasets.dms import DMS, DMS46_INDICES
from matbench.datasets.errors import DatasetFormatError
from matbench.datasets.fmd import FMD, FMD_CLASSES
from matbench.datasets.folder import MaterialFolder
from matbench.datasets.label_space import load_label_space
from tests.data.dms.data import make as make_dms
from tests.data.fmd.data import make as make_fmd
from tests.data.folder.data import make as make_folder

CLASSES21 = load_label_space("classes21").classes


def fake_dms_space(path: Path) -> Path:
    """classes21 with a ``dms`` map for the fake taxonomy's names (26 and 52 unmapped)."""
    space = json.loads(json.dumps(load_label_space("classes21").__dict__))
    space["maps"]["dms"] = {
        "material 13": "fabric",
        "material 16": "foliage",
        "material 20": "glass",
    }
    path.write_text(json.dumps(space))
    return path


def test_classes21_is_21_classes_covering_fmd() -> None:
    space = load_label_space("classes21")
    assert len(space.classes) == 21 and len(set(space.classes)) == 21
    assert space.mapping(list(FMD_CLASSES), "fmd") == [space.classes.index(c) for c in FMD_CLASSES]


def test_classes21_maps_the_real_dms46_names(shared_data: Path) -> None:
    names = json.loads((shared_data / "dms" / "taxonomy.json").read_text())["names"]
    dms46 = [names[i] for i in DMS46_INDICES]
    space = load_label_space("classes21")
    mapping = space.mapping(dms46, "dms")
    kept = {dms46[i]: space.classes[t] for i, t in enumerate(mapping) if t is not None}
    assert kept["Stone, polished"] == "stone" and kept["Plastic, clear"] == "plastic"
    assert "Sky" not in kept and "Wood, tree" not in kept
    # every one of the 21 classes has a DMS source: DMS-test-21 can contain all of them
    assert {space.classes[t] for t in mapping if t is not None} == set(space.classes)
    assert len(kept) == 24


def test_fmd_all_1000_names_relabel_to_classes21(shared_data: Path, tmp_path: Path) -> None:
    names = (shared_data / "fmd" / "FMD_image_filelist.txt").read_text().split()
    root = make_fmd(tmp_path / "fmd", names=names[::50], size=(16, 12))
    dataset = FMD(root, label_space="classes21")
    assert len(dataset) == 20 and dataset.dropped == {}
    assert dataset.classes == CLASSES21
    for (key, label, _, _), _ in zip(dataset.samples, range(20), strict=False):
        assert CLASSES21[label] == key.split("/")[0]


def test_unknown_classes_in_a_map_are_errors(tmp_path: Path) -> None:
    bad = {"classes": ["metal", "wood"], "maps": {"fmd": {"metall": "metal"}}}
    path = tmp_path / "space.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetFormatError, match=r"space.json.*names classes.*\['metall'\]"):
        load_label_space(str(path)).mapping(list(FMD_CLASSES), "fmd")
    path.write_text(json.dumps({"classes": ["metal"], "maps": {"fmd": {"metal": "steel"}}}))
    with pytest.raises(DatasetFormatError, match=r"unknown target classes \['steel'\]"):
        load_label_space(str(path))
    with pytest.raises(FileNotFoundError, match="neither a packaged one"):
        load_label_space("classes22")


def test_fmd_drops_and_counts_classes_without_counterpart(tmp_path: Path) -> None:
    space = {
        "classes": ["metal", "wood", "glass"],
        "maps": {"fmd": {"metal": "metal", "wood": "wood", "glass": "glass"}},
    }
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    root = make_fmd(tmp_path / "fmd", per_class=2, size=(16, 12))
    dataset = FMD(root, label_space=str(path))
    assert len(dataset) == 6 and dataset.classes == ["metal", "wood", "glass"]
    assert dataset.dropped == {c: 2 for c in FMD_CLASSES if c not in ("metal", "wood", "glass")}
    assert sorted({dataset.classes[int(dataset[i]["label"])] for i in range(6)}) == [
        "glass",
        "metal",
        "wood",
    ]


def test_dms_test21_filters_and_relabels_regions(tmp_path: Path) -> None:
    root = make_dms(tmp_path / "DMS_v1", per_split=3)
    space = fake_dms_space(tmp_path / "space.json")
    full = DMS(root, split="test", min_pixels=20)
    dataset = DMS(root, split="test", min_pixels=20, label_space=str(space))
    assert dataset.classes == CLASSES21
    names = {13: "fabric", 16: "foliage", 20: "glass"}
    expected = [
        (full._key(i), CLASSES21.index(names[DMS46_INDICES[r[1]]]))
        for i, r in enumerate(full.regions)
        if DMS46_INDICES[r[1]] in names
    ]
    assert [(dataset._key(i), dataset.labels[i]) for i in range(len(dataset))] == expected
    assert sum(dataset.dropped.values()) == len(full) - len(dataset) > 0
    assert set(dataset.dropped) <= {"material 26", "material 52"}
    sample = dataset[0]
    assert int(sample["label"]) == expected[0][1] and sample["mask"].any()
    module = DMSDataModule(str(root), label_space=str(space), min_pixels=20, image_size=32)
    module.setup("test")
    assert module.class_names == CLASSES21
    assert module.describe()["dropped"]["test"] == dataset.dropped


def test_google_test_like_folder_of_the_21_classes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "google", CLASSES21[:5] + ["wood"], per_class=2)
    dataset = MaterialFolder(root, label_space="classes21")
    assert dataset.classes == CLASSES21
    assert sorted({dataset.labels[i] for i in range(len(dataset))}) == sorted(
        CLASSES21.index(c) for c in CLASSES21[:5] + ["wood"]
    )
    module = MaterialFolderDataModule(
        str(root), label_space="classes21", test_on="all", image_size=32
    )
    module.setup("test")
    assert len(module.test_dataset) == 12 and module.class_names == CLASSES21
    assert module.describe()["split"] == "all"
    make_folder(tmp_path / "odd", ["metal", "unobtainium"], per_class=1)
    with pytest.raises(DatasetFormatError, match=r"\['unobtainium'\] are not in label space"):
        MaterialFolder(tmp_path / "odd", label_space="classes21")


def test_fmd_datamodule_tests_on_all_images(tmp_path: Path) -> None:
    root = make_fmd(tmp_path / "fmd", per_class=4, size=(16, 12))
    module = FMDDataModule(str(root), label_space="classes21", test_on="all", image_size=32)
    module.setup(None)
    assert len(module.test_dataset) == 40 and len(module.train_dataset) < 40
    assert module.class_names == CLASSES21 and module.test_dataset.classes == CLASSES21
