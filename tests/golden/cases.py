"""Seeded tiny runs of every task on fake data in the real layouts.

Each case is a shipped config with overrides that shrink it to a CPU-sized model; the goldens
(`tests/golden/<case>.json`) hold the test metrics these runs produced, and the DDP tests run
the same cases on two processes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from matbench.cli import main
from tests.data.dms.data import make as make_dms
from tests.data.fgovd.data import make as make_fgovd
from tests.data.fmd.data import make as make_fmd
from tests.data.lvis_materials.data import make as make_lvis
from tests.data.matseg.data import make as make_matseg
from tests.data.regions.data import make_labels, make_masks
from tests.models.tiny_sam import write_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
TINY_CLIP = ROOT / "tests" / "models" / "tiny_clip.json"


#: A tiny random two-stream model on 32 px images, with the packaged offline text encoder
#: instead of the configs' CLIP text tower (no descriptions sidecar).
TINY_TWO_STREAM = [
    "--model.backbone=test_vit",
    "--model.weights=null",
    "--model.image_size=32",
    "--data.image_size=32",
    "--data.num_workers=0",
    "--data.batch_size=4",
    "--model.text_encoder=minilm",
    "--model.text_weights=null",
    "--data.descriptions=null",
]


@dataclass(frozen=True)
class Case:
    """One seeded tiny experiment: data maker, config, overrides, and how long to train."""

    name: str
    config: str
    make_data: Callable[[Path], list[str]]
    overrides: list[str]
    fit: list[str] | None = field(default=None)  # None: nothing to train (a baseline)


#: The goldens were recorded with a constant learning rate: keep it for their fits (the
#: schedule is tested on its own in tests/core/test_first_hour.py).
CONSTANT_LR = ["--model.lr_schedule=constant", "--model.warmup=0"]


def _matseg(root: Path) -> list[str]:
    data = make_matseg(root)
    return [f"--data.root={data / 'scenes'}", f"--data.benchmark_root={data / 'benchmark'}"]


def _matseg_benchmark(root: Path) -> list[str]:
    return [f"--data.root={make_matseg(root) / 'benchmark'}"]


def _matseg_sam(root: Path) -> list[str]:
    config = write_config(root / "tiny_sam", "sam")
    return [*_matseg_benchmark(root), f"--model.config={config}"]


def _matseg_materialistic(root: Path) -> list[str]:
    from tests.models.test_materialistic import TINY

    config = root / "tiny_materialistic.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(TINY))
    return [*_matseg_benchmark(root), f"--model.config={config}"]


def _regions_sam2(root: Path) -> list[str]:
    config = write_config(root / "tiny_sam2", "sam2")
    return [f"--data.root={make_masks(root / 'masks')}", f"--model.config={config}"]


def _regions_labels(root: Path) -> list[str]:
    return [f"--data.root={make_labels(root / 'labels')}"]


def _fmd(root: Path) -> list[str]:
    return [f"--data.root={make_fmd(root, per_class=4)}"]


def _lvis(root: Path) -> list[str]:
    return [f"--data.root={make_lvis(root)}"]


def _dms(root: Path) -> list[str]:
    return [f"--data.root={make_dms(root / 'DMS_v1', per_split=3, size=(70, 50))}"]


def _dms_mask2former(root: Path) -> list[str]:
    from tests.models.tiny_dense import write_mask2former_config

    return [*_dms(root), f"--model.config={write_mask2former_config(root / 'm2f.json')}"]


def _fgovd(root: Path) -> list[str]:
    return [f"--data.root={make_fgovd(root)}"]


CASES = {
    case.name: case
    for case in [
        Case(
            "matseg_unet",
            "matseg/train.yaml",
            _matseg,
            [
                "--model.backbone=tu-test_convnext",
                "--model.descriptor_dim=8",
                "--data.min_size=32",
                "--data.max_size=48",
                "--data.val_size=32",
                "--data.batch_size=2",
                "--data.num_workers=0",
            ],
            fit=["--trainer.max_steps=4", "--trainer.val_check_interval=4", *CONSTANT_LR],
        ),
        Case("matseg_rgb", "matseg/rgb_baseline.yaml", _matseg_benchmark, []),
        Case("matseg_sam_2pt", "matseg/sam_2pt.yaml", _matseg_sam, ["--model.weights=null"]),
        Case(
            "matseg_materialistic",
            "matseg/materialistic.yaml",
            _matseg_materialistic,
            ["--model.weights=null"],
        ),
        Case(
            "matseg_official",
            "matseg/official.yaml",
            _matseg_benchmark,
            ["--model.weights=null", "--model.backbone=test_convnext", "--model.descriptor_dim=8"],
        ),
        Case(
            "matseg_dense",
            "matseg/dense_dinov2.yaml",
            _matseg_benchmark,
            ["--model.backbone=test_vit", "--model.backbone_weights=null", "--model.image_size=32"],
        ),
        Case(
            "region_iou_sam2",
            "region_iou/sam_8pt.yaml",
            _regions_sam2,
            ["--model.model=sam2", "--model.weights=null", "--model.num_points=2"],
        ),
        Case(
            "region_iou_dense",
            "region_iou/official.yaml",
            _regions_labels,
            [
                "--model.model=dense",
                "--model.backbone=test_vit",
                "--model.weights=null",
                "--model.image_size=32",
                "--data.val_fraction=0.34",
            ],
        ),
        Case(
            "two_stream_fmd",
            "two_stream/fmd.yaml",
            _fmd,
            TINY_TWO_STREAM,
            fit=["--trainer.max_epochs=2", *CONSTANT_LR],
        ),
        Case(
            "dense_dms_deeplab",
            "dense/dms_resnet50.yaml",
            _dms,
            [
                "--model.backbone=tu-test_resnet",
                "--model.weights=null",
                "--model.inference_size=48",
                "--data.image_size=32",
                "--data.batch_size=2",
                "--data.num_workers=0",
            ],
            fit=["--trainer.max_epochs=2", "--model.lr=1e-3", *CONSTANT_LR],
        ),
        Case(
            "clip_lvis",
            "clip/lvis_materials.yaml",
            _lvis,
            [
                f"--model.model={TINY_CLIP}",
                "--model.weights=null",
                "--data.image_size=32",
                "--data.batch_size=4",
                "--data.num_workers=0",
            ],
            fit=[
                "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=3",
                "--model.lr=1e-3",
                *CONSTANT_LR,
            ],
        ),
        Case(
            "fgovd_fgclip",
            "clip/fgovd_fgclip_train.yaml",
            _fgovd,
            [
                f"--model.model={TINY_CLIP}",
                "--model.weights=null",
                "--data.image_size=32",
                "--data.batch_size=4",
                "--data.eval_batch_size=2",
                "--data.num_workers=0",
            ],
            fit=["--trainer.max_epochs=1", "--model.lr=1e-2"],
        ),
    ]
}


#: Extra combinations that only the DDP end-to-end test runs (no golden of their own).
DDP_ONLY_CASES = {
    # Vanilla CLIP fine-tuning: open_clip's own text tower, trained. Its logit scale must not
    # stay behind in the text tower as a parameter without gradient (DDP refuses those).
    "clip_lvis_open_clip_text": Case(
        "clip_lvis_open_clip_text",
        CASES["clip_lvis"].config,
        _lvis,
        [
            *CASES["clip_lvis"].overrides,
            "--model.text_tower=open_clip",
            "--model.freeze_text=false",
        ],
        fit=CASES["clip_lvis"].fit,
    ),
    # Mask2Former under DDP: every parameter must get a gradient (DDP refuses unused ones),
    # and the test metrics equal the single-process ones.
    "dense_dms_mask2former": Case(
        "dense_dms_mask2former",
        "dense/dms_mask2former.yaml",
        _dms_mask2former,
        [
            "--model.weights=null",
            "--model.inference_size=64",
            "--data.image_size=64",
            "--data.batch_size=2",
            "--data.num_workers=0",
        ],
        fit=["--trainer.max_steps=2", *CONSTANT_LR],
    ),
}


def common_args(case: Case, tmp: Path) -> list[str]:
    """Write the case's fake data under ``tmp`` and return the CLI arguments of its runs."""
    return [
        "--config",
        str(CONFIGS / case.config),
        *case.make_data(tmp / "data"),
        *case.overrides,
        "--seed_everything=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
    ]


def fit_case(case: Case, tmp: Path, common: list[str], *extra: str) -> list[str]:
    """Train the case (if it trains); return the ``--ckpt_path`` argument for ``test``."""
    if case.fit is None:
        return []
    out = tmp / "fit"
    main(["fit", *common, *case.fit, *extra, f"--trainer.default_root_dir={out}"])
    (last,) = out.rglob("last.ckpt")
    return [f"--ckpt_path={last}"]


def run_test(case: Case, tmp: Path, common: list[str], ckpt: list[str], *extra: str) -> dict:
    """Run ``matbench test``; return its scalar metrics (NaN for null)."""
    results = tmp / "results"
    main(
        [
            "test",
            *common,
            *ckpt,
            *extra,
            f"--results_dir={results}",
            f"--trainer.default_root_dir={tmp}",
        ]
    )
    (path,) = results.glob("*.json")
    seen = path.with_suffix(".seen")
    path.rename(seen)  # the next test run in this folder starts clean
    metrics = json.loads(seen.read_text())["metrics"]
    return {
        k: (math.nan if v is None else float(v))
        for k, v in metrics.items()
        if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    }


def run_case(case: Case, tmp: Path) -> dict[str, float]:
    """Fit (if the case trains), then test; return the scalar test metrics."""
    common = common_args(case, tmp)
    return run_test(case, tmp, common, fit_case(case, tmp, common))
