"""3D MatSeg scenes: real Cycles renders (CPU, tiny) read back through MatSegScenes; masks
partition the textured objects and match the rendered material IDs; retries, skips, resume."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from matbench.cli import main as matbench_main
from matbench.datasets import MatSegScenes
from matbench.synth.pbr import write_materials
from matbench.synth.render import (
    ERROR_LOG,
    STREAM_3D_RETRY,
    RenderAssets,
    RenderConfig,
    RenderUnavailableError,
    blender_python,
    draw_scene,
    palette_colour,
    write_3d_scenes,
)
from matbench.synth.scene import scene_seed

HAS_BPY = importlib.util.find_spec("bpy") is not None
needs_bpy = pytest.mark.skipif(
    not HAS_BPY, reason='bpy not installed (pip install "matbench[render]")'
)
#: Run seed whose retry draws every mesh format (the draws are a function of the seed).
RETRY_RUN_SEED = 0
FLAT = RenderConfig(
    width=64,
    height=64,
    samples=4,
    device="cpu",
    flat=True,
    min_materials=2,
    max_materials=4,
    map_size=64,
    timeout=300,
)


def _fake_python(path: Path, body: str) -> str:
    """An executable standing in for a Blender Python: probes (``-c``, the worker's
    ``--device``) go to the real one, scene renders run ``body``."""
    path.write_text(
        f'#!/bin/sh\nif [ "$1" = "-c" ] || [ "$2" = "--device" ]; then exec {sys.executable} '
        f'"$@"; fi\n{body}\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _read(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = np.asarray(Image.open(folder / "RGB__RGB.jpg").convert("RGB"), dtype=np.int32)
    objects = np.asarray(Image.open(folder / "ObjectMaskOcluded.png"), dtype=np.int32)
    masks = np.stack(
        [np.asarray(Image.open(p), dtype=np.int32) for p in sorted(folder.glob("mask*.png"))]
    )
    return rgb, objects, masks


@pytest.fixture(scope="module")
def flat_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAS_BPY:
        pytest.skip('bpy not installed (pip install "matbench[render]")')
    root = tmp_path_factory.mktemp("render")
    write_materials(root / "pbr", 4, seed=0, workers=1)  # drawn from a folder: cheap draws
    out = root / "flat"
    records, failures = write_3d_scenes(
        out, 2, seed=3, config=FLAT, materials=root / "pbr", workers=2
    )
    assert not failures and [r.path.name for r in records] == ["000000", "000001"]
    return out


@needs_bpy
def test_rendered_scenes_read_back_partition_objects_and_match_ids(flat_scenes: Path) -> None:
    scenes = MatSegScenes(flat_scenes, crop_size=32, seed=0)
    assert len(scenes) == 2
    sample = scenes[0]
    assert sample["image"].shape == (3, 32, 32) and sample["fractions"].shape[1:] == (32, 32)
    for folder in sorted(p for p in flat_scenes.iterdir() if p.is_dir()):
        names = sorted(p.name for p in folder.iterdir())
        masks_named = [n for n in names if n.startswith("mask")]
        assert masks_named == [f"mask{i:03d}.png" for i in range(1, len(masks_named) + 1)]
        assert {
            "RGB__RGB.jpg",
            "ObjectMaskOcluded.png",
            "CameraParameters.json",
            "scene.json",
        } <= set(names)
        finished = (folder / "Finished.txt").stat().st_mtime_ns
        assert all(p.stat().st_mtime_ns <= finished for p in folder.iterdir())
        spec = json.loads((folder / "scene.json").read_text())
        rgb, objects, masks = _read(folder)
        assert len(masks) == len(spec["materials"]) and rgb.shape[:2] == (64, 64)
        assert (objects > 0).mean() > FLAT.min_coverage
        # The material weight passes sum to the object coverage (an independent pass): the
        # masks partition the visible textured objects (<= 1 level of rounding apart).
        assert np.abs(masks.sum(0) - objects).max() <= 1
        assert masks.sum(0).max() <= 255
        # Each material's pure pixels show its ID colour; outside the objects the image is
        # black (flat world, black ground and occluders). Edges are left out (JPEG chroma).
        seen = 0
        for i, mask in enumerate(masks):
            pure = ndimage.binary_erosion(mask >= 250, iterations=1)
            if pure.sum() < 3:
                continue
            seen += 1
            colour = np.asarray(palette_colour(i))
            error = np.abs(rgb[pure] - colour).max(axis=1)
            assert np.median(error) < 40, (folder.name, i, rgb[pure].mean(0), colour)
        assert seen >= 1
        background = ndimage.binary_erosion(objects == 0, iterations=2)
        assert np.median(rgb[background].max(axis=1)) < 20


#: Builds every primitive with the deformations of :func:`draw_scene` in a fresh Blender and
#: prints a digest of each evaluated mesh (vertex positions, face corners, UVs).
MESH_DIGEST = """
import hashlib, sys
from array import array
sys.path.insert(0, sys.argv[1])
import blender_worker as worker
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
modifiers = [
    {"type": "SUBSURF", "levels": 1},
    {"type": "SIMPLE_DEFORM", "method": "TAPER", "amount": 0.5, "axis": "Z"},
    {"type": "DISPLACE", "strength": 0.2, "noise_scale": 0.7},
]
for kind in worker.PRIMITIVES:
    obj = worker.add_primitive(kind)
    worker.add_modifiers(obj, modifiers)
    mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
    digest = hashlib.sha256()
    for items, name, width, code in (
        (mesh.vertices, "co", 3, "f"),
        (mesh.loops, "vertex_index", 1, "i"),
        (mesh.uv_layers[0].data, "uv", 2, "f"),
    ):
        values = array(code, bytes(4 * width * len(items)))
        items.foreach_get(name, values)
        digest.update(values.tobytes())
    print("MESH", kind, digest.hexdigest())
"""


@needs_bpy
def test_blender_builds_every_primitive_the_same_in_every_process(tmp_path: Path) -> None:
    # Blender 4.4's UV sphere comes out with its faces in another order in each process (and
    # subdivided and displaced, with other vertex orders and last-bit differences): renders of
    # the same scene differed. The worker rebuilds every mesh in a canonical order.
    import subprocess

    from matbench.synth.render import WORKER_SCRIPT

    script = tmp_path / "digest.py"
    script.write_text(MESH_DIGEST)
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script), str(WORKER_SCRIPT.parent)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        runs.append([line for line in done.stdout.splitlines() if line.startswith("MESH ")])
    assert len(runs[0]) == 7 and runs[0] == runs[1]


def _scene_files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "render_config.json"
    }


@needs_bpy
def test_same_scenes_with_one_or_two_processes(flat_scenes: Path, tmp_path: Path) -> None:
    # The fixture rendered on two processes with one thread each; one process with all cores'
    # threads writes byte-identical scenes.
    out = tmp_path / "one_process"
    records, failures = write_3d_scenes(
        out, 2, seed=3, config=FLAT, materials=flat_scenes.parent / "pbr", workers=1
    )
    assert not failures and len(records) == 2
    one, two = _scene_files(out), _scene_files(flat_scenes)
    assert one.keys() == two.keys() and len(one) >= 2 * 6
    assert [name for name in one if one[name] != two[name]] == []


def test_scene_draws_are_deterministic_for_a_seed(tmp_path: Path) -> None:
    config = RenderConfig(width=32, height=32, map_size=64, max_materials=3)
    specs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        spec = draw_scene(np.random.default_rng(seed), RenderAssets(), config, tmp_path / name)
        text = json.dumps(spec).replace(str(tmp_path / name), "<dir>")
        files = {p.name: p.read_bytes() for p in sorted((tmp_path / name).rglob("*.png"))}
        specs.append((text, files))
    assert specs[0] == specs[1] and specs[0] != specs[2]
    spec = json.loads(specs[0][0])
    assert 1 <= len(spec["materials"]) <= 3 and len(spec["maps"]) == len(spec["materials"])
    assert spec["objects"] and all("primitive" in o for o in spec["objects"])


OBJ_BOX = "\n".join(
    [f"v {x} {y} {z}" for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)]
    + ["f 1 2 4 3", "f 5 7 8 6", "f 1 5 6 2", "f 2 6 8 4", "f 4 8 7 3", "f 3 7 5 1"]
)
PLY_TETRA = """ply
format ascii 1.0
element vertex 4
property float x
property float y
property float z
element face 4
property list uchar int vertex_indices
end_header
0 0 2
2 0 0
0 2 0
-1 -1 0
3 0 1 2
3 0 3 1
3 1 3 2
3 2 3 0
"""


def _gltf_tetra() -> str:
    """A glTF 2.0 tetrahedron with its buffer embedded as a data URI."""
    positions = np.array([[0, 0, 2], [2, 0, 0], [0, 2, 0], [-1, -1, 0]], np.float32)
    indices = np.array([0, 1, 2, 0, 3, 1, 1, 3, 2, 2, 3, 0], np.uint16)
    blob = positions.tobytes() + indices.tobytes()
    uri = "data:application/octet-stream;base64," + base64.b64encode(blob).decode()
    views = [
        {"buffer": 0, "byteOffset": 0, "byteLength": positions.nbytes},
        {"buffer": 0, "byteOffset": positions.nbytes, "byteLength": indices.nbytes},
    ]
    accessors = [
        {
            "bufferView": 0,
            "componentType": 5126,
            "count": 4,
            "type": "VEC3",
            "min": [-1, -1, 0],
            "max": [2, 2, 2],
        },
        {"bufferView": 1, "componentType": 5123, "count": 12, "type": "SCALAR"},
    ]
    return json.dumps(
        {
            "asset": {"version": "2.0"},
            "scene": 0,
            "scenes": [{"nodes": [0]}],
            "nodes": [{"mesh": 0}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
            "buffers": [{"byteLength": len(blob), "uri": uri}],
            "bufferViews": views,
            "accessors": accessors,
        }
    )


@needs_bpy
def test_failed_scene_retried_with_another_seed_and_user_meshes(tmp_path: Path) -> None:
    import cv2

    meshes = tmp_path / "meshes" / "nested"
    meshes.mkdir(parents=True)
    (meshes / "box.obj").write_text(OBJ_BOX)
    (meshes / "tetra.gltf").write_text(_gltf_tetra())
    (meshes / "tetra.ply").write_text(PLY_TETRA)
    hdri = tmp_path / "hdri"
    hdri.mkdir()
    sky = np.full((16, 32, 3), 0.6, np.float32)
    sky[2:5, 10:13] = 40.0  # a sun
    assert cv2.imwrite(str(hdri / "sky.hdr"), sky)
    # Fails the first attempt of every scene, then runs the real worker.
    flaky = _fake_python(
        tmp_path / "flaky",
        f'marker="{tmp_path}/tried-$(basename "$(dirname "$2")")"\n'
        'if [ ! -e "$marker" ]; then touch "$marker"; echo "simulated crash" >&2; exit 9; fi\n'
        f'exec {sys.executable} "$@"',
    )
    config = RenderConfig(
        width=48,
        height=48,
        samples=2,
        device="cpu",
        max_materials=3,
        map_size=64,
        min_objects=4,
        max_objects=4,
        mesh_prob=1.0,
        timeout=300,
    )
    records, failures = write_3d_scenes(
        tmp_path / "out",
        1,
        seed=RETRY_RUN_SEED,
        config=config,
        meshes=tmp_path / "meshes",
        hdris=hdri,
        blender=flaky,
    )
    assert not failures and len(records) == 1
    record = records[0]
    assert record.retried and record.seed == scene_seed(RETRY_RUN_SEED, 0, STREAM_3D_RETRY)
    spec = json.loads((record.path / "scene.json").read_text())
    assert {Path(o["mesh"]).suffix for o in spec["objects"]} == {".obj", ".gltf", ".ply"}
    assert spec["environment"]["kind"] == "hdri"
    _, objects, masks = _read(record.path)
    assert (objects > 0).mean() > config.min_coverage
    assert np.abs(masks.sum(0) - objects).max() <= 1
    assert len(MatSegScenes(tmp_path / "out")) == 1


def test_scene_failing_twice_is_logged_and_skipped(tmp_path: Path) -> None:
    broken = _fake_python(tmp_path / "broken", 'echo "segfault in cycles" >&2; exit 139')
    write_materials(tmp_path / "pbr", 1, seed=0, workers=1)
    records, failures = write_3d_scenes(
        tmp_path / "out",
        2,
        seed=0,
        config=FLAT,
        materials=tmp_path / "pbr",
        workers=2,
        blender=broken,
    )
    assert records == [] and [f.index for f in failures] == [0, 1]
    assert all(len(f.errors) == 2 and "status 139" in f.errors[0] for f in failures)
    lines = (tmp_path / "out" / ERROR_LOG).read_text().splitlines()
    assert len(lines) == 2 and "segfault in cycles" in lines[0]
    assert not [p for p in (tmp_path / "out").iterdir() if p.is_dir()]


@needs_bpy
def test_resume_keeps_finished_scenes(flat_scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(flat_scenes, out)
    before = {p.name: (p / "RGB__RGB.jpg").read_bytes() for p in out.iterdir() if p.is_dir()}
    (out / "000002").mkdir()  # a half-written scene of a killed run: no Finished.txt
    broken = _fake_python(tmp_path / "broken", "exit 1")
    pbr = flat_scenes.parent / "pbr"
    records, failures = write_3d_scenes(
        out, 3, seed=3, config=FLAT, materials=pbr, blender=broken, resume=True
    )
    assert records == [] and [f.index for f in failures] == [2]
    after = {p.name: (p / "RGB__RGB.jpg").read_bytes() for p in out.iterdir() if p.is_dir()}
    assert after == before
    with pytest.raises(FileExistsError, match="other settings"):
        write_3d_scenes(out, 3, seed=4, config=FLAT, materials=pbr, blender=broken, resume=True)


def test_missing_bpy_names_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MATBENCH_BLENDER_PYTHON", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(RenderUnavailableError, match=r'pip install "matbench\[render\]"'):
        blender_python()
    monkeypatch.undo()
    no_bpy = tmp_path / "nobpy"
    no_bpy.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named bpy' >&2\nexit 1\n")
    no_bpy.chmod(0o755)
    monkeypatch.setenv("MATBENCH_BLENDER_PYTHON", str(no_bpy))
    code = matbench_main(["synth", "render", "--out", str(tmp_path / "o"), "--n", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot import bpy" in err and 'pip install "matbench[render]"' in err
    assert not (tmp_path / "o").exists()


@needs_bpy
def test_gpu_request_without_gpu_fails_before_any_scene(tmp_path: Path) -> None:
    config = RenderConfig(width=32, height=32, device="gpu")
    try:
        write_3d_scenes(tmp_path / "out", 2, config=config)
    except RenderUnavailableError as err:
        assert "finds no GPU" in str(err)
    else:
        pytest.skip("this machine has a GPU that Cycles can use")
    assert not (tmp_path / "out").exists()
