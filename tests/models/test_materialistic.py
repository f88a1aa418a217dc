"""Materialistic behind the prompted-segmenter interface: key layout, loading, formulas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from matbench.cli import main
from matbench.models.materialistic import MaterialisticNet, _CrossAttention
from matbench.models.prompted import build_prompted_segmenter
from tests.data.matseg.data import make as make_matseg

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = {
    "image_size": 64,
    "pretrain_size": 32,
    "embed_dim": 32,
    "depth": 4,
    "vit_heads": 2,
    "channels": 16,
    "attention_heads": 4,
}
#: Keys and shapes of the released checkpoint (authors' ``Transformer``, ``net.`` stripped).
OFFICIAL_SHAPES = {
    "dino_model.pos_embed": (1, 785, 768),
    "dino_model.patch_embed.proj.weight": (768, 3, 8, 8),
    "dino_model.blocks.11.attn.qkv.weight": (2304, 768),
    "dino_model.norm.weight": (768,),
    "spatial_transform_1.0.project.0.weight": (768, 1536),
    "spatial_transform_4.2.weight": (256, 768, 1, 1),
    "cross_attention_2.get_reference_embedding.reference_feature_extractor.0.weight": (512, 258),
    "cross_attention_3.query.weight": (256, 256),
    "cross_attention_4.out_norm.bias": (256,),
    "fusion_1.resConfUnit1.conv1.bias": (256,),
    "fusion_4.resConfUnit2.conv2.weight": (256, 256, 3, 3),
    "fusion_2.layer_norm_1.weight": (256,),
    "fusion_3.out_conv.weight": (256, 256, 1, 1),
    "out_conv.6.weight": (1, 128),
}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("materialistic") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def test_released_key_layout() -> None:
    with torch.device("meta"):
        state = MaterialisticNet().state_dict()
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("fusion_4.resConfUnit1.conv2.bias" in k for k in state)  # bias=False there
    assert "dino_model.head.weight" not in state


def test_cross_attention_follows_the_official_formulas() -> None:
    torch.manual_seed(0)
    layer = _CrossAttention(8, heads=2, stride=4).eval()
    grid = torch.randn(1, 8, 4, 4)
    row, col = torch.tensor([9]), torch.tensor([6])
    with torch.no_grad():
        got = layer(grid, row, col)
        # official: LayerNorm over tokens; reference = MLP(embedding at (row//s, col//s) ⊕ the
        # position inside the patch, (p - (p//s*s + (s-1)/2)) / ((s-1)/2 + 1e-4))
        tokens = layer.LayerNorm(grid.flatten(2).transpose(1, 2))[0]  # (16, 8)
        patch = tokens.view(4, 4, 8)[9 // 4, 6 // 4]
        local = torch.tensor([(9 - (8 + 1.5)) / 1.5001, (6 - (4 + 1.5)) / 1.5001])
        ref = layer.get_reference_embedding.reference_feature_extractor(torch.cat([patch, local]))
        q, k, v = layer.query(ref), layer.key(tokens), layer.value(tokens)
        out = torch.zeros(16, 8)
        for h in range(2):
            sl = slice(4 * h, 4 * h + 4)
            weight = torch.sigmoid(k[:, sl] @ q[sl] * 4**-0.5)  # sigmoid, not softmax
            out[:, sl] = weight[:, None] * v[:, sl]
        expected = layer.out_norm(layer.out(out)).T.reshape(1, 8, 4, 4)
    assert torch.allclose(got, expected, atol=1e-5)


def test_checkpoint_formats_and_wrong_files(tiny_config: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = MaterialisticNet(TINY)
    state = net.state_dict()
    ckpt = tmp_path / "materialistic.ckpt"  # Lightning: {"state_dict": {"net.<key>": ...}}
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}}, ckpt)
    pth = tmp_path / "model.pth"  # DataParallel: {"module.<key>": ...}
    torch.save({f"module.{k}": v for k, v in state.items()}, pth)
    for path in (ckpt, pth):
        segmenter = build_prompted_segmenter("materialistic", str(path), str(tiny_config))
        loaded = segmenter.net.state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if "fusion" not in k}, partial)
    with pytest.raises(ValueError, match="partial.pth.*missing"):
        build_prompted_segmenter("materialistic", str(partial), str(tiny_config))
    wider = tmp_path / "wider.json"
    wider.write_text(json.dumps({**TINY, "channels": 32, "attention_heads": 8}))
    with pytest.raises(ValueError, match="model.pth.*shape mismatch"):
        build_prompted_segmenter("materialistic", str(pth), str(wider))
    with pytest.raises(ValueError, match="one query point"):
        segmenter(torch.rand(3, 20, 20), torch.zeros(2, 2, 2), torch.ones(2, 2).long())


def test_materialistic_on_the_benchmark_through_the_cli(tiny_config: Path, tmp_path: Path) -> None:
    bench = make_matseg(tmp_path / "data") / "benchmark"
    cli = main(
        ["test", "--config", str(CONFIGS / "matseg/materialistic.yaml"),
         f"--data.root={bench}", "--model.weights=null", f"--model.config={tiny_config}",
         f"--results_dir={tmp_path / 'results'}", f"--trainer.default_root_dir={tmp_path}",
         "--trainer.accelerator=cpu"]
    )  # fmt: skip
    metrics = cli.model.results["test"][0]
    assert metrics["all_num_images"] == 2 and 0 <= metrics["all_by_point"] <= 1
    assert cli.model.model_name == "materialistic 1pt"
