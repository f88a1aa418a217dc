"""Cached dataset indexes: keyed by the sources' SHA-256 and the settings, shared by ranks."""

from __future__ import annotations

import json
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from matbench.datasets import DMS, LVISMaterials
from matbench.datasets import index_cache as ic
from matbench.datasets.dms import read_label
from matbench.datasets.index_cache import Index, StringTable, cached_index, pack_strings
from tests.data.dms.data import make as make_dms
from tests.data.lvis_materials.data import make as make_lvis


def _counting_build(calls: list[int], value: int = 1):
    def build() -> Index:
        calls.append(1)
        return Index({"x": np.arange(5) * value}, {"value": value})

    return build


def test_strings_round_trip() -> None:
    values = ["", "metal", "a dented métal can", "木"]
    table = StringTable(**pack_strings(values))
    assert list(table) == values and table[-1] == "木"


def test_built_once_then_loaded_and_invalidated_by_content(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "ann.json"
    source.write_text("one")
    calls: list[int] = []
    first = cached_index("toy", {"a": 1}, [source], _counting_build(calls), tmp_path / "cache")
    again = cached_index("toy", {"a": 1}, [source], _counting_build(calls), tmp_path / "cache")
    assert len(calls) == 1 and not first.loaded and again.loaded
    np.testing.assert_array_equal(again.arrays["x"], np.arange(5))
    assert isinstance(again.arrays["x"], np.memmap)  # shared by processes through the page cache
    # Pickled (a spawned worker), the arrays travel as their folder and are mapped again.
    big = cached_index("big", {}, [source], lambda: Index({"x": np.zeros(10**5)}), tmp_path / "c")
    payload = pickle.dumps(big.arrays)
    assert len(payload) < 1000 and isinstance(pickle.loads(payload)["x"], np.memmap)
    # Unchanged size and mtime: the manifest's digest is reused, nothing is hashed.
    hashed: list[Path] = []
    real = ic.sha256_file
    monkeypatch.setattr(ic, "sha256_file", lambda p: hashed.append(p) or real(p))
    cached_index("toy", {"a": 1}, [source], _counting_build(calls), tmp_path / "cache")
    assert hashed == [] and len(calls) == 1
    # Other settings are another index.
    cached_index("toy", {"a": 2}, [source], _counting_build(calls), tmp_path / "cache")
    assert len(calls) == 2
    # Changed content is another key: rebuilt, and the stale index of the slot is removed.
    source.write_text("two!")
    cached_index("toy", {"a": 1}, [source], _counting_build(calls, 3), tmp_path / "cache")
    assert len(calls) == 3 and len(hashed) == 2  # the {"a": 2} slot hashed it once too
    slot = next(p.parent for p in (tmp_path / "cache/toy").glob("*/sources.json"))
    assert len([p for p in slot.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 1
    # No cache folder: built every time.
    cached_index("toy", {"a": 1}, [source], _counting_build(calls), None)
    assert len(calls) == 4
    # A cache folder that cannot be written (a file is in the way): built, with a warning.
    (tmp_path / "blocked").write_text("")
    with pytest.warns(UserWarning, match="not writable"):
        index = cached_index("toy", {}, [source], _counting_build(calls), tmp_path / "blocked")
    assert len(calls) == 5 and index.arrays["x"].tolist() == [0, 1, 2, 3, 4]


def test_lvis_index_cached_equals_parsed(tmp_path: Path) -> None:
    root = make_lvis(tmp_path / "lvis", num_train=6, num_val=1)
    ann, images = root / "lvis/lvis_v1_train.json", root / "coco"
    parsed = LVISMaterials(ann, images, caption="sidecar", index_cache=None)
    built = LVISMaterials(ann, images, caption="sidecar")
    loaded = LVISMaterials(ann, images, caption="sidecar")
    assert not built.index.loaded and loaded.index.loaded
    assert list(loaded.objects) == list(parsed.objects)
    assert loaded.materials == parsed.materials and loaded.num_degenerate == parsed.num_degenerate
    assert dict(loaded.images) == dict(parsed.images)
    for i in (0, len(parsed) - 1):
        a, b = parsed[i], loaded[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert (a["caption"], a["key"], int(a["label"])) == (
            b["caption"],
            b["key"],
            int(b["label"]),
        )
    # An edited annotation file invalidates the index.
    data = json.loads(ann.read_text())
    data["annotations"] = data["annotations"][:-1]
    ann.write_text(json.dumps(data))
    changed = LVISMaterials(ann, images, sidecar=None)
    assert not changed.index.loaded and len(changed) == len(data["annotations"])


def test_dms_region_counts_cached(tmp_path: Path) -> None:
    root = make_dms(tmp_path / "DMS_v1", per_split=3)
    first = DMS(root, split="train", min_pixels=1)
    other_threshold = DMS(root, split="train", min_pixels=850)
    assert not first.index.loaded and other_threshold.index.loaded  # counts serve any threshold
    # Reference: read every label map and count its DMS46 classes.
    expected = []
    for i, (_, _, label_path) in enumerate(first.images):
        label = first.lut[read_label(label_path)]
        counts = np.bincount(label.ravel(), minlength=256)
        expected += [(i, c, int(counts[c])) for c in range(46) if counts[c] >= 850]
    assert [tuple(r) for r in other_threshold.regions.tolist()] == expected
    assert len(first) > len(other_threshold) > 0
    dense = DMS(root, split="train", mode="dense")
    assert not dense.index.loaded and DMS(root, split="train", mode="dense").index.loaded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for case in ("ok", "fail"):
        folder = Path(tmp) / case
        builders = folder / f"built-by-{rank}"

        def build(fail: bool = case == "fail", builders: Path = builders) -> Index:
            builders.touch()
            if fail:
                raise ValueError("ann.json: broken on purpose")
            return Index({"x": np.arange(3)})

        try:
            index = cached_index("toy", {}, [folder / "ann.json"], build, folder / "cache")
            result = {"x": index.arrays["x"].tolist()}
        except Exception as err:  # noqa: BLE001 - reported to the test
            result = {"error": f"{type(err).__name__}: {err}"}
        (folder / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.ddp
def test_rank_zero_builds_and_others_load(tmp_path: Path) -> None:
    for case in ("ok", "fail"):
        (tmp_path / case).mkdir()
        (tmp_path / case / "ann.json").write_text("{}")
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for case in ("ok", "fail"):
        folder = tmp_path / case
        results = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]
        assert (folder / "built-by-0").exists() and not (folder / "built-by-1").exists()
        if case == "ok":
            assert results == [{"x": [0, 1, 2]}] * 2
        else:
            assert results[0]["error"] == "ValueError: ann.json: broken on purpose"
            assert results[1]["error"].startswith("IndexBuildError: rank 0 failed")
            assert "broken on purpose" in results[1]["error"]
