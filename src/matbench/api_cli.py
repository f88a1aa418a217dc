"""``matbench predict --images DIR`` on a plain folder of photos, and ``matbench export``.

Both work from a trained checkpoint through `matbench.load` (imported only when they run, so
that their help answers at once).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from matbench.errors import ConfigError, DatasetFormatError, DatasetNotFoundError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Path) -> list[Path]:
    """The photos of a folder (not recursive), sorted by name."""
    if not folder.is_dir():
        raise DatasetNotFoundError("images", folder, ["*.jpg / *.png photos"])
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetNotFoundError(
            "images", folder, [f"files ending in {', '.join(IMAGE_SUFFIXES)}"]
        )
    return images


def find_mask(masks: Path, image: Path) -> Path:
    """The mask of ``image`` in ``masks``: same file stem, any image suffix."""
    for suffix in (".png", *IMAGE_SUFFIXES):
        candidate = masks / f"{image.stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError("masks", masks, [f"{image.stem}.png (the mask of {image.name})"])


def read_points(path: Path) -> dict[str, list[tuple[int, int]]]:
    """``{"photo.jpg": [[x, y], …], …}`` from a JSON file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DatasetNotFoundError("points", path.parent, [path.name]) from err
    except json.JSONDecodeError as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DatasetFormatError(path, 'expected {"<image file>": [[x, y], ...], ...}')
    points = {}
    for name, items in data.items():
        try:
            points[str(name)] = [(int(x), int(y)) for x, y in items]
        except (TypeError, ValueError) as err:
            raise DatasetFormatError(path, f"'{name}': points must be [x, y] pairs") from err
    return points


def save_similarity_png(similarity: Any, path: Path) -> None:
    """A cosine-similarity map (H, W) in [-1, 1] as a colour PNG (viridis, 1 = bright)."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    values = ((similarity.clamp(-1, 1).numpy() + 1) / 2).astype(np.float32)
    rgb = (colormaps["viridis"](values)[..., :3] * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(path)


def predict_images_main(argv: list[str]) -> int:
    """``matbench predict --images DIR --ckpt_path CKPT [--masks DIR | --points FILE]``."""
    parser = argparse.ArgumentParser(
        prog="matbench predict --images",
        description="Predictions of a trained model on a plain folder of photos: ranked "
        "materials (CLIP), class probabilities (two-stream, zero-shot) or similarity maps "
        "to given points (MatSeg), one file per photo.",
    )
    parser.add_argument("--images", required=True, type=Path, help="folder of photos")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint or save_pretrained folder")
    parser.add_argument("--masks", type=Path, help="folder of region masks (same file stems)")
    parser.add_argument("--points", type=Path, help='JSON {"photo.jpg": [[x, y], ...]} (MatSeg)')
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder")
    parser.add_argument("--top_k", type=int, default=10, help="materials to list (CLIP)")
    parser.add_argument("--radius", type=int, default=5, help="point disk radius (MatSeg)")
    args = parser.parse_args(argv)
    if args.masks is not None and args.points is not None:
        parser.error("give --masks or --points, not both")

    from PIL import Image

    from matbench.api import load

    images = list_images(args.images)
    points = read_points(args.points) if args.points else {}
    model = load(args.ckpt_path)
    kind = type(model.task).__name__
    if kind == "MatSegTask" and args.masks is not None:
        raise ConfigError("MatSeg compares points, not regions", hint="pass --points FILE")
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for path in images:
        image = Image.open(path).convert("RGB")
        mask = Image.open(find_mask(args.masks, path)) if args.masks else None
        record: dict[str, Any] = {"image": str(path.resolve())}
        if kind == "MatSegTask":
            for i, point in enumerate(points.get(path.name, [])):
                target = out / f"{path.stem}_point{i}.png"
                save_similarity_png(model.similarity(image, point, args.radius), target)
                record.setdefault("similarity_maps", []).append(
                    {"point": list(point), "png": str(target)}
                )
            if not points.get(path.name):
                import numpy as np

                target = out / f"{path.stem}_descriptors.npz"
                np.savez_compressed(target, descriptors=model.descriptor_map(image).numpy())
                record["descriptors"] = str(target)
        elif kind in ("TwoStreamTask", "ZeroShotTask"):
            probs = model.classify(image, mask)
            record["prediction"] = next(iter(probs))
            record["probabilities"] = probs
        else:
            record["materials"] = model.rank_materials(image, mask, top_k=args.top_k)
        target = out / f"{path.stem}.json"
        target.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        written.append(str(target))
    print(f"matbench predict done ({kind}, {len(images)} photos)")
    print(f"  predictions:      {out} ({len(written)} JSON files)")
    return 0


def export_main(argv: list[str]) -> int:
    """``matbench export CKPT --out DIR [--open_clip FILE] [--push_to_hub REPO]``."""
    parser = argparse.ArgumentParser(
        prog="matbench export",
        description="Share a trained model: a Hugging Face folder (model.safetensors, "
        "config.json, matbench.json) that matbench.load() and <Task>.from_pretrained() "
        "read, a plain open_clip checkpoint of a fine-tuned CLIP, or a push to the Hub.",
    )
    parser.add_argument("ckpt", help="the checkpoint (.ckpt) to export")
    parser.add_argument("--out", type=Path, help="folder to save_pretrained into")
    parser.add_argument(
        "--open_clip",
        type=Path,
        help="write a plain open_clip checkpoint (.pt or .safetensors) of a fine-tuned CLIP",
    )
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="upload to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    args = parser.parse_args(argv)
    if not (args.out or args.open_clip or args.push_to_hub):
        parser.error("give --out, --open_clip and/or --push_to_hub")

    from matbench.api import load

    task = load(args.ckpt).task
    if args.out:
        task.save_pretrained(args.out)
        print(f"  saved:            {args.out.resolve()} (load with matbench.load)")
    if args.open_clip:
        if not hasattr(task, "export_open_clip"):
            raise ConfigError(f"{type(task).__name__} is not a CLIP model: no open_clip export")
        path = task.export_open_clip(args.open_clip)
        arch = task.hparams.model
        print(f"  open_clip:        {path.resolve()}")
        print(f"    open_clip.create_model('{arch}', pretrained='{path.resolve()}')")
    if args.push_to_hub:
        from huggingface_hub import get_token

        if get_token() is None:
            raise ConfigError(
                "no Hugging Face token to push with",
                hint="run `hf auth login` or set HF_TOKEN, then push again",
            )
        url = task.push_to_hub(args.push_to_hub, private=args.private)
        print(f"  pushed:           {url}")
    return 0
