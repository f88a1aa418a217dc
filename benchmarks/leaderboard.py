"""Benchmark: a ``matbench leaderboard`` sweep against the bare forwards of its models.

Writes a fake FMD copy of real-sized images (512 x 384 JPEGs with masks) to a temporary
folder, then, on the CPU, in one process (imports done before timing):

1. the sweep: every model on ``fmd`` (zero-shot for image-text models, the linear probe with
   its feature extraction and weight decay sweep for all), through the same code as
   ``matbench leaderboard`` (configs, ``matbench test``, records, page);
2. the bare forwards: right after each run (so that both see the same machine load), the same
   number of images as that run put through its model, as ready-made tensors at the model's
   input size, in batches of the same size (and, for zero-shot, the text tower on the prompts
   the run encoded, classes x templates, as the run encodes them): the least work any
   evaluation of these models has to do. Their time is not counted in the sweep's.

Prints each run's images and seconds and the sweep's images/s against the bare forwards'
(target >= 85 %).

    python -m benchmarks.leaderboard                      # ViT-S/16 (timm) + ViT-B-32 (open_clip), ~6 min
    python -m benchmarks.leaderboard --per-class 6 --models timm:test_vit@none   # a quick run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from matbench.leaderboard.cli import build_parser, settings, sweep
from matbench.leaderboard.models import build_featurizer, resolve_model
from matbench.leaderboard.page import write_leaderboard
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


def bare_text_seconds(record: dict, out: Path) -> float:
    """Seconds for the text tower on the prompts a zero-shot run encoded (classes x
    templates), in the same chunks, through the same text encoder (which runs up to the
    longest caption): the other forward zero-shot needs."""
    import json

    from matbench.tasks.clip import frozen_clip
    from matbench.tasks.zeroshot import class_prompts

    protocol = json.loads((out / record["results"]).read_text())["protocol"]
    prompts = class_prompts(
        protocol["class_names"], protocol["prompt_names"], protocol["templates"]
    )
    flat = [p for per_class in prompts for p in per_class]
    spec = resolve_model(record["model"]["name"])
    model = frozen_clip(spec.arch, spec.weights, "open_clip", None).eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(flat), 256):  # ZeroShotTask.class_embeddings' chunks
            model.encode_text(flat[i : i + 256])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        default="timm:vit_small_patch16_224@none,ViT-B-32/none",
        help="comma-separated models (random init by default: nothing is downloaded)",
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=100,
        help="fake FMD images per class (default 100: FMD's real size, 1000 images)",
    )
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
    # the libraries are imported once, before timing, as in any long sweep
    import lightning  # noqa: F401
    import open_clip  # noqa: F401
    import timm  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        root = make_fmd(Path(tmp) / "fmd", per_class=args.per_class, size=(512, 384))
        out = Path(tmp) / "board"
        argv = [
            "--models", args.models, "--benchmarks", "fmd", "--root", f"fmd={root}",
            "--out", str(out), "--batch_size", str(args.batch_size),
            "--num_workers", str(args.workers),
            "--override", f"data.init_args.batch_size={args.batch_size}",
        ]  # fmt: skip
        rows: list[tuple[str, int, float, float]] = []
        measuring = [0.0]  # time spent in after_run: not the sweep's

        def after_run(run: object, record: dict) -> None:
            # each run's bare forwards right after it, so that both see the same load
            start = time.perf_counter()
            images = int(record.get("images") or 0) if record["status"] == "ok" else 0
            if images:
                bare = bare_seconds(record["model"]["name"], images, args.batch_size)
                if record["protocol"] == "zero_shot":
                    bare += bare_text_seconds(record, out)
                rows.append((record["key"], images, record["seconds"], bare))
            measuring[0] += time.perf_counter() - start

        start = time.perf_counter()
        code = sweep(settings(build_parser().parse_args(argv)), after_run=after_run)
        write_leaderboard(out)
        elapsed = time.perf_counter() - start
        if code != 0:
            raise SystemExit("the sweep had failed runs")
    bare_total = sum(row[3] for row in rows)
    sweep_total = elapsed - measuring[0]  # every step of the sweep, none of the bare ones
    total_images = sum(row[1] for row in rows)
    print(f"\n{'run':<60} {'images':>7} {'sweep s':>8} {'bare s':>8}")
    for key, images, seconds, bare in rows:
        print(f"{key[-60:]:<60} {images:>7} {seconds:>8.1f} {bare:>8.1f}")
    sweep_rate, bare_rate = total_images / sweep_total, total_images / bare_total
    ratio = sweep_rate / bare_rate
    print(
        f"\nsweep: {total_images} images in {sweep_total:.1f} s = {sweep_rate:.1f} images/s "
        f"(every step: configs, data, zero-shot text, features, probe fits, records, page)"
    )
    outside = sweep_total - sum(row[2] for row in rows)
    print(f"  of which outside the measured runs: {outside:.1f} s (plan, skipped runs, page)")
    print(f"bare forwards: {bare_total:.1f} s = {bare_rate:.1f} images/s")
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"sweep / bare = {ratio:.1%} ({verdict} the {TARGET:.0%} target)")


if __name__ == "__main__":
    main()
