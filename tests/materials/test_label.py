"""`materials label`, the measured prior and `build`'s checks of a predictions file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from matbench.cli import main
from matbench.errors import CheckpointError, DatasetFormatError
from matbench.materials.label import (
    LVISLabeller,
    class_materials,
    label_lvis,
    label_objects,
    load_dense_task,
    mask_pixels,
)
from matbench.materials.prior import load_prior, measured_prior, read_prior
from matbench.materials.sidecar import read_sidecar
from tests.data.lvis_materials.data import make as make_lvis
from tests.materials.helpers import write_class_map


def test_label_objects_hand_worked() -> None:
    probabilities = torch.zeros(3, 2, 4)
    # pixel classes: row 0 = [0, 0, 1, 2], row 1 = [1, 1, 1, 2]
    probabilities[0, 0, :2] = 0.8
    probabilities[1, 0, 2], probabilities[1, 1, :3] = 0.6, torch.tensor([0.5, 0.7, 0.9])
    probabilities[2, :, 3] = 0.4
    masks = torch.zeros(3, 2, 4, dtype=torch.bool)
    masks[0, 0, :3] = True  # classes 0, 0, 1
    masks[1, :, 1:3] = True  # classes 0, 1, 1, 1
    (a, b, empty) = label_objects(probabilities, *mask_pixels(masks))
    assert (a.class_id, a.share, a.pixels) == (0, pytest.approx(2 / 3), 3)
    assert a.confidence == pytest.approx(0.8)
    assert (b.class_id, b.share) == (1, pytest.approx(3 / 4))
    assert b.confidence == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    assert empty is None


def test_class_materials() -> None:
    names = ["Wood", "Clutter", "Plastic, clear", "thing"]
    assert class_materials(names) == ["wood", None, "clear plastic", None]
    assert class_materials(names, {"thing": "metal", "Wood": None}) == [
        None,
        None,
        "clear plastic",
        "metal",
    ]


def test_checkpoint_of_another_task(tmp_path: Path) -> None:
    path = tmp_path / "clip.ckpt"
    torch.save(
        {"state_dict": {}, "hyper_parameters": {"_class_path": "matbench.tasks.ClipMaterialTask"}},
        path,
    )
    with pytest.raises(CheckpointError, match=r"clip.ckpt: a checkpoint of ClipMaterialTask"):
        load_dense_task(path)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt: not a Lightning checkpoint"):
        load_dense_task(tmp_path / "junk.ckpt")


def _lvis(tmp_path: Path) -> tuple[Path, dict]:
    root = make_lvis(tmp_path / "lvis", num_train=4, num_val=1)
    ann = root / "lvis" / "lvis_v1_train.json"
    return ann, json.loads(ann.read_text())


def test_measured_prior_and_fallback() -> None:
    lvis = {
        "categories": [
            {"id": 1, "name": "aerosol_can", "synset": "aerosol.n.02"},
            {"id": 2, "name": "mystery", "synset": "x.n.01"},
            {"id": 3, "name": "nothing_known", "synset": "y.n.01"},
        ],
        "annotations": [{"id": i, "category_id": 1 if i < 5 else 2} for i in range(8)],
    }
    predictions = {0: ["glass"], 1: ["glass"], 2: ["metal"], 3: ["glass"], 4: ["wood"]}
    predictions |= {5: ["paper"], 6: ["paper"]}
    table = measured_prior(lvis, predictions, min_objects=3, fallback=load_prior())
    can = table["categories"]["aerosol_can"]
    assert can["materials"] == ["glass"] and can["rule"] == "measured" and can["objects"] == 5
    assert can["frequencies"] == {"glass": 0.6, "metal": 0.2, "wood": 0.2}
    # 2 objects < min_objects and no fallback entry: unknown
    assert table["unknown"] == ["mystery", "nothing_known"]
    table = measured_prior(lvis, predictions, min_objects=10, fallback=load_prior())
    assert table["categories"]["aerosol_can"]["materials"] == ["metal"]  # hand-written
    assert table["categories"]["aerosol_can"]["rule"].startswith("fallback")
    assert (table["num_measured"], table["num_fallback"]) == (0, 1)


@pytest.mark.slow
def test_label_prior_build_cli(
    tmp_path: Path, dense_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = dense_checkpoint
    ann, lvis = _lvis(tmp_path)
    images = ann.parents[1] / "coco"
    out = tmp_path / "labels.json"
    args = ["materials", "label", "--lvis", str(ann), "--images", str(images)]
    args += ["--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]
    args += ["--class-map", str(write_class_map(tmp_path / "map.json")), "--min-share", "0.3"]
    assert main(args) == 0
    result = json.loads(out.read_text())
    n = len(lvis["annotations"])
    counts = result["counts"]
    assert counts["objects"] == n == len(result["annotations"]) + len(result["unknown"])
    assert counts["labelled"] + sum(counts["unknown"].values()) == n
    for entry in result["annotations"].values():
        assert entry["share"] >= 0.3 and 0 < entry["confidence"] <= 1
    for entry in result["unknown"].values():
        assert entry["reason"] == "empty mask" or entry["share"] < 0.3
    # Resumable: a second run reads every image from the progress file, same result.
    progress = out.with_name(out.name + ".progress.jsonl")
    lines = progress.read_text().count("\n")
    assert lines == len(lvis["images"])
    assert main(args) == 0
    assert progress.read_text().count("\n") == lines
    assert json.loads(out.read_text()) == result

    prior = tmp_path / "prior.json"
    prior_args = ["materials", "prior", "--from-predictions", str(out), "--lvis", str(ann)]
    assert main([*prior_args, "--out", str(prior), "--min-objects", "1"]) == 0
    table = read_prior(prior)
    assert table["num_measured"] >= 1
    side = tmp_path / "side.json"
    build = ["materials", "build", "--lvis", str(ann), "--out", str(side)]
    build += ["--predictions", str(out), "--prior", str(prior), "--seed", "3"]
    assert main(build) == 0
    data = json.loads(side.read_text())
    record = data["provenance"]
    assert record["prior"] == str(prior) and record["prior_weight"] == 0.5
    assert record["counts"]["from_prior"] + record["counts"]["from_predictions"] == len(
        read_sidecar(side)
    )
    capsys.readouterr()

    # A predictions file made for another LVIS version, and unknown annotation ids.
    other = json.loads(out.read_text())
    other["lvis"]["categories_sha256"] = "0" * 64
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps(other))
    with pytest.raises(DatasetFormatError, match=r"other.json: made for another LVIS version"):
        main([*build[:-6], "--predictions", str(bad), "--debug"])
    other = json.loads(out.read_text())
    other["annotations"]["999999"] = {"materials": ["metal"]}
    bad.write_text(json.dumps(other))
    with pytest.raises(DatasetFormatError, match=r"other.json: 1 annotation id\(s\) do not exist"):
        main([*prior_args[:3], str(bad), *prior_args[4:], "--out", str(prior), "--debug"])


def test_label_in_workers_interrupted_and_resumed(tmp_path: Path, dense_checkpoint: Path) -> None:
    ann, lvis = _lvis(tmp_path)
    images = ann.parents[1] / "coco"
    # Images decoded and masks rasterised in a loader worker.
    expected = label_lvis(ann, images, dense_checkpoint, tmp_path / "a.json", workers=1)

    # In the main process, stopped after two images: those are in the progress file, and a
    # rerun labels the rest; the labels are those made in the worker.
    done: list[int] = []

    def stop_after_two(objects: int) -> None:
        done.append(objects)
        if len(done) == 2:
            raise KeyboardInterrupt

    out = tmp_path / "b.json"
    with pytest.raises(KeyboardInterrupt):
        LVISLabeller(ann, images, dense_checkpoint, out).run(False, on_image=stop_after_two)
    progress = out.with_name(out.name + ".progress.jsonl")
    assert progress.read_text().count("\n") == 2
    result = label_lvis(ann, images, dense_checkpoint, out, progress=False)
    assert progress.read_text().count("\n") == len(lvis["images"])
    assert result["annotations"] == expected["annotations"]
    assert result["unknown"] == expected["unknown"]

    # A bad image met in a worker is reported by name, as in the main process.
    first = images / "train2017" / f"{lvis['images'][0]['id']:012d}.jpg"
    Image.new("RGB", (10, 8)).save(first)
    with pytest.raises(DatasetFormatError, match=rf"{first.name}: is 10x8 but .* says"):
        label_lvis(ann, images, dense_checkpoint, tmp_path / "c.json", workers=1)
