"""MatSeg readers: benchmark (points, relations, EXIF, resize) and training scenes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matbench.datamodules.matseg import (
    MatSegDataModule,
    SizedBatchSampler,
    matseg_collate,
)
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.matseg import (
    MatSegBenchmark,
    MatSegScenes,
    parse_relations,
    scene_targets,
)
from tests.data.matseg.data import make_benchmark, make_scenes


@pytest.fixture
def bench_root(tmp_path: Path) -> Path:
    return make_benchmark(tmp_path / "benchmark")


@pytest.fixture
def scenes_root(tmp_path: Path) -> Path:
    return make_scenes(tmp_path / "scenes")


# -- relations parser ----------------------------------------------------------------------------
def test_relations_parser_weights_and_override(tmp_path: Path) -> None:
    path = tmp_path / "group_relations.txt"
    path.write_text("\n [1, 2,3]\n\n(2 ,3)\n  \n(1,4)\n[1,4]\n")
    pairs = parse_relations(path, ["1", "2", "3", "4"])
    assert pairs[("1", "2")] == pairs[("2", "1")] == 0.6
    assert pairs[("1", "3")] == 0.6
    assert pairs[("2", "3")] == 0.3  # the later round-bracket line overrides
    assert pairs[("1", "4")] == 0.6  # and again here, the other way
    assert ("3", "4") not in pairs


def test_relations_unknown_group_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "group_relations.txt"
    path.write_text("[1,2]\n\n(2, 9)\n")
    with pytest.raises(DatasetFormatError) as err:
        parse_relations(path, ["1", "2"])
    assert str(path) in str(err.value)
    assert "line 3" in str(err.value) and "'9'" in str(err.value)


def test_relations_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "group_relations.txt"
    path.write_text("[1,2]\n1,2\n")
    with pytest.raises(DatasetFormatError, match="line 2"):
        parse_relations(path, ["1", "2"])


# -- benchmark -------------------------------------------------------------------------------------
def test_benchmark_samples(bench_root: Path) -> None:
    ds = MatSegBenchmark(bench_root, max_size=700)
    assert [r["key"] for r in ds.records] == ["a", "b", "c"]  # b.PNG and c.jpeg found too
    a, b, c = ds[0], ds[1], ds[2]
    assert a["image"].dtype == torch.float32 and a["image"].shape == (3, 40, 30)  # EXIF applied
    assert a["points"].dtype == torch.int64 and a["points"].shape == (4, 3)
    assert a["groups"].tolist() == [0, 0, 1, 1]
    expected = torch.tensor(
        [[1, 1, 0.6, 0.6], [1, 1, 0.6, 0.6], [0.6, 0.6, 1, 1], [0.6, 0.6, 1, 1]]
    )
    assert torch.allclose(a["weight"], expected)
    assert a["has_relations"] is True and a["key"] == "a" and a["index"] == 0
    # b: "( 1, 3 )", then "[1 ,2]" overridden by "(1,2)"; groups 2 and 3 unrelated.
    w = b["weight"]
    assert w[0, 2] == pytest.approx(0.3) and w[0, 4] == pytest.approx(0.3)
    assert w[2, 4] == 0 and w[2, 3] == 1
    assert b["image"].shape == (3, 20, 60)
    assert c["has_relations"] is False and torch.all(c["weight"] == 1)


def test_benchmark_exif_orientation_puts_points_on_the_right_region(bench_root: Path) -> None:
    sample = MatSegBenchmark(bench_root)[0]
    image = sample["image"]
    for (x, y, _), group in zip(sample["points"].tolist(), sample["groups"].tolist(), strict=True):
        red, blue = image[0, y, x].item(), image[2, y, x].item()
        # group 1 (index 0) was drawn on the red left half of the displayed image
        assert (red > blue) == (group == 0)


def test_benchmark_resize_scales_points(bench_root: Path) -> None:
    full = MatSegBenchmark(bench_root, max_size=None)
    small = MatSegBenchmark(bench_root, max_size=20)
    s = small[0]
    assert s["image"].shape == (3, 20, 15)  # 30 x 40 → longest side 20, factor 0.5
    expected = np.round(full[0]["points"].numpy() * 0.5).astype(np.int64)  # halves to even
    assert s["points"].tolist() == expected.tolist()
    big = MatSegBenchmark(bench_root, max_size=1000)[1]  # never enlarged
    assert big["image"].shape == (3, 20, 60)


def test_benchmark_point_outside_image(bench_root: Path) -> None:
    path = bench_root / "data" / "c" / "data.json"
    path.write_text(json.dumps({"1": {"pt_im": [[30, 3, 1]]}}))
    with pytest.raises(DatasetFormatError, match="outside") as err:
        MatSegBenchmark(bench_root)
    assert str(path) in str(err.value)


def test_benchmark_bad_json_and_missing(bench_root: Path, tmp_path: Path) -> None:
    (bench_root / "data" / "b" / "data.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match="b/data.json"):
        MatSegBenchmark(bench_root)
    (bench_root / "data" / "b" / "data.json").unlink()
    with pytest.raises(DatasetFormatError, match="no point annotation"):
        MatSegBenchmark(bench_root)
    with pytest.raises(DatasetNotFoundError, match="images"):
        MatSegBenchmark(tmp_path / "nowhere")


def test_benchmark_unknown_relation_group(bench_root: Path) -> None:
    rel = bench_root / "data" / "a" / "group_relations.txt"
    rel.write_text("[1,2]\n[1,5]\n")
    with pytest.raises(DatasetFormatError, match="line 2") as err:
        MatSegBenchmark(bench_root)
    assert str(rel) in str(err.value)


def _official_resize(points: np.ndarray, width: int, height: int, max_size: int):
    """The official ``MatSegBenchmarkLoader.TestSetReader.load`` resize, written out: ratio
    ``max(h / max_size, w / max_size)``; above 1 the image becomes ``int(side / ratio)`` and
    every ``[x, y, r]`` becomes ``(p / ratio).round()`` (numpy: half to even)."""
    rat = np.max([height / max_size, width / max_size])
    if rat > 1 and max_size > 0:
        size = (int(width / rat), int(height / rat))
        return size, np.stack([(p / rat).round().astype(np.int16) for p in points])
    return (width, height), points


def test_points_scaled_as_the_official_reader(tmp_path: Path) -> None:
    """Halves go to even (2.5 -> 2, 0.5 -> 0), as numpy's round in the official reader."""
    root = tmp_path / "bench"
    (root / "images").mkdir(parents=True)
    (root / "data" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 11, 3), np.uint8)).save(root / "images" / "a.png")
    points = [[5, 3, 1], [7, 1, 3], [1, 5, 5]]
    data = {"1": {"pt_im": points[:2]}, "2": {"pt_im": points[2:]}}
    (root / "data" / "a" / "data.json").write_text(json.dumps(data))
    ds = MatSegBenchmark(root, max_size=5)  # ratio 11 / 5 = 2.2
    (size, expected) = _official_resize(np.array(points), 11, 6, 5)
    assert ds.scale(0)[1] == size == (5, 2)
    assert ds.scaled_points(0).tolist() == [[2, 1, 0], [3, 0, 1], [0, 1, 2]]
    assert np.array_equal(np.array(ds.scaled_points(0)), np.minimum(expected, [4, 1, 99]))
    ds = MatSegBenchmark(root, max_size=2 * 11)  # not shrunk
    assert ds.scaled_points(0).tolist() == points
    halves = MatSegBenchmark(root, max_size=11 // 2 + 0.5)  # ratio exactly 2
    assert halves.scaled_points(0)[:, 2].tolist() == [0, 2, 2]  # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2


def test_real_benchmark(shared_data: Path) -> None:
    root = shared_data / "matseg" / "benchmark"
    full = MatSegBenchmark(root, max_size=None)
    assert all(r["size"] == (3000, 4000) for r in full.records)  # stored 4000x3000, EXIF 6
    ds = MatSegBenchmark(root)
    assert len(ds) == 2
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 700, 525)
        pts = s["points"]
        assert (pts[:, 0] >= 0).all() and (pts[:, 0] < 525).all()
        assert (pts[:, 1] >= 0).all() and (pts[:, 1] < 700).all()
        assert s["weight"].shape == (len(pts), len(pts)) and not s["has_relations"]
        raw = full.records[i]["points"]
        size, expected = _official_resize(raw, 3000, 4000, 700)
        assert size == (525, 700)
        assert torch.equal(pts, torch.from_numpy(expected.astype(np.int64)))
    assert len(ds[0]["points"]) == 37 and ds[0]["groups"].max() == 1


# -- scenes --------------------------------------------------------------------------------------
def test_scene_targets() -> None:
    masks = np.zeros((3, 2, 4), np.uint8)
    masks[0, :, :2] = 200
    masks[1, :, 2:] = 100
    masks[1, :, 1] = 100  # pixel column 1: 200 vs 100 → 2/3, 1/3
    masks[2, 0, 3] = 5  # weak everywhere: dropped
    masks[:, 1, 3] = 0
    masks[2, 1, 3] = 4  # total 4 < 10: outside the region of interest
    fractions, roi = scene_targets(masks)
    assert fractions.shape == (2, 2, 4)
    assert roi.tolist() == [[True] * 4, [True, True, True, False]]
    assert fractions[0, 0, 1] == pytest.approx(2 / 3) and fractions[1, 0, 1] == pytest.approx(1 / 3)
    assert fractions[:, 1, 3].tolist() == [0, 0]


def test_scene_reader_names_and_finished(scenes_root: Path) -> None:
    ds = MatSegScenes(scenes_root, crop_size=24, seed=0)
    assert [s["folder"].name for s in ds.scenes] == ["s2d", "s3d"]  # "unfinished" ignored
    s2d = ds.scenes[0]["masks"]
    assert [p.name for p in s2d][:3] == ["mask0.png", "mask1.png", "mask2.png"]
    assert s2d[-1].name == "mask10.png"  # numeric order
    assert [p.name for p in ds.scenes[1]["masks"]] == ["mask001.png", "mask002.png", "mask003.png"]
    sample = ds[(0, (16, 20))]
    assert sample["image"].shape == (3, 16, 20) and sample["roi"].shape == (16, 20)
    # mask0 (left) and mask10 (right) may both be kept; the weak band never dominates.
    assert 1 <= sample["fractions"].shape[0] <= 2
    assert sample["fractions"].max() <= 1 and sample["key"] == "s2d"
    s3d = ds[1]
    assert s3d["image"].shape == (3, 24, 24)
    assert s3d["fractions"].shape[0] in (1, 2)  # the empty mask003 is always dropped


def test_scene_fractions_follow_masks(scenes_root: Path) -> None:
    ds = MatSegScenes(scenes_root, crop_size=48, min_crop_fraction=1.0, seed=0)
    s = ds[0]  # full frame, no resize: mask0 on the left half, mask10 on the right half
    f = s["fractions"]
    assert f.shape == (2, 48, 48) and s["roi"].all()
    assert torch.all(f[0, :, :20] > 0.99) and torch.all(f[1, :, 28:] > 0.99)
    s3d = ds[1]
    assert not s3d["roi"][:, :4].any() and s3d["roi"][:, 4:-4].all()


def test_scene_errors(scenes_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (scenes_root / "s3d" / "mask002.png").unlink()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(scenes_root / "s3d" / "mask002.png")
    with pytest.raises(DatasetFormatError, match="mask002.png") as err:
        MatSegScenes(scenes_root)
    assert "differs" in str(err.value)
    with caplog.at_level(logging.WARNING):
        ds = MatSegScenes(scenes_root, on_error="skip")
    assert len(ds) == 1 and ds.num_skipped == 1 and "mask002.png" in caplog.text

    (scenes_root / "s2d" / "mask4.png").unlink()
    with pytest.raises(DatasetFormatError, match="mask4.png is|mask4.png: mask file is missing"):
        MatSegScenes(scenes_root)
    (scenes_root / "s2d" / "RGB__RGB.jpg").unlink()
    with pytest.raises(DatasetFormatError, match="RGB__RGB.jpg"):
        MatSegScenes(scenes_root)


def test_scene_decode_errors_in_getitem(
    scenes_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = MatSegScenes(scenes_root, crop_size=16)
    ds_skip = MatSegScenes(scenes_root, crop_size=16, on_error="skip")
    # Files that break after indexing: a truncated image, a deleted mask.
    image = scenes_root / "s2d" / "RGB__RGB.jpg"
    image.write_bytes(image.read_bytes()[:400])
    with pytest.raises(DatasetFormatError, match="RGB__RGB.jpg"):
        ds[0]
    (scenes_root / "s3d" / "mask001.png").unlink()
    with pytest.raises(DatasetFormatError, match="mask001.png"):
        ds[1]
    with caplog.at_level(logging.WARNING):
        with pytest.raises(RuntimeError, match="every scene"):
            ds_skip[0]
    assert ds_skip.num_skipped == 2 and "RGB__RGB.jpg" in caplog.text


def test_scene_error_from_a_worker_names_the_file(scenes_root: Path) -> None:
    ds = MatSegScenes(scenes_root, crop_size=16)
    (scenes_root / "s3d" / "mask001.png").write_bytes(b"not a png")
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, collate_fn=matseg_collate)
    with pytest.raises(Exception, match="mask001.png"):
        for _ in loader:
            pass


def test_real_scenes(shared_data: Path) -> None:
    ds = MatSegScenes(shared_data / "matseg" / "train_scenes", crop_size=64, seed=0)
    assert [s["folder"].name for s in ds.scenes] == ["0", "2"]
    assert [len(s["masks"]) for s in ds.scenes] == [6, 8]
    for i in range(2):
        s = ds[i]
        assert s["image"].shape == (3, 64, 64)
        assert s["fractions"].shape[1:] == (64, 64) and s["roi"].dtype == torch.bool
        total = s["fractions"].sum(0)
        assert (total <= 1 + 1e-4).all() and (total[~s["roi"]] == 0).all()


# -- batching -------------------------------------------------------------------------------------
def test_sized_batches_and_padding(scenes_root: Path) -> None:
    ds = MatSegScenes(scenes_root, seed=0, fixed_crops=True)
    sampler = SizedBatchSampler(range(2), batch_size=2, min_size=16, max_size=40, seed=3)
    for batch_index in sampler:
        sizes = {size for _, size, _ in batch_index}
        assert len(sizes) == 1
        (h, w) = sizes.pop()
        assert 16 <= h <= 40 and 16 <= w <= 40
        batch = matseg_collate([ds[i] for i in batch_index])
        assert batch["image"].shape == (2, 3, h, w)
        m = batch["fractions"].shape[1]
        assert batch["valid"].shape == (2, m) and batch["valid"].any(1).all()
        for i, (idx, size, seed) in enumerate(batch_index):
            n = ds[(idx, size, seed)]["fractions"].shape[0]
            assert batch["valid"][i].sum() == n


def test_batch_draws_are_a_function_of_seed_and_epoch(scenes_root: Path) -> None:
    from torch.utils.data import DistributedSampler

    from matbench.datamodules.matseg import MatSegAugment

    dataset = list(range(6))

    def draws(epoch: int) -> list:
        inner = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
        inner.set_epoch(epoch)
        return list(SizedBatchSampler(inner, batch_size=2, min_size=16, max_size=40, seed=3))

    assert draws(1) == draws(1)  # a resumed epoch repeats exactly
    assert draws(1) != draws(2)
    # the same (index, size, seed) gives the same crop and augmentation, in any process
    ds = MatSegScenes(scenes_root, transform=MatSegAugment())
    item = draws(1)[0][0]
    assert torch.equal(ds[item]["image"], ds[item]["image"])


def test_datamodule_split_and_loaders(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    for k in range(5):
        make_scenes(root / f"g{k}", seed=k)
        for sub in ("s2d", "s3d"):
            (root / f"g{k}{sub}").mkdir()
            for f in (root / f"g{k}" / sub).iterdir():
                (root / f"g{k}{sub}" / f.name).write_bytes(f.read_bytes())
    dm = MatSegDataModule(
        str(root), crop_size=24, val_size=20, val_fraction=0.2, batch_size=3, augment=True
    )
    dm.setup("fit")
    train = {s["folder"].name for s in dm.train_dataset.scenes}
    val = {s["folder"].name for s in dm.val_dataset.scenes}
    assert len(train) == 8 and len(val) == 2 and not train & val
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 24, 24)
    vbatch = next(iter(dm.val_dataloader()))
    assert vbatch["image"].shape[-2:] == (20, 20)
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(vbatch["image"], again["image"])  # validation crops are fixed


def test_scene_index_cached_and_invalidated_by_a_changed_scene(
    scenes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cold = MatSegScenes(scenes_root, index_cache=cache)
    checked: list[str] = []
    real = MatSegScenes._index
    monkeypatch.setattr(
        MatSegScenes,
        "_index",
        staticmethod(lambda folder: checked.append(folder.name) or real(folder)),
    )
    warm = MatSegScenes(scenes_root, index_cache=cache, scenes=["s3d"])
    assert not cold.index.loaded and warm.index.loaded and checked == []
    assert list(warm.scenes) == [cold.scenes[1]]  # a subset of the same index
    uncached = MatSegScenes(scenes_root, index_cache=None)
    assert list(uncached.scenes) == list(cold.scenes) and checked == ["s2d", "s3d"]
    # A rewritten mask (another size on disk) is a changed scene: the index is rebuilt.
    checked.clear()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(scenes_root / "s3d" / "mask002.png")
    with pytest.raises(DatasetFormatError, match="mask002.png"):
        MatSegScenes(scenes_root, index_cache=cache)
    assert checked == ["s2d", "s3d"]
    # The cached problem serves both policies and any subset, without checking again.
    checked.clear()
    skipping = MatSegScenes(scenes_root, index_cache=cache, on_error="skip")
    assert skipping.index.loaded and checked == [] and skipping.num_skipped == 1
    assert [s["folder"].name for s in skipping.scenes] == ["s2d"]
    assert len(MatSegScenes(scenes_root, index_cache=cache, scenes=["s2d"])) == 1
    # A new finished scene changes the listing too.
    (scenes_root / "s3d" / "mask002.png").unlink()
    (scenes_root / "s3d" / "mask003.png").rename(scenes_root / "s3d" / "mask002.png")
    assert len(MatSegScenes(scenes_root, index_cache=cache)) == 2
