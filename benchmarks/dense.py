"""Benchmark: dense segmentation pipelines against the bare model forward, side by side (CPU).

1. ``matbench materials label``, in objects/second at steady state: the labelling loop (image
   decode, polygon masks, one forward per image at the configured inference size, the
   per-object majority class, share and confidence, the resumable progress file) against the
   bare forward (:meth:`DenseMaterialTask.probabilities`) of the same images held in memory,
   counted in the same objects. Target: label >= 85 % of the bare rate. The one-off parts
   (reading and checking the LVIS file, loading the checkpoint, writing the output JSON) are
   timed apart and printed with the end-to-end rate: on LVIS v1 train (100,170 images) they
   are spread over a day of labelling, over this benchmark's few images they are not. The
   fake images carry 12 objects each, as LVIS v1 train's 1.27M objects on 100k images do.
2. ``matbench test`` of :class:`DenseMaterialTask` on DMS (``eval_full_size``: images and
   label maps decoded at their own size, resized inference, the DMS confusion matrix), in
   images/second, against the bare forward and class ids of the same images in memory.
   Target: test >= 85 % of the bare rate.

Paired timing, because the machine is shared: after each image the pipeline finishes, the
bare forward runs on that same image (a copy held in memory), and each is timed on its own —
the pipeline from the end of the previous bare forward (so its decoding and loader are
counted) to the end of its image. Load that comes and goes then hits both alike; a ratio of
separate whole runs moved by +-50 % from run to run on the busy 2-core machine. The first
image is a warm-up, left out of both. Each pipeline runs ``--repeat`` times; the median ratio
is reported, with the lowest and highest. Loader workers are 0 (``matbench test``'s
``num_workers``, ``label --workers``): on 2 cores a worker process competes with the two
compute threads, and it would decode ahead while the bare forward is being timed.

The segmenter is a random-init DeepLabV3+ on a timm ResNet-18 (``--backbone``), fitted one
step on fake DMS so that a real checkpoint is labelled with.

    python -m benchmarks.dense                       # the defaults reported in the docs
    python -m benchmarks.dense --images 4 --size 160  # a quick run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from matbench.cli import main
from matbench.datasets.lvis_materials import load_image
from matbench.materials.label import LVISLabeller, load_dense_task
from matbench.metrics.functional import class_ids
from tests.data.dms.data import make as make_dms
from tests.data.lvis_materials.data import make as make_lvis
from tests.materials.helpers import write_class_map

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dense" / "dms_resnet50.yaml"


class Paired:
    """Per-image times of a pipeline and of the bare forward run right after it on the same
    image; :meth:`done` is called when the pipeline has finished an image."""

    def __init__(self, bare: Any) -> None:
        self.bare = bare  # image tensor (3, H, W) -> None
        self.pipeline_s: list[float] = []
        self.bare_s: list[float] = []
        self.units: list[int] = []  # objects or images per pipeline step
        self.since: float | None = None  # end of the previous bare forward

    def done(self, images: list[torch.Tensor], units: int) -> None:
        now = time.perf_counter()
        pipeline = None if self.since is None else now - self.since
        start = time.perf_counter()
        with torch.inference_mode():
            for image in images:
                self.bare(image)
        bare = time.perf_counter() - start
        if pipeline is not None:  # the first image is a warm-up for both
            self.pipeline_s.append(pipeline)
            self.bare_s.append(bare)
            self.units.append(units)
        self.since = time.perf_counter()

    @property
    def pipeline_rate(self) -> float:
        return sum(self.units) / sum(self.pipeline_s)

    @property
    def bare_rate(self) -> float:
        return sum(self.units) / sum(self.bare_s)

    @property
    def ratio(self) -> float:
        return sum(self.bare_s) / sum(self.pipeline_s)


class PairedTestTimer(Callback):
    """:class:`Paired` timing of ``matbench test``'s batches (each image's bare forward and
    class ids run at the end of its batch)."""

    def __init__(self, task: Any) -> None:
        self.paired = Paired(lambda image: class_ids(task(image.unsqueeze(0))))

    def on_test_batch_end(  # noqa: ANN001
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.paired.done(list(batch["image"]), len(batch["image"]))


def label_run(task: Any, images: list[torch.Tensor], *args: Any, **kwargs: Any) -> dict:
    """One ``materials label`` run: the one-off setup and output times, the paired times of
    its labelling loop (``images`` in the labeller's order) and its end-to-end rate."""
    paired = Paired(lambda image: task.probabilities(image.unsqueeze(0)))
    start = time.perf_counter()
    labeller = LVISLabeller(*args, **kwargs)
    setup = time.perf_counter() - start
    done = 0  # images labelled
    first = 0.0  # the first image's time (a warm-up, in the end-to-end time only)

    def on_image(objects: int) -> None:
        nonlocal done, first
        if done == 0:
            first = time.perf_counter() - loop_start
        paired.done([images[done]], objects)
        done += 1

    loop_start = time.perf_counter()
    labeller.run(progress=False, on_image=on_image)
    start = time.perf_counter()
    result = labeller.write()
    output = time.perf_counter() - start
    objects = result["counts"]["objects"]
    end_to_end = setup + first + sum(paired.pipeline_s) + output
    rate = objects / end_to_end
    return {"paired": paired, "setup": setup, "output": output, "rate": rate}


def _common(root: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        f"--data.root={root}",
        f"--data.image_size={args.train_size}",
        "--data.batch_size=2",
        "--data.num_workers=0",
        f"--model.backbone={args.backbone}",
        "--model.weights=null",
        f"--model.inference_size={args.size}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={out}",
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="matbench_dense_bench_"))
    try:
        return _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # checkpoints of ~150 MB each


def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    size = (args.size * 4 // 3, args.size)
    dms = make_dms(tmp / "DMS_v1", per_split=args.images, size=size)
    common = _common(dms, tmp / "fit", args)
    cli = main(["fit", *common, "--trainer.max_steps=1", "--trainer.limit_val_batches=1"])
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    task = load_dense_task(ckpt)

    # 1. label
    lvis_root = make_lvis(
        tmp / "lvis", num_train=args.images, num_val=1, size=size, objects=args.objects
    )
    ann = lvis_root / "lvis" / "lvis_v1_train.json"
    lvis = json.loads(ann.read_text())
    order = sorted({a["image_id"] for a in lvis["annotations"]})  # the labeller's order
    folder = lvis_root / "coco" / "train2017"
    images = [load_image(folder / f"{i:012d}.jpg") for i in order]
    class_map = write_class_map(tmp / "class_map.json")
    labels = []
    for repeat in range(args.repeat):
        out = tmp / f"labels_{repeat}.json"  # a fresh file: no resume from an earlier repeat
        labels.append(
            label_run(task, images, ann, lvis_root / "coco", ckpt, out, class_map=class_map)
        )

    # 2. test (the callback is given as a Python object: LightningCLI takes it via `trainer`)
    from matbench.lightning_cli import run as cli_run

    tests = []
    for _ in range(args.repeat):
        timer = PairedTestTimer(task)
        cli = cli_run(["--config", str(CONFIG), *common[2:]], run_subcommand=False)
        cli.trainer.callbacks.append(timer)
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt))
        tests.append(timer.paired)
    return {
        "images": len(order),
        "objects": len(lvis["annotations"]),
        "label": [r["paired"] for r in labels],
        "label_setup_s": statistics.median(r["setup"] for r in labels),
        "label_output_s": statistics.median(r["output"] for r in labels),
        "label_end_to_end_rate": statistics.median(r["rate"] for r in labels),
        "label_end_to_end_ratio": statistics.median(
            r["rate"] / r["paired"].bare_rate for r in labels
        ),
        "test": tests,
    }


def _summary(runs: list[Paired], unit: str) -> str:
    ratios = sorted(p.ratio for p in runs)
    mid = statistics.median(ratios)
    best = min(runs, key=lambda p: abs(p.ratio - mid))
    return (
        f"pipeline {best.pipeline_rate:.2f} {unit}/s, bare forward {best.bare_rate:.2f} {unit}/s: "
        f"{100 * mid:.1f} % (median of {len(runs)}; lowest {100 * ratios[0]:.1f} %, highest "
        f"{100 * ratios[-1]:.1f} %; target >= 85 %)"
    )


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24, help="images per fake split")
    parser.add_argument(
        "--objects", type=int, default=12, help="LVIS objects per image (LVIS v1 train: 12.7)"
    )
    parser.add_argument("--size", type=int, default=320, help="image height; inference size")
    parser.add_argument("--train-size", type=int, default=64)
    parser.add_argument("--backbone", default="tu-resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each pipeline")
    args = parser.parse_args(argv)
    result = run(args)
    print(f"label: {result['images']} images, {result['objects']} objects; steady state:")
    print("  " + _summary(result["label"], "objects"))
    print(
        f"  one-off: setup {result['label_setup_s']:.2f} s (LVIS file, checkpoint), output "
        f"{result['label_output_s']:.2f} s; end to end {result['label_end_to_end_rate']:.2f} "
        f"objects/s = {100 * result['label_end_to_end_ratio']:.1f} % of the bare rate "
        "at this size"
    )
    print(f"test: {result['images']} images; " + _summary(result["test"], "images"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
