"""``matbench materials``: build LVIS-materials sidecars and inspect the vocabulary and prior."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matbench.materials.prior import load_prior
from matbench.materials.sidecar import build_sidecar, read_predictions, write_sidecar
from matbench.materials.vocabulary import VOCABULARY


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matbench materials",
        description="LVIS-materials labels: build a sidecar, list the vocabulary or the prior.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write a materials sidecar for an LVIS annotation JSON")
    build.add_argument("--lvis", required=True, help="LVIS annotation JSON (v1 or v0.5)")
    build.add_argument("--out", required=True, help="sidecar JSON to write")
    build.add_argument(
        "--predictions", help="JSON of per-object predictions: {annotation id: material(s)}"
    )
    build.add_argument(
        "--no-prior", action="store_true", help="do not use the category prior table"
    )
    build.add_argument(
        "--prior-weight",
        type=float,
        default=0.5,
        help="probability of the prior when both sources label an object (default 0.5)",
    )
    build.add_argument("--seed", type=int, default=0, help="seed of that choice (default 0)")
    sub.add_parser("vocabulary", help="print the material vocabulary with synonyms")
    prior = sub.add_parser("prior", help="print the category -> material prior table")
    prior.add_argument("--unknown", action="store_true", help="only the unknown categories")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``matbench materials``."""
    args = _parser().parse_args(argv)
    if args.command == "vocabulary":
        for name, synonyms in VOCABULARY.items():
            print(name + (f"  ({', '.join(synonyms)})" if synonyms else ""))
        return 0
    if args.command == "prior":
        table = load_prior()
        if not args.unknown:
            for name, entry in table["categories"].items():
                print(f"{name}\t{', '.join(entry['materials'])}\t{entry['rule']}")
        print(f"unknown ({len(table['unknown'])}): " + ", ".join(table["unknown"]))
        return 0
    lvis_path = Path(args.lvis)
    if args.no_prior and not args.predictions:
        raise SystemExit("matbench materials build: --no-prior needs --predictions")
    try:
        lvis = json.loads(lvis_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise SystemExit(f"LVIS annotation file '{lvis_path}' does not exist") from err
    except json.JSONDecodeError as err:
        raise SystemExit(f"{lvis_path}: not valid JSON ({err})") from err
    if not isinstance(lvis, dict) or "annotations" not in lvis or "categories" not in lvis:
        raise SystemExit(f"{lvis_path}: not an LVIS annotation file (no annotations/categories)")
    predictions = read_predictions(args.predictions) if args.predictions else None
    labels, report = build_sidecar(
        lvis,
        prior=None if args.no_prior else load_prior(),
        predictions=predictions,
        prior_weight=args.prior_weight,
        seed=args.seed,
    )
    path = write_sidecar(args.out, labels)
    print(report.summary())
    print(f"sidecar: {path} ({len(labels)} objects)")
    return 0
