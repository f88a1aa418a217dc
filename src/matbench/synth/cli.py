"""``matbench synth``: generate MatSeg training scenes (2D, or 3D with Blender), PBR materials, a
point-annotated benchmark, or the two-stream paper's diffusion-made material set."""

from __future__ import annotations

import argparse
import sys
import time

from matbench.errors import DatasetFormatError, DatasetNotFoundError
from matbench.synth import cli_3d
from matbench.synth.materials import cli as cli_materials


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``matbench synth``."""
    parser = argparse.ArgumentParser(
        prog="matbench synth",
        description="Procedural data by MatSeg pattern infusion (textures and soft maps "
        "extracted from natural images).",
    )
    sub = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    p = sub.add_parser(
        "matseg2d",
        help="2D MatSeg scenes (training layout) or, with --benchmark, a benchmark",
        description="Write 2D MatSeg training scenes (<out>/<scene>/RGB__RGB.jpg, mask0.png, "
        "..., Finished.txt) or, with --benchmark, a point-annotated benchmark "
        "(<out>/images/<stem>.jpg, <out>/data/<stem>/data.json, group_relations.txt).",
    )
    p.add_argument("--out", required=True, help="output folder (created; must be empty)")
    p.add_argument("--n", required=True, type=_non_negative, help="number of scenes/images")
    p.add_argument("--seed", type=_non_negative, default=0, help="run seed (default 0)")
    p.add_argument(
        "--benchmark", action="store_true", help="write a point-annotated benchmark instead"
    )
    p.add_argument(
        "--images",
        default=None,
        help="folder of natural images (default: scikit-image's bundled photographs)",
    )
    p.add_argument("--min-size", type=_positive, default=400, help="smallest side (px)")
    p.add_argument("--max-size", type=_positive, default=999, help="largest side (px)")
    p.add_argument(
        "--min-materials",
        type=_positive,
        default=None,
        help="fewest materials per scene (default 1; 2 with --benchmark)",
    )
    p.add_argument(
        "--max-materials",
        type=_positive,
        default=None,
        help="most materials per scene (default 10; 6 with --benchmark)",
    )
    p.add_argument(
        "--hard-prob", type=_probability, default=0.3, help="probability of hard segmentation"
    )
    p.add_argument(
        "--mode",
        choices=("infusion", "illumination"),
        default="infusion",
        help="infusion: MatSeg pattern infusion (default); illumination: similar-coloured "
        "materials under varying coloured light and shadow (not separable by pixel colour)",
    )
    p.add_argument("--workers", type=_positive, default=2, help="processes (1 = in-process)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")
    types = {"positive": _positive, "non_negative": _non_negative, "probability": _probability}
    cli_3d.add_parsers(sub, types)
    cli_materials.add_parsers(sub, types)
    return parser


def main(argv: list[str]) -> int:
    """Run ``matbench synth`` with ``argv`` (without the ``synth`` word); returns an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kind in cli_3d.KINDS:
        return cli_3d.run(args, parser)
    if args.kind in cli_materials.KINDS:
        return cli_materials.run(args, parser)
    bench = args.benchmark
    min_materials = args.min_materials or (2 if bench else 1)
    max_materials = args.max_materials or max(min_materials, 6 if bench else 10)
    if not 16 <= args.min_size <= args.max_size:
        parser.error(f"need 16 <= --min-size <= --max-size, got {args.min_size}, {args.max_size}")
    if min_materials > max_materials:
        parser.error(f"--min-materials ({min_materials}) exceeds --max-materials ({max_materials})")
    common = dict(
        images=args.images,
        min_size=args.min_size,
        max_size=args.max_size,
        min_materials=min_materials,
        max_materials=max_materials,
        hard_prob=args.hard_prob,
        workers=args.workers,
        overwrite=args.overwrite,
        mode=args.mode,
    )
    # the generators (NumPy, SciPy) load only when they run: `synth --help` stays light
    from matbench.synth.scene import TextureNotFoundError
    from matbench.synth.writer import NotEnoughImagesError, write_benchmark, write_scenes

    start = time.perf_counter()
    try:
        if bench:
            records, skipped = write_benchmark(args.out, args.n, args.seed, **common)
        else:
            scenes = write_scenes(args.out, args.n, args.seed, **common)
    except (
        DatasetNotFoundError,
        DatasetFormatError,
        TextureNotFoundError,
        FileExistsError,
        NotADirectoryError,
        NotEnoughImagesError,
    ) as err:
        print(f"matbench synth: error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    source = args.images or "scikit-image sample photographs"
    if bench:
        points = sum(r.points for r in records)
        groups = sum(r.groups for r in records)
        with_rel = sum(1 for r in records if r.relations)
        print(
            f"wrote {len(records)} benchmark images to {args.out} (images/, data/): "
            f"{groups} groups, {points} points, {with_rel} with group_relations.txt; "
            f"{skipped} generated scenes skipped (nothing to score); "
            f"seed {args.seed}, images from {source}, {seconds:.1f} s"
        )
    else:
        hard = sum(s.hard for s in scenes)
        masks = sum(s.materials for s in scenes)
        print(
            f"wrote {len(scenes)} scenes to {args.out} (RGB__RGB.jpg, mask0.png..., "
            f"Finished.txt): {masks} masks, {hard} hard / {len(scenes) - hard} soft; "
            f"seed {args.seed}, sizes {args.min_size}-{args.max_size} px, images from "
            f"{source}, {seconds:.1f} s"
        )
    return 0
