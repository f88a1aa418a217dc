"""Train once, test on several named sets: the paper's main config end to end, with tiny
models, on fake data in the real layouts (a 21-class folder, FMD, DMS, a Google-test-like
folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from matbench.cli import main
from matbench.datasets.label_space import load_label_space
from tests.data.dms.data import make as make_dms
from tests.data.fmd.data import make as make_fmd
from tests.data.folder.data import make as make_folder
from tests.datasets.test_label_space import fake_dms_space

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "two_stream" / "paper" / "main.yaml"
CLASSES21 = load_label_space("classes21").classes


@pytest.mark.slow
def test_paper_main_config_fits_once_and_tests_three_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(CONFIG.read_text())
    model = config["model"]["init_args"]
    model.update(
        backbone="test_vit",
        weights=None,
        image_size=32,
        text_encoder="minilm-random",
        text_weights=None,
        feature_cache="memory",
    )
    data = config["data"]["init_args"]
    space = str(fake_dms_space(tmp_path / "space.json"))
    roots = {
        "train": make_folder(tmp_path / "synthetic21", CLASSES21, per_class=2),
        "fmd": make_fmd(tmp_path / "fmd", per_class=2, size=(32, 24)),
        "dms_test21": make_dms(tmp_path / "DMS_v1", per_split=2),
        "google_test": make_folder(tmp_path / "google", ["metal", "wood", "glass"], seed=1),
    }
    for name, module in [("train", data["train"]), *data["test"].items()]:
        args = module["init_args"]
        args.update(
            root=str(roots[name]),
            image_size=32,
            batch_size=8,
            num_workers=0,
            descriptions=None,
            label_space=space,
        )
        if name == "dms_test21":
            args["min_pixels"] = 50
    # the fake FMD's descriptions come from `matbench describe`'s sidecar format
    sidecar = tmp_path / "fmd_descriptions.json"
    sidecar.write_text(json.dumps({"fabric/fabric_moderate_001_new.jpg": "a soft woven sheen"}))
    data["test"]["fmd"]["init_args"]["descriptions"] = str(sidecar)
    path = tmp_path / "main.yaml"
    path.write_text(yaml.safe_dump(config))
    logs = ["--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    main(["fit", "--config", str(path), "--trainer.max_epochs=1", *logs])
    (ckpt,) = (tmp_path / "logs").rglob("checkpoints/last.ckpt")
    main(
        [
            "test",
            "--config",
            str(path),
            "--ckpt_path",
            str(ckpt),
            "--results_dir",
            str(tmp_path / "results"),
            *logs,
        ]
    )
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]
    by_set = {r["data"]["dataset"]: r for r in runs}
    assert sorted(by_set) == ["dms_test21", "fmd", "google_test"]
    assert by_set["fmd"]["data"]["datamodule"] == "FMDDataModule"
    assert by_set["fmd"]["data"]["split"] == "all"
    assert by_set["dms_test21"]["data"]["datamodule"] == "DMSDataModule"
    assert by_set["google_test"]["data"]["trained_on"]["datamodule"] == "MaterialFolderDataModule"
    for run in runs:
        metrics = run["metrics"]
        assert {"accuracy", "mean_class_accuracy", "miou", "per_class_iou"} <= set(metrics)
        assert len(metrics["confusion_matrix"]) == 21
        assert run["data"]["class_names"] == CLASSES21
    fmd = by_set["fmd"]["metrics"]["confusion_matrix"]
    assert sum(map(sum, fmd)) == 20  # all FMD images, not the test half
    assert sum(map(sum, by_set["google_test"]["metrics"]["confusion_matrix"])) == 6
    table = (tmp_path / "results" / "results.md").read_text()
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header.index("accuracy") < header.index("mean_class_accuracy") < header.index("miou")
