"""The image-grouped training sampler and the decode-once batched reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matbench.datamodules.lvis_materials import LVISMaterialsDataModule
from matbench.datamodules.sampler import GroupedSampler
from matbench.datasets import DMS, LVISMaterials
from matbench.datasets import lvis_materials as lvis_module
from matbench.datasets.lvis_materials import load_image, load_image_reduced
from matbench.transforms import crop_object
from tests.data.dms.data import make as make_dms
from tests.data.lvis_materials.data import make as make_lvis

GROUPS = np.array([3, 1, 3, 2, 2, 2, 0, 1, 5, 3, 4])


def _runs(order: list[int]) -> list[int]:
    """The group of each maximal run of equal groups along ``order``."""
    keys = GROUPS[order]
    return [int(k) for i, k in enumerate(keys) if i == 0 or k != keys[i - 1]]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_grouped_sampler_shards_exactly(world: int) -> None:
    dataset = list(range(len(GROUPS)))
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            sampler = GroupedSampler(dataset, GROUPS, world, rank, seed=7)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        assert len({len(s) for s in shards}) == 1  # equal lengths: DDP steps stay in lockstep
        flat = [i for s in shards for i in s]
        n = len(GROUPS)
        assert sorted(flat[:n]) == dataset and len(flat) - n < world  # padding only
        # Each group is one contiguous run of the epoch order, in dataset order inside.
        assert sorted(_runs(flat[:n])) == sorted(set(GROUPS.tolist()))
        for g in set(GROUPS.tolist()):
            members = [i for i in flat[:n] if GROUPS[i] == g]
            assert members == sorted(members)


def test_grouped_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    keys = [f"img{g}" for g in GROUPS]  # any hashable key per sample

    def order(seed: int, epoch: int) -> list[int]:
        sampler = GroupedSampler(keys, keys, 1, 0, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 3) == order(0, 3)
    assert len({tuple(order(0, e)) for e in range(6)}) > 1
    assert order(0, 1) != order(1, 1) or order(0, 2) != order(1, 2)
    with pytest.raises(ValueError, match="groups has 2 keys"):
        GroupedSampler(keys, keys[:2], 1, 0)


@pytest.fixture
def lvis_root(tmp_path: Path) -> Path:
    return make_lvis(tmp_path / "lvis", num_train=4, num_val=1, size=(96, 72))


def test_getitems_decodes_each_image_once_and_equals_per_object(
    lvis_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the annotation files as they are (one validation image: too few for the seeded split)
    dm = LVISMaterialsDataModule(root=str(lvis_root), image_size=32, context_size=16, split="files")
    dataset = dm._dataset("train", train=True)  # flip on: the random draws must match too
    sampler = GroupedSampler(dataset, dataset.sample_groups(), 1, 0, seed=3)
    indices = list(sampler)
    decoded: list[Path] = []
    real = lvis_module.load_image_reduced
    monkeypatch.setattr(
        lvis_module,
        "load_image_reduced",
        lambda p, *args, **kwargs: decoded.append(p) or real(p, *args, **kwargs),
    )
    torch.manual_seed(0)
    per_object = [dataset[i] for i in indices]
    assert len(decoded) == len(indices)
    decoded.clear()
    torch.manual_seed(0)
    batched = dataset.__getitems__(indices)
    assert len(decoded) == len(set(decoded)) == len(set(dataset.sample_groups().tolist()))
    for a, b in zip(per_object, batched, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


def test_datamodule_groups_training_batches(lvis_root: Path) -> None:
    dm = LVISMaterialsDataModule(
        root=str(lvis_root), image_size=32, batch_size=64, group_by_image=True, split="files"
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, GroupedSampler)
    batch = next(iter(loader))
    image_ids = [dm.train_dataset.objects[int(i)]["image_id"] for i in batch["index"]]
    runs = [k for i, k in enumerate(image_ids) if i == 0 or k != image_ids[i - 1]]
    assert len(runs) == len(set(image_ids))  # each image's objects are adjacent


def test_dms_regions_batched_equal_single(tmp_path: Path) -> None:
    root = make_dms(tmp_path / "DMS_v1", per_split=2)
    dataset = DMS(root, split="train", min_pixels=1, image_size=24)
    indices = list(range(len(dataset)))[::-1]
    for a, b in zip([dataset[i] for i in indices], dataset.__getitems__(indices), strict=True):
        assert a["key"] == b["key"] and torch.equal(a["image"], b["image"])
        assert torch.equal(a["mask"], b["mask"])


def test_draft_decode_is_a_reduced_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (12, 16, 3)), np.ones((20, 20, 1))).astype(np.uint8)
    path = tmp_path / "image.jpg"
    Image.fromarray(smooth).save(path, quality=95)
    full = load_image(path)
    half, scale = load_image_reduced(path, 2)
    assert scale == 2.0 and half.shape == (3, 120, 160) and full.shape == (3, 240, 320)
    same, one = load_image_reduced(path, 1)
    assert one == 1.0 and torch.equal(same, full)
    mask = torch.zeros(240, 320, dtype=torch.bool)
    mask[60:200, 100:260] = True
    reference, ref_mask, box = crop_object(full, mask, size=48, blur_sigma=0.0)
    reduced, red_mask, red_box = crop_object(half, mask, size=48, blur_sigma=0.0, image_scale=2)
    assert box == red_box and torch.equal(ref_mask, red_mask)
    assert (reference - reduced).abs().mean() < 0.03


def test_draft_reduction_follows_the_smallest_box_side(lvis_root: Path) -> None:
    ann = lvis_root / "lvis/lvis_v1_train.json"
    dataset = LVISMaterials(ann, lvis_root / "coco", draft_size=4)
    for i in range(len(dataset)):
        side = min(dataset.objects[i]["bbox"][2:])
        reduce = dataset.draft_reduction(i)
        assert reduce in (1, 2, 4, 8) and side / reduce >= 4
        assert reduce == 8 or side / (2 * reduce) < 4
    assert LVISMaterials(ann, lvis_root / "coco").draft_reduction(0) == 1


def test_fgovd_objects_group_by_image(tmp_path: Path) -> None:
    from matbench.datasets import FGOVD
    from tests.data.fgovd.data import make as make_fgovd

    root = make_fgovd(tmp_path / "fgovd", num_images=3)
    dataset = FGOVD(root / "benchmarks" / "material.json", root / "coco", image_size=16)
    groups = dataset.sample_groups()
    indices = list(GroupedSampler(dataset, groups, 1, 0, seed=1))
    decoded: list[int] = []
    decode = dataset.decode
    dataset.decode = lambda image_id: decoded.append(image_id) or decode(image_id)
    batched = dataset.__getitems__(indices)
    assert sorted(decoded) == sorted(set(groups.tolist()))
    for index, sample in zip(indices, batched, strict=True):
        assert torch.equal(sample["image"], dataset[index]["image"])


def test_decode_equals_pils_exif_transpose_and_convert(tmp_path: Path) -> None:
    from PIL import ImageOps

    pixels = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees
    image.save(tmp_path / "rotated.jpg", exif=exif)
    image.convert("L").save(tmp_path / "grey.jpg")
    image.convert("CMYK").save(tmp_path / "cmyk.jpg")
    image.convert("P").save(tmp_path / "palette.png")
    for path in sorted(tmp_path.iterdir()):
        with Image.open(path) as img:
            expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        reference = torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255.0
        assert torch.equal(load_image(path), reference), path.name
        uint8, scale = load_image_reduced(path, as_uint8=True)
        assert scale == 1.0 and torch.equal(uint8.float() / 255.0, reference), path.name
