"""PBR materials from natural textures: map ranges, the paper's normal-from-height, mixing,
seed reproducibility, the on-disk folder and ``matbench synth pbr``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matbench.cli import main as matbench_main
from matbench.synth.pbr import (
    MAP_NAMES,
    PROPERTIES,
    PBRConfig,
    PBRMaterial,
    generate_material,
    height_to_normal,
    load_material,
    material_seed,
    mix_materials,
    property_map,
    write_materials,
)


def _paper_normal(height: np.ndarray, strength: float) -> np.ndarray:
    """MatSeg section 3.2.2 ``height_to_normal``, written out with a plain 3x3 Sobel."""
    padded = np.pad(height.astype(np.float64), 1, mode="symmetric")
    smooth, diff = np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])
    h, w = height.shape
    dx, dy = np.zeros((h, w)), np.zeros((h, w))
    for i in range(3):
        for j in range(3):
            window = padded[i : i + h, j : j + w]
            dx += smooth[i] * diff[j] * window
            dy += diff[i] * smooth[j] * window
    normal = np.stack([-dx * strength, -dy * strength, np.ones_like(dx)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-8
    return (normal + 1) / 2


def test_normal_map_matches_the_papers_definition() -> None:
    rng = np.random.default_rng(0)
    height = rng.random((17, 23)).astype(np.float32)
    image_axes = height_to_normal(height, 2.5, y_up=False)
    np.testing.assert_allclose(image_axes, _paper_normal(height, 2.5), atol=1e-5)
    # OpenGL (Blender): the green channel (y) points up the image, so it flips about 0.5.
    opengl = height_to_normal(height, 2.5)
    np.testing.assert_allclose(opengl[..., 1], 1.0 - image_axes[..., 1], atol=1e-6)
    np.testing.assert_allclose(opengl[..., [0, 2]], image_axes[..., [0, 2]], atol=1e-6)
    flat = height_to_normal(np.full((5, 5), 0.3, np.float32))
    np.testing.assert_allclose(flat, np.broadcast_to([0.5, 0.5, 1.0], (5, 5, 3)), atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_material_maps_ranges(seed: int) -> None:
    material = generate_material(seed)
    maps = material.maps()
    size = material.albedo.shape[:2]
    for name in MAP_NAMES:
        values = maps[name]
        assert values.dtype == np.float32 and values.shape[:2] == size, name
        assert values.min() >= 0.0 and values.max() <= 1.0, name
    vectors = 2.0 * material.normal - 1.0
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)
    assert (vectors[..., 2] > 0).all()  # tangent-space normals face outwards
    draws = material.draws
    parts = [draws["a"], draws["b"]] if "mix" in draws else [draws]
    for part in parts:
        assert all(part[n]["source"] in ("channel", "uniform") for n in PROPERTIES)


def test_property_map_draws_bound_the_values() -> None:
    texture = (np.random.default_rng(1).random((32, 40, 3)) * 255).astype(np.uint8)
    sources = set()
    for seed in range(40):
        values, draw = property_map(texture, np.random.default_rng(seed), PBRConfig())
        sources.add(draw["source"])
        if draw["source"] == "uniform":
            assert np.ptp(values) == 0 and values[0, 0] == pytest.approx(draw["value"])
        else:
            assert draw["channel"] in "RGBHSV"
            lo, hi = draw["shift"], draw["shift"] + draw["scale"]
            assert values.min() >= lo - 1e-6 and values.max() <= hi + 1e-6 and hi <= 1 + 1e-9
    assert sources == {"channel", "uniform"}


def _material(value: float, size: tuple[int, int]) -> PBRMaterial:
    plane = np.full(size, value, np.float32)
    return PBRMaterial(
        albedo=np.full((*size, 3), value, np.float32),
        roughness=plane,
        metallic=plane,
        height=plane,
        transmission=plane,
        normal=height_to_normal(plane),
    )


def test_mixing_per_material_and_per_property() -> None:
    a, b = _material(1.0, (8, 8)), _material(0.0, (4, 4))  # b is resized to a's size
    whole = mix_materials(a, b, np.random.default_rng(0), per_property=False, strength=1.0)
    weights = whole.draws["weights"]
    assert len(set(weights.values())) == 1 and whole.draws["mix"] == "per_material"
    for name in ("albedo", "roughness", "metallic", "height", "transmission"):
        np.testing.assert_allclose(getattr(whole, name), weights[name], atol=1e-6)
    split = mix_materials(a, b, np.random.default_rng(0), per_property=True, strength=1.0)
    assert len(set(split.draws["weights"].values())) == 5
    for name, w in split.draws["weights"].items():
        np.testing.assert_allclose(getattr(split, name), w, atol=1e-6)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_write_materials_reproducible_for_a_seed(tmp_path: Path) -> None:
    folders = write_materials(tmp_path / "a", 3, seed=4, workers=1)
    write_materials(tmp_path / "b", 3, seed=4, workers=2)
    write_materials(tmp_path / "c", 3, seed=5, workers=1)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b and len(a) == 3 * (len(MAP_NAMES) + 1)
    assert a != c
    loaded = load_material(folders[1])
    again = generate_material(material_seed(4, 1))
    for name in MAP_NAMES:  # PNG keeps 8 bits
        np.testing.assert_allclose(loaded.maps()[name], again.maps()[name], atol=0.5 / 255 + 1e-6)
    assert loaded.draws["seed"] == material_seed(4, 1)


def test_synth_pbr_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pbr"
    assert matbench_main(["synth", "pbr", "--out", str(out), "--n", "2", "--workers", "1"]) == 0
    assert "wrote 2 PBR materials" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["000000", "000001"]
    assert matbench_main(["synth", "pbr", "--out", str(out), "--n", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
