"""Benchmark: a ``matbench leaderboard`` sweep against the bare forwards of its models.

Writes a fake FMD copy of real-sized images (512 x 384 JPEGs with masks) to a temporary
folder, then, on the CPU, in one process (imports done before timing):

1. the sweep: every model on ``fmd`` (zero-shot for image-text models, the linear probe with
   its feature extraction and weight decay sweep for all), through the same code as
   ``matbench leaderboard`` (configs, ``matbench test``, records, page);
2. the bare forwards: for each run, the same number of images as that run put through its
   model, as ready-made tensors at the model's input size, in batches of the same size (and,
   for zero-shot, the text tower on as many prompts as the run encoded: classes x
   templates): the least work any evaluation of these models has to do.

Prints each run's images and seconds and the sweep's images/s against the bare forwards'
(target >= 85 %).

    python -m benchmarks.leaderboard                      # ViT-S/16 (timm) + ViT-B-32 (open_clip)
    python -m benchmarks.leaderboard --per-class 6 --models timm:test_vit@none   # a quick run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from matbench.leaderboard.cli import main as leaderboard_main
from matbench.leaderboard.models import build_featurizer, resolve_model
from matbench.leaderboard.runner import load_records
from tests.data.fmd.data import make as make_fmd

TARGET = 0.85


def bare_seconds(name: str, images: int, batch_size: int) -> float:
    """Seconds for ``images`` forwards of the model ``name`` on ready tensors."""
    featurizer = build_featurizer(resolve_model(name))
    size = featurizer.size
    batch = torch.rand(batch_size, 3, size, size)
    masks = torch.ones(batch_size, size, size, dtype=torch.bool)
    featurizer(batch[:1], masks[:1])  # warm-up, as the sweep's model is warm after its first batch
    start = time.perf_counter()
    done = 0
    with torch.inference_mode():
        while done < images:
            n = min(batch_size, images - done)
            featurizer(batch[:n], masks[:n])
            done += n
    return time.perf_counter() - start


def bare_text_seconds(record: dict, out: Path, batch_size: int) -> float:
    """Seconds for the text tower on as many prompts as a zero-shot run encoded (classes x
    templates): the other forward zero-shot needs."""
    import json

    import open_clip

    from matbench.models.clip import create_open_clip

    protocol = json.loads((out / record["results"]).read_text())["protocol"]
    prompts = len(protocol["class_names"]) * len(protocol["templates"])
    spec = resolve_model(record["model"]["name"])
    model = create_open_clip(spec.arch, spec.weights).eval()
    tokens = open_clip.get_tokenizer(
        Path(spec.arch).stem if spec.arch.endswith(".json") else spec.arch
    )(["a photo of a material."] * batch_size)
    start = time.perf_counter()
    with torch.inference_mode():
        for done in range(0, prompts, batch_size):
            model.encode_text(tokens[: min(batch_size, prompts - done)])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        default="timm:vit_small_patch16_224@none,ViT-B-32/none",
        help="comma-separated models (random init by default: nothing is downloaded)",
    )
    parser.add_argument("--per-class", type=int, default=20, help="fake FMD images per class")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of both")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="loader workers of the sweep (0: on 2 cores, workers take the model's cores)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import lightning  # noqa: F401 - imported once, before timing, as in any long sweep

    with tempfile.TemporaryDirectory() as tmp:
        root = make_fmd(Path(tmp) / "fmd", per_class=args.per_class, size=(512, 384))
        out = Path(tmp) / "board"
        start = time.perf_counter()
        code = leaderboard_main(
            [
                "--models",
                args.models,
                "--benchmarks",
                "fmd",
                "--root",
                f"fmd={root}",
                "--out",
                str(out),
                "--batch_size",
                str(args.batch_size),
                "--num_workers",
                str(args.workers),
                "--override",
                f"data.init_args.batch_size={args.batch_size}",
            ]  # fmt: skip
        )
        sweep = time.perf_counter() - start
        if code != 0:
            raise SystemExit("the sweep had failed runs")
        records = [r for r in load_records(out) if r["status"] == "ok"]
        print(f"\n{'run':<60} {'images':>7} {'sweep s':>8} {'bare s':>8}")
        total_images, bare_total = 0, 0.0
        for record in records:
            images = int(record.get("images") or 0)
            bare = bare_seconds(record["model"]["name"], images, args.batch_size) if images else 0.0
            if record["protocol"] == "zero_shot":
                bare += bare_text_seconds(record, out, args.batch_size)
            total_images += images
            bare_total += bare
            print(f"{record['key'][-60:]:<60} {images:>7} {record['seconds']:>8.1f} {bare:>8.1f}")
    sweep_rate, bare_rate = total_images / sweep, total_images / bare_total
    ratio = sweep_rate / bare_rate
    print(
        f"\nsweep: {total_images} images in {sweep:.1f} s = {sweep_rate:.1f} images/s "
        f"(every step: configs, data, zero-shot text, features, probe fits, records, page)"
    )
    print(f"bare forwards: {bare_total:.1f} s = {bare_rate:.1f} images/s")
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"sweep / bare = {ratio:.1%} ({verdict} the {TARGET:.0%} target)")


if __name__ == "__main__":
    main()
