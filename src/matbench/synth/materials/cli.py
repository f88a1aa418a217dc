"""``matbench synth materials``: the two-stream paper's synthetic training set (see
:mod:`matbench.synth.materials`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from matbench.synth.materials import (
    DEFAULT_DETECTOR,
    DEFAULT_DIFFUSION,
    DEFAULT_SEGMENTER,
    DEFAULT_TEMPLATE,
)

KINDS = ("materials",)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def add_parsers(sub: argparse._SubParsersAction, types: dict[str, Any]) -> None:
    """Add ``materials`` to ``matbench synth``'s subparsers (``types``: the argument types
    of :mod:`matbench.synth.cli`)."""
    positive, non_negative = types["positive"], types["non_negative"]
    p = sub.add_parser(
        "materials",
        help="diffusion images of objects made of each class, labelled by Grounding DINO + SAM "
        "(needs matbench[generate])",
        description="The two-stream paper's synthetic training set: three-level prompts "
        "(object / material / sub-material or adjective) from a language model or a file, "
        "images from a diffusers pipeline, the object found by Grounding DINO and segmented by "
        "SAM, the material label on that mask only. Output: <out>/image/<class>/*.jpg, "
        "<out>/mask/<class>/*.png (a MaterialFolder dataset), prompts.jsonl (+ .sha256), "
        "manifest.jsonl, summary.json, contact_sheet.png. Rerun the same command to resume.",
    )
    p.add_argument("--out", required=True, help="output folder (an earlier run's is continued)")
    p.add_argument(
        "--per-class",
        type=positive,
        default=583,
        help="kept images per class (default 583: the paper's 1x scale, 12,240 images / 21)",
    )
    p.add_argument(
        "--max-attempts",
        type=float,
        default=3.0,
        help="attempt budget per class, as a multiple of --per-class (default 3)",
    )
    p.add_argument("--seed", type=non_negative, default=0, help="run seed (default 0)")
    g = p.add_argument_group("prompts (used when <out>/prompts.jsonl does not exist yet)")
    source = g.add_mutually_exclusive_group()
    source.add_argument("--prompts", default=None, help="triplet file (.json, .jsonl or .csv)")
    source.add_argument(
        "--llm",
        default=None,
        help="language model for the triplets: hf-text:<name or folder> or openai:<model>",
    )
    g.add_argument("--llm-base-url", default=None, help="API root of an openai: model")
    g.add_argument("--llm-temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--llm-max-tokens", type=positive, default=1024)
    g.add_argument(
        "--prompts-per-class", type=positive, default=50, help="triplets per class (default 50)"
    )
    g.add_argument("--template", default=DEFAULT_TEMPLATE, help="text-to-image prompt template")
    g.add_argument(
        "--deny",
        action="append",
        default=[],
        help="extra deny list of impossible 'object, material' pairs (repeatable)",
    )
    g.add_argument(
        "--label-space",
        default="classes21",
        help="the classes: a packaged label space or a label-space JSON (default classes21)",
    )
    m = p.add_argument_group("models")
    m.add_argument("--model", default=DEFAULT_DIFFUSION, help="diffusers pipeline (name/folder)")
    m.add_argument("--detector", default=DEFAULT_DETECTOR, help="Grounding DINO (name/folder)")
    m.add_argument("--segmenter", default=DEFAULT_SEGMENTER, help="SAM (name/folder)")
    m.add_argument("--segmenter-kind", choices=("sam", "sam2"), default="sam")
    m.add_argument("--steps", type=positive, default=50, help="denoising steps (default 50)")
    m.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default 7.5)")
    m.add_argument("--size", type=positive, default=768, help="image side (default 768)")
    m.add_argument("--negative-prompt", default=None)
    m.add_argument("--batch-size", type=positive, default=4, help="images per batch")
    m.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:1, ...")
    m.add_argument(
        "--dtype",
        choices=("auto", "float32", "float16", "bfloat16"),
        default="auto",
        help="auto: float16 on a GPU, float32 on the CPU",
    )
    f = p.add_argument_group("labels")
    f.add_argument("--box-threshold", type=_fraction, default=0.35, help="least detection score")
    f.add_argument("--min-mask", type=_fraction, default=0.02, help="least mask area (fraction)")
    f.add_argument("--max-mask", type=_fraction, default=0.9, help="largest mask area (fraction)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _prompt_builder(args: argparse.Namespace) -> Any:
    """A function building the prompt list from ``--prompts`` or ``--llm`` (called only when
    the output folder has no prompt list yet)."""
    from pathlib import Path

    from matbench.datasets.label_space import load_label_space
    from matbench.synth.materials import prompts as P

    def build() -> P.PromptList:
        classes = load_label_space(args.label_space).classes
        bad = [c for c in classes if "/" in c or c.startswith(".")]
        if bad:
            raise P.PromptError(f"class names {bad} cannot be folder names")
        deny = P.load_deny_list(args.deny)
        if args.prompts:
            candidates, unparseable = P.read_triplet_file(args.prompts), 0
            source = str(Path(args.prompts).expanduser())
        elif args.llm:
            from matbench.synth.materials.models import resolve_device, resolve_dtype
            from matbench.vlm import GenerationSettings, build_backend

            device = resolve_device(args.device)
            backend = build_backend(
                args.llm,
                GenerationSettings(
                    max_new_tokens=args.llm_max_tokens,
                    temperature=args.llm_temperature,
                    seed=args.seed,
                ),
                device=str(device),
                dtype=str(resolve_dtype(args.dtype, device)).removeprefix("torch."),
                base_url=args.llm_base_url,
            )
            out = Path(args.out).expanduser()
            out.mkdir(parents=True, exist_ok=True)
            candidates, unparseable = P.ask_language_model(
                backend,
                classes,
                args.prompts_per_class,
                out / P.RAW_FILE,
                batch_size=args.batch_size,
                progress=not args.no_progress,
            )
            source = backend.model_id
        else:
            raise P.PromptError(
                f"{args.out} has no prompts.jsonl yet: give --prompts FILE or --llm MODEL"
            )
        kept, dropped = P.sanity_filter(candidates, classes, deny)
        dropped["unparseable"] += unparseable
        try:
            return P.balance(kept, args.prompts_per_class, dropped, args.template, source)
        except P.PromptError as err:
            if args.llm:
                raw = Path(args.out).expanduser() / P.RAW_FILE
                raise P.PromptError(f"{err} (the model's answers are in {raw})") from err
            raise

    return build


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``matbench synth materials``; returns an exit code."""
    from matbench.errors import MatbenchError
    from matbench.synth.materials.models import DiffusionSettings
    from matbench.synth.materials.pipeline import SynthConfig, synthesize
    from matbench.synth.materials.report import summary_table

    if args.min_mask >= args.max_mask:
        parser.error(f"--min-mask ({args.min_mask}) must be below --max-mask ({args.max_mask})")
    if args.max_attempts < 1:
        parser.error(f"--max-attempts must be at least 1, got {args.max_attempts}")
    config = SynthConfig(
        per_class=args.per_class,
        max_attempts=args.max_attempts,
        seed=args.seed,
        model=args.model,
        detector=args.detector,
        segmenter=args.segmenter,
        segmenter_kind=args.segmenter_kind,
        diffusion=DiffusionSettings(args.steps, args.guidance, args.size, args.negative_prompt),
        box_threshold=args.box_threshold,
        min_mask=args.min_mask,
        max_mask=args.max_mask,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
    )
    from pathlib import Path

    from matbench.synth.materials.prompts import PROMPTS_FILE

    written = Path(args.out).expanduser() / PROMPTS_FILE
    if written.is_file() and (args.prompts or args.llm):
        print(
            f"matbench synth materials: continuing with the prompt list {written}; "
            f"--prompts/--llm are not used (start a new --out for new prompts)",
            file=sys.stderr,
        )
    try:
        result = synthesize(args.out, config, _prompt_builder(args), progress=not args.no_progress)
    except (MatbenchError, FileNotFoundError) as err:
        print(f"matbench synth materials: error: {err}", file=sys.stderr)
        hint = getattr(err, "hint", "")
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return 2
    s = result.summary
    print(summary_table(s))
    dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "none"
    print(
        f"{s['kept']} images kept of {s['attempted']} attempted in {args.out} "
        f"({result.new_images} made now, {result.seconds:.1f} s); dropped: {dropped}; "
        f"{'complete' if s['complete'] else 'short of --per-class (see summary.json)'}; "
        f"prompts sha256 {s['settings']['prompts_sha256'][:12]}; contact sheet "
        f"{args.out}/contact_sheet.png"
    )
    return 0
