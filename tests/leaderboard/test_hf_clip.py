"""Hugging Face ``transformers`` CLIP models in the leaderboard: zero-shot and the linear probe
through matbench's CLIP towers, which equal ``CLIPModel``'s own projected features (a tiny
random-init model saved as a folder with a tokenizer, nothing downloaded)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from matbench.cli import main
from matbench.leaderboard.models import resolve_model, unsupported
from matbench.leaderboard.runner import load_records
from tests.data.fmd.data import make as make_fmd


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIPModel folder with OpenAI CLIP's tokenizer (built from open_clip's BPE
    file, the same vocabulary)."""
    from open_clip.tokenizer import SimpleTokenizer, default_bpe
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("hf-clip") / "tiny_clip"
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(k, k): v for k, v in SimpleTokenizer().encoder.items()}
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    CLIPTokenizer(vocab=vocab, merges=[tuple(line.split()) for line in lines]).save_pretrained(
        folder
    )
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={**tower, "num_attention_heads": 2, "max_position_embeddings": 32},
        vision_config={**tower, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    return folder


def _features(output: object) -> torch.Tensor:
    # transformers 5 returns the projected features as the output's pooler_output
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def test_towers_equal_clip_models_own_features(hf_clip: Path) -> None:
    from transformers import AutoTokenizer, CLIPModel

    from matbench.models.clip import MaterialCLIP

    ours = MaterialCLIP(f"hf:{hf_clip}", freeze_image=True, freeze_text=True).eval()
    clip = CLIPModel.from_pretrained(hf_clip).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_clip)
    images = torch.rand(2, 3, 32, 32)
    texts = ["a wooden chair", "glass"]
    assert tokenizer(["a wooden chair"]).input_ids[0] == [49406, 320, 9057, 4269, 49407]
    cfg = ours.image.visual.preprocess_cfg
    mean, std = (
        torch.tensor(cfg["mean"]).view(1, 3, 1, 1),
        torch.tensor(cfg["std"]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        expected_image = _features(clip.get_image_features(pixel_values=(images - mean) / std))
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        expected_text = _features(clip.get_text_features(**tokens))
        assert torch.allclose(ours.encode_image(images), F.normalize(expected_image), atol=1e-6)
        assert torch.allclose(ours.encode_text(texts), F.normalize(expected_text), atol=1e-6)
    assert ours.logit_scale_init == pytest.approx(float(clip.logit_scale))


def test_hf_clip_runs_zero_shot_and_the_probe(hf_clip: Path, tmp_path: Path) -> None:
    spec = resolve_model(str(hf_clip))
    assert spec.kind == "hf" and unsupported(spec, "zero_shot") is None
    assert "open_clip" in unsupported(spec, "dense")
    assert "no text tower" in unsupported(resolve_model("timm:test_vit@none"), "zero_shot")
    out = tmp_path / "board"
    fmd = make_fmd(tmp_path / "fmd", per_class=4)
    argv = ["leaderboard", "--models", str(hf_clip), "--benchmarks", "fmd", f"--root=fmd={fmd}"]
    assert main([*argv, "--out", str(out), "--num_workers", "0", "--probe_epochs", "1"]) == 0
    records = {r["protocol"]: r for r in load_records(out)}
    assert {p: r["status"] for p, r in records.items()} == {"zero_shot": "ok", "linear_probe": "ok"}
    zero_shot = records["zero_shot"]
    assert len(zero_shot["metrics"]["per_class_accuracy"]) == 10
    assert f"hf:{hf_clip}" in (out / zero_shot["config"]).read_text()
