"""matbench.load and its small model API; predict on a folder of photos; save/load by the
Hugging Face conventions; a fine-tuned CLIP exported to a plain open_clip checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import matbench
import matbench.materials
from matbench.cli import main
from matbench.errors import ConfigError

TINY_CLIP = str(Path(__file__).resolve().parents[1] / "models" / "tiny_clip.json")


def _photos(folder: Path, n: int = 2, size: tuple[int, int] = (40, 48)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i}.png")
    return folder


def _save_checkpoint(task: torch.nn.Module, path: Path, class_names=None) -> Path:
    """What Lightning's checkpointing writes, with the task's own hook."""
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    if class_names:
        checkpoint["matbench_class_names"] = class_names
    torch.save({**checkpoint, "pytorch-lightning_version": "2.6.0"}, path)
    return path


@pytest.fixture
def clip_task():
    from matbench.tasks import ClipMaterialTask

    torch.manual_seed(0)
    task = ClipMaterialTask(model=TINY_CLIP, text_tower="open_clip")
    with torch.no_grad():  # "fine-tuned": differs from a fresh random init
        task.criterion.logit_scale.fill_(3.0)
    return task


def test_clip_api_ranks_materials_for_any_image_type(clip_task, tmp_path: Path) -> None:
    model = matbench.load(_save_checkpoint(clip_task, tmp_path / "clip.ckpt"))
    assert type(model.task).__name__ == "ClipMaterialTask" and not model.task.training
    array = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), dtype=bool)
    mask[10:30, 5:25] = True
    from_array = model.embed_region(array, mask)
    from_pil = model.embed_region(Image.fromarray(array), Image.fromarray(mask))
    from_tensor = model.embed_region(torch.from_numpy(array).permute(2, 0, 1) / 255.0, mask)
    assert from_array.shape == (32,) and torch.allclose(from_array.norm(), torch.tensor(1.0))
    assert torch.allclose(from_array, from_pil, atol=1e-6)
    assert torch.allclose(from_array, from_tensor, atol=1e-5)

    ranked = model.rank_materials(array, mask, top_k=5)
    names = [name for name, _ in ranked]
    assert len(ranked) == 5 and all(n in matbench.materials.material_names() for n in names)
    # the ranking is the cosine with each name's text embedding, highest first
    text = model.embed_text(names)
    assert [round(s, 5) for _, s in ranked] == [round(float(v), 5) for v in text @ from_array]
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert model.rank_materials(array, mask, vocabulary=["wood", "glass"], top_k=9)[0][0] in (
        "wood",
        "glass",
    )
    with pytest.raises(TypeError, match="MatSegTask"):
        model.descriptor_map(array)


def test_two_stream_classify_uses_stored_class_names(tmp_path: Path) -> None:
    from matbench.tasks import TwoStreamTask

    task = TwoStreamTask(
        num_classes=3, backbone="test_vit", image_size=32, text_encoder="minilm-random"
    )
    ckpt = _save_checkpoint(task, tmp_path / "ts.ckpt", class_names=["wood", "stone", "glass"])
    model = matbench.load(ckpt)
    probs = model.classify(np.zeros((50, 60, 3), np.uint8), np.ones((50, 60), bool))
    assert set(probs) == {"wood", "stone", "glass"}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert list(probs.values()) == sorted(probs.values(), reverse=True)

    # the same checkpoint through predict on a folder of photos
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    assert (
        main(["predict", "--images", str(photos), "--ckpt_path", str(ckpt), "--out", str(out)]) == 0
    )
    record = json.loads((out / "photo0.json").read_text())
    assert record["prediction"] in probs and set(record["probabilities"]) == set(probs)


def test_matseg_api_and_folder_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from matbench.tasks import MatSegTask
    from matbench.tasks.matseg import point_descriptors

    task = MatSegTask(backbone="tu-test_convnext", descriptor_dim=8)
    ckpt = _save_checkpoint(task, tmp_path / "ms.ckpt")
    model = matbench.load(ckpt)
    image = torch.rand(3, 40, 48)
    desc = model.descriptor_map(image)
    assert desc.shape == (8, 40, 48)
    sim = model.similarity(image, (12, 7), radius=3)
    anchor = point_descriptors(desc, torch.tensor([[12, 7, 3]]))[0]
    assert torch.allclose(sim, (desc * anchor[:, None, None]).sum(0), atol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        model.similarity(image, (100, 7))

    photos = _photos(tmp_path / "photos")
    points = tmp_path / "points.json"
    points.write_text(json.dumps({"photo0.png": [[5, 5], [30, 20]]}))
    out = tmp_path / "out"
    argv = ["predict", "--images", str(photos), "--ckpt_path", str(ckpt), "--points", str(points)]
    assert main([*argv, "--out", str(out)]) == 0
    assert f"predictions:      {out}" in capsys.readouterr().out
    for name in ("photo0_point0.png", "photo0_point1.png"):
        assert Image.open(out / name).size == (48, 40)
    assert np.load(out / "photo1_descriptors.npz")["descriptors"].shape == (8, 40, 48)


def test_save_pretrained_round_trip(tmp_path: Path) -> None:
    from matbench.tasks import TwoStreamTask

    task = TwoStreamTask(
        num_classes=3, backbone="test_vit", image_size=32, text_encoder="minilm-random"
    )
    task.class_names = ["a", "b", "c"]
    folder = tmp_path / "hub"
    task.save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "matbench.json",
    }
    assert json.loads((folder / "config.json").read_text())["num_classes"] == 3
    loaded = TwoStreamTask.from_pretrained(str(folder))
    for key, value in task.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    model = matbench.load(folder)
    assert model.class_names == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="matbench.json"):
        matbench.load(tmp_path)


def test_export_fine_tuned_clip_to_open_clip(clip_task, tmp_path: Path) -> None:
    import open_clip

    ckpt = _save_checkpoint(clip_task, tmp_path / "clip.ckpt")
    target = tmp_path / "tiny_clip_ft.pt"
    assert (
        main(["export", str(ckpt), "--open_clip", str(target), "--out", str(tmp_path / "hf")]) == 0
    )
    plain = open_clip.create_model("tiny_clip", pretrained=str(target)).eval()
    images = torch.rand(2, 3, 32, 32)
    ours = clip_task.eval().model
    mean, std = ours.image.mean, ours.image.std
    expected = torch.nn.functional.normalize(plain.encode_image((images - mean) / std), dim=-1)
    assert torch.allclose(ours.encode_image(images), expected, atol=1e-5)
    tokens = open_clip.get_tokenizer("tiny_clip")(["wood", "brushed steel"])
    text = torch.nn.functional.normalize(plain.encode_text(tokens), dim=-1)
    assert torch.allclose(ours.encode_text(["wood", "brushed steel"]), text, atol=1e-5)
    assert plain.logit_scale.item() == pytest.approx(3.0)
    assert matbench.load(tmp_path / "hf").task.hparams.model == TINY_CLIP


def test_export_refuses_what_open_clip_cannot_hold(tmp_path: Path) -> None:
    from matbench.tasks import ClipMaterialTask

    task = ClipMaterialTask(model=TINY_CLIP, text_tower="minilm-random")
    with pytest.raises(ConfigError, match="open_clip's own text tower"):
        task.export_open_clip(tmp_path / "x.pt")


def test_export_pushes_to_the_hub_and_loads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`matbench export --push_to_hub` against a Hub on 127.0.0.1 (create repo, preupload,
    LFS batch/PUT/verify for the weights, commit), then `from_pretrained` of the repo id."""
    import hashlib

    import huggingface_hub.constants as constants

    from matbench.tasks import TwoStreamTask
    from tests.core.hub_server import FakeHub

    torch.manual_seed(0)
    task = TwoStreamTask(
        num_classes=3, backbone="test_vit", image_size=32, text_encoder="minilm-random"
    )
    ckpt = _save_checkpoint(task, tmp_path / "two.ckpt", class_names=["a", "b", "c"])
    local = tmp_path / "local"
    assert main(["export", str(ckpt), "--out", str(local)]) == 0

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the Git LFS upload protocol
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub(token="hf_secret") as hub:
        # what HF_ENDPOINT=<url> sets when huggingface_hub is imported
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        argv = ["export", str(ckpt), "--push_to_hub", "me/two-stream", "--private"]
        with pytest.raises(SystemExit) as done:  # no token: one line, nothing sent
            main(argv)
        assert done.value.code == 2 and hub.requests == []
        assert "error: no Hugging Face token to push with" in capsys.readouterr().err

        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        assert main(argv) == 0
        repo = hub.repos["me/two-stream"]
        assert repo.private and len(repo.commits) == 1
        assert {"model.safetensors", "config.json", "matbench.json"} <= set(repo.files)
        for name in ("model.safetensors", "config.json", "matbench.json"):
            assert repo.files[name] == (local / name).read_bytes(), name
        weights_oid = hashlib.sha256(repo.files["model.safetensors"]).hexdigest()
        assert ("PUT", f"/lfs-storage/{weights_oid}") in hub.requests  # LFS, not base64
        assert f"pushed:           {hub.url}/me/two-stream/commit/" in capsys.readouterr().out

        loaded = TwoStreamTask.from_pretrained("me/two-stream", token="hf_secret")
        assert loaded.class_names == ["a", "b", "c"]
        for key, value in task.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), key
