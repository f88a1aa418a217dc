"""``matbench describe``: the whole command on fake FMD (and DMS) data in the real layout,
with a tiny random VLM and with a local chat-completions server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matbench.cli import main
from matbench.datasets.fmd import FMD, FMD_CLASSES
from matbench.vlm.describe import parse_class
from matbench.vlm.regions import region_view
from matbench.vlm.store import AnswerStore
from tests.data.fmd.data import make as make_fmd
from tests.vlm.server import chat_server

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "two_stream" / "fmd.yaml"


@pytest.fixture(scope="module")
def fmd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fmd(tmp_path_factory.mktemp("fmd"), per_class=2)


def describe(out: Path, model: str, root: Path, *extra: str) -> int:
    return main(
        [
            "describe",
            "--model",
            model,
            "--config",
            str(CONFIG),
            "--data.root",
            str(root),
            "-o",
            str(out),
            "--max-new-tokens",
            "6",
            "--batch-size",
            "4",
            "--no-progress",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def described(tiny_vlm: Path, fmd_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run of the whole command."""
    out = tmp_path_factory.mktemp("described") / "fmd_descriptions.json"
    assert describe(out, f"hf:{tiny_vlm}", fmd_root) == 0
    return out


def test_describe_fmd_with_a_tiny_vlm(tiny_vlm: Path, fmd_root: Path, described: Path) -> None:
    out = described
    tmp_path = out.parent
    sidecar = json.loads(out.read_text())
    keys = [s[0] for s in FMD(fmd_root).samples]
    assert sorted(sidecar) == sorted(keys)  # every region of every split, once
    assert all(isinstance(v, str) and v for v in sidecar.values())
    provenance = json.loads((tmp_path / "fmd_descriptions.provenance.json").read_text())
    assert provenance["counts"] == {
        "regions": 20,
        "answered": 20,
        "from_cache": 0,
        "failed": 0,
        "cache_lines_skipped": 0,
    }
    assert provenance["model"]["greedy"] and provenance["model"]["seed"] == 0
    assert provenance["prompt"]["id"].startswith("v1:") and provenance["marker"] == "outline"
    assert provenance["label_leaks"]["count"] == 0
    # the readers take the sidecar
    dataset = FMD(fmd_root, descriptions=out)
    assert dataset.descriptions == [sidecar[k] for k in keys]
    # a rerun asks nothing again
    assert describe(out, f"hf:{tiny_vlm}", fmd_root) == 0
    again = json.loads((tmp_path / "fmd_descriptions.provenance.json").read_text())
    assert again["counts"]["from_cache"] == 20
    assert json.loads(out.read_text()) == sidecar


def test_prompts_are_versioned_per_task_and_marker() -> None:
    from matbench.vlm.describe import load_prompts, make_prompt

    prompts = load_prompts()
    ids = {
        make_prompt(prompts, task, marker, ["metal", "wood"]).id
        for task in ("describe", "classify")
        for marker in ("outline", "som", "crop")
    }
    assert len(ids) == 6 and all(i.startswith(f"v{prompts['version']}:") for i in ids)
    text = make_prompt(prompts, "describe", "outline").text
    assert "gloss" in text and "translucency" in text and "Do not name the material" in text


def test_resume_after_a_kill_equals_an_uninterrupted_run(
    tiny_vlm: Path,
    fmd_root: Path,
    described: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from matbench.vlm.hf import TransformersVLM

    whole = described

    calls = {"n": 0}
    generate = TransformersVLM.generate_prepared

    def dies_in_third_batch(self, prepared):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the process is killed while the batch is generated
        return generate(self, prepared)

    monkeypatch.setattr(TransformersVLM, "generate_prepared", dies_in_third_batch)
    killed = tmp_path / "killed" / "d.json"
    with pytest.raises(KeyboardInterrupt):
        describe(killed, f"hf:{tiny_vlm}", fmd_root)
    cache = killed.with_name("d.cache.jsonl")
    assert len(cache.read_text().splitlines()) == 8  # two whole batches survived
    assert not killed.exists()
    # a kill in the middle of a write leaves half a line
    with open(cache, "a") as f:
        f.write('{"id": "abc", "te')
    monkeypatch.setattr(TransformersVLM, "generate_prepared", generate)
    assert describe(killed, f"hf:{tiny_vlm}", fmd_root) == 0
    provenance = json.loads(killed.with_name("d.provenance.json").read_text())
    assert provenance["counts"]["from_cache"] == 8
    assert provenance["counts"]["cache_lines_skipped"] == 1
    assert killed.read_text() == whole.read_text()
    assert len(AnswerStore(cache)) == 20


def _class_of(image: Image.Image) -> str | None:
    """The fake FMD's class colour inside the region (the background stays below 60)."""
    array = np.asarray(image, dtype=np.int64).reshape(-1, 3)
    pixel = np.median(array[array.max(1) > 100], axis=0)
    colours = [np.array([25 * i, 255 - 20 * i, 120 + 13 * i]).clip(0, 255) for i in range(10)]
    best = int(np.argmin([np.abs(pixel - c).sum() for c in colours]))
    return FMD_CLASSES[best]


def test_zero_shot_vlm_baseline_over_http(
    fmd_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def answer(text: str, images: list[Image.Image]) -> str:
        assert "Choose exactly one from this list: fabric, foliage, glass" in text
        name = _class_of(images[0])
        if name == "water":
            return "I cannot tell from this picture."  # unparsable: counted as wrong
        if name == "wood":
            return "Metal."  # wrong
        return f"Answer: {name.capitalize()}"

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with chat_server(answer) as server:
        out = tmp_path / "answers.json"
        code = describe(
            out,
            "openai:gpt-test",
            fmd_root,
            "--task",
            "classify",
            "--marker",
            "crop",
            "--base-url",
            server.url,
            "--results_dir",
            str(tmp_path / "results"),
        )
    assert code == 0
    answers = json.loads(out.read_text())
    assert len(answers) == 20
    assert answers["water/water_moderate_001_new.jpg"]["parsed"] is None
    assert answers["wood/wood_moderate_001_new.jpg"]["parsed"] == "metal"
    [path] = (tmp_path / "results").glob("*_VLMZeroShot_*.json")
    record = json.loads(path.read_text())
    metrics = record["metrics"]
    assert metrics["accuracy"] == pytest.approx(16 / 20)
    assert metrics["unparsed"] == 2 and metrics["failed"] == 0
    assert metrics["per_class_accuracy"][FMD_CLASSES.index("water")] == 0.0
    # metal: 2 right, 2 wood predicted as metal -> IoU 2 / 4
    assert metrics["per_class_iou"][FMD_CLASSES.index("metal")] == pytest.approx(0.5)
    assert record["model_name"] == "vlm:openai:gpt-test"
    assert record["data"]["class_names"] == list(FMD_CLASSES)


def test_describe_over_http_counts_leaks_and_failures(
    fmd_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def answer(text: str, images: list[Image.Image]) -> str:
        name = _class_of(images[0])
        if name == "glass":
            return ""  # an empty answer is that region's failure
        if name == "metal":
            return "A cold metal surface with sharp highlights."  # names its own class
        return "A matte surface with a fine, even texture."

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with chat_server(answer) as server:
        out = tmp_path / "d.json"
        assert (
            describe(out, "openai:gpt-test", fmd_root, "--marker", "crop", "--base-url", server.url)
            == 0
        )
    sidecar = json.loads(out.read_text())
    provenance = json.loads(out.with_name("d.provenance.json").read_text())
    assert len(sidecar) == 18 and not any(k.startswith("glass/") for k in sidecar)
    assert provenance["counts"]["failed"] == 2
    assert {f["reason"] for f in provenance["failures"]} == {"empty answer"}
    assert provenance["label_leaks"]["count"] == 2
    assert {e["class"] for e in provenance["label_leaks"]["examples"]} == {"metal"}


def test_bad_arguments_are_clear(fmd_root: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = describe(tmp_path / "d.json", "nope:x", fmd_root)
    assert code == 2 and "unknown model back end 'nope:x'" in capsys.readouterr().err
    code = main(["describe", "--model", "hf:x", "-o", "d.json", "--config", "missing.yaml"])
    assert code == 2 and "missing.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Metal", "metal"),
        ("metal.", "metal"),
        ("Answer: Stone", "stone"),
        ("The material is wood.", "wood"),
        ("It looks like brushed metals to me", "metal"),
        ("Fabric/cloth", "Fabric/cloth"),
        ("cloth", "Fabric/cloth"),
        ("metal or wood", None),
        ("I cannot tell", None),
        ("", None),
    ],
)
def test_parse_class(answer: str, expected: str | None) -> None:
    classes = ["metal", "wood", "stone", "Fabric/cloth"]
    got = parse_class(answer, classes)
    assert (None if got is None else classes[got]) == expected


def test_region_views() -> None:
    image = torch.rand(3, 60, 80)
    mask = torch.zeros(60, 80, dtype=torch.bool)
    mask[20:40, 30:60] = True
    outline = np.asarray(region_view(image, mask, "outline"))
    original = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert (outline[mask.numpy()] == original[mask.numpy()]).all()  # the region is untouched
    ring = outline[18:20, 30:60]
    assert (ring == [255, 0, 0]).all()
    # the 30x20 box grows to 64 px, but never beyond the 80x60 image
    assert region_view(image, mask, "crop").size == (64, 60)
    assert region_view(
        torch.rand(3, 600, 1000), torch.ones(600, 1000, dtype=torch.bool), "som", max_side=100
    ).size == (100, 60)
    with pytest.raises(ValueError, match="empty region mask"):
        region_view(image, torch.zeros(60, 80, dtype=torch.bool))


def test_describe_lvis_objects_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.data.lvis_materials.data import make as make_lvis

    root = make_lvis(tmp_path / "lvis", num_train=2, num_val=2)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with chat_server(lambda text, images: f"a surface seen at {images[0].width} px") as server:
        out = tmp_path / "lvis_descriptions.json"
        code = main(
            [
                "describe",
                "--model",
                "openai:gpt-test",
                "--data",
                "LVISMaterialsDataModule",
                "--data.root",
                str(root),
                "--data.split",
                "files",
                "--splits",
                "val",
                "--marker",
                "som",
                "--base-url",
                server.url,
                "-o",
                str(out),
                "--no-progress",
            ]
        )
    assert code == 0
    sidecar = json.loads(out.read_text())
    from matbench.datasets.lvis_materials import LVISMaterials

    objects = LVISMaterials(root / "lvis" / "lvis_v1_val.json", root / "coco").objects
    assert sorted(sidecar) == sorted(str(o["id"]) for o in objects)
    assert all(v == "a surface seen at 96 px" for v in sidecar.values())  # the whole image


def test_sidecar_keys_are_the_real_fmd_names(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a copy laid out from the real FMD file list, the sidecar's keys are exactly the
    release's '<class>/<file>.jpg' names, and the reader takes the sidecar back."""
    names = (shared_data / "fmd" / "FMD_image_filelist.txt").read_text().split()[::100]
    root = make_fmd(tmp_path / "fmd", names=names, size=(64, 48))
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with chat_server(lambda text, images: "a dull surface with a fine grain") as server:
        out = tmp_path / "d.json"
        assert describe(out, "openai:gpt-test", root, "--base-url", server.url) == 0
    sidecar = json.loads(out.read_text())
    assert sorted(sidecar) == sorted(names)
    assert FMD(root, descriptions=out).descriptions == ["a dull surface with a fine grain"] * 10
