"""Generated data through the project's MatSeg readers: same code path as released data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from matbench.datasets.matseg import MatSegBenchmark, MatSegScenes
from matbench.metrics.functional.triplet import triplet_accuracy
from matbench.synth import scene_seed, write_benchmark, write_scenes
from matbench.synth.benchmark import annotate
from matbench.synth.scene import STREAM_BENCHMARK, SceneConfig, make_scene, resolve_images


def test_scenes_read_as_matseg_training_scenes(tmp_path: Path) -> None:
    records = write_scenes(
        tmp_path, 3, seed=1, min_size=64, max_size=96, max_materials=5, workers=1
    )
    dataset = MatSegScenes(tmp_path, crop_size=48, seed=0)
    assert len(dataset) == 3
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["image"].shape == (3, 48, 48)
        assert sample["fractions"].shape[1:] == (48, 48)
        # Every pixel is covered by some material: the whole crop is in the region of interest.
        assert bool(sample["roi"].all())
    assert sorted(s["key"] for s in (dataset[i] for i in range(3))) == [
        r.path.name for r in records
    ]


def _descriptor_scores(sample: dict, fractions: np.ndarray) -> tuple[float, float]:
    """Score the per-pixel fraction vector (a perfect descriptor) with the reader's sample."""
    _, height, width = sample["image"].shape
    desc = np.stack(
        [
            np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR))
            for f in fractions
        ]
    )
    desc = desc / np.maximum(np.linalg.norm(desc, axis=0, keepdims=True), 1e-8)
    rows, cols = np.mgrid[0:height, 0:width]
    vectors = []
    for x, y, r in sample["points"].tolist():
        v = desc[:, (cols - x) ** 2 + (rows - y) ** 2 <= r * r].sum(1)
        vectors.append(v / np.linalg.norm(v))
    sim = torch.tensor(np.stack(vectors) @ np.stack(vectors).T)
    all_cases = triplet_accuracy(sim, sample["weight"], sample["groups"])["by_point"]
    soft = float("nan")
    if sample["has_relations"]:
        soft = triplet_accuracy(sim, sample["weight"], sample["groups"], soft_only=True)["by_point"]
    return all_cases, soft


def test_benchmark_reads_and_a_perfect_descriptor_scores_one(tmp_path: Path) -> None:
    sizes = {"min_size": 500, "max_size": 900}  # mostly shrunk to 700 px by the reader
    records, _ = write_benchmark(tmp_path, 4, seed=3, workers=1, hard_prob=0.0, **sizes)
    dataset = MatSegBenchmark(tmp_path)
    assert len(dataset) == 4
    images = resolve_images(None)
    config = SceneConfig(**sizes, min_materials=2, max_materials=6, hard_prob=0.0)
    scores, soft_scores = [], []
    for index, record in enumerate(records):
        sample = dataset[index]
        assert sample["key"] == record.image.stem
        assert sample["has_relations"] == bool(record.relations)
        if record.relations:
            assert bool(((sample["weight"] > 0) & (sample["weight"] < 1)).any())
        rng = np.random.default_rng(scene_seed(3, record.candidate, STREAM_BENCHMARK))
        scene = make_scene(rng, images, config)
        assert annotate(scene.fractions(), rng) is not None
        all_cases, soft = _descriptor_scores(sample, scene.fractions())
        scores.append(all_cases)
        if not np.isnan(soft):
            soft_scores.append(soft)
    assert min(scores) > 0.97, scores
    assert all(s > 0.95 for s in soft_scores), soft_scores
