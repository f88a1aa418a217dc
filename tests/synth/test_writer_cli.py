"""Writers and CLI: MatSeg layouts on disk, byte-identical across worker counts, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matbench.cli import main as matbench_main
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.synth import generate_scene, scene_seed, write_benchmark, write_scenes
from matbench.synth.benchmark import PURE_FRACTION, annotate
from matbench.synth.scene import STREAM_BENCHMARK, SceneConfig, make_scene, resolve_images
from matbench.synth.writer import benchmark_stem

SMALL = {"min_size": 64, "max_size": 96, "max_materials": 4}
RELATION_LINE = re.compile(r"^(\[\d+(,\d+)+\]|\(\d+(,\d+)+\))$")


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_scenes_layout_and_content(tmp_path: Path) -> None:
    records = write_scenes(tmp_path / "s", 3, seed=7, workers=1, **SMALL)
    assert [r.path.name for r in records] == ["000000", "000001", "000002"]
    for index, record in enumerate(records):
        files = sorted(p.name for p in record.path.iterdir())
        masks = [f"mask{i}.png" for i in range(record.materials)]
        assert files == sorted(["Finished.txt", "RGB__RGB.jpg", *masks])
        with Image.open(record.path / "RGB__RGB.jpg") as im:
            assert im.mode == "RGB" and im.format == "JPEG"
            size = im.size
        stack = []
        for name in masks:
            with Image.open(record.path / name) as im:
                assert im.mode == "L" and im.size == size
                stack.append(np.asarray(im))
        # PNG is lossless: the masks are exactly those of generate_scene with the scene's seed.
        _, expected = generate_scene(scene_seed(7, index), **SMALL)
        assert len(expected) == len(stack)
        for got, want in zip(stack, expected, strict=True):
            np.testing.assert_array_equal(got, want)
        assert (np.stack(stack).astype(int).sum(0) == 255).all()
        # Finished.txt is the last file written.
        finished = (record.path / "Finished.txt").stat().st_mtime_ns
        assert all(p.stat().st_mtime_ns <= finished for p in record.path.iterdir())


def test_scenes_are_byte_identical_for_one_and_two_workers(tmp_path: Path) -> None:
    write_scenes(tmp_path / "w1", 4, seed=3, workers=1, **SMALL)
    write_scenes(tmp_path / "w2", 4, seed=3, workers=2, **SMALL)
    one, two = _tree(tmp_path / "w1"), _tree(tmp_path / "w2")
    assert one == two and len(one) >= 4 * 3
    write_scenes(tmp_path / "other", 1, seed=4, workers=1, **SMALL)
    assert _tree(tmp_path / "other")["000000/RGB__RGB.jpg"] != one["000000/RGB__RGB.jpg"]


def test_output_folder_must_be_empty_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "s"
    write_scenes(out, 2, seed=0, workers=1, **SMALL)
    with pytest.raises(FileExistsError, match="not empty"):
        write_scenes(out, 1, seed=0, workers=1, **SMALL)
    write_scenes(out, 1, seed=0, workers=1, overwrite=True, **SMALL)
    assert sorted(p.name for p in out.iterdir()) == ["000000"]  # the stale scene is gone
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        write_scenes(out, 1, seed=0, workers=1, overwrite=True, **SMALL)


def _read_benchmark(root: Path) -> dict[str, tuple[dict, list[str] | None]]:
    out = {}
    for image in sorted((root / "images").iterdir()):
        folder = root / "data" / image.stem
        data = json.loads((folder / "data.json").read_text())
        rel = folder / "group_relations.txt"
        out[image.stem] = (data, rel.read_text().splitlines() if rel.exists() else None)
    return out


def test_benchmark_layout_points_and_relations(tmp_path: Path) -> None:
    sizes = {"min_size": 120, "max_size": 200}
    records, skipped = write_benchmark(tmp_path / "b", 5, seed=2, workers=1, **sizes)
    assert len(records) == 5 and skipped >= 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["data", "images"]
    bench = _read_benchmark(tmp_path / "b")
    assert len(bench) == 5 and len(list((tmp_path / "b" / "data").iterdir())) == 5
    images = resolve_images(None)
    config = SceneConfig(**sizes, min_materials=2, max_materials=6)
    relation_files = 0
    for record in records:
        stem = record.image.stem
        assert stem == benchmark_stem(record.candidate)
        data, relations = bench[stem]
        with Image.open(record.image) as im:
            width, height = im.size
        # Regenerate the scene: the written points are its annotation.
        rng = np.random.default_rng(scene_seed(2, record.candidate, STREAM_BENCHMARK))
        scene = make_scene(rng, images, config)
        fractions = scene.fractions()
        annotation = annotate(fractions, rng)
        assert scene.rgb.shape[:2] == (height, width)
        assert sorted(data) == [str(g) for g in sorted(annotation.groups)]
        assert len(data) >= 2
        rows, cols = np.mgrid[0:height, 0:width]
        for gid, entry in data.items():
            assert set(entry) == {"pt_im", "pt_pg"}
            assert entry["pt_im"] == [list(p) for p in annotation.groups[int(gid)]]
            materials = annotation.materials[int(gid)]
            for x, y, r in entry["pt_im"]:
                assert all(isinstance(v, int) for v in (x, y, r)) and r >= 2
                assert 0 <= x - r and x + r < width and 0 <= y - r and y + r < height
                disk = (cols - x) ** 2 + (rows - y) ** 2 <= r * r
                inside = fractions[:, disk]
                if len(materials) == 1:
                    assert (inside[materials[0]] > PURE_FRACTION).all()
                else:
                    assert (inside[list(materials)] >= 0.4).all()
        if relations is not None:
            relation_files += 1
            assert relations, "an empty relations file should not be written"
            for line in relations:
                assert RELATION_LINE.match(line), line
                assert all(g in data for g in re.findall(r"\d+", line))
    assert relation_files == sum(1 for r in records if r.relations)


def test_benchmark_is_byte_identical_for_one_and_two_workers(tmp_path: Path) -> None:
    sizes = {"min_size": 96, "max_size": 140}
    r1, s1 = write_benchmark(tmp_path / "w1", 3, seed=5, workers=1, **sizes)
    r2, s2 = write_benchmark(tmp_path / "w2", 3, seed=5, workers=2, **sizes)
    assert s1 == s2 and [r.candidate for r in r1] == [r.candidate for r in r2]
    assert _tree(tmp_path / "w1") == _tree(tmp_path / "w2")
    # Benchmark scenes come from their own seed stream, never from the training scenes'.
    write_scenes(tmp_path / "train", 1, seed=5, workers=1, **sizes)
    train = (tmp_path / "train" / "000000" / "RGB__RGB.jpg").read_bytes()
    assert train != (tmp_path / "w1" / "images" / f"{benchmark_stem(0)}.jpg").read_bytes()


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["synth", "matseg2d", "--min-size", "64", "--max-size", "96", "--workers", "1"]
    code = matbench_main([*args, "--out", str(tmp_path / "s"), "--n", "2", "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote 2 scenes to" in printed and str(tmp_path / "s") in printed
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["000000", "000001"]
    assert all((tmp_path / "s" / name / "Finished.txt").exists() for name in ("000000", "000001"))

    code = matbench_main([*args, "--out", str(tmp_path / "b"), "--n", "2", "--benchmark"])
    assert code == 0
    assert "wrote 2 benchmark images" in capsys.readouterr().out
    assert len(list((tmp_path / "b" / "images").glob("*.jpg"))) == 2

    # Errors: exit code 2 and a message that names the problem.
    code = matbench_main([*args, "--out", str(tmp_path / "s"), "--n", "1"])
    assert code == 2 and "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        matbench_main([*args, "--out", str(tmp_path / "x"), "--n", "1", "--min-size", "200"])
    assert "--min-size" in capsys.readouterr().err


def test_user_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        # A striped, noisy texture on the left, a different one on the right.
        cols = np.arange(200)[None, :, None]
        image = 60.0 + 40.0 * np.sin(cols / (3.0 + i)) + rng.normal(0, 12, size=(150, 200, 3))
        image[:, 100:] += rng.uniform(40, 120, size=3)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    (folder / "readme.txt").write_text("not an image; ignored by extension")
    records = write_scenes(tmp_path / "s", 2, seed=0, images=folder, workers=1, **SMALL)
    assert len(records) == 2

    args = ["synth", "matseg2d", "--out", str(tmp_path / "o"), "--n", "1", "--workers", "1"]
    assert matbench_main([*args, "--images", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert matbench_main([*args, "--images", str(tmp_path / "empty")]) == 2
    assert "no image file" in capsys.readouterr().err
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    assert matbench_main([*args, "--images", str(folder)]) == 2
    assert "broken.jpg" in capsys.readouterr().err

    with pytest.raises(DatasetFormatError, match="broken.jpg"):
        write_scenes(tmp_path / "o2", 1, images=folder, workers=1)
    with pytest.raises(DatasetNotFoundError, match="missing"):
        generate_scene(0, images=tmp_path / "missing")


def test_flat_images_give_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.fromarray(np.full((120, 120, 3), 90, dtype=np.uint8)).save(folder / "grey.png")
    args = ["synth", "matseg2d", "--out", str(tmp_path / "o"), "--n", "1", "--workers", "1"]
    assert matbench_main([*args, "--images", str(folder), "--min-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "no textured region" in err and "grey.png" in err
