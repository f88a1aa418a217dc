"""Benchmark: dense segmentation pipelines against the bare model forward, side by side (CPU).

1. ``matbench materials label``, in objects/second: the whole path (LVIS JSON, image decode,
   polygon masks, one forward per image at the configured inference size, the per-object
   majority class, share and confidence, the resumable progress file, the output JSON)
   against the bare forward (:meth:`DenseMaterialTask.probabilities`) over the same images,
   held in memory, counted in the same objects. Target: label >= 85 % of the bare rate.
2. ``matbench test`` of :class:`DenseMaterialTask` on DMS (``eval_full_size``: images and
   label maps decoded in a loader worker at their own size, resized inference, the DMS
   confusion matrix), in images/second, timed from the first test batch to the last, against
   the bare forward and argmax over the same images in memory (the pipeline's first batch is
   a warm-up, left out of its rate). Target: test >= 85 % of the bare rate.

Bare and pipeline runs alternate ``--repeat`` times (the bare one once more at the end) and
the best rate of each is compared: on a shared machine the best run is the least disturbed.
The segmenter is a random-init DeepLabV3+ on a timm ResNet-18 (``--backbone``), fitted one
step on fake DMS so that a real checkpoint is labelled with.

    python -m benchmarks.dense                       # the defaults reported in the docs
    python -m benchmarks.dense --images 4 --size 160  # a quick run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from matbench.cli import main
from matbench.datasets.lvis_materials import load_image
from matbench.materials.label import label_lvis, load_dense_task
from tests.data.dms.data import make as make_dms
from tests.data.lvis_materials.data import make as make_lvis
from tests.materials.helpers import write_class_map

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dense" / "dms_resnet50.yaml"


class TestTimer(Callback):
    """Wall time from the end of the first test batch (a warm-up: the freshly loaded model's
    first forward) to the end of the last one, and the images of the batches in between."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0
        self.images = 0

    def on_test_batch_end(  # noqa: ANN001
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self.start is None:
            self.start = time.perf_counter()
            return
        self.images += len(batch["image"])
        self.end = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.images / (self.end - (self.start or self.end))


def _common(root: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        f"--data.root={root}",
        f"--data.image_size={args.train_size}",
        "--data.batch_size=2",
        f"--data.num_workers={args.workers}",
        f"--model.backbone={args.backbone}",
        "--model.weights=null",
        f"--model.inference_size={args.size}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={out}",
    ]


def bare_label_rate(task, images: list[torch.Tensor], objects: int) -> float:  # noqa: ANN001
    """Objects/second of the bare forward (probabilities) over in-memory images."""
    start = time.perf_counter()
    with torch.inference_mode():
        for image in images:
            task.probabilities(image.unsqueeze(0))
    return objects / (time.perf_counter() - start)


def bare_test_rate(task, images: list[torch.Tensor]) -> float:  # noqa: ANN001
    """Images/second of the bare forward and argmax over in-memory images."""
    start = time.perf_counter()
    with torch.inference_mode():
        for image in images:
            task(image.unsqueeze(0)).argmax(1)
    return len(images) / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="matbench_dense_bench_"))
    size = (args.size * 4 // 3, args.size)
    dms = make_dms(tmp / "DMS_v1", per_split=args.images, size=size)
    common = _common(dms, tmp / "fit", args)
    cli = main(["fit", *common, "--trainer.max_steps=1", "--trainer.limit_val_batches=1"])
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    task = load_dense_task(ckpt)

    # 1. label: bare and pipeline alternate; each one's best rate counts (a shared machine)
    lvis_root = make_lvis(tmp / "lvis", num_train=args.images, num_val=1, size=size)
    ann = lvis_root / "lvis" / "lvis_v1_train.json"
    lvis = json.loads(ann.read_text())
    objects = len(lvis["annotations"])
    images = [load_image(p) for p in sorted((lvis_root / "coco" / "train2017").glob("*.jpg"))]
    class_map = write_class_map(tmp / "class_map.json")
    bare_label_rate(task, images[:1], 1)  # warm-up
    bare_labels, labels = [], []
    for repeat in range(args.repeat):
        bare_labels.append(bare_label_rate(task, images, objects))
        start = time.perf_counter()
        out = tmp / f"labels_{repeat}.json"  # a fresh file: no resume from an earlier repeat
        label_lvis(ann, lvis_root / "coco", ckpt, out, class_map=class_map, progress=False)
        labels.append(objects / (time.perf_counter() - start))
    bare_labels.append(bare_label_rate(task, images, objects))
    label, bare_label = max(labels), max(bare_labels)

    # 2. test
    dms_images = [load_image(p) for p in sorted((dms / "images" / "validation").glob("*.jpg"))]
    # the callback is given as a Python object: LightningCLI takes it through `trainer`
    from matbench.lightning_cli import run as cli_run

    bare_tests, tests = [], []
    for _ in range(args.repeat):
        bare_tests.append(bare_test_rate(task, dms_images))
        timer = TestTimer()
        cli = cli_run(["--config", str(CONFIG), *common[2:]], run_subcommand=False)
        cli.trainer.callbacks.append(timer)
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt))
        tests.append(timer.rate)
    bare_tests.append(bare_test_rate(task, dms_images))
    test, bare_test = max(tests), max(bare_tests)
    return {
        "objects": objects,
        "label_objects_per_s": label,
        "bare_label_objects_per_s": bare_label,
        "label_ratio": label / bare_label,
        "test_images_per_s": test,
        "bare_test_images_per_s": bare_test,
        "test_ratio": test / bare_test,
    }


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=12, help="images per fake split")
    parser.add_argument("--size", type=int, default=320, help="image height; inference size")
    parser.add_argument("--train-size", type=int, default=64)
    parser.add_argument("--backbone", default="tu-resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="test loader workers (default 0: on 2 cores a worker process competes with the "
        "two compute threads; decoding is then on the timed path)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternating runs; the best rate of each counts"
    )
    args = parser.parse_args(argv)
    result = run(args)
    print(f"label: {result['objects']} objects")
    print(
        f"  pipeline {result['label_objects_per_s']:.2f} objects/s, bare forward "
        f"{result['bare_label_objects_per_s']:.2f} objects/s: "
        f"{100 * result['label_ratio']:.1f} % (target >= 85 %)"
    )
    print(
        f"test: pipeline {result['test_images_per_s']:.2f} images/s, bare forward "
        f"{result['bare_test_images_per_s']:.2f} images/s: "
        f"{100 * result['test_ratio']:.1f} % (target >= 85 %)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
