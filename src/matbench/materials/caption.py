"""``matbench materials caption``: VLM captions of the materials of LVIS objects (the talk's
"full version": a VLM with Set-of-Marks prompts, the captions checked by a language model).

Per image, the objects of the sidecar are numbered 1..N on a Set-of-Marks picture
(:func:`matbench.vlm.regions.marks_view`, at most ``max_marks`` per picture) and the model
is asked for the materials of each numbered object, one line per number (``3: brushed
steel``). An optional second pass asks a text model whether each caption fits the object's
LVIS category; rejected captions are recorded and not written. Captions go to the sidecar's
``caption`` field, which ``caption: sidecar`` reads.

Answers are cached in ``<out>.answers.jsonl`` by the image's pixels, its numbered masks, the
prompt (version and text hash) and the model, so a rerun asks only for what is missing
(failures are asked again). Per object, a failure (no answer, no line for its number, an
empty caption) is recorded in the sidecar's ``provenance.caption.failures``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from matbench.errors import ConfigError, DatasetFormatError

CAPTION_PROMPT_VERSION = "1"
SYSTEM = "You are an expert in materials and in how their surfaces look."
CAPTION_PROMPT = (
    "The objects in this photo are tinted, outlined and marked with the numbers 1 to {n}. "
    "For each numbered object, say what it is made of: its material or materials, with how "
    "they look (finish, texture), in a few words. Answer with exactly one line per number, "
    'as "<number>: <materials>", and nothing else.'
)
CHECK_PROMPT = (
    "An object of the category '{category}' was captioned as being made of: \"{caption}\". "
    "Could an object of that category plausibly be made of that? Answer yes or no."
)
_LINE = re.compile(r"^\s*(?:object\s*)?#?\s*(\d+)\s*[:.)\-]\s*(.+?)\s*$", re.IGNORECASE)


def parse_numbered(answer: str, count: int) -> dict[int, str]:
    """The ``<number>: <text>`` lines of an answer, for numbers 1..``count`` (the first line of
    each number wins; other lines are ignored)."""
    out: dict[int, str] = {}
    for line in answer.splitlines():
        match = _LINE.match(line)
        if match:
            number, text = int(match.group(1)), match.group(2).strip().strip('"').strip()
            if 1 <= number <= count and text and number not in out:
                out[number] = text
    return out


def parse_yes_no(answer: str) -> bool | None:
    """True for an answer starting with yes, False for no, None otherwise."""
    words = re.findall(r"[a-z]+", answer.lower())
    if not words:
        return None
    return True if words[0] == "yes" else False if words[0] == "no" else None


def prompt_id(text: str) -> str:
    """Version and text hash of a prompt: part of every cache key."""
    digest = hashlib.sha256(f"{SYSTEM}\n{text}".encode()).hexdigest()[:12]
    return f"v{CAPTION_PROMPT_VERSION}:{digest}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of ``matbench materials caption``."""
    from matbench.vlm import add_model_arguments

    parser.add_argument("--lvis", required=True, help="LVIS annotation JSON")
    parser.add_argument("--images", required=True, help="COCO image root (train2017/, val2017/)")
    parser.add_argument("--sidecar", required=True, help="materials sidecar to caption")
    parser.add_argument("--out", help="sidecar to write (default: update --sidecar in place)")
    add_model_arguments(parser, max_new_tokens=160)
    parser.add_argument(
        "--check-model",
        help="optional text model that checks each caption against the object's category "
        "(hf-text:<name or folder>, hf:<…> or openai:<model>)",
    )
    parser.add_argument("--max-marks", type=int, default=12, help="objects per picture")
    parser.add_argument("--max-side", type=int, default=768, help="longest side of a picture")
    parser.add_argument("--batch-size", type=int, default=4, help="pictures per model call")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """``matbench materials caption`` from parsed arguments."""
    from matbench.vlm import GenerationSettings, backend_from_args, build_backend

    if args.max_marks < 1 or args.batch_size < 1:
        raise ConfigError("--max-marks and --batch-size must be >= 1")
    vlm = backend_from_args(args)
    checker = None
    if args.check_model:
        checker = build_backend(
            args.check_model,
            GenerationSettings(max_new_tokens=4, seed=args.seed),
            device=args.device,
            dtype=args.dtype,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
        )
    summary = caption_sidecar(
        args.lvis,
        args.images,
        args.sidecar,
        args.out or args.sidecar,
        vlm,
        checker,
        max_marks=args.max_marks,
        max_side=args.max_side,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(
        f"{summary['objects']} objects: {summary['captioned']} captioned, "
        f"{summary['rejected']} rejected by the check, {summary['failed']} failed"
    )
    print(f"sidecar: {args.out or args.sidecar}")
    return 0


def caption_sidecar(
    lvis_path: str | Path,
    image_root: str | Path,
    sidecar: str | Path,
    out: str | Path,
    vlm: Any,
    checker: Any = None,
    max_marks: int = 12,
    max_side: int = 768,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Caption the sidecar's objects (see the module docstring); return the counts."""
    import torch

    from matbench.datasets.lvis_materials import (
        decode_polygons,
        find_image_files,
        index_image_records,
        load_image,
        parse_annotation,
        parse_categories,
        parse_polygons,
        read_lvis_json,
    )
    from matbench.materials.sidecar import read_sidecar, write_sidecar
    from matbench.utils.progress import progress_bar
    from matbench.vlm.base import Request
    from matbench.vlm.regions import marks_view, mask_sha256, pixels_sha256
    from matbench.vlm.store import AnswerStore, answer_id

    lvis_path, image_root, sidecar, out = map(Path, (lvis_path, image_root, sidecar, out))
    if not lvis_path.is_file():
        raise FileNotFoundError(f"LVIS annotation file '{lvis_path}' does not exist")
    labels = read_sidecar(sidecar)
    raw_sidecar = json.loads(sidecar.read_text(encoding="utf-8"))
    lvis = read_lvis_json(lvis_path, "an LVIS annotation file")
    categories = parse_categories(lvis["categories"], lvis_path)
    images = index_image_records(lvis["images"], lvis_path)
    objects: dict[int, list[tuple[int, int, Any]]] = {}
    for i, ann in enumerate(lvis["annotations"]):
        ann_id, image_id, category_id, segmentation, _ = parse_annotation(ann, i, lvis_path)
        if ann_id in labels:
            objects.setdefault(image_id, []).append((ann_id, category_id, segmentation))
    missing = sorted(set(labels) - {a for objs in objects.values() for a, _, _ in objs})
    if missing:
        raise DatasetFormatError(
            sidecar,
            f"{len(missing)} annotation id(s) do not exist in '{lvis_path}', e.g. "
            + ", ".join(map(str, missing[:5])),
        )
    order = sorted(objects)
    find_image_files(images, order, image_root, "LVIS", f"listed in {lvis_path} are missing")

    store = AnswerStore(out.with_name(out.name + ".answers.jsonl"))
    failures: dict[str, str] = {}
    checks: dict[str, str] = {}
    captions: dict[int, str] = {}
    bar = progress_bar(sum(len(v) for v in objects.values()), "caption", "object", progress)
    pending: list[tuple[str, Request, list[int]]] = []

    def flush() -> None:
        if not pending:
            return
        answers = vlm.generate([request for _, request, _ in pending])
        records = []
        for (key, _, ids), answer in zip(pending, answers, strict=True):
            records.append({"id": key, "text": answer.text, "error": answer.error})
            _collect(records[-1], ids)
        store.append(records)
        pending.clear()

    def _collect(record: dict[str, Any], ids: list[int]) -> None:
        if record.get("error") or record.get("text") is None:
            for ann_id in ids:
                failures[str(ann_id)] = f"model error: {record.get('error')}"
        else:
            lines = parse_numbered(record["text"], len(ids))
            for number, ann_id in enumerate(ids, start=1):
                if number in lines:
                    captions[ann_id] = lines[number]
                else:
                    failures[str(ann_id)] = f"no line '{number}: …' in the answer"
        bar.update(len(ids))

    for image_id in order:
        info = images[image_id]
        height, width = info["height"], info["width"]
        image = load_image(image_root / info["path"])
        image_sha = pixels_sha256(image)
        kept: list[tuple[int, Any]] = []
        for ann_id, _, segmentation in objects[image_id]:
            polygons = parse_polygons(segmentation, ann_id, width, height, lvis_path)
            mask = decode_polygons(polygons, height, width) if polygons else None
            if mask is None or not mask.any() or mask.shape != tuple(image.shape[-2:]):
                failures[str(ann_id)] = "empty mask (or not the image's size)"
                bar.update(1)
                continue
            kept.append((ann_id, torch.from_numpy(mask)))
        for start in range(0, len(kept), max_marks):
            chunk = kept[start : start + max_marks]
            ids = [ann_id for ann_id, _ in chunk]
            masks = torch.stack([m for _, m in chunk])
            text = CAPTION_PROMPT.format(n=len(chunk))
            region = hashlib.sha256("|".join(mask_sha256(m) for m in masks).encode()).hexdigest()
            key = answer_id(image_sha, f"som:{max_side}:{region}", prompt_id(text), vlm.model_id)
            cached = store.get(key)
            if cached is not None and not cached.get("error") and cached.get("text") is not None:
                _collect(cached, ids)
                continue
            picture = marks_view(image, masks, max_side)
            pending.append((key, Request(text, [picture], system=SYSTEM), ids))
            if len(pending) >= batch_size:
                flush()
    flush()
    bar.close()

    if checker is not None:
        category_of = {
            ann_id: categories.get(cid, str(cid))
            for objs in objects.values()
            for ann_id, cid, _ in objs
        }
        asks = []
        for ann_id in sorted(captions):
            text = CHECK_PROMPT.format(
                category=category_of[ann_id].replace("_", " "), caption=captions[ann_id]
            )
            key = answer_id("text-only", str(ann_id), prompt_id(text), checker.model_id)
            asks.append((ann_id, key, text))
        todo = [(a, k, t) for a, k, t in asks if not _answered(store.get(k))]
        for start in range(0, len(todo), batch_size):
            part = todo[start : start + batch_size]
            answers = checker.generate([Request(t, system=SYSTEM) for _, _, t in part])
            store.append(
                {"id": k, "text": g.text, "error": g.error}
                for (_, k, _), g in zip(part, answers, strict=True)
            )
        for ann_id, key, _ in asks:
            record = store.get(key) or {}
            verdict = parse_yes_no(record.get("text") or "")
            if verdict is None:
                checks[str(ann_id)] = "unclear"
                failures[str(ann_id)] = (
                    f"check unclear: {record.get('error') or repr(record.get('text'))}"
                )
                captions.pop(ann_id)
            elif verdict:
                checks[str(ann_id)] = "keep"
            else:
                checks[str(ann_id)] = "reject"
                captions.pop(ann_id)

    for ann_id, label in labels.items():
        label.caption = captions.get(ann_id)
    counts = Counter(checks.values())
    summary = {
        "objects": len(labels),
        "captioned": len(captions),
        "rejected": counts["reject"],
        "failed": len(failures),
    }
    provenance = dict(raw_sidecar.get("provenance") or {})
    provenance["caption"] = {
        "model": vlm.info(),
        "check_model": checker.info() if checker is not None else None,
        "prompt": {"version": CAPTION_PROMPT_VERSION, "text": CAPTION_PROMPT},
        "check_prompt": CHECK_PROMPT if checker is not None else None,
        "marker": "som",
        "max_marks": max_marks,
        "max_side": max_side,
        "counts": summary,
        "checks": dict(sorted(checks.items(), key=lambda kv: int(kv[0]))),
        "failures": dict(sorted(failures.items(), key=lambda kv: int(kv[0]))),
    }
    write_sidecar(out, labels, provenance)
    if failures and progress:
        print(f"{len(failures)} object(s) without a caption: see provenance", file=sys.stderr)
    return summary


def _answered(record: dict[str, Any] | None) -> bool:
    return record is not None and not record.get("error") and record.get("text") is not None
