"""Embedding shards: merged in dataset order, padded duplicates dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matbench.prediction import EmbeddingWriter, merge_shards


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
