"""Shared pieces of the LVIS-materials chain tests: a tiny dense checkpoint on fake DMS."""

from __future__ import annotations

import json
from pathlib import Path

from matbench.cli import main
from tests.data.dms.data import make as make_dms
from tests.data.dms.data import taxonomy
from tests.data.lvis_materials.data import MATERIALS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def fit_dense(tmp: Path) -> Path:
    """Fit the DeepLab config (tu-test_resnet) two steps on fake DMS; return last.ckpt."""
    root = make_dms(tmp / "DMS_v1", per_split=2, size=(48, 40))
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "dense" / "dms_resnet50.yaml"),
            f"--data.root={root}",
            "--data.image_size=32",
            "--data.batch_size=2",
            "--data.num_workers=0",
            "--model.backbone=tu-test_resnet",
            "--model.weights=null",
            "--model.inference_size=32",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={tmp / 'dense'}",
        ]
    )
    return Path(cli.trainer.checkpoint_callback.last_model_path)


def write_class_map(path: Path) -> Path:
    """The fake DMS taxonomy's made-up class names -> the fake LVIS materials, in turn."""
    names = taxonomy()["names"]
    from matbench.datasets.dms import DMS46_INDICES

    mapping = {names[i]: MATERIALS[k % len(MATERIALS)] for k, i in enumerate(DMS46_INDICES)}
    path.write_text(json.dumps(mapping))
    return path
