"""Benchmark: MatSeg training throughput (full pipeline vs the bare step) and generator speed.

1. Training, in images/second, measured side by side in one run (CPU):
   - pipeline: ``matbench``'s whole path -- generated scenes on disk (JPEG + soft PNG masks),
     :class:`MatSegDataModule` (decode, random crop and resize, soft fractions and region of
     interest, albumentations, material padding) in a loader worker, a Lightning ``Trainer``
     fitting :class:`MatSegTask` (U-Net, loss, backward, AdamW);
   - bare: the same model's forward, :func:`matseg_loss`, backward and AdamW step on one fixed
     in-memory batch.
   Target: pipeline >= 85 % of the bare rate. The bare rate is measured before and after the
   pipeline and averaged, as the machine may be shared.
2. Generator: :func:`matbench.synth.write_scenes` at 512 x 512 px, in scenes/second.
3. Prompted path, in images/second, side by side: ``matbench test`` of a tiny random SAM
   (:class:`PromptedMatSegTask`: benchmark images from disk, seeded prompts, one batched decode
   per image, hard similarity, triplet metric; the images decoded in the main process, as the
   shipped SAM configs do, or by ``--prompt-workers`` loader workers) against the bare model
   forward over the same images and prompts, in memory.
   Two tiny SAMs: one at SAM's own input geometry (images resized to 1024 px, 16 px patches,
   so 64 x 64 tokens) but 64 channels wide and 2 layers deep, and the tests' SAM at 64 px (8 x 8
   tokens), whose forward is little more than resizing, so that it shows the fixed cost per
   image of everything around the model. Target: test >= 85 % of the bare rate with the SAM of
   real geometry (a real SAM's forward is heavier still).

    python -m benchmarks.matseg                    # the defaults reported in the docs
    python -m benchmarks.matseg --steps 6 --gen 2  # a quick run
    python -m benchmarks.matseg --only prompted    # the prompted path alone
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from matbench.datamodules.matseg import MatSegBenchmarkDataModule, MatSegDataModule
from matbench.prompts import triplet_prompts
from matbench.synth import write_benchmark, write_scenes
from matbench.tasks.matseg import MatSegTask, matseg_loss
from matbench.tasks.prompted import PromptedMatSegTask
from tests.models.tiny_sam import SAM_CONFIG, write_config


class StepTimer(Callback):
    """Wall time of training batches after ``warmup`` batches (data loading included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.images = 0
        self.elapsed = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.warmup and self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self.start is not None:
            self.images += batch["image"].shape[0]
            self.elapsed = time.perf_counter() - self.start


def bare_rate(task: MatSegTask, batch: dict, steps: int) -> float:
    """Images/second of forward + loss + backward + AdamW on one in-memory batch."""
    model = task.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        desc = model(batch["image"])
        loss = matseg_loss(desc, batch["fractions"], batch["valid"], batch["roi"], 0.2)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch["image"].shape[0] / (time.perf_counter() - start)


class TestTimer(Callback):
    """Wall time of test batches after ``warmup`` batches (data loading included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.images = 0
        self.elapsed = 0.0

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        if batch_idx == self.warmup and self.start is None:
            self.start = time.perf_counter()

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # noqa: ANN001, E501
        if self.start is not None:
            self.images += len(batch["image"])
            self.elapsed = time.perf_counter() - self.start


def sam_geometry_config() -> dict:
    """A tiny SAM (64 channels, 2 layers) at SAM's own input geometry: 1024 px, 16 px patches,
    14-token attention windows, one global-attention layer."""
    config = copy.deepcopy(SAM_CONFIG)
    config["vision_config"].update(
        image_size=1024,
        patch_size=16,
        hidden_size=64,
        mlp_dim=128,
        window_size=14,
        output_channels=32,
        num_pos_feats=16,
    )
    config["prompt_encoder_config"].update(image_size=1024, patch_size=16, hidden_size=32)
    config["mask_decoder_config"].update(hidden_size=32, mlp_dim=64, iou_head_hidden_dim=32)
    return config


def prompted(tmp: Path, images: int, num_points: int, warmup: int, workers: int) -> None:
    """Images/second of ``test`` with two tiny SAMs against their bare forward (module
    docstring)."""
    write_benchmark(tmp / "bench", images + warmup, seed=2, min_size=256, max_size=384, workers=2)
    for folder, name, values in (
        ("sam_geometry", "tiny SAM at SAM's geometry (1024 px, 64 wide)", sam_geometry_config()),
        ("tests_sam", "the tests' tiny SAM (64 px)", None),
    ):
        config = write_config(tmp / folder, "sam", values)
        prompted_rate(tmp, config, name, images, num_points, warmup, workers)


def prompted_rate(
    tmp: Path, config: Path, name: str, images: int, num_points: int, warmup: int, workers: int
) -> None:
    """One side-by-side measurement of :func:`prompted`."""
    L.seed_everything(0)
    task = PromptedMatSegTask("sam", None, str(config), num_points=num_points).eval()
    dm = MatSegBenchmarkDataModule(
        str(tmp / "bench"), max_size=700, batch_size=1, num_workers=workers
    )
    dm.setup("test")
    samples = [dm.test_dataset[i] for i in range(len(dm.test_dataset))]
    prompts = [triplet_prompts(s["points"], s["groups"], num_points, 0, s["key"]) for s in samples]

    def bare() -> float:
        with torch.no_grad():
            for s, (coords, labels) in zip(samples[:warmup], prompts, strict=False):
                task.model(s["image"], coords, labels)
            start = time.perf_counter()
            for s, (coords, labels) in zip(samples[warmup:], prompts[warmup:], strict=True):
                task.model(s["image"], coords, labels)
        return images / (time.perf_counter() - start)

    bare_before = bare()
    timer = TestTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=str(tmp / "run"),
    )
    trainer.test(task, datamodule=dm, verbose=False)
    pipeline = timer.images / timer.elapsed
    bare_after = bare()
    bare_rate_ = (bare_before + bare_after) / 2
    points = sum(len(s["points"]) for s in samples[warmup:])
    print(
        f"Prompted path, {name}, random init, {num_points} points per prompt, {images} "
        f"benchmark images (256-384 px), {points} anchors = prompts, {workers} loader "
        f"worker(s), {torch.get_num_threads()} threads:"
    )
    print(
        f"  {'bare forward (same prompts, memory)':<36} {bare_rate_:8.2f} images/s  "
        f"(before {bare_before:.2f}, after {bare_after:.2f})"
    )
    print(f"  {'matbench test (disk → metric)':<36} {pipeline:8.2f} images/s")
    overhead_ms = 1000 * (1 / pipeline - 1 / bare_rate_)
    print(
        f"  test / bare = {100 * pipeline / bare_rate_:.1f} %  (target >= 85 % at SAM's "
        f"geometry); {overhead_ms:.1f} ms per image besides the forward"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=24, help="generated training scenes")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--crop", type=int, default=128, help="crop side (px)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="loader workers")
    parser.add_argument("--encoder", default="tu-convnext_atto")
    parser.add_argument("--gen", type=int, default=6, help="scenes generated at 512 px")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-images", type=int, default=12, help="prompted-path images")
    parser.add_argument("--points", type=int, default=4, help="points per prompt")
    parser.add_argument(
        "--prompt-workers",
        type=int,
        default=0,
        help="loader workers of the prompted test (default 0, as configs/matseg/sam_*.yaml)",
    )
    parser.add_argument("--only", choices=("training", "prompted"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.only != "training":
        with tempfile.TemporaryDirectory() as tmp:
            prompted(Path(tmp), args.prompt_images, args.points, 2, args.prompt_workers)
    if args.only == "prompted":
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # -- generator ----------------------------------------------------------------------
        start = time.perf_counter()
        write_scenes(tmp / "gen512", args.gen, seed=0, min_size=512, max_size=512, workers=2)
        gen_seconds = time.perf_counter() - start

        # -- training data ------------------------------------------------------------------
        write_scenes(tmp / "scenes", args.scenes, seed=1, min_size=256, max_size=384, workers=2)
        dm = MatSegDataModule(
            str(tmp / "scenes"),
            crop_size=args.crop,
            val_size=args.crop,
            val_fraction=0.1,
            batch_size=args.batch_size,
            num_workers=args.workers,
            augment=True,
        )
        L.seed_everything(0)
        task = MatSegTask(backbone=args.encoder, descriptor_dim=128, lr=1e-4)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        bare_before = bare_rate(task, batch, max(3, args.steps // 2))

        timer = StepTimer(args.warmup)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=args.warmup + args.steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            default_root_dir=str(tmp / "run"),
        )
        trainer.fit(task, datamodule=dm)
        pipeline = timer.images / timer.elapsed
        bare_after = bare_rate(task, batch, max(3, args.steps // 2))

    bare = (bare_before + bare_after) / 2
    print(
        f"MatSeg training, {args.encoder} U-Net, {args.batch_size} x {args.crop} px crops, "
        f"{args.threads} threads, {args.workers} loader worker(s):"
    )
    print(
        f"  {'bare step (in-memory batch)':<36} {bare:8.2f} images/s  "
        f"(before {bare_before:.2f}, after {bare_after:.2f})"
    )
    print(f"  {'full pipeline (disk → Trainer)':<36} {pipeline:8.2f} images/s")
    print(f"  pipeline / bare = {100 * pipeline / bare:.1f} %  (target >= 85 %)")
    print(
        f"Generator: {args.gen} scenes at 512 x 512 px in {gen_seconds:.1f} s = "
        f"{args.gen / gen_seconds:.2f} scenes/s (2 processes)"
    )


if __name__ == "__main__":
    main()
