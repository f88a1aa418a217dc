"""The talk's LVIS-materials chain end to end, in the real layouts: a dense segmenter fit on
fake DMS labels fake LVIS objects, the prior is measured from its labels, the sidecars are
built by sampling between the two, a tiny random LLaVA captions the training objects on
Set-of-Marks pictures, and CLIP fits and tests on the result with ``caption: sidecar``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matbench.cli import main
from matbench.materials.sidecar import read_sidecar
from tests.data.lvis_materials.data import make as make_lvis
from tests.golden.cases import CONFIGS, TINY_CLIP
from tests.materials.helpers import write_class_map


@pytest.mark.slow
def test_dense_label_prior_build_caption_clip(
    tmp_path: Path, tiny_vlm: Path, dense_checkpoint: Path
) -> None:
    ckpt = dense_checkpoint  # fitted on fake DMS by the fixture (tests/materials/conftest.py)
    root = make_lvis(tmp_path / "lvis_materials", num_train=4, num_val=2)
    class_map = write_class_map(tmp_path / "class_map.json")
    files = {split: root / "lvis" / f"lvis_v1_{split}.json" for split in ("train", "val")}
    for split, ann in files.items():
        labels = tmp_path / f"labels_{split}.json"
        label = ["materials", "label", "--lvis", str(ann), "--images", str(root / "coco")]
        label += ["--checkpoint", str(ckpt), "--out", str(labels), "--class-map", str(class_map)]
        assert main([*label, "--min-share", "0.2", "--no-progress"]) == 0
    prior = tmp_path / "prior.json"
    measure = ["materials", "prior", "--from-predictions", str(tmp_path / "labels_train.json")]
    measure += ["--lvis", str(files["train"]), "--out", str(prior), "--min-objects", "2"]
    assert main(measure) == 0
    for split, ann in files.items():
        build = ["materials", "build", "--lvis", str(ann), "--prior", str(prior)]
        build += ["--predictions", str(tmp_path / f"labels_{split}.json"), "--seed", "0"]
        # the default sidecar location of the LVIS datamodule: <stem>_materials.json
        assert main([*build, "--out", str(ann.with_name(f"{ann.stem}_materials.json"))]) == 0
    train_sidecar = files["train"].with_name("lvis_v1_train_materials.json")
    built = json.loads(train_sidecar.read_text())["provenance"]
    assert built["prior"] == str(prior) and built["counts"]["objects"] > 0

    caption = ["materials", "caption", "--lvis", str(files["train"])]
    caption += ["--images", str(root / "coco"), "--sidecar", str(train_sidecar)]
    caption += ["--model", f"hf:{tiny_vlm}", "--max-new-tokens", "12", "--no-progress"]
    assert main(caption) == 0
    record = json.loads(train_sidecar.read_text())["provenance"]["caption"]
    labels = read_sidecar(train_sidecar)
    counts = record["counts"]
    # every object is either captioned or has its failure recorded
    assert counts["objects"] == len(labels) == counts["captioned"] + counts["failed"]
    assert set(map(int, record["failures"])) | {i for i, lab in labels.items() if lab.caption} == (
        set(labels)
    )

    results = tmp_path / "results"
    clip = ["--config", str(CONFIGS / "clip" / "lvis_materials.yaml"), f"--data.root={root}"]
    clip += [f"--model.model={TINY_CLIP}", "--model.weights=null", "--data.caption=sidecar"]
    clip += ["--data.image_size=32", "--data.batch_size=4", "--data.num_workers=0"]
    clip += ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    clip += ["--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path / 'clip'}"]
    cli = main(["fit", *clip, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    last = cli.trainer.checkpoint_callback.last_model_path
    cli = main(["test", *clip, f"--ckpt_path={last}", f"--results_dir={results}"])
    metrics = cli.model.results["test"][0]
    assert metrics and all(v == v for v in metrics.values() if isinstance(v, float))
    assert len(list(results.glob("*.json"))) == 1
