"""The LVIS-materials retrieval and FG-OVD material protocols end to end: a leaderboard sweep of
a tiny open_clip model (weights from a local file) on fake copies in the real layouts
(``tests/data``), its records' metrics checked against plain computations from the same
embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from matbench.cli import main
from matbench.leaderboard.models import resolve_model
from matbench.leaderboard.registry import get_benchmark
from matbench.leaderboard.runner import load_records
from tests.data.fgovd.data import make as make_fgovd
from tests.data.lvis_materials.data import make as make_lvis

TINY_CLIP = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One sweep over both benchmarks; the model, its records and roots."""
    import open_clip

    tmp = tmp_path_factory.mktemp("retrieval-fgovd")
    open_clip.add_model_config(TINY_CLIP)
    torch.manual_seed(0)
    clip = open_clip.create_model("tiny_clip").eval()
    weights = tmp / "tiny.pt"
    torch.save(clip.state_dict(), weights)
    roots = {
        "lvis": str(make_lvis(tmp / "lvis", num_train=4, num_val=30)),
        "fgovd": str(make_fgovd(tmp / "fgovd")),
    }
    model = f"open_clip:{TINY_CLIP}@{weights}"
    out = tmp / "board"
    argv = ["leaderboard", "--models", model, "--benchmarks", "lvis_materials,fgovd_material"]
    argv += [f"--root=lvis={roots['lvis']}", f"--root=fgovd={roots['fgovd']}"]
    assert main([*argv, "--out", str(out), "--num_workers", "0"]) == 0
    records = {r["key"]: r for r in load_records(out)}
    return {"clip": clip, "records": records, "roots": roots, "slug": resolve_model(model).slug}


def _recall_by_hand(image: torch.Tensor, text: torch.Tensor, captions: list[str]) -> dict:
    """Every object ranked against the split's distinct captions (one group: fewer than 64
    objects); recall@k = share whose own caption is among the k best, MRR by its rank."""
    distinct = list(dict.fromkeys(captions))
    candidates = torch.stack([text[captions.index(c)] for c in distinct])
    scores = image @ candidates.T
    ranks = []
    for row, caption in zip(scores, captions, strict=True):
        own = row[distinct.index(caption)]
        ranks.append(1 + int((row > own).sum()))
    n = len(ranks)
    out = {f"recall@{k}": sum(r <= k for r in ranks) / n for k in (1, 5, 10)}
    out["mrr"] = sum(1 / r for r in ranks) / n
    out["mcs"] = float((image * text).sum(1).mean())
    return out


def test_lvis_materials_retrieval_end_to_end(sweep: dict) -> None:
    from matbench.datamodules import LVISMaterialsDataModule

    record = sweep["records"][f"{sweep['slug']}__lvis_materials__retrieval"]
    assert record["status"] == "ok", record.get("error")
    metrics = record["metrics"]
    section = get_benchmark("lvis_materials").data_section(sweep["roots"])
    datamodule = LVISMaterialsDataModule(**section["init_args"])
    datamodule.setup("test")
    samples = [datamodule.test_dataset[i] for i in range(len(datamodule.test_dataset))]
    assert 5 <= len(samples) <= 64 and record["data"]["num_samples"] == len(samples)
    captions = [s["caption"] for s in samples]
    assert len(set(captions)) > 1

    # the same embeddings, computed plainly with open_clip
    import open_clip

    clip = sweep["clip"]
    cfg = clip.visual.preprocess_cfg
    images = torch.stack([s["image"] for s in samples])
    images = F.interpolate(images, size=(32, 32), mode="bilinear", antialias=True)
    mean, std = (
        torch.tensor(cfg["mean"]).view(1, 3, 1, 1),
        torch.tensor(cfg["std"]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        image = F.normalize(clip.encode_image((images - mean) / std), dim=-1).double()
        tokens = open_clip.get_tokenizer("tiny_clip")(captions)
        text = F.normalize(clip.encode_text(tokens), dim=-1).double()
    expected = _recall_by_hand(image, text, captions)
    for key, value in expected.items():
        assert metrics[f"all_{key}"] == pytest.approx(value, abs=1e-5), key
        assert metrics[f"g64_{key}"] == pytest.approx(value, abs=1e-5), key  # one group
    assert record["headline"] == "g64_recall@1"


def test_fgovd_material_caption_ranking_end_to_end(sweep: dict) -> None:
    record = sweep["records"][f"{sweep['slug']}__fgovd_material__zero_shot"]
    assert record["status"] == "ok", record.get("error")
    metrics = record["metrics"]
    assert record["headline"] == "accuracy" and 0.0 <= metrics["accuracy"] <= 1.0
    assert record["data"]["num_samples"] > 0  # images
    objects = metrics["count@1"]  # every object has a negative
    # the material benchmark mixes 3 to 10 negatives: fewer objects count at 10
    assert 0 < metrics["count@10"] < objects
    assert metrics["accuracy"] == metrics["accuracy@10"]
    for n in range(1, 11):
        assert 1.0 <= metrics[f"mean_rank@{n}"] <= n + 1
