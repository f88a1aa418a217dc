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


def resolve_output(trainer: L.Trainer, output: str | Path) -> Path:
    """Where a prediction writer puts ``output``: an absolute path as it is, a relative one
    under the run's log folder (``logs/<config name>/<run name>/predict/``), or under
    ``trainer.default_root_dir`` when the run has no logger. Every writer of one ``predict``
    resolves here, so that its outputs land in one folder.

    Every rank must call it (``trainer.log_dir`` broadcasts rank 0's folder).
    """
    path = Path(output).expanduser()
    if path.is_absolute():
        return path
    log_dir = trainer.log_dir if trainer.logger is not None else None
    return Path(log_dir or trainer.default_root_dir) / path


class PerSampleWriter(BasePredictionWriter):
    """Writes one file per predicted sample into ``output_dir`` as each batch ends (every rank
    its own samples: nothing to merge). ``predict_step`` returns a list of dicts with a
    ``key``; subclasses write each one in :meth:`write_item`.

    Args:
        output_dir: Folder of the files (created); a relative folder is under the run's log
            folder (`resolve_output`).
    """

    def __init__(self, output_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.output = output_dir
        self.output_dir = Path(output_dir)

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.output_dir = resolve_output(trainer, self.output)  # every rank asks

    def write_item(self, item: dict[str, Any], pl_module: L.LightningModule) -> None:
        raise NotImplementedError

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: list[dict[str, Any]],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for item in prediction:
            self.write_item(item, pl_module)


class EmbeddingWriter(BasePredictionWriter):
    """Collect ``predict_step`` outputs (``embeddings``, ``keys``, ``index``) and write them.

    Every rank writes ``<output>.rank<r>.npz``; after a barrier, rank 0 merges them in dataset
    order into ``<output>`` and removes the shards.

    Args:
        output: Output ``.npz`` path; a relative path is under the run's log folder
            (`resolve_output`).
    """

    def __init__(self, output: str = "embeddings.npz") -> None:
        super().__init__(write_interval="batch")
        if not output.endswith(".npz"):
            raise ValueError(f"EmbeddingWriter output must be a .npz file, got '{output}'")
        self.output = output
        self._parts: list[dict[str, Any]] = []
        self.path: Path | None = None

    def resolve(self, trainer: L.Trainer) -> Path:
        return resolve_output(trainer, self.output)

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


class ClassProbabilityWriter(BasePredictionWriter):
    """Writes a classifier's predictions as CSV: ``key``, ``prediction`` (class name),
    ``probability``, then one column per class.

    ``predict_step`` must return ``key`` and ``probs`` (B, C). Every rank writes its own rows
    (``<output>.rank<r>.csv`` under DDP); rank 0 then merges them in key order.

    Args:
        output: CSV path; a relative path is under the run's log folder (`resolve_output`).
        class_names: Column names (default: the datamodule's ``class_names``).
    """

    def __init__(
        self, output: str = "predictions.csv", class_names: list[str] | None = None
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.class_names = class_names
        self.path: Path | None = None
        self._rows: list[list[Any]] = []

    def resolve(self, trainer: L.Trainer) -> Path:
        return resolve_output(trainer, self.output)

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

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
        probs = prediction["probs"].detach().float().cpu()
        for key, row in zip(prediction["key"], probs, strict=True):
            self._rows.append([str(key), *row.tolist()])

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import csv

        log_dir_path = self.resolve(trainer)  # every rank asks (log_dir broadcasts)
        from matbench.tasks.base import datamodule_class_names

        names = self.class_names or datamodule_class_names(trainer.datamodule)
        width = len(self._rows[0]) - 1 if self._rows else len(names or [])
        names = [str(n) for n in names] if names else [f"class_{i}" for i in range(width)]
        path = log_dir_path
        shard = path.with_name(f"{path.stem}.rank{trainer.global_rank}.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        with shard.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(self._rows)
        trainer.strategy.barrier("class_probability_writer")
        if trainer.is_global_zero:
            rows: dict[str, list[Any]] = {}
            for r in range(trainer.world_size):
                part = path.with_name(f"{path.stem}.rank{r}.csv")
                with part.open(newline="", encoding="utf-8") as f:
                    rows.update({row[0]: row for row in csv.reader(f)})
                part.unlink()
            with path.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["key", "prediction", "probability", *names])
                for key in sorted(rows):
                    values = [float(v) for v in rows[key][1:]]
                    best = max(range(len(values)), key=values.__getitem__)
                    writer.writerow([key, names[best], f"{values[best]:.6f}", *values])
        trainer.strategy.barrier("class_probability_writer_done")
        self.path = path
        self._rows = []
