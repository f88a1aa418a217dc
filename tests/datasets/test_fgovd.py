"""FG-OVD reader: layout, candidates, FG-OVD's crop rule, decode-once per image, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matbench.datamodules import FGOVDDataModule
from matbench.datasets import FGOVD, DatasetFormatError, DatasetNotFoundError
from matbench.datasets.fgovd import FGOVDImages, fgovd_box, fgovd_collate
from tests.data.fgovd.data import MATERIALS, make


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("fgovd"))


def _material(root: Path, **kwargs) -> FGOVD:
    return FGOVD(root / "benchmarks" / "material.json", root / "coco", **kwargs)


def reference_fgovd_box(bbox: list[float], width: int, height: int, scale: float) -> list[int]:
    """FG-OVD's crop box, written out as FG-CLIP's ``extract_scores_from_images`` has it."""
    bbox = list(bbox)
    new_w, new_h = bbox[2] * scale, bbox[3] * scale
    dx = (new_w - bbox[2]) // 2
    dy = (new_h - bbox[3]) // 2
    bbox[0] -= dx
    bbox[1] -= dy
    bbox[2] = new_w + bbox[0]
    bbox[3] = new_h + bbox[1]
    limits = [0, 0, width, height]
    for ind in range(4):
        keep = (ind < 2 and bbox[ind] >= 0) or (ind >= 2 and bbox[ind] <= limits[ind])
        bbox[ind] = bbox[ind] if keep else limits[ind]
        bbox[ind] = math.floor(bbox[ind]) if ind < 2 else math.ceil(bbox[ind])
    return bbox


def test_layout_candidates_and_order(root: Path) -> None:
    data = json.loads((root / "benchmarks" / "material.json").read_text())
    sentences = {c["id"]: c["name"] for c in data["categories"]}
    ds = _material(root)
    assert len(ds) == len(data["annotations"])
    by_id = {a["id"]: a for a in data["annotations"]}
    counts = set()
    for i in range(len(ds)):
        obj = ds.objects[i]
        ann = by_id[obj["id"]]
        expected = [sentences[ann["category_id"]]] + [
            sentences[n] for n in ann["neg_category_ids"][:10]
        ]
        assert [obj["positive"], *obj["negatives"]] == expected
        counts.add(len(obj["negatives"]))
    assert counts == {3, 7, 10}  # the material file mixes negative counts
    # objects of one image are contiguous, in the file's image order
    image_ids = [o["image_id"] for o in ds.objects]
    assert image_ids == sorted(image_ids, key=[a["image_id"] for a in data["annotations"]].index)
    assert [b - a for a, b in ds.image_ranges] == [1, 2, 3, 1, 2, 3]
    # the truncation keeps the first negatives, and min_negatives drops objects
    short = _material(root, max_negatives=4, min_negatives=4)
    assert all(len(o["negatives"]) == 4 for o in short.objects)
    assert short.num_dropped == sum(len(a["neg_category_ids"]) < 4 for a in data["annotations"])
    assert set(ds.sentences) >= {o["positive"] for o in ds.objects}


def test_sample_fields_and_collate(root: Path) -> None:
    ds = _material(root, image_size=32)
    sample = ds[1]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["candidates"][0] == sample["caption"]
    assert sample["key"] == str(ds.objects[1]["id"]) and sample["index"] == 1
    batch = fgovd_collate([FGOVDImages(ds)[1], FGOVDImages(ds)[2]])
    assert batch["image"].shape == (5, 3, 32, 32)
    assert batch["index"].tolist() == [1, 2, 3, 4, 5]
    assert [len(c) for c in batch["candidates"]] == [
        1 + len(ds.objects[i]["negatives"]) for i in range(1, 6)
    ]


@pytest.mark.parametrize("scale", [1.0, 1.5, 0.7, 2.3])
def test_box_crop_is_fgovds(root: Path, scale: float) -> None:
    """The box crop equals FG-OVD's box and CLIP's preprocessing (open_clip's transform)."""
    import open_clip

    boxes = [[3.4, 2.6, 20.2, 30.9], [0.0, 0.0, 96.0, 72.0], [80.5, 60.2, 15.5, 11.8]]
    for bbox in boxes:
        assert list(fgovd_box(bbox, 96, 72, scale)) == reference_fgovd_box(bbox, 96, 72, scale)
    ds = _material(root, image_size=24, scale_factor=scale)
    transform = open_clip.image_transform(24, is_train=False, mean=(0, 0, 0), std=(1, 1, 1))
    for index in (0, 4):
        obj = ds.objects[index]
        info = ds.images[obj["image_id"]]
        with Image.open(root / "coco" / info["path"]) as img:
            box = reference_fgovd_box(obj["bbox"], *img.size, scale)
            expected = transform(img.crop(box))
        torch.testing.assert_close(ds[index]["image"], expected, atol=0, rtol=0)


def test_object_crop_option(root: Path) -> None:
    box = _material(root, image_size=32)[2]["image"]
    obj = _material(root, image_size=32, crop="object", crop_blur_sigma=2.0)[2]["image"]
    assert obj.shape == box.shape == (3, 32, 32)
    assert not torch.allclose(obj, box)


def test_each_image_decoded_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _material(root, image_size=16)
    calls = []
    decode = ds.decode
    monkeypatch.setattr(ds, "decode", lambda image_id: calls.append(image_id) or decode(image_id))
    items = [FGOVDImages(ds)[i] for i in range(len(ds.image_ranges))]
    assert sum(len(item) for item in items) == len(ds)
    assert sorted(calls) == sorted({o["image_id"] for o in ds.objects})
    # the per-image samples are those of per-object access
    torch.testing.assert_close(items[2][1]["image"], ds[4]["image"])


def test_greyscale_image_becomes_rgb(root: Path) -> None:
    ds = _material(root, image_size=16)
    start, _ = ds.image_ranges[1]  # the fake data's greyscale image
    with Image.open(root / "coco" / ds.images[ds.objects[start]["image_id"]]["path"]) as img:
        assert img.mode == "L"
    assert ds[start]["image"].shape == (3, 16, 16)


def test_datamodule_splits(root: Path) -> None:
    dm = FGOVDDataModule(root=str(root), benchmark="transparency", image_size=16, batch_size=4)
    assert dm.reported_negatives == 2 and dm.test_split == "benchmarks/transparency"
    dm.setup("fit")
    train = dm.train_dataset
    # FG-CLIP trains on objects with all 10 negatives: the 2 short ones are dropped
    assert train.num_dropped == 2
    assert all(len(o["negatives"]) == 10 for o in train.objects)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and len(batch["candidates"]) == 4
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert {len(c) for c in batch["candidates"]} == {3}
    assert FGOVDDataModule(root=str(root), benchmark="pattern").reported_negatives == 7


# -- bad input -------------------------------------------------------------------------------
def _broken(root: Path, tmp_path: Path, edit) -> Path:  # noqa: ANN001
    data = json.loads((root / "benchmarks" / "material.json").read_text())
    edit(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    return path


def _first_ann(data: dict) -> dict:
    return data["annotations"][0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: _first_ann(d)["neg_category_ids"].append(424242), "negative id 424242 is not"),
        (lambda d: _first_ann(d).update(neg_category_ids=[]), "has no hard negatives"),
        (lambda d: _first_ann(d).pop("neg_category_ids"), "has no hard negatives"),
        (lambda d: _first_ann(d).update(category_id=777), "category_id 777 is not"),
        (lambda d: _first_ann(d).update(bbox=[90.0, 10.0, 30.0, 5.0]), "lies outside its image"),
        (lambda d: _first_ann(d).update(bbox=[-5.0, 10.0, 3.0, 5.0]), "lies outside its image"),
        (lambda d: _first_ann(d).update(bbox=[5.0, 10.0, 0.0, 5.0]), "is empty"),
        (lambda d: _first_ann(d).update(image_id=5), "unknown image_id 5"),
        (lambda d: d.pop("categories"), "no 'categories' list"),
    ],
)
def test_bad_files_name_the_file_and_problem(root: Path, tmp_path: Path, edit, message) -> None:  # noqa: ANN001
    path = _broken(root, tmp_path, edit)
    with pytest.raises(DatasetFormatError, match=message) as info:
        FGOVD(path, root / "coco")
    assert str(path) in str(info.value)
    if "annotation" in str(info.value):
        assert "annotation 1" in str(info.value)


def test_missing_files(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="github.com/lorebianchi98/FG-OVD"):
        FGOVD(tmp_path / "benchmarks" / "material.json", root / "coco")
    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="image file"):
        FGOVD(root / "benchmarks" / "material.json", tmp_path / "coco")


def test_image_size_mismatch(root: Path, tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["images"][0]["width"] = 97

    ds = FGOVD(_broken(root, tmp_path, edit), root / "coco")
    with pytest.raises(DatasetFormatError, match="records 97x72"):
        ds[0]


def test_fake_sentences_differ_only_in_material(root: Path) -> None:
    ds = _material(root)
    obj = ds.objects[0]
    for negative in obj["negatives"]:
        diff = [
            (a, b) for a, b in zip(obj["positive"].split(), negative.split(), strict=True) if a != b
        ]
        assert len(diff) == 1 and diff[0][1] in MATERIALS
    assert np.isfinite(obj["bbox"]).all()
