"""Hostile inputs to the dataset readers (issue 21, items 1-6 and 13): each case builds the bad
input from the fake-data writers and asserts an error naming the file, a correct decode, or a
warning plus a count."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from matbench.datamodules.fmd import FMDDataModule
from matbench.datasets import DMS, FMD, LVISMaterials, MaterialFolder
from matbench.datasets.errors import DatasetFormatError
from matbench.datasets.matseg import MatSegBenchmark, MatSegScenes
from matbench.errors import EvaluationError
from tests.core.helpers_robustness import edit_json, edit_json_gz, run_limited
from tests.data.dms.data import make as make_dms
from tests.data.fmd.data import make as make_fmd
from tests.data.lvis_materials.data import make as make_lvis
from tests.data.matseg.data import make_benchmark, make_scenes


# -- 1. LVIS coordinates that make pycocotools allocate without bound ---------------------------
def test_lvis_nan_or_huge_polygon_coordinate_is_an_error_before_pycocotools(
    tmp_path: Path,
) -> None:
    """Item 1: checked in a subprocess under a memory limit, so that a regression fails the
    test (MemoryError or a crash) instead of the machine."""
    root = make_lvis(tmp_path / "lvis", num_train=2, num_val=1)
    ann_file = root / "lvis" / "lvis_v1_train.json"
    original = ann_file.read_text()
    cases = {}
    for name, value in (("nan", float("nan")), ("huge", 1e8)):
        path = tmp_path / f"lvis_{name}.json"
        data = json.loads(original)
        data["annotations"][0]["segmentation"][0][2] = value
        path.write_text(json.dumps(data))
        (tmp_path / f"lvis_{name}_materials.json").write_text(
            (root / "lvis" / "lvis_v1_train_materials.json").read_text()
        )
        cases[name] = (path, data["annotations"][0]["id"])
    code = f"""
        from matbench.datasets import LVISMaterials
        from matbench.datasets.errors import DatasetFormatError

        for path in {[str(p) for p, _ in cases.values()]!r}:
            try:
                dataset = LVISMaterials(path, {str(root / "coco")!r})
            except DatasetFormatError as err:
                print("ERROR", err)
                continue
            for i in range(len(dataset)):  # what would happen without the check
                dataset[i]
            print("DECODED", path)
    """
    result = run_limited(code)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("ERROR") for line in lines), lines
    for line, (path, ann_id) in zip(lines, cases.values(), strict=True):
        assert str(path) in line and f"annotation {ann_id}" in line
    assert "nan" in lines[0].lower() and "far outside" in lines[1]


# -- 2. photos in every mode and bit depth ------------------------------------------------------
def _expected_16(values: np.ndarray) -> np.ndarray:
    return np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def test_photos_of_every_mode_decode_to_8bit_rgb(tmp_path: Path) -> None:
    """Item 2: 16-bit grey (I;16), 16-bit RGB, CMYK, LA, P with transparency — in the MatSeg
    benchmark and in a MaterialFolder — decode with the right scaling, not as white."""
    rng = np.random.default_rng(0)
    grey16 = rng.integers(0, 65536, size=(20, 60), dtype=np.uint16)
    bench = make_benchmark(tmp_path / "bench")
    (bench / "images" / "b.PNG").unlink()
    Image.fromarray(grey16).save(bench / "images" / "b.png")
    sample = MatSegBenchmark(bench, max_size=None)[1]
    assert sample["key"] == "b"
    got = (sample["image"] * 255).round().to(torch.uint8).numpy()
    assert (got == _expected_16(grey16)[None]).all()

    root = tmp_path / "folder"
    (root / "image" / "wood").mkdir(parents=True)
    folder = root / "image" / "wood"
    Image.fromarray(grey16).save(folder / "a_grey16.png")
    rgb16 = rng.integers(0, 65536, size=(20, 60, 3), dtype=np.uint16)
    cv2.imwrite(str(folder / "b_rgb16.png"), rgb16[..., ::-1])  # cv2 writes BGR
    cmyk = Image.new("CMYK", (60, 20), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(folder / "c_cmyk.jpg", quality=100)
    la = np.zeros((20, 60, 2), np.uint8)
    la[..., 0], la[:, :30, 1] = 90, 255  # left opaque grey 90, right transparent
    Image.fromarray(la, mode="LA").save(folder / "d_la.png")
    pal = Image.new("P", (60, 20), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.paste(0, (30, 0, 60, 20))
    pal.save(folder / "e_palette.png", transparency=0)  # index 0 is transparent
    dataset = MaterialFolder(root)
    images = {
        dataset.samples[i][0].split("/")[1]: (dataset[i]["image"] * 255).round().to(torch.uint8)
        for i in range(len(dataset))
    }
    assert (images["a_grey16.png"].numpy() == _expected_16(grey16)[None]).all()
    # PIL keeps the high byte of 16-bit RGB: within one level of v * 255 / 65535
    diff = images["b_rgb16.png"].permute(1, 2, 0).int().numpy() - _expected_16(rgb16)
    assert np.abs(diff).max() <= 1
    assert (images["c_cmyk.jpg"][0] > 240).all() and (images["c_cmyk.jpg"][1:] < 15).all()
    assert (images["d_la.png"][:, :, :30] == 90).all() and (
        images["d_la.png"][:, :, 30:] == 255
    ).all()
    palette = images["e_palette.png"]
    assert (palette[:, :, :30] == torch.tensor([10, 200, 30])[:, None, None]).all()
    assert (palette[:, :, 30:] == 255).all()  # transparent: composited over white


# -- 3. 16-bit soft masks -----------------------------------------------------------------------
def test_16bit_soft_masks_keep_their_fractions(tmp_path: Path) -> None:
    """Item 3: a 30 %/70 % mixture in 16-bit masks is read as 0.3/0.7, not clipped to 1/1."""
    root = make_scenes(tmp_path / "scenes")
    scene = root / "s3d"
    size = 48
    first = np.zeros((size, size), np.uint16)
    first[:, : size // 2] = round(0.3 * 65535)
    first[:, size // 2 :] = round(0.7 * 65535)
    second = (65535 - first).astype(np.uint16)
    Image.fromarray(first).save(scene / "mask001.png")
    Image.fromarray(second).save(scene / "mask002.png")
    Image.fromarray(np.zeros((size, size), np.uint8)).save(scene / "mask003.png")  # 8-bit beside
    dataset = MatSegScenes(root, crop_size=size, min_crop_fraction=1.0, scenes=["s3d"])
    sample = dataset[0]
    fractions = sample["fractions"].numpy()
    assert sample["roi"].all()
    assert fractions.shape == (2, size, size)
    np.testing.assert_allclose(fractions[0, :, : size // 2], 0.3, atol=1e-4)
    np.testing.assert_allclose(fractions[0, :, size // 2 :], 0.7, atol=1e-4)
    np.testing.assert_allclose(fractions.sum(0), 1.0, atol=1e-5)


# -- 4. scenes without material pixels ----------------------------------------------------------
def test_scene_without_material_pixels_is_an_error_or_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 4 (reader side; the validation side is in test_runs.py)."""
    root = make_scenes(tmp_path / "scenes")
    for mask in (root / "s2d").glob("mask*.png"):
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(mask)
    with pytest.raises(DatasetFormatError, match=r"s2d: scene has no material pixel"):
        MatSegScenes(root, scenes=["s2d"])[0]
    skipping = MatSegScenes(root, crop_size=32, on_error="skip", seed=0)
    keys = [skipping[i]["key"] for i in range(len(skipping))]
    assert keys == ["s3d", "s3d"]  # s2d was replaced by the next scene
    assert skipping.num_skipped == 1
    assert any("s2d" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


# -- 5. DMS duplicates -------------------------------------------------------------------------
def test_dms_image_listed_twice_is_an_error(tmp_path: Path) -> None:
    """Item 5: a duplicate info.json.gz entry would count twice in the test metrics."""
    root = make_dms(tmp_path / "DMS_v1", per_split=2)

    def duplicate(info: list) -> None:
        info.append(dict(next(e for e in info if "/test/" in e["label_path"])))

    edit_json_gz(root / "info.json.gz", duplicate)
    with pytest.raises(DatasetFormatError, match=r"info\.json\.gz: .*listed twice"):
        DMS(root, split="test", mode="dense")
    assert len(DMS(root, split="validation", mode="dense")) == 2  # other splits unaffected


# -- 6. MatSeg group ids that collide ----------------------------------------------------------
def test_matseg_group_ids_colliding_after_normalisation_are_an_error(tmp_path: Path) -> None:
    """Item 6: "7" and " 7" (or a repeated key) would merge groups and drop points."""
    root = make_benchmark(tmp_path / "bench")
    data_json = root / "data" / "c" / "data.json"
    edit_json(data_json, lambda d: d.update({" 7": {"pt_im": [[5, 5, 1]]}}))
    with pytest.raises(DatasetFormatError, match=r"c/data\.json: group ids '7' and ' 7'"):
        MatSegBenchmark(root)
    data_json.write_text('{"7": {"pt_im": [[3, 3, 1]]}, "7": {"pt_im": [[20, 20, 1]]}}')
    with pytest.raises(DatasetFormatError, match=r"group ids '7' and '7'"):
        MatSegBenchmark(root)


# -- 8. an empty evaluation split --------------------------------------------------------------
def test_empty_test_split_is_an_error_naming_it(tmp_path: Path) -> None:
    """Item 8: FMD with one photo per class leaves the per-class test split empty."""
    root = make_fmd(tmp_path / "fmd", per_class=1, size=(32, 24))
    datamodule = FMDDataModule(str(root), image_size=32, val_fraction=0.0)
    datamodule.setup("test")
    with pytest.raises(EvaluationError, match=r"FMDDataModule: the 'test' split of .*fmd"):
        datamodule.test_dataloader()


# -- 13. silent fallbacks become visible -------------------------------------------------------
def test_fallbacks_are_warned_by_name_and_counted(tmp_path: Path) -> None:
    """Item 13: all-black FMD masks, a descriptions file matching no sample, an LVIS object
    outside its image: a warning naming the file, and a count the results JSON records."""
    root = make_fmd(tmp_path / "fmd", per_class=2, size=(32, 24))
    black = root / "mask" / "wood" / "wood_moderate_001_new.jpg"
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(black)
    sidecar = tmp_path / "descriptions.json"
    sidecar.write_text(json.dumps({"some/other_key.jpg": "a rough grey surface"}))
    with pytest.raises(DatasetFormatError, match=rf"{sidecar}: none of its 1 keys matches"):
        FMD(root, descriptions=sidecar)  # no sample described at all: an error
    undescribed = {"glass/glass_moderate_001_new.jpg", "wood/wood_object_001_new.jpg"}
    keys = [key for key, *_ in FMD(root).samples]
    described = {k: "a smooth surface" for k in keys if k not in undescribed}
    sidecar.write_text(json.dumps(described))
    with pytest.warns(UserWarning) as record:
        dataset = FMD(root, descriptions=sidecar)
    messages = [str(w.message) for w in record]
    assert any("1 masks have no material pixel" in m and str(black) in m for m in messages)
    assert any(str(sidecar) in m and "2 of 20 samples have no description" in m for m in messages)
    assert dataset.data_warnings == {"empty_masks": 1, "fallback_descriptions": 2}

    datamodule = FMDDataModule(str(root), image_size=32, descriptions=str(sidecar))
    with pytest.warns(UserWarning):
        datamodule.setup("test")
    in_test = len(undescribed & set(datamodule.splits["test"]))
    assert datamodule.describe().get("data_warnings", {}).get("fallback_descriptions", 0) == in_test
    assert datamodule.describe().get("data_warnings", {}).get("empty_masks", 0) == int(
        "wood/wood_moderate_001_new.jpg" in datamodule.splits["test"]
    )

    lvis = make_lvis(tmp_path / "lvis", num_train=2, num_val=1)
    ann_file = lvis / "lvis" / "lvis_v1_train.json"

    def move_out(data: dict) -> None:
        ann = data["annotations"][0]
        ann["segmentation"] = [
            [v + 100 if i % 2 == 0 else v for i, v in enumerate(p)] for p in ann["segmentation"]
        ]  # right of the 96 px wide image, within the margin

    edit_json(ann_file, move_out)
    with pytest.warns(UserWarning, match=r"lvis_v1_train\.json: 1 objects lie entirely outside"):
        lvis_dataset = LVISMaterials(ann_file, lvis / "coco")
    assert lvis_dataset.data_warnings == {"outside_image": 1}

    dms_root = make_dms(tmp_path / "DMS_v1", per_split=1)
    first = DMS(dms_root, split="test", mode="region", min_pixels=1)._key(0)
    sidecar.write_text(json.dumps({first: "a smooth clear surface"}))
    with pytest.warns(UserWarning, match=rf"{sidecar}: 2 of 3 samples have no description"):
        regions = DMS(dms_root, split="test", mode="region", min_pixels=1, descriptions=sidecar)
    assert regions.data_warnings == {"fallback_descriptions": 2}


def test_decoded_dms_labels_and_bad_gzip_name_the_file(tmp_path: Path) -> None:
    """Item 12 (DMS part): a wrong-typed taxonomy field and a corrupt info.json.gz."""
    root = make_dms(tmp_path / "DMS_v1", per_split=1)
    edit_json(root / "taxonomy.json", lambda t: t.update(semantic_labels="all of them"))
    with pytest.raises(DatasetFormatError, match=r"taxonomy\.json: 'semantic_labels' must be"):
        DMS(root, split="test")
    edit_json(root / "taxonomy.json", lambda t: t.update(semantic_labels=["1", "2"]))
    with pytest.raises(DatasetFormatError, match=r"taxonomy\.json: 'semantic_labels' must be"):
        DMS(root, split="test")
    root = make_dms(tmp_path / "DMS_v1b", per_split=1)
    with gzip.open(root / "info.json.gz", "wb") as f:
        f.write(b'[{"image_path": 3, "label_path": ["x"]}]')
    with pytest.raises(DatasetFormatError, match=r"info\.json\.gz: entry 0"):
        DMS(root, split="test")
