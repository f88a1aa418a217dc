"""``matbench demo``: MatSeg end to end on data that matbench makes itself, on a CPU.

1. Generate a small training set of 2D scenes and a separate point benchmark (another seed
   stream) with :mod:`matbench.synth`, by default in the ``illumination`` mode: materials of
   similar colour under varying coloured light and cast shadows, so that pixel colour cannot
   segment them (as with real material states) and the ``rgb`` baseline is a real opponent.
2. Train a small U-Net (the first three stages of a ResNet-18, random init) through
   ``matbench fit``.
3. Test it, the ``rgb`` and ``random`` baselines and the zero-shot dense DINOv2 baseline
   through ``matbench test`` on the held-out generated benchmark.
4. Print a table (triplet accuracy by point and by material, all and soft cases), write a
   summary JSON and a picture: benchmark images, their points and the similarity map to one point.

The demo succeeds when the trained U-Net beats the ``rgb`` baseline by :data:`MIN_MARGIN`
(all cases, by point): it has learned something pixel colour does not give.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

#: Columns of the demo table: (metric key, header).
COLUMNS = (
    ("all_by_point", "all/point"),
    ("all_by_material", "all/material"),
    ("soft_by_point", "soft/point"),
    ("soft_by_material", "soft/material"),
)
#: The trained model must beat the rgb baseline by this much (all cases, by point).
MIN_MARGIN = 0.05


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matbench demo",
        description="Generate MatSeg scenes and a separate benchmark, train a small U-Net on "
        "CPU, and compare it with the rgb and random baselines.",
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--train-scenes", type=int, default=128, help="generated training scenes")
    parser.add_argument("--bench-images", type=int, default=12, help="generated benchmark images")
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--crop", type=int, default=96, help="training crop side (px)")
    parser.add_argument("--batch-size", type=int, default=4, help="training batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--encoder", default="tu-resnet18", help="U-Net encoder")
    parser.add_argument(
        "--encoder-depth",
        type=int,
        default=3,
        help="encoder stages the U-Net uses, 1-5 (default 3: learns texture on a CPU budget)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training")
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    parser.add_argument(
        "--mode",
        choices=("illumination", "infusion"),
        default="illumination",
        help="generator mode of scenes and benchmark (default illumination)",
    )
    parser.add_argument(
        "--dense-backbone", default="vit_small_patch14_dinov2", help="dense baseline's timm ViT"
    )
    parser.add_argument(
        "--dense-weights",
        default="timm",
        help="dense baseline's weights: 'timm' (pretrained, downloaded once), a local file, or "
        "'none' (random init)",
    )
    parser.add_argument("--figure-images", type=int, default=4, help="images in the picture")
    return parser


def _write_yaml(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _trainer(**extra: Any) -> dict[str, Any]:
    return {
        "accelerator": "cpu",
        "devices": 1,
        "precision": "32-true",
        "logger": False,
        "enable_model_summary": False,
        **extra,
    }


def generate(out: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Training scenes (seed ``seed``) and a benchmark (seed ``seed + 1``, own seed stream)."""
    from matbench.synth import write_benchmark, write_scenes

    train, bench = out / "train_scenes", out / "benchmark"
    params = {
        "seed": args.seed,
        "train_scenes": args.train_scenes,
        "bench_images": args.bench_images,
        "train_sizes": [128, 224],
        "bench_sizes": [160, 256],
        "mode": args.mode,
    }
    marker = out / "data_params.json"
    start = time.perf_counter()
    reuse = marker.is_file() and json.loads(marker.read_text()) == params
    if reuse:
        print(f"[demo] reusing the data generated earlier in {out}", flush=True)
    else:
        marker.unlink(missing_ok=True)
        write_scenes(
            train,
            args.train_scenes,
            args.seed,
            min_size=128,
            max_size=224,
            workers=args.workers,
            overwrite=True,
            mode=args.mode,
        )
        write_benchmark(
            bench,
            args.bench_images,
            args.seed + 1,
            min_size=160,
            max_size=256,
            workers=args.workers,
            overwrite=True,
            mode=args.mode,
        )
        marker.write_text(json.dumps(params))
    print(
        f"[demo] data: {args.train_scenes} training scenes in {train}, {args.bench_images} "
        f"benchmark images in {bench} ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    return train, bench


def train_config(out: Path, train: Path, bench: Path, args: argparse.Namespace) -> Path:
    config = {
        "seed_everything": args.seed,
        "model": {
            "class_path": "matbench.tasks.MatSegTask",
            "init_args": {
                "model": "unet",
                "backbone": args.encoder,
                "backbone_weights": None,
                "backbone_depth": args.encoder_depth,
                "descriptor_dim": 128,
                "temperature": 0.2,
                "lr": args.lr,
                "predict_dir": str(out / "predictions"),
            },
        },
        "data": {
            "class_path": "matbench.datamodules.MatSegDataModule",
            "init_args": {
                "root": str(train),
                "benchmark_root": str(bench),
                "crop_size": args.crop,
                "val_size": args.crop,
                "val_fraction": 0.1,
                "batch_size": args.batch_size,
                "num_workers": 1,
                "seed": args.seed,
            },
        },
        "trainer": _trainer(
            max_steps=args.steps,
            val_check_interval=args.steps,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            default_root_dir=str(out / "train"),
            enable_progress_bar=False,
            log_every_n_steps=10,
            callbacks=[
                {"class_path": "matbench.callbacks.DemoProgress", "init_args": {"every": 25}}
            ],
        ),
        "results_dir": str(out / "results"),
    }
    return _write_yaml(out / "train.yaml", config)


def baseline_config(
    out: Path, bench: Path, model: str, seed: int, extra: dict[str, Any] | None = None
) -> Path:
    config = {
        "seed_everything": seed,
        "model": {
            "class_path": "matbench.tasks.MatSegTask",
            "init_args": {"model": model, "descriptor_dim": 128, "seed": seed, **(extra or {})},
        },
        "data": {
            "class_path": "matbench.datamodules.MatSegBenchmarkDataModule",
            "init_args": {"root": str(bench), "batch_size": 1},
        },
        "trainer": _trainer(enable_progress_bar=False, default_root_dir=str(out / model)),
        "results_dir": str(out / "results"),
    }
    return _write_yaml(out / f"{model}_baseline.yaml", config)


def _newest_json(results: Path, before: set[Path]) -> Path | None:
    new = sorted(set(results.glob("*.json")) - before)
    return new[-1] if new else None


def run_test(cli_args: list[str], results: Path) -> tuple[dict[str, Any], Path | None]:
    from matbench.cli import main

    before = set(results.glob("*.json")) if results.is_dir() else set()
    cli = main(["test", *cli_args])
    return cli.model.results["test"][0], _newest_json(results, before)


def _fmt(value: Any) -> str:
    return (
        "  n/a "
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.3f}"
    )


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = f"{'model':<20}" + "".join(f"{h:>15}" for _, h in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, metrics in rows.items():
        lines.append(f"{name:<20}" + "".join(f"{_fmt(metrics.get(k)):>15}" for k, _ in COLUMNS))
    return "\n".join(lines)


def benchmark_scores(bench: Path, similarity: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """The triplet metrics of a MatSeg benchmark folder when each sample's (N, N) point
    similarity is ``similarity(sample)``."""
    from matbench.datasets.matseg import MatSegBenchmark
    from matbench.metrics.triplet import MatSegMetrics

    metric = MatSegMetrics()
    for sample in MatSegBenchmark(bench):
        metric.update(
            similarity(sample).float(),
            sample["weight"],
            sample["groups"],
            bool(sample["has_relations"]),
        )
    return dict(metric.compute())


def positions_only(bench: Path) -> dict[str, Any]:
    """The benchmark's triplet accuracy from where the points lie alone, with no look at the
    image: the closer two points, the more similar. The level a model must clear to show that
    it uses the image."""
    import torch

    def closeness(sample: dict[str, Any]) -> Any:
        xy = sample["points"][:, :2].float()
        return -torch.cdist(xy, xy)

    return benchmark_scores(bench, closeness)


def dense_weights(backbone: str, weights: str) -> tuple[str | None, str]:
    """The dense baseline's weights and its table label: pretrained when they can be had
    (downloaded once by timm, or a local file), else random init, said so in the label."""
    if weights.lower() == "none":
        return None, "dense (random init)"
    from matbench.utils.weights import create_timm_model

    try:
        create_timm_model(backbone, weights, num_classes=0)
    except Exception as err:  # noqa: BLE001 - no network, no cache: fall back, and say so
        print(f"[demo] {backbone} weights '{weights}' unavailable ({type(err).__name__}): the "
              "dense baseline runs with random init", flush=True)  # fmt: skip
        return None, "dense (random init)"
    return weights, "dense DINOv2"


def picture(out: Path, ckpt: Path, bench: Path, n_images: int) -> Path:
    """For a few benchmark images: the image with its points (one colour per group), and the
    similarity maps of the trained U-Net and of the RGB baseline to one marked point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from matbench.datasets.matseg import MatSegBenchmark
    from matbench.tasks.matseg import MatSegTask, point_descriptors

    dataset = MatSegBenchmark(bench)
    task = MatSegTask.load_from_checkpoint(ckpt, map_location="cpu").eval()
    rgb = MatSegTask(model="rgb").eval()
    n = min(n_images, len(dataset))
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for row in range(n):
        sample = dataset[row]
        image, points, groups = sample["image"], sample["points"], sample["groups"]
        query = 0
        ax = axes[row][0]
        ax.imshow(image.permute(1, 2, 0).numpy())
        for (x, y, r), g in zip(points.tolist(), groups.tolist(), strict=True):
            ax.add_patch(plt.Circle((x, y), max(r, 2), color=cmap(g % 10), fill=False, lw=1.5))
        qx, qy, _ = points[query].tolist()
        ax.plot(qx, qy, marker="*", color="white", markersize=14, markeredgecolor="black")
        ax.set_title(
            f"{sample['key']}: {len(points)} points, {int(groups.max()) + 1} groups", fontsize=9
        )
        for col, (name, model) in enumerate((("trained U-Net", task), ("rgb baseline", rgb)), 1):
            with torch.no_grad():
                desc = model.descriptor_map(image)
                query_desc = point_descriptors(desc, points[query : query + 1])[0]
                sim = torch.einsum("d,dhw->hw", query_desc, desc)
            ax = axes[row][col]
            shown = ax.imshow(sim.numpy(), cmap="magma", vmin=-1 if col == 1 else 0.5, vmax=1)
            ax.plot(qx, qy, marker="*", color="cyan", markersize=12, markeredgecolor="black")
            ax.set_title(f"{name}: similarity to ★", fontsize=9)
            fig.colorbar(shown, ax=ax, fraction=0.046)
        for ax in axes[row]:
            ax.set_axis_off()
    fig.tight_layout()
    path = out / "matseg_demo.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    """Run the demo; returns 0, or 1 when the trained model does not beat ``random`` clearly."""
    args = build_parser().parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train, bench = generate(out, args)

    from matbench.cli import main as cli_main

    cfg = train_config(out, train, bench, args)
    t0 = time.perf_counter()
    print(f"[demo] training {args.encoder} U-Net for {args.steps} steps ({cfg})", flush=True)
    cli = cli_main(["fit", "--config", str(cfg)])
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    print(f"[demo] trained in {time.perf_counter() - t0:.0f} s: {ckpt}", flush=True)

    results = out / "results"
    rows: dict[str, dict[str, Any]] = {}
    runs: dict[str, str | None] = {}
    metrics, path = run_test(["--config", str(cfg), "--ckpt_path", str(ckpt)], results)
    rows["unet (trained)"], runs["unet"] = metrics, str(path) if path else None
    for model in ("rgb", "random"):
        metrics, path = run_test(
            ["--config", str(baseline_config(out, bench, model, args.seed))], results
        )
        rows[model], runs[model] = metrics, str(path) if path else None
    weights, label = dense_weights(args.dense_backbone, args.dense_weights)
    dense = {"backbone": args.dense_backbone, "backbone_weights": weights}
    metrics, path = run_test(
        ["--config", str(baseline_config(out, bench, "dense", args.seed, dense))], results
    )
    rows[label], runs["dense"] = metrics, str(path) if path else None
    rows["positions only"], runs["positions only"] = positions_only(bench), None

    figure = picture(out, ckpt, bench, args.figure_images)
    summary = {
        "benchmark": str(bench),
        "train_scenes": str(train),
        "checkpoint": str(ckpt),
        "steps": args.steps,
        "encoder": args.encoder,
        "seconds": round(time.perf_counter() - start, 1),
        "metrics": rows,
        "run_jsons": runs,
        "figure": str(figure),
    }
    summary_path = out / "demo_results.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")

    print()
    print(f"MatSeg triplet accuracy on {args.bench_images} held-out generated benchmark images")
    print(table(rows))
    print()
    print(f"results JSON: {summary_path}")
    print(f"per-run JSONs and table: {results}")
    print(f"picture: {figure}")
    print(f"total time: {summary['seconds']:.0f} s")
    trained = rows["unet (trained)"].get("all_by_point", float("nan"))
    colour = rows["rgb"].get("all_by_point", float("nan"))
    if not trained > colour + MIN_MARGIN:
        print(
            f"[demo] the trained U-Net ({trained:.3f}) does not beat the rgb baseline "
            f"({colour:.3f}) by {MIN_MARGIN}"
        )
        return 1
    print(f"[demo] trained U-Net {trained:.3f} vs rgb {colour:.3f} (all cases, by point)")
    return 0
