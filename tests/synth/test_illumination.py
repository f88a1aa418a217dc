"""The ``illumination`` generator mode: scenes pixel colour cannot segment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matbench.synth import SceneConfig, make_scene, write_benchmark, write_scenes
from matbench.synth.benchmark import scene_maker
from matbench.synth.illumination import LUMA_WEIGHTS, make_illumination_scene
from matbench.synth.scene import resolve_images

CONFIG = SceneConfig(min_size=64, max_size=96, min_materials=2, max_materials=3, hard_prob=1.0)


def _colour_separability(rgb: np.ndarray, masks: list[np.ndarray]) -> float:
    """Between-material over within-material variance of the unit RGB direction (what the
    ``rgb`` baseline sees), over the pixels where one material is pure."""
    direction = rgb.astype(np.float64) + 1e-3
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    groups = [direction[m == 255] for m in masks if (m == 255).sum() > 20]
    means = np.stack([g.mean(0) for g in groups])
    within = np.mean([((g - g.mean(0)) ** 2).sum(1).mean() for g in groups])
    between = ((means - means.mean(0)) ** 2).sum(1).mean()
    return float(between / within)


def test_illumination_scenes_are_not_separable_by_colour() -> None:
    images = resolve_images(None)
    ratios = {"infusion": [], "illumination": []}
    for seed in range(4):
        for mode in ratios:
            scene = scene_maker(mode)(np.random.default_rng(seed), images, CONFIG)
            assert sum(m.astype(int) for m in scene.masks).min() == 255
            ratios[mode].append(_colour_separability(scene.rgb, scene.masks))
    # colour separates pattern-infusion materials far better than illumination-mode ones
    assert np.median(ratios["illumination"]) < 0.5 * np.median(ratios["infusion"])


def test_mode_is_deterministic_and_checked(tmp_path: Path) -> None:
    images = resolve_images(None)
    a = make_illumination_scene(np.random.default_rng(3), images, CONFIG)
    b = make_illumination_scene(np.random.default_rng(3), images, CONFIG)
    assert np.array_equal(a.rgb, b.rgb) and len(a.masks) >= 2
    assert scene_maker("infusion") is make_scene
    with pytest.raises(ValueError, match="unknown generator mode"):
        write_scenes(tmp_path / "x", 1, mode="photoreal")
    scenes = write_scenes(
        tmp_path / "s", 2, seed=1, min_size=48, max_size=64, workers=1, mode="illumination"
    )
    assert len(scenes) == 2 and all(r.materials >= 2 for r in scenes)
    records, _ = write_benchmark(
        tmp_path / "b", 1, seed=1, min_size=96, max_size=128, workers=1, mode="illumination"
    )
    assert records[0].groups >= 2


def _rgb_accuracy(bench: Path) -> float:
    """All cases, by point, of the ``rgb`` baseline's descriptors."""
    import torch

    from matbench.demo import benchmark_scores
    from matbench.tasks.matseg import MatSegTask, point_descriptors

    rgb = MatSegTask(model="rgb").eval()

    def similarity(sample: dict) -> torch.Tensor:
        with torch.no_grad():
            descriptors = point_descriptors(rgb.descriptor_map(sample["image"]), sample["points"])
        return descriptors @ descriptors.T

    return float(benchmark_scores(bench, similarity)["all_by_point"])


def test_benchmark_is_separable_neither_by_colour_nor_by_point_positions(tmp_path: Path) -> None:
    # On the illumination-mode benchmark neither the rgb baseline nor the points' positions
    # alone (the demo's "positions only" row) get far above one half: points are spread over
    # their region (best-candidate sampling), so one material's points are not much closer
    # together than two materials' (with uniform draws the positions scored 0.73-0.77), and the
    # smooth light passes no more than that on to rgb. On the infusion-mode benchmark colour
    # alone nearly solves it.
    from matbench.demo import positions_only

    scores = {}
    for mode in ("illumination", "infusion"):
        write_benchmark(
            tmp_path / mode, 8, seed=0, min_size=128, max_size=160, workers=1, mode=mode
        )
        scores[mode] = {
            "rgb": _rgb_accuracy(tmp_path / mode),
            "position": positions_only(tmp_path / mode)["all_by_point"],
        }
    assert scores["illumination"]["position"] < 0.68, scores
    assert scores["illumination"]["rgb"] < 0.68, scores
    assert scores["infusion"]["rgb"] > scores["illumination"]["rgb"] + 0.2, scores


def _local_contrast_accuracy(bench: Path) -> float:
    """All cases, by point, of a hand-made texture descriptor that lighting cannot change:
    local standard deviation over local mean of the luminance, and the local energy of its
    log gradient, at three scales (a multiplicative light field cancels in both)."""
    import torch
    from scipy import ndimage

    from matbench.demo import benchmark_scores

    weights = np.array(LUMA_WEIGHTS)[:, None, None]

    def similarity(sample: dict) -> torch.Tensor:
        lum = (sample["image"].double().numpy() * weights).sum(0) * 255.0 + 1.0
        log_lum = np.log(lum)
        gradient = np.hypot(ndimage.sobel(log_lum, 1), ndimage.sobel(log_lum, 0))
        features = []
        for sigma in (2, 4, 8):
            mean = ndimage.gaussian_filter(lum, sigma)
            var = np.maximum(ndimage.gaussian_filter(lum * lum, sigma) - mean * mean, 1e-3)
            features.append(0.5 * np.log(var) - np.log(mean))
            features.append(np.log(ndimage.gaussian_filter(gradient, sigma) + 1e-3))
        x, y = sample["points"][:, 0].numpy(), sample["points"][:, 1].numpy()
        points = torch.from_numpy(np.stack(features)[:, y, x].T.copy())
        return -torch.cdist(points, points)

    return float(benchmark_scores(bench, similarity)["all_by_point"])


def test_benchmark_is_separable_by_texture(tmp_path: Path) -> None:
    # What colour cannot do, texture can: materials differ in grain and contrast (patterns
    # normalised locally, so stationary) and shadows have penumbrae, so a lighting-invariant
    # texture statistic, with no learning, clearly beats rgb. A trained model can reach it.
    write_benchmark(
        tmp_path / "b", 8, seed=0, min_size=128, max_size=160, workers=1, mode="illumination"
    )
    texture, colour = _local_contrast_accuracy(tmp_path / "b"), _rgb_accuracy(tmp_path / "b")
    assert texture > colour + 0.08, (texture, colour)
