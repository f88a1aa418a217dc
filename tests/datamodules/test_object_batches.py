"""Object batches finished on the device (``crop_on_device``), the PyTorch rasteriser they
use, and training batches cut only between images (``image_batches``)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from matbench.datamodules.lvis_materials import LVISMaterialsDataModule
from matbench.datamodules.sampler import ImageBatchSampler, pack_groups
from matbench.datasets.rasterise import rasterise_polygons
from matbench.decoding import rgb_pixels
from matbench.utils.threads import one_cpu_thread
from tests.data.lvis_materials.data import make as make_lvis


# -- the rasteriser against pycocotools ---------------------------------------------------------
def _random_polygon(rng: np.random.Generator, height: int, width: int) -> list[float]:
    """Convex, concave, self-intersecting, tiny, border-touching and outside polygons."""
    k = int(rng.integers(3, 12))
    kind = int(rng.integers(0, 6))
    if kind == 0:  # anywhere, often crossing the border or entirely outside
        xs, ys = (
            rng.uniform(-0.5 * width, 1.5 * width, k),
            rng.uniform(-0.5 * height, 1.5 * height, k),
        )
    elif kind == 1:  # tiny: a few pixels or less
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        xs, ys = cx + rng.uniform(-1.5, 1.5, k), cy + rng.uniform(-1.5, 1.5, k)
    elif kind == 2:  # on the pixel grid and its half-pixels, touching the border
        xs = rng.integers(-3, width + 3, k) + rng.choice([0.0, 0.5, 0.2, 0.7], k)
        ys = rng.integers(-3, height + 3, k) + rng.choice([0.0, 0.5, 0.4], k)
    elif kind == 3:  # convex
        radius = rng.uniform(1, min(height, width) / 2)
        angle = np.sort(rng.uniform(0, 2 * np.pi, k))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        xs, ys = cx + radius * np.cos(angle), cy + radius * np.sin(angle)
    elif kind == 4:  # concave star
        angle = np.linspace(0, 2 * np.pi, 2 * k, endpoint=False)
        radius = np.where(np.arange(2 * k) % 2, 3.0, rng.uniform(6, 20))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        xs, ys = cx + radius * np.cos(angle), cy + radius * np.sin(angle)
    else:  # random vertices: self-intersecting, COCO's two decimals
        xs, ys = rng.uniform(0, width, k).round(2), rng.uniform(0, height, k).round(2)
    return np.stack([xs, ys], 1).ravel().tolist()


def _rasterise(objects: list[list[list[float]]], sizes: list[tuple[int, int]]):
    points, offsets, owner = [], [0], []
    for k, polygons in enumerate(objects):
        for polygon in polygons:
            points.append(np.asarray(polygon, dtype=np.float64).reshape(-1, 2))
            offsets.append(offsets[-1] + len(polygon) // 2)
            owner.append(k)
    with one_cpu_thread():  # small operations: threads only wait for each other
        return rasterise_polygons(
            torch.from_numpy(np.concatenate(points)),
            torch.tensor(offsets),
            torch.tensor(owner),
            torch.tensor(sizes),
        )


def _assert_pycocotools_masks(objects, sizes) -> None:  # noqa: ANN001
    masks = _rasterise(objects, sizes)
    for k, (polygons, (height, width)) in enumerate(zip(objects, sizes, strict=True)):
        rles = mask_utils.frPyObjects(polygons, height, width)
        expected = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        # every pixel is in the window, and the window is pycocotools' mask there
        x0, y0, x1, y1 = masks.windows[k].tolist()
        assert np.count_nonzero(expected[y0:y1, x0:x1]) == np.count_nonzero(expected), k
        assert np.array_equal(masks.window_mask(k).numpy(), expected[y0:y1, x0:x1]), polygons
        if expected.any():  # the tight box, found from the window alone
            rows, cols = np.flatnonzero(expected.any(1)), np.flatnonzero(expected.any(0))
            tight = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
            assert masks.boxes[k].tolist() == tight and not masks.empty[k]
        else:
            assert masks.empty[k]


def test_rasterise_equals_pycocotools_on_random_polygons() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):  # 100 batches of 24 objects of 1-3 polygons each
        sizes = [(int(rng.integers(5, 60)), int(rng.integers(5, 60))) for _ in range(24)]
        objects = [
            [_random_polygon(rng, *size) for _ in range(int(rng.integers(1, 4)))] for size in sizes
        ]
        _assert_pycocotools_masks(objects, sizes)


def test_rasterise_equals_pycocotools_on_real_lvis_polygons(shared_data: Path) -> None:
    data = json.loads((shared_data / "lvis" / "lvis_v0.5_val_100.json").read_text())
    images = {record["id"]: (record["height"], record["width"]) for record in data["images"]}
    annotations = [a for a in data["annotations"] if isinstance(a["segmentation"], list)]
    objects = [[p for p in a["segmentation"] if len(p) >= 6] for a in annotations]
    keep = [k for k, polygons in enumerate(objects) if polygons]
    assert len(keep) > 900
    _assert_pycocotools_masks(
        [objects[k] for k in keep], [images[annotations[k]["image_id"]] for k in keep]
    )


# -- the device path against the CPU path ----------------------------------------------------
def _add_odd_objects(root: Path) -> None:
    """Objects the fake data lacks: an empty mask, two overlapping polygons, one mostly
    outside its image."""
    path = root / "lvis" / "lvis_v1_train.json"
    data = json.loads(path.read_text())
    sidecar_path = root / "lvis" / "lvis_v1_train_materials.json"
    sidecar = json.loads(sidecar_path.read_text())
    image = data["images"][0]["id"]
    odd = {
        9001: ([[10.1, 10.1, 10.3, 10.1, 10.2, 10.3]], [10.1, 10.1, 0.2, 0.2]),
        9002: ([[5, 5, 30, 5, 30, 30, 5, 30], [20, 20, 50, 20, 50, 50, 20, 50]], [5, 5, 45, 45]),
        9003: ([[-40.5, -5.2, 20.3, -5, 20, 15.7, -40, 15]], [-40.5, -5.2, 60.8, 20.9]),
    }
    for ann_id, (polygons, bbox) in odd.items():
        data["annotations"].append(
            {
                "id": ann_id,
                "image_id": image,
                "category_id": 1,
                "segmentation": polygons,
                "bbox": bbox,
            }
        )
        materials = ["metal", "wood"] if ann_id == 9002 else ["metal"]  # two materials
        sidecar["annotations"][str(ann_id)] = {"materials": materials}
    path.write_text(json.dumps(data))
    sidecar_path.write_text(json.dumps(sidecar))


@pytest.fixture(scope="module")
def lvis_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_lvis(tmp_path_factory.mktemp("lvis") / "lvis", num_train=3, num_val=5, objects=4)
    _add_odd_objects(root)
    return root


def _epoch(root: Path, on_device: bool, **kwargs) -> tuple[list[dict], int]:  # noqa: ANN003
    """Every training and validation batch of one epoch, and how many objects the device
    path flipped."""
    dm = LVISMaterialsDataModule(
        root=str(root),
        image_size=32,
        batch_size=7,
        crop_blur_sigma=4.0,
        crop_min_size=8,
        crop_on_device=on_device,
        **kwargs,
    )
    dm.setup("fit")
    torch.manual_seed(0)  # the flips
    batches, flips = [], 0
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for batch in loader:
            if on_device:
                assert "image" not in batch and len(batch["images"]) <= len(batch["index"])
                flips += int(batch["flip"].sum()) if "flip" in batch else 0
                batch = dm.on_after_batch_transfer(batch, 0)
            batches.append(batch)
    return batches, flips


@pytest.mark.parametrize(
    "options",
    [
        {},  # seeded split: the training set has two parts (both annotation files)
        {"image_batches": True, "context_size": 16, "template": "an object made of {}"},
        {
            "group_by_image": True,
            "decode_draft": True,
            "split": "files",
            "crop_context": 0.2,
            "caption": "sidecar",
            "context_size": 12,
        },
    ],
)
def test_object_batches_equal_the_cpu_path(lvis_root: Path, options: dict) -> None:
    (cpu, _), (device, flips) = (
        _epoch(lvis_root, False, **options),
        _epoch(lvis_root, True, **options),
    )
    assert len(cpu) == len(device) > 2 and flips > 2
    for a, b in zip(cpu, device, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[key]), key
            else:
                assert value == b[key], key
    keys = {k for batch in cpu for k in batch["key"]}
    assert {"9001", "9002", "9003"} <= keys
    captions = {c for batch in cpu for c in batch["caption"]}
    assert any(" and " in c for c in captions)


def test_image_batches_hold_whole_images(lvis_root: Path) -> None:
    dm = LVISMaterialsDataModule(
        root=str(lvis_root),
        image_size=16,
        batch_size=9,
        image_batches=True,
        crop_on_device=True,
        num_workers=1,  # the images (views of PIL's memory) cross to the main process
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ImageBatchSampler) and loader.batch_size is None
    groups = dm.train_dataset.sample_groups()
    seen = []
    for batch in loader:
        index = batch["index"].numpy()
        assert len(index) <= 9 and len(batch["images"]) == len(set(groups[index].tolist()))
        seen += index.tolist()
        finished = dm.on_after_batch_transfer(batch, 0)
        assert finished["image"].shape == (len(index), 3, 16, 16)
    assert sorted(seen) == list(range(len(dm.train_dataset)))  # no padding at world size 1


def test_rgb_pixels_are_pils_pixels_with_or_without_a_copy() -> None:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (30, 25, 3), dtype=np.uint8))
    large = Image.fromarray(rng.integers(0, 255, (3000, 2500, 3), dtype=np.uint8))
    view = rgb_pixels(small)  # a view of PIL's memory, which outlives the image object
    assert not view.flags.owndata
    expected = np.asarray(small).copy()
    del small
    assert np.array_equal(view, expected)
    copy = rgb_pixels(large)  # in several memory blocks: copied
    assert copy.flags.owndata and np.array_equal(copy, np.asarray(large))


# -- the image-aligned batch sampler -----------------------------------------------------------
def test_pack_groups_cuts_between_groups_and_splits_only_when_needed() -> None:
    assert pack_groups(np.array([3, 70, 5, 60, 2]), 64).tolist() == [3, 67, 78, 140]
    assert pack_groups(np.array([30, 30, 30, 30]), 64).tolist() == [60, 120]
    # at most 2 batches: the second group is split to fill the first batch
    assert pack_groups(np.array([30, 40, 30]), 64, max_batches=2).tolist() == [64, 100]
    with pytest.raises(ValueError, match="do not fit"):
        pack_groups(np.array([64, 64]), 64, max_batches=1)


GROUPS = np.repeat(np.arange(60), np.random.default_rng(0).poisson(5, 60) + 1)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_image_batches_shard_exactly_with_equal_counts(world: int) -> None:
    dataset = list(range(len(GROUPS)))
    for epoch in range(6):
        shards = []
        for rank in range(world):
            sampler = ImageBatchSampler(dataset, GROUPS, 16, world, rank, seed=5)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler)
        assert len({len(s) for s in shards}) == 1  # every rank steps the same number of times
        batches = [b for s in shards for b in s]
        flat = [i for b in batches for i in b]
        assert set(flat) == set(dataset)  # every object; the rest are repeated batches
        assert all(len(b) <= 16 for b in batches)
        # an image is in one batch only (except repeats of whole batches)
        unique = {tuple(b) for b in batches}
        owners = [int(g) for b in unique for g in set(GROUPS[list(b)].tolist())]
        assert len(owners) - len(set(owners)) <= (epoch > 3) * 2


def test_image_batches_are_a_function_of_seed_and_epoch() -> None:
    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = ImageBatchSampler(list(range(len(GROUPS))), GROUPS, 16, 1, 0, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 2) == batches(0, 2)
    assert batches(0, 1) != batches(0, 2) and batches(1, 1) != batches(0, 1)


# -- two processes ---------------------------------------------------------------------------------
class _RecordBatches(L.LightningModule):
    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.seen: list[list[int]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        assert batch["image"].shape[1:] == (3, 16, 16)
        self.seen.append(batch["index"].tolist())
        return self.weight * batch["image"].mean()

    def on_train_epoch_end(self) -> None:
        path = Path(self.out) / f"rank{self.global_rank}.json"
        path.write_text(json.dumps(self.seen))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.ddp
def test_image_batches_under_ddp_cover_every_object_once(lvis_root: Path, tmp_path: Path) -> None:
    dm = LVISMaterialsDataModule(
        root=str(lvis_root), image_size=16, batch_size=8, image_batches=True, crop_on_device=True
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_RecordBatches(str(tmp_path)), dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) > 1
    dm.setup("fit")
    groups = dm.train_dataset.sample_groups()
    batches = [b for rank in ranks for b in rank]
    unique = {tuple(b) for b in batches}
    assert sorted(i for b in unique for i in b) == list(range(len(dm.train_dataset)))
    owners = [int(g) for b in unique for g in set(groups[list(b)].tolist())]
    assert np.bincount(groups).max() <= 8 and len(owners) == len(set(owners))  # one batch each
