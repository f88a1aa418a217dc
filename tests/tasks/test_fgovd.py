"""FineGrainedMatchingTask end to end on fake FG-OVD: scores against open_clip's own
encoders and FG-CLIP's scoring, text encoded once per sentence, checkpoints, training."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from matbench.cli import main
from matbench.datamodules import FGOVDDataModule
from matbench.models.clip import OPENAI_MEAN, OPENAI_STD
from matbench.tasks import FineGrainedMatchingTask
from tests.data.fgovd.data import make
from tests.metrics.test_ranking import fgclip_get_ranks
from tests.models.test_reprojection import fgclip_mlps_scores, fgclip_state

TINY = str(Path(__file__).resolve().parents[1] / "models" / "tiny_clip.json")
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "clip"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("fgovd"))


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kwargs,
    )


def _reference_scores(task: FineGrainedMatchingTask, dm: FGOVDDataModule, fgclip_state=None):
    """Per object, FG-OVD's scores from a fresh open_clip model holding the task's weights:
    ``F.cosine_similarity(encode_image, encode_text)``, or FG-CLIP's scoring of the raw
    features with its ``MLPs`` state."""
    import open_clip

    clip = open_clip.create_model("tiny_clip")
    clip.visual.load_state_dict(task.model.image.visual.state_dict())
    text_state = task.model.text.clip.state_dict()
    missing, unexpected = clip.load_state_dict(text_state, strict=False)
    # the logit scale lives in the task's loss, not in the text tower
    assert not unexpected and all(k.startswith("visual.") or k == "logit_scale" for k in missing)
    clip.eval()
    tokenizer = open_clip.get_tokenizer("tiny_clip")
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    dataset = dm.test_dataset.objects
    rows = []
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            image = clip.encode_image((sample["image"][None] - mean) / std)
            text = clip.encode_text(tokenizer(sample["candidates"]))
            if fgclip_state is None:
                scores = F.cosine_similarity(image.expand_as(text), text, dim=1)
            else:
                scores = fgclip_mlps_scores(fgclip_state, image.expand_as(text), text, True)
            rows.append(scores.tolist())
    return rows


@pytest.mark.parametrize("reproject", ["none", "fgclip"])
def test_test_equals_fgovd_protocol_on_open_clip(
    root: Path, tmp_path: Path, reproject: str
) -> None:
    """``trainer.test`` = FG-CLIP's get_ranks on FG-OVD's scores from open_clip itself."""
    state = None
    kwargs = {}
    if reproject == "fgclip":
        state = fgclip_state(32, True, True, seed=3)
        torch.save(state, tmp_path / "fg-ovd_linear-mlp.pt")
        kwargs = {"reprojection_weights": str(tmp_path / "fg-ovd_linear-mlp.pt")}
    torch.manual_seed(0)
    task = FineGrainedMatchingTask(model=TINY, reproject=reproject, **kwargs)
    dm = FGOVDDataModule(root=str(root), benchmark="material", image_size=32, eval_batch_size=2)
    encoded: list[str] = []
    text_forward = task.model.text.forward
    task.model.text.forward = lambda texts: encoded.extend(texts) or text_forward(texts)
    (logged,) = _trainer().test(task, datamodule=dm, verbose=False)
    got = task.results["test"][0]
    # every distinct sentence encoded exactly once
    assert sorted(encoded) == sorted(set(dm.test_dataset.objects.sentences))
    expected = fgclip_get_ranks(_reference_scores(task, dm, state))
    for n, ref in expected.items():
        assert got[f"count@{n}"] == ref["count"]
        if ref["count"] > 1:
            assert got[f"mean_rank@{n}"] == pytest.approx(ref["medium"], abs=1e-9)
            assert got[f"median_rank@{n}"] == ref["median"]
    assert logged["test/mean_rank"] == pytest.approx(got["mean_rank@10"])


def test_clip_task_checkpoint_and_errors(root: Path, tmp_path: Path) -> None:
    from matbench.tasks import ClipMaterialTask

    clip_task = ClipMaterialTask(model=TINY)
    path = tmp_path / "clip.ckpt"
    torch.save({"state_dict": clip_task.state_dict()}, path)
    task = FineGrainedMatchingTask(model=TINY, checkpoint=str(path))
    for key, value in clip_task.model.state_dict().items():
        torch.testing.assert_close(task.model.state_dict()[key], value)
    with pytest.raises(ValueError, match="nothing to train"):
        task.configure_optimizers()
    with pytest.raises(ValueError, match="reproject='fgclip'"):
        FineGrainedMatchingTask(model=TINY, reprojection_weights=str(path))
    with pytest.raises(ValueError, match="needs 'candidates'"):
        FineGrainedMatchingTask(model=TINY, reproject="fgclip").training_step(
            {"image": torch.rand(2, 3, 32, 32), "caption": ["a", "b"]}, 0
        )


def test_caption_triplet_trains_on_any_captioned_batch() -> None:
    torch.manual_seed(0)
    task = FineGrainedMatchingTask(model=TINY, reproject="linear", loss="captions", lr=1e-2)
    batch = {"image": torch.rand(4, 3, 32, 32), "caption": ["wood", "metal", "glass", "stone"]}
    optimizer = task.configure_optimizers()
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable == {"model.reprojection.image.weight", "model.reprojection.text.weight"}
    losses = []
    for _ in range(5):
        loss = task.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_cli_fit_then_test_with_fgclip_reprojection(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    common = [
        f"--model.model={TINY}",
        "--model.weights=null",
        f"--data.root={root}",
        "--data.image_size=32",
        "--data.num_workers=0",
        "--data.eval_batch_size=2",
        "--trainer.enable_progress_bar=false",
    ]
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "fgovd_fgclip_train.yaml"),
            *common,
            "--data.batch_size=4",
            "--trainer.max_epochs=2",
            "--model.lr=1e-2",
        ]
    )
    (ckpt,) = sorted(Path("logs").glob("clip/fgovd_fgclip_train/*/checkpoints/last.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    torch.manual_seed(123)  # the config's seed_everything: the fit's initial weights
    start = FineGrainedMatchingTask(model=TINY, reproject="fgclip").state_dict()
    assert not torch.allclose(state["fgclip.image.weight"], start["fgclip.image.weight"])
    for key in ("model.image.visual.conv1.weight", "model.text.clip.token_embedding.weight"):
        torch.testing.assert_close(state[key], start[key])  # the towers are frozen

    main(
        [
            "predict",
            "--config",
            str(CONFIGS / "fgovd_fgclip_train.yaml"),
            *common,
            f"--ckpt_path={ckpt}",
            "--trainer.default_root_dir=out",
        ]
    )
    data = np.load(ckpt.parents[1] / "predict" / "embeddings.npz", allow_pickle=False)
    hard = FGOVDDataModule(root=str(root), benchmark="1_attributes")
    hard.setup("predict")
    objects = hard.predict_dataset.objects.objects
    assert data["index"].tolist() == list(range(len(objects)))
    assert data["keys"].tolist() == [str(o["id"]) for o in objects]
    assert np.allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, atol=1e-5)

    main(
        [
            "test",
            "--config",
            str(CONFIGS / "fgovd_material.yaml"),
            *common,
            "--model.reproject=fgclip",
            f"--ckpt_path={ckpt}",
            "--results_dir=results",
        ]
    )
    (result,) = sorted(Path("results").glob("*FineGrainedMatchingTask*.json"))
    record = json.loads(result.read_text())
    assert record["data"]["split"] == "benchmarks/material"
    metrics = record["metrics"]
    assert metrics["count@1"] == 12 and metrics["count@10"] == 4
    assert 1.0 <= metrics["mean_rank@10"] <= 11.0
