"""Writing predicted object embeddings: per-rank shards merged in dataset order.

``matbench predict`` with :class:`EmbeddingWriter` in ``trainer.callbacks`` writes one ``.npz``
file that a user loads with numpy::

    data = np.load("embeddings.npz")
    data["embeddings"]   # (N, D) float32, L2-normalised object embeddings
    data["keys"]         # (N,) str, sample ids (LVIS annotation ids, relative paths...)
    data["index"]        # (N,) int64, position in the predict dataset (sorted, unique)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


def merge_shards(paths: list[Path]) -> dict[str, np.ndarray]:
    """Concatenate shards, sort by ``index`` and drop duplicated indices (padded samplers)."""
    parts = [np.load(p, allow_pickle=False) for p in paths]
    parts = [p for p in parts if p["index"].size]
    if not parts:
        return {
            "embeddings": np.zeros((0, 0), np.float32),
            "keys": np.array([], dtype=str),
            "index": np.zeros(0, np.int64),
        }
    embeddings = np.concatenate([p["embeddings"] for p in parts])
    keys = np.concatenate([p["keys"] for p in parts])
    index = np.concatenate([p["index"] for p in parts])
    order = np.argsort(index, kind="stable")
    index = index[order]
    keep = np.ones(index.shape, dtype=bool)
    keep[1:] = index[1:] != index[:-1]
    order = order[keep]
    return {"embeddings": embeddings[order], "keys": keys[order], "index": index[keep]}


class EmbeddingWriter(BasePredictionWriter):
    """Collect ``predict_step`` outputs (``embeddings``, ``keys``, ``index``) and write them.

    Every rank writes ``<output>.rank<r>.npz``; after a barrier, rank 0 merges them in dataset
    order into ``<output>`` and removes the shards.

    Args:
        output: Output ``.npz`` path; relative paths are under ``trainer.default_root_dir``.
    """

    def __init__(self, output: str = "embeddings.npz") -> None:
        super().__init__(write_interval="batch")
        if not output.endswith(".npz"):
            raise ValueError(f"EmbeddingWriter output must be a .npz file, got '{output}'")
        self.output = output
        self._parts: list[dict[str, Any]] = []
        self.path: Path | None = None

    def resolve(self, trainer: L.Trainer) -> Path:
        path = Path(self.output).expanduser()
        return path if path.is_absolute() else Path(trainer.default_root_dir) / path

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, dict) or not {"embeddings", "keys", "index"} <= set(
            prediction
        ):
            raise ValueError(
                "EmbeddingWriter needs predict_step to return a dict with 'embeddings', 'keys' "
                "and 'index'"
            )
        self._parts.append(
            {
                "embeddings": prediction["embeddings"].detach().float().cpu().numpy(),
                "keys": np.asarray([str(k) for k in prediction["keys"]]),
                "index": torch.as_tensor(prediction["index"]).cpu().numpy().astype(np.int64),
            }
        )

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.resolve(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        shard = path.with_name(f"{path.name}.rank{rank}.npz")
        if self._parts:
            data = {
                k: np.concatenate([p[k] for p in self._parts])
                for k in ("embeddings", "keys", "index")
            }
        else:
            data = {
                "embeddings": np.zeros((0, 0), np.float32),
                "keys": np.array([], dtype=str),
                "index": np.zeros(0, np.int64),
            }
        np.savez(shard, **data)
        self._parts = []
        trainer.strategy.barrier("embedding_writer")
        if trainer.is_global_zero:
            shards = [path.with_name(f"{path.name}.rank{r}.npz") for r in range(trainer.world_size)]
            np.savez(path, **merge_shards(shards))
            for s in shards:
                s.unlink(missing_ok=True)
            print(f"embeddings: {path}")
        trainer.strategy.barrier("embedding_writer_done")
        self.path = path


# -- embed-text ------------------------------------------------------------------------------
def load_task(config: str | None, ckpt: str | None) -> L.LightningModule:
    """A task from a run config (its ``model`` section) and/or a checkpoint.

    With a config, the task is built from it and the checkpoint's weights (if any) are loaded
    into it; with only a checkpoint, the task is rebuilt from the hyperparameters it saved
    (a :class:`matbench.tasks.clip.ClipMaterialTask`).
    """
    from matbench.tasks.clip import ClipMaterialTask
    from matbench.utils.config import config_section

    if config is None and ckpt is None:
        raise ValueError("give --config and/or --ckpt")
    if config is None:
        return ClipMaterialTask.load_from_checkpoint(ckpt, map_location="cpu")
    cls, init_args = config_section(
        config, "model", "matbench.tasks", default="matbench.tasks.clip.ClipMaterialTask"
    )
    if ckpt is not None and "pretrained" in init_args:
        init_args["pretrained"] = None  # the checkpoint's weights replace them: no download
    task = cls(**init_args)
    if ckpt is not None:
        from matbench.utils.weights import load_state_dict_file

        state = load_state_dict_file(ckpt)
        missing, unexpected = task.load_state_dict(state, strict=False)
        model_missing = [k for k in missing if k.startswith("model.")]
        if model_missing or unexpected:
            raise ValueError(
                f"{ckpt}: weights do not match the model of {config} "
                f"(missing {model_missing[:3]}, unexpected {unexpected[:3]})"
            )
    return task


def embed_text_main(argv: list[str]) -> int:
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
