"""Benchmark: ``matbench synth materials`` against the bare diffusion call on the same prompts
and seeds, side by side in one run.

Pipeline path: :func:`matbench.synth.materials.pipeline.synthesize` into a fresh folder --
planning, the diffusion batches, then (in the labelling thread, overlapping the next batch)
Grounding DINO, SAM in the best box, the drop rules, JPEG and PNG writing and the fsync'd
manifest, and finally the summary and the contact sheet -- in attempted images/s. Bare path:
the ``diffusers`` pipeline called on the very same prompts, seeds and batches, nothing else.
Target: >= 85 % (labelling must not be the bottleneck). A third line shows labelling alone
(detect + segment of already generated images), for where the time goes.

By default the models are tiny random ones built offline (:mod:`tests.synth.tiny_generate`),
widened with ``--width``, at ``--steps`` denoising steps; pass ``--model``, ``--detector`` and
``--segmenter`` (hub names or folders) to measure the real ones, e.g. on a GPU::

    python -m benchmarks.synth_materials                        # the defaults in the docs
    python -m benchmarks.synth_materials --images 8 --rounds 1  # a quick run
    python -m benchmarks.synth_materials --device cuda --size 768 --steps 50 \\
        --model stabilityai/stable-diffusion-2-1 --detector IDEA-Research/grounding-dino-tiny \\
        --segmenter facebook/sam-vit-huge

After one warm-up pass the paths alternate for ``--rounds`` rounds (reversed every other
round) and each keeps its best round, as the CPU may be shared.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from matbench.synth.materials import models as M
from matbench.synth.materials.pipeline import SynthConfig, plan, synthesize
from matbench.synth.materials.prompts import DEFAULT_TEMPLATE, PromptList, Triplet

OBJECTS = {
    "ceramic": ("vase", "porcelain"),
    "metal": ("kettle", "copper"),
    "wood": ("chair", "oak"),
    "glass": ("bottle", "frosted"),
    "leather": ("handbag", "suede"),
    "paper": ("lantern", "rice paper"),
    "stone": ("statue", "marble"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=14, help="images per path and round")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--width", type=int, default=16, help="tiny UNet/VAE channel width")
    parser.add_argument("--model", default=None, help="diffusers pipeline (default: tiny)")
    parser.add_argument("--detector", default=None, help="Grounding DINO (default: tiny)")
    parser.add_argument("--segmenter", default=None, help="SAM (default: tiny)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = M.resolve_device(args.device)
    dtype = M.resolve_dtype("auto", device)
    classes = list(OBJECTS)
    per_class = max(1, args.images // len(classes))
    n_images = per_class * len(classes)
    by_class = {c: [Triplet(o, c, d)] for c, (o, d) in OBJECTS.items()}
    prompts = PromptList(by_class, {c: 1 for c in classes}, {}, DEFAULT_TEMPLATE, "benchmark")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model, detector, segmenter = args.model, args.detector, args.segmenter
        if not (model and detector and segmenter):
            from tests.synth.tiny_generate import (
                make_tiny_grounding_dino,
                make_tiny_sd,
                write_sam,
            )

            model = model or str(make_tiny_sd(tmp_path / "sd", width=args.width))
            detector = detector or str(make_tiny_grounding_dino(tmp_path / "gd"))
            segmenter = segmenter or str(write_sam(tmp_path / "sam"))
        settings = M.DiffusionSettings(steps=args.steps, size=args.size)
        generator = M.ImageGenerator(model, settings, device, dtype)
        grounder = M.ObjectGrounder(detector, segmenter, device, dtype)
        config = SynthConfig(
            per_class=per_class,
            max_attempts=1.0,  # no replacement images: both paths make exactly n_images
            model=model,
            detector=detector,
            segmenter=segmenter,
            diffusion=settings,
            batch_size=args.batch_size,
            device=str(device),
        )
        records = prompts.records()
        by_id = {r["id"]: r for r in records}
        jobs = plan({}, {c: [by_id[f"{c}/0"]] for c in classes}, config)
        batches = [jobs[i : i + args.batch_size] for i in range(0, len(jobs), args.batch_size)]
        made: dict[str, list] = {}

        def run_bare() -> float:
            start = time.perf_counter()
            images = []
            for batch in batches:
                out, _ = generator([j.prompt["text"] for j in batch], [j.seed for j in batch])
                images += out
            seconds = time.perf_counter() - start
            made["images"] = images
            return n_images / seconds

        def run_pipeline(round_: int) -> float:
            start = time.perf_counter()
            result = synthesize(
                tmp_path / f"out{round_}", config, lambda: prompts, False, generator, grounder
            )
            seconds = time.perf_counter() - start
            assert result.summary["attempted"] == n_images, result.summary["attempted"]
            return n_images / seconds

        def run_labels() -> float:
            images = made["images"]
            start = time.perf_counter()
            for i in range(0, len(images), args.batch_size):
                chunk = images[i : i + args.batch_size]
                found = grounder.detect(
                    chunk, [j.prompt["query"] for j in jobs[i : i + len(chunk)]]
                )
                grounder.segment(chunk, [g.box for g in found])
            return n_images / (time.perf_counter() - start)

        run_bare()  # warm-up
        run_labels()
        best = {"bare": 0.0, "pipeline": 0.0, "labels": 0.0}
        for round_ in range(args.rounds):
            runs = [
                ("bare", run_bare),
                ("pipeline", lambda r=round_: run_pipeline(r)),
                ("labels", run_labels),
            ]
            for name, run in runs if round_ % 2 == 0 else runs[::-1]:
                best[name] = max(best[name], run())
    print(
        f"{n_images} images of {args.size} px, {args.steps} steps, batches of "
        f"{args.batch_size}, {device} {str(dtype).removeprefix('torch.')}, {args.threads} "
        f"thread(s), best of {args.rounds}; models: {Path(model).name}, "
        f"{Path(detector).name}, {Path(segmenter).name}"
    )
    print(f"  bare diffusion call:              {best['bare']:8.2f} images/s")
    print(f"  labelling alone (detect + SAM):   {best['labels']:8.2f} images/s")
    print(f"  matbench synth materials:         {best['pipeline']:8.2f} images/s")
    print(f"  pipeline / bare diffusion:        {best['pipeline'] / best['bare']:8.1%}")


if __name__ == "__main__":
    main()
