"""Zero-shot classification: prompts, templates, a perfect model on a fake folder dataset, a
user class list, and the FMD/DMS configs through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from matbench.cli import main
from matbench.datamodules.base import list_collate
from matbench.datamodules.folder import MaterialFolderDataModule
from matbench.tasks.clip import ZeroShotTask, load_class_names, load_templates, prompt_name

TINY = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")
COLOURS = {"glass": (40, 200, 230), "metal": (160, 160, 170), "wood": (140, 90, 30)}
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "clip"


def test_prompt_names_and_templates(tmp_path: Path) -> None:
    assert prompt_name("Plastic, clear") == "clear plastic"
    assert prompt_name("Fabric/cloth") == "fabric or cloth"
    assert prompt_name("Wood") == "wood"
    templates = load_templates("material")
    assert len(templates) >= 5 and all("{}" in t for t in templates)
    assert load_templates("name") == ["{}"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(["a {} thing", "{} texture"]))
    assert load_templates(str(path)) == ["a {} thing", "{} texture"]
    path.write_text(json.dumps(["no slot"]))
    with pytest.raises(ValueError, match="t.json"):
        load_templates(str(path))
    with pytest.raises(ValueError, match="unknown template set"):
        load_templates("nope")


def _folder(root: Path) -> Path:
    """A fake material folder: image/<class>/*.png and mask/<class>/*.png."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for i in range(4):
            image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
            mask = np.zeros((60, 80), dtype=np.uint8)
            y, x = 10 + 5 * i, 15 + 6 * i
            mask[y : y + 20, x : x + 30] = 255
            image[mask > 0] = colour
            for kind, array in (("image", image), ("mask", mask)):
                (root / kind / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / kind / name / f"{name}_{i}.png")
    return root


def _perfect(task: ZeroShotTask, names: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Image: nearest class colour at the crop centre; text: the class named in the prompt."""
    colours = torch.tensor([COLOURS[n] for n in names], dtype=torch.float32) / 255
    seen = []

    def image(images: torch.Tensor, context=None) -> torch.Tensor:
        seen.append(images.shape)
        h, w = images.shape[-2:]
        centre = images[:, :, h // 2, w // 2]
        return F.one_hot(torch.cdist(centre, colours).argmin(1), len(names)).float()

    def text(prompts: list[str]) -> torch.Tensor:
        ids = [next(i for i, n in enumerate(names) if n in p) for p in prompts]
        return F.one_hot(torch.tensor(ids), len(names)).float()

    monkeypatch.setattr(task.model, "encode_image", image)
    monkeypatch.setattr(task.model, "encode_text", text)
    task._seen_shapes = seen


def test_perfect_model_on_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dm = MaterialFolderDataModule(
        str(_folder(tmp_path / "folder")), image_size=64, train_fraction=0.5, val_fraction=0.0
    )
    task = ZeroShotTask(model=TINY, crop_blur_sigma=2.0)
    _perfect(task, ["glass", "metal", "wood"], monkeypatch)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(task, datamodule=dm, verbose=False)
    metrics = task.results["test"][0]
    assert metrics["accuracy"] == 1.0 and metrics["mean_class_accuracy"] == 1.0
    assert metrics["class_names"] == ["glass", "metal", "wood"]
    assert not [k for k in metrics if k.startswith("top")]  # 3 classes: no top-5 figure
    assert np.trace(np.array(metrics["confusion_matrix"])) == 6
    # Inputs are object crops at the model's size.
    assert all(tuple(s[-2:]) == (32, 32) for s in task._seen_shapes)


def test_user_class_list_and_list_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["wood", "glass", "metal"]  # the user's own order
    task = ZeroShotTask(model=TINY, class_names=names, templates="name")
    _perfect(task, names, monkeypatch)
    samples = []
    for i, name in enumerate(["metal", "wood", "glass", "glass"]):
        h = 40 + 10 * i
        image = torch.rand(3, h, 50)
        mask = torch.zeros(h, 50, dtype=torch.bool)
        mask[h // 2 - 10 : h // 2 + 10, 15:35] = True
        image[:, mask] = torch.tensor(COLOURS[name], dtype=torch.float32)[:, None] / 255
        samples.append({"image": image, "mask": mask, "label": torch.tensor(names.index(name))})
    loader = DataLoader(samples, batch_size=2, collate_fn=list_collate)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(task, dataloaders=loader, verbose=False)
    assert task.results["test"][0]["accuracy"] == 1.0
    assert task.results["test"][0]["class_names"] == names
    no_names = ZeroShotTask(model=TINY)
    with pytest.raises(ValueError, match="class names"):
        trainer.test(no_names, dataloaders=loader, verbose=False)


def test_one_crop_switch(tmp_path: Path) -> None:
    """A datamodule that crops objects and a task that crops regions would crop twice: refused
    with the two settings named."""
    from matbench.errors import ConfigError

    dm = MaterialFolderDataModule(
        str(_folder(tmp_path / "folder")), image_size=64, train_fraction=0.5, object_crop=True
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match="cropped twice") as err:
        trainer.test(ZeroShotTask(model=TINY), datamodule=dm, verbose=False)
    assert "region full" in err.value.hint and "object_crop false" in err.value.hint


def _open_clip_tiny():
    """open_clip's own tiny model and eval transform (``create_model_and_transforms``)."""
    import open_clip

    open_clip.add_model_config(TINY)
    clip, _, preprocess_val = open_clip.create_model_and_transforms("tiny_clip")
    return clip.eval(), preprocess_val


def test_inputs_are_open_clips_own_eval_transform() -> None:
    """Non-square images and regions: the embeddings equal open_clip's own pipeline
    (``preprocess_val`` on the PIL image: shortest side bicubic, centre crop, mean/std)."""
    clip, preprocess_val = _open_clip_tiny()
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(40, 64, 3), (90, 33, 3)]]
    images = [torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays]

    def reference(pictures: list[Image.Image]) -> torch.Tensor:
        with torch.no_grad():
            batch = torch.stack([preprocess_val(p) for p in pictures])
            return F.normalize(clip.encode_image(batch), dim=-1)

    full = ZeroShotTask(model=TINY, region="full").eval()
    full.model.image.visual.load_state_dict(clip.visual.state_dict())
    with torch.no_grad():
        got = full.model.encode_image(full.preprocess({"image": images}))
    expected = reference([Image.fromarray(a) for a in arrays])
    assert torch.allclose(got, expected, atol=1e-6)
    squashed = ZeroShotTask(model=TINY, region="full", image_transform="squash").eval()
    squashed.model.image.visual.load_state_dict(clip.visual.state_dict())
    with torch.no_grad():
        old = squashed.model.encode_image(squashed.preprocess({"image": images}))
    assert not torch.allclose(old, expected, atol=1e-3)

    # A region: mask box (40, 20, 60, 30) padded to 30 px, squared, shifted inside the 64 px
    # wide image -> box (34, 10, 64, 40).
    mask = torch.zeros(40, 64, dtype=torch.bool)
    mask[20:30, 40:60] = True
    crop = ZeroShotTask(model=TINY, crop_min_size=30, crop_blur_sigma=0.0).eval()
    crop.model.image.visual.load_state_dict(clip.visual.state_dict())
    with torch.no_grad():
        got = crop.model.encode_image(crop.preprocess({"image": images[:1], "mask": [mask]}))
    expected = reference([Image.fromarray(arrays[0]).crop((34, 10, 64, 40))])
    assert torch.allclose(got, expected, atol=1e-6)
    assert "Resize" in crop.protocol()["image_transform"]


def _clip_benchmark_classifier(clip, tokenizer, classnames, templates) -> torch.Tensor:
    """CLIP_benchmark's ``zero_shot_classifier``, written out: (D, C) class weights."""
    weights = []
    with torch.no_grad():
        for classname in classnames:
            if isinstance(templates, dict):
                texts = templates[classname]
            else:
                texts = [template.format(c=classname) for template in templates]
            class_embeddings = clip.encode_text(tokenizer(texts))
            class_embedding = F.normalize(class_embeddings, dim=-1).mean(dim=0)
            class_embedding /= class_embedding.norm()
            weights.append(class_embedding)
    return torch.stack(weights, dim=1)


def test_class_names_and_templates_as_clip_benchmark(tmp_path: Path) -> None:
    """CLIP_benchmark's classname and template files (keyed by dataset, ``{c}``) give its own
    classifier with ``raw`` names; ``readable`` rewrites the names; the names and templates
    used are in the protocol (the results JSON)."""
    import open_clip

    classes = ["Plastic, clear", "Wood", "Fabric/cloth"]
    templates = ["a photo of {c}.", "{c} texture", "itap of a {c}."]
    names_file, templates_file = tmp_path / "en_classnames.json", tmp_path / "templates.json"
    names_file.write_text(json.dumps({"dms": classes, "fmd": ["fabric"]}))
    templates_file.write_text(json.dumps({"dms": templates, "imagenet1k": ["{c}"]}))
    task = ZeroShotTask(
        model=TINY,
        class_names=str(names_file),
        templates=str(templates_file),
        dataset_key="dms",
        class_name_style="raw",
    )
    assert task.classes == classes
    got = task.class_embeddings(task.classes)
    clip, tokenizer = task.model.text.clip, open_clip.get_tokenizer("tiny_clip")
    assert torch.allclose(
        got.T, _clip_benchmark_classifier(clip, tokenizer, classes, templates), atol=1e-6
    )
    protocol = task.protocol()
    assert protocol["prompt_names"] == classes and protocol["templates"] == templates

    readable = ZeroShotTask(
        model=TINY, class_names=classes, templates=str(templates_file), dataset_key="dms"
    )
    readable.model.load_state_dict(task.model.state_dict())
    readable_emb = readable.class_embeddings(classes)
    assert readable.protocol()["prompt_names"] == ["clear plastic", "wood", "fabric or cloth"]
    assert not torch.allclose(readable_emb[0], got[0], atol=1e-3)  # a different classifier
    assert torch.allclose(readable_emb[1], got[1], atol=1e-6)  # "Wood" and "wood": same tokens

    assert load_templates(str(templates_file), "lvis") == ["{c}"]  # imagenet1k's, as CLIP_benchmark

    # Class-specific prompts (CuPL) keyed by dataset, then by class name.
    cupl = {"dms": {c: [f"a photo of {c}, a material", f"{c} up close"] for c in classes}}
    templates_file.write_text(json.dumps(cupl))
    specific = ZeroShotTask(model=TINY, templates=str(templates_file), dataset_key="dms")
    specific.model.load_state_dict(task.model.state_dict())
    expected = _clip_benchmark_classifier(clip, tokenizer, classes, cupl["dms"])
    assert torch.allclose(specific.class_embeddings(classes).T, expected, atol=1e-6)

    with pytest.raises(ValueError, match="no class names for dataset 'lvis'"):
        load_class_names(str(names_file), "lvis")
    with pytest.raises(ValueError, match="several datasets"):
        _ = ZeroShotTask(model=TINY, class_names=str(names_file)).classes


def _cli_test(
    config: str, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str
) -> dict:
    monkeypatch.chdir(tmp_path)
    main(
        [
            "test",
            "--config",
            str(CONFIGS / config),
            f"--model.model={TINY}",
            "--model.weights=null",
            f"--data.root={root}",
            "--data.batch_size=4",
            "--data.num_workers=0",
            "--trainer.enable_progress_bar=false",
            "--results_dir=results",
            *extra,
        ]
    )
    (path,) = sorted((tmp_path / "results").glob("*ZeroShotTask*.json"))
    return json.loads(path.read_text())


def test_zeroshot_fmd_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.data.fmd.data import make

    root = make(tmp_path / "fmd", per_class=2)
    record = _cli_test("zeroshot_fmd.yaml", root, tmp_path, monkeypatch)
    metrics = record["metrics"]
    assert len(metrics["class_names"]) == 10 and metrics["class_names"][0] == "fabric"
    protocol = record["protocol"]  # what built the classifier and the inputs
    assert protocol["prompt_names"][:2] == ["fabric", "foliage"]
    assert protocol["templates"] == load_templates("material")
    assert protocol["dataset_key"] == "fmd" and protocol["region"] == "crop"
    assert 0.0 <= metrics["accuracy"] <= metrics["top5_accuracy"] <= 1.0
    assert np.array(metrics["confusion_matrix"]).sum() == 10  # one test image per class


def test_zeroshot_dms_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.data.dms.data import make

    root = make(tmp_path / "DMS_v1")
    # The fake's regions are small: keep them all.
    record = _cli_test("zeroshot_dms.yaml", root, tmp_path, monkeypatch, "--data.min_pixels=16")
    metrics = record["metrics"]
    assert len(metrics["class_names"]) == 46
    assert np.array(metrics["confusion_matrix"]).sum() > 0
    assert 0.0 <= metrics["accuracy"] <= metrics["top5_accuracy"] <= 1.0


def test_zero_shot_task_is_its_own_task(tmp_path: Path) -> None:
    """ZeroShotTask is a BaseTask of its own (no ClipMaterialTask parent, no fusion argument to
    refuse, no loss); a ClipMaterialTask checkpoint loads strictly into it by --ckpt_path, its
    learned temperature scaling the probabilities; the old import path still works."""
    import inspect

    from matbench.tasks import clip as clip_module
    from matbench.tasks.base import BaseTask, pretrained_unless_replaced
    from matbench.tasks.clip import ClipMaterialTask

    assert issubclass(ZeroShotTask, BaseTask) and not issubclass(ZeroShotTask, ClipMaterialTask)
    assert "fusion" not in inspect.signature(ZeroShotTask).parameters
    assert clip_module.ZeroShotTask is ZeroShotTask
    task = ZeroShotTask(model=TINY, text_tower="minilm-random", class_names=["a", "b"])
    assert not hasattr(task, "criterion")
    assert all(k.startswith("model.") for k in task.state_dict())
    # a trained ClipMaterialTask checkpoint (its loss holds the temperature)
    trained = ClipMaterialTask(model=TINY, text_tower="minilm-random", temperature=0.5)
    ckpt = tmp_path / "clip.ckpt"
    torch.save({"state_dict": trained.state_dict(), "hyper_parameters": {}}, ckpt)
    checkpoint = torch.load(ckpt, weights_only=True)
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"], strict=True)
    assert task.probability_scale == pytest.approx(2.0)
    assert torch.equal(
        task.model.image.visual.conv1.weight, trained.model.image.visual.conv1.weight
    )
    # D1: a checkpoint that holds every weight replaces the pretrained ones (nothing fetched)
    assert pretrained_unless_replaced("laion2b_s34b_b79k", None) == "laion2b_s34b_b79k"
    assert pretrained_unless_replaced("laion2b_s34b_b79k", str(ckpt)) is None


def test_region_preprocessing_runs_in_the_loader_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task hands its region preprocessing to the datamodule at setup: evaluation batches
    arrive from the loader's worker as model inputs (the full images stay in the worker),
    equal to the task's own preprocessing of the samples; teardown takes it back."""
    from matbench.models.preprocess import MODEL_INPUT, RegionInputs

    dm = MaterialFolderDataModule(
        str(_folder(tmp_path / "folder")), train_fraction=0.5, val_fraction=0.0, num_workers=1
    )
    task = ZeroShotTask(model=TINY, crop_blur_sigma=2.0)
    arrived = []
    preprocess = task.preprocess
    monkeypatch.setattr(task, "preprocess", lambda b: arrived.append(sorted(b)) or preprocess(b))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(task, datamodule=dm, verbose=False)
    assert arrived and all(MODEL_INPUT in keys and "image" not in keys for keys in arrived)
    assert dm._eval_batch_transform is None  # taken back at teardown
    plain_batch = next(iter(dm.test_dataloader()))
    dm.set_eval_batch_transform(RegionInputs(task.preprocessor))
    batch = next(iter(dm.test_dataloader()))
    expected = task.preprocessor(plain_batch["image"], plain_batch["mask"])
    assert torch.equal(batch[MODEL_INPUT], expected)
    assert torch.equal(preprocess(batch), preprocess(plain_batch))
