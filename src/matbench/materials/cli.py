"""``matbench materials``: label LVIS objects, measure the prior, build and caption sidecars.

The chain of the talk's LVIS-materials::

    matbench materials label   --lvis lvis_v1_train.json --images coco --checkpoint dms.ckpt \
                               --out labels.json
    matbench materials prior   --from-predictions labels.json --lvis lvis_v1_train.json \
                               --out prior.json
    matbench materials build   --lvis lvis_v1_train.json --predictions labels.json \
                               --prior prior.json --out lvis_v1_train_materials.json
    matbench materials caption --lvis lvis_v1_train.json --images coco \
                               --sidecar lvis_v1_train_materials.json --model <vlm>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from matbench.materials.prior import load_prior, measured_prior, read_prior
from matbench.materials.sidecar import (
    build_sidecar,
    check_predictions_match,
    read_predictions_file,
    write_sidecar,
)
from matbench.materials.vocabulary import VOCABULARY


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matbench materials",
        description="LVIS-materials labels: label objects with a dense segmenter, measure the "
        "category prior, build a sidecar, caption it; list the vocabulary or the prior.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write a materials sidecar for an LVIS annotation JSON")
    build.add_argument("--lvis", required=True, help="LVIS annotation JSON (v1 or v0.5)")
    build.add_argument("--out", required=True, help="sidecar JSON to write")
    build.add_argument(
        "--predictions",
        help="per-object predictions: `materials label` output or {annotation id: material(s)}",
    )
    build.add_argument(
        "--prior",
        help="prior table JSON (`materials prior --from-predictions`); default: the packaged "
        "hand-written table",
    )
    build.add_argument(
        "--no-prior", action="store_true", help="do not use any category prior table"
    )
    build.add_argument(
        "--prior-weight",
        type=float,
        default=0.5,
        help="probability of the prior when both sources label an object (default 0.5)",
    )
    build.add_argument("--seed", type=int, default=0, help="seed of that choice (default 0)")
    sub.add_parser("vocabulary", help="print the material vocabulary with synonyms")
    prior = sub.add_parser(
        "prior", help="print the category -> material prior, or measure it from predictions"
    )
    prior.add_argument("--unknown", action="store_true", help="only the unknown categories")
    prior.add_argument(
        "--from-predictions", help="measure the prior from this `materials label` output"
    )
    prior.add_argument("--lvis", help="with --from-predictions: the LVIS file they label")
    prior.add_argument("--out", help="with --from-predictions: the prior table JSON to write")
    prior.add_argument(
        "--min-objects",
        type=int,
        default=10,
        help="fewest labelled objects for a category to be measured (default 10)",
    )
    prior.add_argument(
        "--no-fallback",
        action="store_true",
        help="categories below --min-objects become unknown instead of taking the "
        "hand-written table's material",
    )
    label = sub.add_parser(
        "label", help="label every LVIS object with a trained dense segmenter (checkpoint)"
    )
    label.add_argument("--lvis", required=True, help="LVIS annotation JSON")
    label.add_argument("--images", required=True, help="COCO image root (train2017/, val2017/)")
    label.add_argument("--checkpoint", required=True, help="DenseMaterialTask checkpoint")
    label.add_argument("--out", required=True, help="predictions JSON to write")
    label.add_argument(
        "--min-share",
        type=float,
        default=0.5,
        help="majority class's smallest share of the mask (default 0.5); below: unknown",
    )
    label.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        help="smallest mean confidence of the majority class (default 0); below: unknown",
    )
    label.add_argument(
        "--class-map",
        help="JSON {segmenter class: material or null} for classes the vocabulary lacks",
    )
    label.add_argument("--device", default="cpu", help="torch device (default cpu)")
    label.add_argument(
        "--workers",
        type=int,
        default=0,
        help="loader processes decoding images and masks while the model runs (default 0: "
        "in the main process; on a GPU use a few)",
    )
    label.add_argument("--no-progress", action="store_true", help="no progress bar")
    from matbench.materials.caption import add_arguments

    add_arguments(
        sub.add_parser(
            "caption",
            help="caption each object's materials with a VLM on Set-of-Marks overlays "
            "(the sidecar's caption field)",
        )
    )
    return parser


def _read_lvis(path: Path) -> dict[str, Any]:
    try:
        lvis = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise SystemExit(f"LVIS annotation file '{path}' does not exist") from err
    except json.JSONDecodeError as err:
        raise SystemExit(f"{path}: not valid JSON ({err})") from err
    if not isinstance(lvis, dict) or "annotations" not in lvis or "categories" not in lvis:
        raise SystemExit(f"{path}: not an LVIS annotation file (no annotations/categories)")
    return lvis


def _predictions(path: str, lvis: dict[str, Any], lvis_path: Path) -> dict[int, list[str]]:
    predictions, meta = read_predictions_file(path)
    check_predictions_match(meta, set(predictions), lvis, lvis_path, Path(path))
    return predictions


def main(argv: list[str]) -> int:
    """Entry point of ``matbench materials``."""
    args = _parser().parse_args(argv)
    if args.command == "vocabulary":
        for name, synonyms in VOCABULARY.items():
            print(name + (f"  ({', '.join(synonyms)})" if synonyms else ""))
        return 0
    if args.command == "prior":
        return _prior(args)
    if args.command == "label":
        return _label(args)
    if args.command == "caption":
        from matbench.materials.caption import run

        return run(args)
    lvis_path = Path(args.lvis)
    if args.no_prior and not args.predictions:
        raise SystemExit("matbench materials build: --no-prior needs --predictions")
    lvis = _read_lvis(lvis_path)
    predictions = _predictions(args.predictions, lvis, lvis_path) if args.predictions else None
    if args.no_prior:
        prior, prior_name = None, None
    elif args.prior:
        prior, prior_name = read_prior(args.prior), str(args.prior)
    else:
        prior, prior_name = load_prior(), "packaged hand-written table"
    labels, report = build_sidecar(
        lvis, prior=prior, predictions=predictions, prior_weight=args.prior_weight, seed=args.seed
    )
    provenance = {
        "lvis": str(lvis_path),
        "prior": prior_name,
        "predictions": args.predictions,
        "prior_weight": args.prior_weight,
        "seed": args.seed,
        "counts": report.record(),
    }
    path = write_sidecar(args.out, labels, provenance)
    print(report.summary())
    print(f"sidecar: {path} ({len(labels)} objects)")
    return 0


def _prior(args: argparse.Namespace) -> int:
    if args.from_predictions is None:
        table = load_prior()
        if not args.unknown:
            for name, entry in table["categories"].items():
                print(f"{name}\t{', '.join(entry['materials'])}\t{entry['rule']}")
        print(f"unknown ({len(table['unknown'])}): " + ", ".join(table["unknown"]))
        return 0
    if not args.lvis or not args.out:
        raise SystemExit("matbench materials prior --from-predictions needs --lvis and --out")
    lvis_path = Path(args.lvis)
    lvis = _read_lvis(lvis_path)
    predictions = _predictions(args.from_predictions, lvis, lvis_path)
    table = measured_prior(
        lvis,
        predictions,
        min_objects=args.min_objects,
        fallback=None if args.no_fallback else load_prior(),
        source=str(args.from_predictions),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    print(
        f"{table['num_measured']} categories measured, {table['num_fallback']} from the "
        f"fallback table, {len(table['unknown'])} unknown (min_objects={args.min_objects})"
    )
    print(f"prior: {out}")
    return 0


def _label(args: argparse.Namespace) -> int:
    from matbench.materials.label import label_lvis

    result = label_lvis(
        args.lvis,
        args.images,
        args.checkpoint,
        args.out,
        min_share=args.min_share,
        min_confidence=args.min_confidence,
        class_map=args.class_map,
        device=args.device,
        progress=not args.no_progress,
        workers=args.workers,
    )
    counts = result["counts"]
    unknown = ", ".join(f"{k}: {v}" for k, v in counts["unknown"].items()) or "none"
    print(
        f"{counts['objects']} objects: {counts['labelled']} labelled, "
        f"{counts['objects'] - counts['labelled']} unknown ({unknown})"
    )
    print(f"predictions: {args.out}")
    return 0
