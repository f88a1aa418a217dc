"""Embedding shards: merged in dataset order, padded duplicates dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matbench.prediction import ClassProbabilityWriter, EmbeddingWriter, merge_shards


def test_merge_shards_orders_and_dedups(tmp_path: Path) -> None:
    # Rank 0 got samples 0, 2, 4; rank 1 got 1, 3 and a padded repeat of 0.
    def shard(path: Path, index: list[int]) -> Path:
        emb = np.stack([np.full(3, i, np.float32) for i in index])
        np.savez(
            path, embeddings=emb, keys=np.array([f"k{i}" for i in index]), index=np.array(index)
        )
        return path

    paths = [shard(tmp_path / "r0.npz", [0, 2, 4]), shard(tmp_path / "r1.npz", [1, 3, 0])]
    empty = tmp_path / "r2.npz"
    np.savez(
        empty,
        embeddings=np.zeros((0, 0), np.float32),
        keys=np.array([], dtype=str),
        index=np.zeros(0, np.int64),
    )
    merged = merge_shards([*paths, empty])
    assert merged["index"].tolist() == [0, 1, 2, 3, 4]
    assert merged["keys"].tolist() == ["k0", "k1", "k2", "k3", "k4"]
    assert merged["embeddings"][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_writer_needs_npz() -> None:
    with pytest.raises(ValueError, match=".npz"):
        EmbeddingWriter("out.csv")


def test_writers_of_one_predict_share_one_folder(tmp_path: Path) -> None:
    """Relative outputs of every writer go under the run's log folder (one predict, one
    folder); absolute ones stay; without a logger, under default_root_dir."""
    from lightning import Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    from matbench.tasks.matseg import MatSegPredictionWriter

    logger = TensorBoardLogger(tmp_path / "logs", name="clip/x", version="r1", sub_dir="predict")
    writers = [EmbeddingWriter(), ClassProbabilityWriter(), MatSegPredictionWriter("maps")]
    trainer = Trainer(logger=logger, default_root_dir=tmp_path / "root", callbacks=writers)
    run_dir = tmp_path / "logs" / "clip" / "x" / "r1" / "predict"
    assert writers[0].resolve(trainer) == run_dir / "embeddings.npz"
    assert writers[1].resolve(trainer) == run_dir / "predictions.csv"
    writers[2].on_predict_epoch_start(trainer, None)
    assert writers[2].output_dir == run_dir / "maps"
    assert EmbeddingWriter(str(tmp_path / "e.npz")).resolve(trainer) == tmp_path / "e.npz"
    bare = Trainer(logger=False, default_root_dir=tmp_path / "root")
    assert writers[0].resolve(bare) == tmp_path / "root" / "embeddings.npz"
