"""The summary of a ``matbench synth materials`` run: kept and dropped images per class (by
reason), the prompt filter's counts, and a contact sheet of kept samples with their masks."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from matbench.results import atomic_write_text, package_versions
from matbench.synth.materials.pipeline import CONTACT_SHEET, IMAGE_DROP_REASONS, SUMMARY
from matbench.synth.materials.prompts import FILTER_FILE

#: Side of one contact-sheet tile, and kept samples shown per class.
TILE = 160
SAMPLES_PER_CLASS = 4
_OVERLAY = np.array([255, 40, 40], dtype=np.float32)


def summarize(
    records: Iterable[dict[str, Any]],
    classes: Sequence[str],
    config: Any,
    out: Path,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Per class: kept, attempted, dropped by reason and the shortfall (kept images still
    missing once the attempt budget is spent); totals; the run's settings."""
    per_class: dict[str, dict[str, Any]] = {}
    rows = list(records)
    for name in classes:
        mine = [r for r in rows if r["class"] == name]
        reasons = Counter(r["reason"] for r in mine if r["status"] != "kept")
        kept = len(mine) - sum(reasons.values())
        per_class[name] = {
            "kept": kept,
            "attempted": len(mine),
            "dropped": {reason: int(reasons.get(reason, 0)) for reason in IMAGE_DROP_REASONS},
            "shortfall": max(0, config.per_class - kept),
        }
    dropped = Counter()
    for entry in per_class.values():
        dropped.update(entry["dropped"])
    prompt_filter = {}
    raw = out / FILTER_FILE
    if raw.is_file():
        prompt_filter = json.loads(raw.read_text(encoding="utf-8"))
    return {
        "root": str(out),
        "per_class_target": config.per_class,
        "kept": sum(e["kept"] for e in per_class.values()),
        "attempted": sum(e["attempted"] for e in per_class.values()),
        "dropped": {reason: int(dropped.get(reason, 0)) for reason in IMAGE_DROP_REASONS},
        "complete": all(e["shortfall"] == 0 for e in per_class.values()),
        "classes": per_class,
        "prompts": prompt_filter,
        "settings": settings,
        "versions": package_versions(),
        "contact_sheet": CONTACT_SHEET,
    }


def _tile(image_path: Path, mask_path: Path, caption: str) -> Image.Image:
    image = Image.open(image_path).convert("RGB").resize((TILE, TILE), Image.BILINEAR)
    mask = np.asarray(Image.open(mask_path).convert("L").resize((TILE, TILE), Image.NEAREST)) > 127
    pixels = np.asarray(image, dtype=np.float32)
    pixels[mask] = 0.55 * pixels[mask] + 0.45 * _OVERLAY
    # the mask outline, so the region reads even where the tint is faint
    edge = (
        mask ^ np.pad(mask, 1, mode="edge")[1:-1, 2:]
        | mask ^ np.pad(mask, 1, mode="edge")[2:, 1:-1]
    )
    pixels[edge] = _OVERLAY
    tile = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, TILE - 14, TILE, TILE), fill=(0, 0, 0))
    draw.text((3, TILE - 13), caption[:26], fill=(255, 255, 255))
    return tile


def contact_sheet(
    out: Path, records: Iterable[dict[str, Any]], classes: Sequence[str]
) -> Image.Image:
    """One row per class: its name, then its first kept samples with the mask tinted red and
    outlined, captioned with the object and the detection score."""
    kept: dict[str, list[dict[str, Any]]] = {c: [] for c in classes}
    for r in sorted(records, key=lambda r: (r["class"], r["index"])):
        if (
            r["status"] == "kept"
            and r["class"] in kept
            and len(kept[r["class"]]) < SAMPLES_PER_CLASS
        ):
            kept[r["class"]].append(r)
    label_width = 90
    sheet = Image.new(
        "RGB", (label_width + SAMPLES_PER_CLASS * (TILE + 4), len(classes) * (TILE + 4)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for row, name in enumerate(classes):
        y = row * (TILE + 4)
        draw.text((4, y + TILE // 2 - 6), name, fill=(0, 0, 0))
        if not kept[name]:
            draw.text((label_width, y + TILE // 2 - 6), "no image kept", fill=(160, 0, 0))
        for col, r in enumerate(kept[name]):
            caption = f"{r['object']} {r['score']:.2f}"
            tile = _tile(out / r["image"], out / r["mask"], caption)
            sheet.paste(tile, (label_width + col * (TILE + 4), y))
    return sheet


def write_report(out: Path, summary: dict[str, Any], records: Iterable[dict[str, Any]]) -> None:
    """Write ``summary.json`` and ``contact_sheet.png`` into ``out``."""
    rows = list(records)
    sheet = contact_sheet(out, rows, list(summary["classes"]))
    tmp = out / f".{CONTACT_SHEET}.tmp"
    sheet.save(tmp, format="PNG", compress_level=1)  # level 6 takes ~1 s for noisy samples
    tmp.replace(out / CONTACT_SHEET)
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")


def summary_table(summary: dict[str, Any]) -> str:
    """The per-class counts as a plain text table."""
    reasons = list(IMAGE_DROP_REASONS)
    head = ["class", "kept", "tried", *reasons, "short"]
    lines = ["  ".join(f"{h:>16}" if i else f"{h:<12}" for i, h in enumerate(head))]
    for name, e in summary["classes"].items():
        cells = [e["kept"], e["attempted"], *(e["dropped"][r] for r in reasons), e["shortfall"]]
        lines.append("  ".join([f"{name:<12}", *(f"{c:>16}" for c in cells)]))
    return "\n".join(lines)
