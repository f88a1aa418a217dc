"""``matbench synth pbr`` and ``matbench synth render``: PBR materials and Blender 3D scenes."""

from __future__ import annotations

import argparse
import sys
import time

#: The ``matbench synth`` kinds handled here.
KINDS = ("pbr", "render")


def _run_arguments(parser: argparse.ArgumentParser, what: str, non_negative: object) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", required=True, type=non_negative, help=f"number of {what}")
    parser.add_argument("--seed", type=non_negative, default=0, help="run seed (default 0)")
    parser.add_argument(
        "--images", default=None, help="folder of natural images (default: scikit-image's)"
    )


def add_parsers(sub: argparse._SubParsersAction, types: dict[str, object]) -> None:
    """Add the ``pbr`` and ``render`` subcommands to ``matbench synth``'s subparsers.

    Args:
        sub: The subparsers of ``matbench synth``.
        types: The argument types of :mod:`matbench.synth.cli` (``positive``, ``non_negative``,
            ``probability``).
    """
    positive, non_negative, probability = (
        types["positive"],
        types["non_negative"],
        types["probability"],
    )
    p = sub.add_parser(
        "pbr",
        help="PBR materials from natural textures (albedo, roughness, metallic, height, ...)",
        description="Write PBR/SVBRDF materials made from textures cut out of natural images: "
        "<out>/<material>/albedo.png, roughness.png, metallic.png, height.png, "
        "transmission.png, normal.png and material.json (every random draw).",
    )
    _run_arguments(p, "materials", non_negative)
    p.add_argument(
        "--mix-prob", type=probability, default=0.3, help="probability of mixing two materials"
    )
    p.add_argument("--workers", type=positive, default=2, help="processes (1 = in-process)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")

    r = sub.add_parser(
        "render",
        help="3D MatSeg scenes rendered with Blender/Cycles (needs bpy: matbench[render])",
        description="Render 3D MatSeg training scenes: PBR materials mapped onto random objects "
        "by natural-image soft maps, Cycles on CPU or GPU. Layout: <out>/<scene>/RGB__RGB.jpg, "
        "ObjectMaskOcluded.png, mask001.png..., CameraParameters.json, scene.json, Finished.txt.",
    )
    _run_arguments(r, "scenes", non_negative)
    r.add_argument("--size", type=positive, default=512, help="image side in pixels")
    r.add_argument("--samples", type=positive, default=64, help="Cycles samples per pixel")
    r.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    r.add_argument("--workers", type=positive, default=1, help="Blender processes in parallel")
    r.add_argument(
        "--threads", type=non_negative, default=0, help="CPU threads per render (0: cores/workers)"
    )
    r.add_argument("--pbr", default=None, help="folder of PBR materials (matbench synth pbr)")
    r.add_argument("--meshes", default=None, help="folder of OBJ/GLB/GLTF/PLY/STL meshes")
    r.add_argument("--hdri", default=None, help="folder of HDRI environment maps")
    r.add_argument("--min-materials", type=positive, default=1)
    r.add_argument("--max-materials", type=positive, default=6)
    r.add_argument("--max-objects", type=positive, default=4)
    r.add_argument("--denoise", action="store_true", help="denoise the image (not the masks)")
    r.add_argument("--timeout", type=positive, default=1800, help="seconds per render")
    r.add_argument(
        "--blender-python",
        default=None,
        help="Python interpreter that can import bpy (default: $MATBENCH_BLENDER_PYTHON or this "
        "one)",
    )
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an earlier output")
    mode.add_argument("--resume", action="store_true", help="continue an interrupted run")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the ``pbr`` or ``render`` kind; returns an exit code."""
    from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
    from matbench.synth.scene import TextureNotFoundError

    expected = (
        DatasetNotFoundError,
        DatasetFormatError,
        TextureNotFoundError,
        FileExistsError,
        NotADirectoryError,
    )
    start = time.perf_counter()
    source = args.images or "scikit-image sample photographs"
    if args.kind == "pbr":
        from matbench.synth.pbr import PBRConfig, write_materials

        try:
            folders = write_materials(
                args.out,
                args.n,
                args.seed,
                images=args.images,
                config=PBRConfig(mix_prob=args.mix_prob),
                workers=args.workers,
                overwrite=args.overwrite,
            )
        except expected as err:
            print(f"matbench synth: error: {err}", file=sys.stderr)
            return 2
        print(
            f"wrote {len(folders)} PBR materials to {args.out} (albedo, roughness, metallic, "
            f"height, transmission, normal, material.json); seed {args.seed}, textures from "
            f"{source}, {time.perf_counter() - start:.1f} s"
        )
        return 0

    from matbench.synth.render import RenderConfig, RenderUnavailableError, write_3d_scenes

    if args.min_materials > args.max_materials:
        parser.error(
            f"--min-materials ({args.min_materials}) exceeds --max-materials ({args.max_materials})"
        )
    config = RenderConfig(
        width=args.size,
        height=args.size,
        samples=args.samples,
        device=args.device,
        threads=args.threads,
        min_materials=args.min_materials,
        max_materials=args.max_materials,
        max_objects=args.max_objects,
        denoise=args.denoise,
        timeout=float(args.timeout),
    )
    try:
        records, failures = write_3d_scenes(
            args.out,
            args.n,
            args.seed,
            config=config,
            images=args.images,
            materials=args.pbr,
            meshes=args.meshes,
            hdris=args.hdri,
            workers=args.workers,
            blender=args.blender_python,
            overwrite=args.overwrite,
            resume=args.resume,
            progress=True,
        )
    except RenderUnavailableError as err:
        print(f"matbench synth render: {err}", file=sys.stderr)
        return 2
    except expected as err:
        print(f"matbench synth: error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    retried = sum(r.retried for r in records)
    devices = sorted({r.device for r in records}) or ["-"]
    print(
        f"rendered {len(records)} 3D scenes to {args.out} (RGB__RGB.jpg, ObjectMaskOcluded.png, "
        f"mask001.png..., Finished.txt): {sum(r.materials for r in records)} masks, "
        f"{retried} after a retry, {len(failures)} skipped (see render_errors.log); "
        f"seed {args.seed}, {args.size} px, {args.samples} samples on {'/'.join(devices)}, "
        f"{seconds:.1f} s"
    )
    return 0
