"""``matbench synth materials`` end to end on CPU with tiny random models built offline: the
layout, the manifest, the drop accounting, resume after a kill, the reference post-processing
of Grounding DINO and SAM, and one training step of configs/two_stream/synthetic.yaml on the
output."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from matbench.datasets.folder import MaterialFolder  # noqa: E402
from matbench.synth.cli import main as synth_main  # noqa: E402
from matbench.synth.materials import models as M  # noqa: E402
from matbench.synth.materials.pipeline import (  # noqa: E402
    ResumeMismatchError,
    SynthConfig,
    synthesize,
)
from matbench.synth.materials.prompts import DEFAULT_TEMPLATE, PromptList, Triplet  # noqa: E402
from matbench.vlm.store import AnswerStore  # noqa: E402
from tests.synth.tiny_generate import make_tiny_grounding_dino, make_tiny_sd, write_sam  # noqa: E402
from tests.vlm.server import chat_server  # noqa: E402

CLASSES = ["ceramic", "metal", "wood"]  # a subset of classes21, so its config trains on them
TRIPLETS = [
    {"object": "vase", "material": "ceramic", "detail": "porcelain"},
    {"object": "mug", "material": "ceramic", "detail": "glazed"},
    {"object": "spoon", "material": "metal", "detail": "stainless steel"},
    {"object": "kettle", "material": "metal", "detail": "copper"},
    {"object": "chair", "material": "wood", "detail": "oak"},
    {"object": "bowl", "material": "wood", "detail": "walnut"},
]
SIZE = 32
SETTINGS = M.DiffusionSettings(steps=2, guidance=7.5, size=SIZE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_generate")
    return {
        "sd": make_tiny_sd(root / "sd"),
        "gd": make_tiny_grounding_dino(root / "gd"),
        "sam": write_sam(root / "sam"),
    }


@pytest.fixture(scope="module")
def built(tiny: dict[str, Path]) -> tuple[M.ImageGenerator, M.ObjectGrounder]:
    cpu = torch.device("cpu")
    generator = M.ImageGenerator(str(tiny["sd"]), SETTINGS, cpu, torch.float32)
    grounder = M.ObjectGrounder(str(tiny["gd"]), str(tiny["sam"]), cpu, torch.float32)
    return generator, grounder


def prompt_list() -> PromptList:
    by_class = {c: [Triplet(**t) for t in TRIPLETS if t["material"] == c] for c in CLASSES}
    return PromptList(by_class, {c: 2 for c in CLASSES}, {}, DEFAULT_TEMPLATE, "test")


def config(tiny: dict[str, Path], **kwargs) -> SynthConfig:
    values = dict(
        per_class=2,
        model=str(tiny["sd"]),
        detector=str(tiny["gd"]),
        segmenter=str(tiny["sam"]),
        diffusion=SETTINGS,
        box_threshold=0.0,
        min_mask=0.0,
        max_mask=1.0,
        batch_size=4,
        device="cpu",
    )
    values.update(kwargs)
    return SynthConfig(**values)


def manifest(out: Path) -> list[dict]:
    """The manifest's records (a line cut short by a kill is skipped, as on resume)."""
    return list(AnswerStore(out / "manifest.jsonl").records.values())


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared machine run ~20x faster on one intra-op thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_grounding_dino_best_box_is_the_processors(built) -> None:
    """The score and box of :meth:`ObjectGrounder.detect` are the top entry of the reference
    ``post_process_grounded_object_detection`` of transformers."""
    _, grounder = built
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)) for _ in range(3)]
    queries = ["vase.", "cake pan.", "wooden chair."]
    found = grounder.detect(images, queries)
    inputs = grounder.processor(images=images, text=queries, return_tensors="pt", padding=True)
    with torch.no_grad():
        outputs = grounder.detector(**inputs)
    ref = grounder.processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, target_sizes=[(40, 56)] * 3
    )
    for mine, theirs in zip(found, ref, strict=True):
        best = int(theirs["scores"].argmax())
        assert mine.score == pytest.approx(float(theirs["scores"][best]), abs=1e-6)
        assert np.allclose(mine.box, theirs["boxes"][best].numpy(), atol=1e-4)


def test_sam_box_prompts_batched_and_scaled_like_the_processor(built) -> None:
    from transformers import SamImageProcessor, SamProcessor

    _, grounder = built
    sam = grounder.segmenter
    images = torch.rand(3, 3, 30, 48)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 25.0], [10.0, 0.0, 47.0, 29.0], [0.0, 0.0, 5.0, 5.0]])
    with torch.no_grad():
        batched = sam.segment_boxes(images, boxes)
        single = torch.cat(
            [sam.segment_boxes(images[i : i + 1], boxes[i : i + 1]) for i in range(3)]
        )
    assert batched.shape == (3, 30, 48) and batched.dtype == torch.bool
    assert torch.equal(batched, single)
    size = sam.input_size
    wrapper = SamProcessor(
        image_processor=SamImageProcessor(
            size={"longest_edge": size}, pad_size={"height": size, "width": size}
        )
    )
    expected = wrapper._normalize_coordinates(size, boxes.numpy(), (30, 48), is_bounding_box=True)
    _, resized = sam.preprocess(images[0])
    scale = torch.tensor([resized[1] / 48, resized[0] / 30]).repeat(2)
    assert np.allclose((boxes * scale).numpy(), expected)


@pytest.mark.slow
def test_cli_run_layout_manifest_report_and_training(
    tiny: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command line end to end (triplets from a language model behind a local
    OpenAI-compatible endpoint, the packaged deny list at work), then `matbench fit` of
    configs/two_stream/synthetic.yaml on the output for one step."""
    answers = {
        c: [f"{t['object']} | {t['detail']}" for t in TRIPLETS if t["material"] == c]
        for c in CLASSES
    }
    answers["metal"].insert(1, "sponge | shiny")  # denied: sponge, metal

    def answer(text: str, images: list) -> str:
        return "\n".join(next(a for c, a in answers.items() if f"made of {c}" in text))

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"name": "three", "classes": CLASSES}))
    out = tmp_path / "synthetic"
    args = [
        "materials", "--out", str(out), "--llm", "openai:gpt-test", "--label-space", str(space),
        "--model", str(tiny["sd"]), "--detector", str(tiny["gd"]), "--segmenter", str(tiny["sam"]),
        "--steps", "2", "--size", str(SIZE), "--per-class", "2", "--prompts-per-class", "2",
        "--box-threshold", "0", "--min-mask", "0", "--max-mask", "1", "--device", "cpu",
        "--no-progress",
    ]  # fmt: skip
    with chat_server(answer) as server:
        assert synth_main([*args, "--llm-base-url", server.url]) == 0
        assert len(server.log) == 3
    # a rerun reuses the written prompt list: no model is asked again
    raw = [json.loads(line) for line in (out / "prompts_raw.jsonl").read_text().splitlines()]
    assert [r["class"] for r in raw] == CLASSES
    assert synth_main(args) == 0
    for name in CLASSES:
        images = sorted(p.name for p in (out / "image" / name).iterdir())
        assert images == [f"{name}_00000.jpg", f"{name}_00001.jpg"]
        masks = sorted(p.name for p in (out / "mask" / name).iterdir())
        assert masks == [f"{name}_00000.png", f"{name}_00001.png"]
    records = manifest(out)
    assert len(records) == 6 and all(r["status"] == "kept" for r in records)
    first = next(r for r in records if r["id"] == "metal/1")
    assert first["prompt"] == "a photo of a kettle made of copper metal"
    assert first["object"] == "kettle" and first["query"] == "kettle."
    assert first["seed"] == M.prompt_seed(0, "metal", 1)
    assert first["model_id"].startswith(str(tiny["sd"].resolve()))
    assert first["detector_id"].startswith(str(tiny["gd"].resolve()))
    assert 0.0 <= first["score"] <= 1.0 and len(first["box"]) == 4
    mask = np.asarray(Image.open(out / first["mask"]))
    assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
    assert first["mask_fraction"] == pytest.approx((mask > 127).mean(), abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 6 and summary["complete"] is True
    assert summary["prompts"]["dropped"]["deny_list"] == 1  # sponge, metal
    assert summary["settings"]["prompts_sha256"] == summary["prompts"]["sha256"]
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.height == 3 * (160 + 4)
    dataset = MaterialFolder(out, label_space="classes21", require_masks=True)
    assert len(dataset) == 6 and dataset[0]["mask"].shape == (SIZE, SIZE)

    # a rerun with another diffusion setting would mix two datasets: refused, naming it
    assert synth_main([*args[:-1], "--steps", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "steps: 2 -> 3" in err and "continuing with the prompt list" in err

    from matbench.cli import main

    monkeypatch.chdir(tmp_path)
    config_file = Path(__file__).resolve().parents[2] / "configs/two_stream/synthetic.yaml"
    main(
        [
            "fit", "--config", str(config_file), "--data.root", str(out),
            "--model.backbone=test_vit", "--model.weights=null", "--model.image_size=32",
            "--model.text_encoder=minilm", "--model.text_weights=null",
            "--model.feature_cache=off", "--data.image_size=32", "--data.num_workers=0",
            "--data.batch_size=2", "--data.descriptions=null", "--trainer.fast_dev_run=1",
            "--trainer.logger=false",
        ]
    )  # fmt: skip


def test_drops_are_counted_by_reason_and_replaced(
    built, tiny: dict[str, Path], tmp_path: Path
) -> None:
    """Thresholds taken between the scores and mask areas of an all-kept run: every record's
    reason follows from its own score and area, the summary adds them up, and each class gets
    replacements up to its budget."""
    generator, grounder = built
    loose = synthesize(
        tmp_path / "loose", config(tiny, per_class=3), prompt_list, False, generator, grounder
    )
    assert loose.summary["kept"] == 9
    rows = manifest(tmp_path / "loose")
    scores = sorted({r["score"] for r in rows})
    fractions = sorted({r["mask_fraction"] for r in rows})
    box = (scores[1] + scores[2]) / 2  # the two lowest scores are dropped
    low, high = (fractions[0] + fractions[1]) / 2, (fractions[-1] + fractions[-2]) / 2
    strict = config(
        tiny, per_class=3, max_attempts=2, box_threshold=box, min_mask=low, max_mask=high
    )
    result = synthesize(tmp_path / "strict", strict, prompt_list, False, generator, grounder)
    records = manifest(tmp_path / "strict")
    for r in records:
        if r["score"] < box:
            expected = "object_not_found"
        elif r["mask_fraction"] < low:
            expected = "mask_too_small"
        elif r["mask_fraction"] > high:
            expected = "mask_too_large"
        else:
            expected = None
        assert r["reason"] == expected, r
        assert (r["status"] == "kept") == (expected is None)
        assert (r["mask_fraction"] is None) == (expected == "object_not_found")
        assert ("image" in r) == (expected is None)
    s = result.summary
    for name, entry in s["classes"].items():
        mine = [r for r in records if r["class"] == name]
        kept = sum(r["status"] == "kept" for r in mine)
        assert entry["kept"] == kept == len(list((tmp_path / "strict" / "image" / name).iterdir()))
        assert entry["attempted"] == len(mine) == (6 if kept < 3 else len(mine))
        assert sorted(r["index"] for r in mine) == list(range(len(mine)))  # replacements
        assert sum(entry["dropped"].values()) == len(mine) - kept
        assert entry["shortfall"] == 3 - kept
    assert sum(s["dropped"].values()) == s["attempted"] - s["kept"] > 0
    assert s["complete"] == all(e["shortfall"] == 0 for e in s["classes"].values())


def test_a_killed_run_resumes_to_the_uninterrupted_result(
    built, tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator, grounder = built
    cfg = config(tiny, per_class=3, batch_size=2, min_mask=0.3, max_mask=0.8)
    whole = synthesize(tmp_path / "whole", cfg, prompt_list, False, generator, grounder)

    calls = {"n": 0}
    real_detect = grounder.detect

    def dies_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a kill would stop it
        return real_detect(*args, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(grounder, "detect", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        synthesize(out, cfg, prompt_list, False, generator, grounder)
    monkeypatch.setattr(grounder, "detect", real_detect)
    assert not [t for t in threading.enumerate() if t.name == "synth-label"]  # none left behind
    before = manifest(out)
    assert len(before) == 4  # two batches recorded, the rest lost
    finished = {p: p.stat().st_mtime_ns for p in (out / "image").rglob("*.jpg")}
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"id": "wood/9", "cla')  # a line cut short by the kill
    resumed = synthesize(out, cfg, None, False, generator, grounder)
    assert resumed.new_images == whole.new_images - 4
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # never rewritten

    def key(r: dict) -> tuple:
        return r["id"], r["status"], r["reason"], r["seed"], r["prompt"], r.get("image")

    assert sorted(map(key, manifest(out))) == sorted(map(key, manifest(tmp_path / "whole")))
    assert resumed.summary["classes"] == whole.summary["classes"]

    # a larger --per-class continues the same folder: the smaller set stays a subset
    more = synthesize(
        out,
        config(tiny, per_class=4, batch_size=2, min_mask=0.3, max_mask=0.8),
        None,
        False,
        generator,
        grounder,
    )
    assert all(e["attempted"] >= 4 or e["shortfall"] == 0 for e in more.summary["classes"].values())
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    with pytest.raises(ResumeMismatchError, match="box_threshold"):
        synthesize(out, config(tiny, box_threshold=0.5), None, False, generator, grounder)


def test_bad_device_and_model_are_named() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(M.ModelLoadError, match="'cuda:7': no CUDA GPU"):
            M.resolve_device("cuda:7")
    with pytest.raises(M.ModelLoadError, match="'tpu9' is not a torch device"):
        M.resolve_device("tpu9")
    with pytest.raises(M.ModelLoadError, match="nowhere"):
        M.ImageGenerator("/nowhere/sd", SETTINGS, torch.device("cpu"), torch.float32)


def test_missing_extra_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def no_diffusers(name: str, *args):
        if name == "diffusers":
            raise ImportError("No module named 'diffusers'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_diffusers)
    with pytest.raises(M.GenerateUnavailableError, match=r'pip install "matbench\[generate\]"'):
        M.require_diffusers()
