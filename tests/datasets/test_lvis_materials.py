"""LVIS-materials reader and datamodule: v1, v0.5, the real v0.5 subset, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matbench.datamodules.lvis_materials import LVISMaterialsDataModule, seeded_image_split
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.lvis_materials import (
    LVISMaterials,
    decode_polygons,
    image_candidates,
    sidecar_path,
)
from matbench.materials.prior import load_prior
from matbench.materials.sidecar import build_sidecar, write_sidecar
from matbench.metrics.functional.retrieval import grouping_order
from tests.data.lvis_materials.data import make


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("lvis"))


def test_image_candidates() -> None:
    v1 = {"coco_url": "http://images.cocodataset.org/val2017/000000266409.jpg"}
    assert image_candidates(v1) == ["val2017/000000266409.jpg"]
    v05 = {"file_name": "COCO_val2014_000000266409.jpg"}
    assert image_candidates(v05) == [
        "COCO_val2014_000000266409.jpg",
        "train2017/000000266409.jpg",
        "val2017/000000266409.jpg",
    ]


def test_decode_polygons_merges_parts() -> None:
    square = [2.0, 2.0, 6.0, 2.0, 6.0, 6.0, 2.0, 6.0]
    other = [10.0, 10.0, 14.0, 10.0, 14.0, 14.0, 10.0, 14.0]
    mask = decode_polygons([square, other], 20, 20)
    assert mask.shape == (20, 20) and mask.dtype == bool
    assert mask[4, 4] and mask[12, 12] and not mask[8, 8]
    assert mask.sum() == decode_polygons([square], 20, 20).sum() * 2


def test_v1_reader(fake_root: Path) -> None:
    ds = LVISMaterials(fake_root / "lvis/lvis_v1_train.json", fake_root / "coco")
    assert ds.materials == ["fabric", "glass", "metal", "wood"]
    assert len(ds) == 20
    sample = ds[0]
    assert sample["image"].shape == (3, 72, 96) and sample["image"].dtype == torch.float32
    assert sample["mask"].dtype == torch.bool and sample["mask"].shape == (72, 96)
    assert sample["mask"].any()
    assert sample["key"] == "1" and sample["index"] == 0
    assert sample["caption"] in ds.materials
    assert ds.materials[int(sample["label"])] == sample["caption"]
    # The pixels of the image's last-drawn (unoccluded) object have its material's colour.
    top = ds[1]
    assert top["caption"] == "wood"
    colour = top["image"][:, top["mask"]].median(1).values * 255
    assert torch.allclose(colour, torch.tensor([140.0, 90.0, 40.0]), atol=12)


def test_captions_and_template(fake_root: Path) -> None:
    ann = fake_root / "lvis/lvis_v1_train.json"
    plain = LVISMaterials(ann, fake_root / "coco")
    templated = LVISMaterials(ann, fake_root / "coco", template="an object made of {}")
    free = LVISMaterials(ann, fake_root / "coco", caption="sidecar")
    obj = plain.objects[4]  # annotation id 5: has a free-text caption in the fake sidecar
    assert obj["id"] == 5
    assert plain.caption(obj) == obj["materials"][0]
    assert templated.caption(obj) == f"an object made of {obj['materials'][0]}"
    assert free.caption(obj) == f"a {obj['materials'][0]} object"
    with pytest.raises(ValueError, match="template"):
        LVISMaterials(ann, fake_root / "coco", template="no slot")


def test_v05_reader_uses_file_name(tmp_path: Path) -> None:
    root = make(tmp_path, num_train=2, num_val=1, version="v0.5")
    ann = root / "lvis/lvis_v1_train.json"
    data = json.loads(ann.read_text())
    for record in data["images"]:  # only file_name left: stripped to the 2017 name
        del record["coco_url"]
    ann.write_text(json.dumps(data))
    ds = LVISMaterials(ann, root / "coco")
    assert len(ds) == 5 and ds[0]["image"].shape == (3, 72, 96)


def test_errors_name_the_file(tmp_path: Path) -> None:
    root = make(tmp_path, num_train=2, num_val=1)
    ann = root / "lvis/lvis_v1_train.json"
    bad = root / "lvis/broken.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetFormatError, match="broken.json.*not valid JSON"):
        LVISMaterials(bad, root / "coco", sidecar=None)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetFormatError, match="no 'annotations' list"):
        LVISMaterials(bad, root / "coco", sidecar=None)
    with pytest.raises(DatasetNotFoundError, match="lvis_v1_val_materials.json"):
        LVISMaterials(
            root / "lvis/lvis_v1_val.json",
            root / "coco",
            sidecar=root / "lvis/lvis_v1_val_materials.json.missing",
        )
    missing = root / "coco/train2017/000000001001.jpg"
    missing.unlink()
    with pytest.raises(DatasetNotFoundError, match="000000001001.jpg"):
        LVISMaterials(ann, root / "coco")
    # A sidecar for another file.
    with pytest.raises(DatasetFormatError, match="not in lvis_v1_val.json"):
        LVISMaterials(root / "lvis/lvis_v1_val.json", root / "coco", sidecar=sidecar_path(ann))


def test_image_size_mismatch_is_an_error(tmp_path: Path) -> None:
    root = make(tmp_path, num_train=1, num_val=1)
    path = root / "coco/train2017/000000001000.jpg"
    Image.new("RGB", (10, 10)).save(path)
    ds = LVISMaterials(root / "lvis/lvis_v1_train.json", root / "coco")
    with pytest.raises(DatasetFormatError, match="000000001000.jpg: image is 10x10"):
        ds[0]


def test_real_v05_subset(shared_data: Path, tmp_path: Path) -> None:
    """The real LVIS v0.5 val subset, with stand-in images at the recorded sizes."""
    ann = shared_data / "lvis" / "lvis_v0.5_val_100.json"
    if not ann.is_file():
        pytest.skip(f"{ann} not found")
    lvis = json.loads(ann.read_text())
    rng = np.random.default_rng(0)
    for record in lvis["images"]:
        rel = image_candidates(record)[0]
        (tmp_path / "coco" / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (record["height"], record["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "coco" / rel, quality=50)
    labels, report = build_sidecar(lvis, prior=load_prior())
    assert report.num_objects == 977
    assert report.from_prior == len(labels) > 800
    sidecar = write_sidecar(tmp_path / "materials.json", labels)
    ds = LVISMaterials(ann, tmp_path / "coco", sidecar=sidecar)
    assert len(ds) == len(labels)
    all_objects = LVISMaterials(ann, tmp_path / "coco", sidecar=None)
    assert len(all_objects) == 977
    for i in (0, len(ds) // 2, len(ds) - 1):
        sample = ds[i]
        record = next(r for r in lvis["images"] if r["id"] == ds.objects[i]["image_id"])
        assert sample["image"].shape == (3, record["height"], record["width"])
        assert sample["mask"].any()
        # The decoded mask lies inside the annotated box (1 px tolerance).
        x0, y0, x1, y1 = sample["box"].tolist()
        rows, cols = torch.nonzero(sample["mask"], as_tuple=True)
        assert (
            rows.min() >= y0 - 1 and rows.max() <= y1 and cols.min() >= x0 - 1 and cols.max() <= x1
        )
    # Groups of 64 in dataset (annotation id) order cluster by image: few distinct captions
    # per group (13.7 here); the default seeded random groups hold about twice as many.
    captions = [ds.caption(obj) for obj in ds.objects]

    def distinct_per_group(order: list[int]) -> float:
        groups = [order[i : i + 64] for i in range(0, len(order), 64)]
        return float(np.mean([len({captions[j] for j in group}) for group in groups]))

    ordered = distinct_per_group(grouping_order(len(captions), "dataset").tolist())
    shuffled = distinct_per_group(grouping_order(len(captions), "shuffled", seed=0).tolist())
    assert ordered < 15 and shuffled > 1.8 * ordered


def test_datamodule_batches(fake_root: Path) -> None:
    dm = LVISMaterialsDataModule(
        root=str(fake_root), image_size=32, batch_size=4, context_size=24, crop_blur_sigma=1.0
    )
    assert dm.class_names is None  # not known before setup
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["context"].shape == (4, 3, 24, 24)
    assert len(batch["caption"]) == 4 and all(c in dm.class_names for c in batch["caption"])
    dm.setup("test")
    assert dm.test_dataset.annotation_file.name == "lvis_v1_val.json"
    dm.setup("predict")  # the test split
    keys = [dm.predict_dataset[i]["key"] for i in range(len(dm.predict_dataset))]
    assert keys == sorted(keys, key=int)
    assert keys == [dm.test_dataset[i]["key"] for i in range(len(dm.test_dataset))]


def _image_ids(dataset) -> set[int]:
    return {
        dataset.datasets[int(k)].objects[int(i)]["image_id"]
        for k, i in zip(dataset.part, dataset.position, strict=True)
    }


def test_seeded_split_by_image_and_refused_test_on_val(fake_root: Path, tmp_path: Path) -> None:
    """The default split: the validation file's images, ranked by a seeded hash, give disjoint
    test and validation splits (whole images); the rest join the training file. The split's
    SHA-256 is in describe(); the same split file gives the same split. Testing on the
    checkpoint-selection annotations is refused unless asked for."""
    dm = LVISMaterialsDataModule(root=str(fake_root), image_size=32)
    dm.setup("fit")
    dm.setup("test")
    train, val, test = (_image_ids(d) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset))
    assert train.isdisjoint(val) and train.isdisjoint(test) and val.isdisjoint(test)
    val_file = {o["image_id"] for o in dm._file("val").objects}
    assert val | test <= val_file and len(val) == len(test) == 1  # 4 images: at least one each
    assert len(dm.train_dataset) == len(dm._file("train")) + sum(
        o["image_id"] in train for o in dm._file("val").objects
    )
    assert [dm.test_dataset[i]["index"] for i in range(len(dm.test_dataset))] == list(
        range(len(dm.test_dataset))
    )
    # Batched reads and image groups (group_by_image) pass through to the two files.
    last = len(dm.train_dataset) - 1
    batch = dm.train_dataset.__getitems__([last, 0])
    assert [b["key"] for b in batch] == [dm.train_dataset[i]["key"] for i in (last, 0)]
    assert [b["index"] for b in batch] == [last, 0]
    groups = dm.train_dataset.sample_groups()
    images = [
        dm.train_dataset.datasets[int(k)].objects[int(i)]["image_id"]
        for k, i in zip(dm.train_dataset.part, dm.train_dataset.position, strict=True)
    ]
    assert len(set(groups.tolist())) == len(set(images)) == len(train)
    info = dm.describe()
    assert info["split"] == "test" and info["split_mode"] == "seeded"
    assert info["split_images"] == {"train": 2, "val": 1, "test": 1}
    # The split depends on the image ids and the seed only; a written split file reproduces it.
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(dm.split_record))
    again = LVISMaterialsDataModule(root=str(fake_root), image_size=32, split_file=str(split_file))
    again.setup("test")
    assert _image_ids(again.test_dataset) == test
    assert again.describe()["split_sha256"] == info["split_sha256"]
    other = LVISMaterialsDataModule(root=str(fake_root), image_size=32, split_seed=1)
    other.setup("test")
    assert other.describe()["split_sha256"] != info["split_sha256"]

    ids = list(range(100, 140))
    assert seeded_image_split(ids, 0.2, 0.2, 0) == seeded_image_split(ids[::-1], 0.2, 0.2, 0)
    assert [len(v) for v in seeded_image_split(ids, 0.2, 0.2, 0).values()] == [24, 8, 8]
    with pytest.raises(ValueError, match="cannot give"):
        seeded_image_split([1], 0.2, 0.2, 0)
    files = LVISMaterialsDataModule(root=str(fake_root), split="files")
    files.setup("fit")  # training and validating on the files is fine
    with pytest.raises(ValueError, match="pick the best checkpoint"):
        files.setup("test")
    files = LVISMaterialsDataModule(root=str(fake_root), split="files", test_on_val=True)
    files.setup("test")
    assert len(files.test_dataset) == 10 and files.describe()["split"] == "val"


def test_predict_uses_open_clips_own_eval_transform_on_the_region(fake_root: Path) -> None:
    """``predict`` with the open_clip image tower: each object's region (the datamodule's one
    crop rule, at its own size) goes through open_clip's ``preprocess_val``; the embeddings
    equal open_clip's own pipeline on the PIL region to 1e-6 (issue 11, item 5)."""
    import open_clip
    import torch.nn.functional as F

    from matbench.tasks.clip import ClipMaterialTask

    tiny = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")
    open_clip.add_model_config(tiny)
    clip, _, preprocess_val = open_clip.create_model_and_transforms("tiny_clip")
    clip.eval()
    dm = LVISMaterialsDataModule(
        root=str(fake_root), image_size=32, crop_min_size=20, crop_blur_sigma=0.0, batch_size=3
    )
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert isinstance(batch["image"], list)
    assert {tuple(i.shape[-2:]) for i in batch["image"]} != {(32, 32)}  # own sizes
    task = ClipMaterialTask(model=tiny, text_tower="minilm-random").eval()
    task.model.image.visual.load_state_dict(clip.visual.state_dict())
    with torch.no_grad():
        got = task.predict_step(batch, 0)["embeddings"]
    whole = LVISMaterials(
        fake_root / "lvis" / "lvis_v1_val.json", fake_root / "coco", index_cache=None
    )
    by_key = {str(obj["id"]): i for i, obj in enumerate(whole.objects)}
    regions = []
    for key, box in zip(batch["key"], batch["box"], strict=True):
        image = whole[by_key[key]]["image"]  # the decoded file, RGB in [0, 1]
        pixels = image.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        regions.append(Image.fromarray(pixels).crop(tuple(int(v) for v in box)))
    with torch.no_grad():
        expected = F.normalize(clip.encode_image(torch.stack([preprocess_val(r) for r in regions])))
    assert torch.allclose(got, expected, atol=1e-6)
