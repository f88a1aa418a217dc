"""``matbench embed-text``: text embeddings of material queries from a CLIP material model.

Kept apart from `matbench.prediction` so that its help answers without importing
Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from matbench.errors import CheckpointError, ConfigFileError


def load_task(config: str | None, ckpt: str | None) -> Any:
    """A task from a run config (its ``model`` section) and/or a checkpoint.

    With a config, the task is built from it and the checkpoint's weights (if any) are loaded
    into it; with only a checkpoint, the task is rebuilt from the hyperparameters it saved
    (a `matbench.tasks.clip.ClipMaterialTask`).
    """
    from matbench.tasks.base import pretrained_unless_replaced
    from matbench.tasks.clip import ClipMaterialTask, load_clip_task_weights
    from matbench.tasks.zeroshot import ZeroShotTask
    from matbench.utils.config import config_section
    from matbench.utils.deprecation import rename_kwargs

    if config is None and ckpt is None:
        raise ValueError("give --config and/or --ckpt")
    if config is None:
        return clip_task_of_checkpoint(ckpt).load_from_checkpoint(ckpt, map_location="cpu")
    cls, init_args = config_section(
        config, "model", "matbench.tasks", default="matbench.tasks.clip.ClipMaterialTask"
    )
    if not (isinstance(cls, type) and issubclass(cls, (ClipMaterialTask, ZeroShotTask))):
        raise ConfigFileError(
            config,
            f"model.class_path is {getattr(cls, '__name__', cls)}: embed-text needs a CLIP "
            "material model (ClipMaterialTask or ZeroShotTask)",
        )
    init_args = rename_kwargs(
        cls.__name__, getattr(cls, "renamed_arguments", {}), init_args, config
    )
    if ckpt is not None and "weights" in init_args:
        init_args["weights"] = pretrained_unless_replaced(init_args["weights"], ckpt)
    task = cls(**init_args)
    if ckpt is not None:
        load_clip_task_weights(task.model, ckpt, task.checkpoint_state(ckpt))
    return task


def clip_task_of_checkpoint(ckpt: str) -> Any:
    """The CLIP task class a Lightning checkpoint was saved by; :class:`CheckpointError` for
    another task or a file that is not a readable checkpoint."""
    from matbench.tasks.clip import ClipMaterialTask
    from matbench.tasks.zeroshot import ZeroShotTask
    from matbench.utils.weights import read_checkpoint_hparams, weights_file

    saved = read_checkpoint_hparams(weights_file(ckpt)).get("_class_path")
    known = {"ClipMaterialTask": ClipMaterialTask, "ZeroShotTask": ZeroShotTask}
    name = str(saved or "ClipMaterialTask").rsplit(".", 1)[-1]
    if name not in known:
        raise CheckpointError(
            ckpt,
            f"holds a {name}: embed-text needs a CLIP material model "
            "(ClipMaterialTask or ZeroShotTask)",
        )
    return known[name]


def main(argv: list[str]) -> int:
    """``matbench embed-text "wood" "brushed steel" --config C [--ckpt K] [--out F]``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="matbench embed-text",
        description="Text embeddings of material queries from a CLIP material model.",
    )
    parser.add_argument("texts", nargs="+", help="query strings, e.g. 'wood' 'brushed steel'")
    parser.add_argument("--config", help="run config (YAML) whose model section to build")
    parser.add_argument("--ckpt", help="checkpoint whose weights to load")
    parser.add_argument(
        "--template", help="format string applied to every text, e.g. 'a photo of {}'"
    )
    parser.add_argument(
        "--out", help="save to .npz (embeddings, texts) or .json instead of printing"
    )
    args = parser.parse_args(argv)
    if args.config is None and args.ckpt is None:
        parser.error("give --config and/or --ckpt")
    if args.template is not None and "{}" not in args.template:
        parser.error(f"--template '{args.template}' has no '{{}}'")
    import torch

    task = load_task(args.config, args.ckpt).eval()
    texts = [args.template.format(t) if args.template else t for t in args.texts]
    with torch.no_grad():
        embeddings = task.embed_text(texts).float().cpu().numpy()
    if args.out is None:
        for text, emb in zip(args.texts, embeddings, strict=True):
            print(json.dumps({"text": text, "embedding": [round(float(v), 6) for v in emb]}))
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez(out, embeddings=embeddings, texts=np.asarray(args.texts))
    elif out.suffix == ".json":
        out.write_text(json.dumps({"texts": args.texts, "embeddings": embeddings.tolist()}) + "\n")
    else:
        parser.error(f"--out must end in .npz or .json, got '{out}'")
    print(f"{len(texts)} text embeddings ({embeddings.shape[1]}-d): {out}")
    return 0
