"""ClipMaterialTask evaluation: retrieval metrics of a perfect and of a constant model,
through the task's own test loop (both protocols: groups of 64 and the whole vocabulary)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from matbench.tasks.clip import ClipMaterialTask

TINY = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")
NAMES = [f"material{i}" for i in range(12)]


def _samples() -> list[dict]:
    # 64 samples over 12 captions, then 36 over only 3: the two protocols then differ.
    labels = [i % 12 for i in range(64)] + [i % 3 for i in range(36)]
    return [
        {"image": torch.full((3, 4, 4), float(c)), "caption": NAMES[c], "index": i, "key": str(i)}
        for i, c in enumerate(labels)
    ]


def _run(task: ClipMaterialTask) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.test(task, dataloaders=DataLoader(_samples(), batch_size=16), verbose=False)
    return task.results["test"][0]


def _harmonic(n: int) -> float:
    return sum(1.0 / k for k in range(1, n + 1))


@pytest.fixture(scope="module")
def task() -> ClipMaterialTask:
    # consecutive groups: the analytic values below depend on which samples share a group
    return ClipMaterialTask(model=TINY, text_tower="open_clip", group_order="dataset")


def test_perfect_model_scores_one(task: ClipMaterialTask, monkeypatch: pytest.MonkeyPatch) -> None:
    def image(images: torch.Tensor, context=None) -> torch.Tensor:
        return F.one_hot(images[:, 0, 0, 0].long(), 12).float()

    def text(texts: list[str]) -> torch.Tensor:
        return F.one_hot(torch.tensor([NAMES.index(t) for t in texts]), 12).float()

    monkeypatch.setattr(task.model, "encode_image", image)
    monkeypatch.setattr(task.model, "encode_text", text)
    metrics = _run(task)
    for protocol in ("g64", "all"):
        for key in ("mcs", "mrr", "recall@1", "recall@5", "recall@10"):
            assert metrics[f"{protocol}_{key}"] == pytest.approx(1.0), f"{protocol}_{key}"


def test_constant_model_matches_analytic_value(
    task: ClipMaterialTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.6, 0.8])
    monkeypatch.setattr(
        task.model, "encode_image", lambda images, context=None: a.expand(len(images), 2)
    )
    monkeypatch.setattr(task.model, "encode_text", lambda texts: b.expand(len(texts), 2))
    metrics = _run(task)
    # Every candidate ties: the true caption's rank is uniform over the K unique captions.
    assert metrics["all_mcs"] == pytest.approx(0.6) and metrics["g64_mcs"] == pytest.approx(0.6)
    assert metrics["all_mrr"] == pytest.approx(_harmonic(12) / 12)
    for k in (1, 5, 10):
        assert metrics[f"all_recall@{k}"] == pytest.approx(min(k, 12) / 12)
    assert metrics["g64_mrr"] == pytest.approx(
        (64 * _harmonic(12) / 12 + 36 * _harmonic(3) / 3) / 100
    )
    for k in (1, 5, 10):
        expected = (64 * min(k, 12) / 12 + 36 * min(k, 3) / 3) / 100
        assert metrics[f"g64_recall@{k}"] == pytest.approx(expected)


def test_training_step_and_optimizer(task: ClipMaterialTask) -> None:
    batch = {
        "image": torch.rand(4, 3, 32, 32),
        "caption": ["wood", "metal", "wood", "glass"],
        "index": torch.arange(4),
    }
    fresh = ClipMaterialTask(model=TINY, loss="siglip", learn_temperature=False, freeze_text=True)
    loss = fresh.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert fresh.model.image.visual.proj.grad is not None
    assert fresh.criterion.logit_scale.grad is None
    optimizer = fresh.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer  # + schedule
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert n_params == sum(p.requires_grad for p in fresh.parameters())
    locked = ClipMaterialTask(
        model=TINY, freeze_image=True, freeze_text=True, learn_temperature=False
    )
    with pytest.raises(ValueError, match="no trainable parameters"):
        locked.configure_optimizers()


def _checkpoint(config: Path, path: Path, scale: float, bias: float | None = None) -> str:
    import open_clip

    open_clip.add_model_config(config)
    clip = open_clip.create_model(config.stem)
    clip.logit_scale.data.fill_(math.log(scale))
    if bias is not None:
        clip.logit_bias.data.fill_(bias)
    torch.save(clip.state_dict(), path)
    return str(path)


def test_fine_tuning_starts_from_the_models_own_temperature(tmp_path: Path) -> None:
    """A pretrained model's own logit scale (and SigLIP bias) is the starting point; an explicit
    temperature overrides it; the protocol says which was used."""
    weights = _checkpoint(Path(TINY), tmp_path / "clip.pt", scale=50.0)
    task = ClipMaterialTask(model=TINY, weights=weights, text_tower="open_clip")
    assert task.criterion.scale.item() == pytest.approx(50.0)
    assert task.protocol()["temperature_source"] == "model"
    assert task.protocol()["initial_temperature"] == pytest.approx(1 / 50)
    # The scale lives only in the loss: the kept open_clip text model has none left over.
    assert not [n for n, _ in task.model.named_parameters() if "logit" in n]
    # Checkpoints written while the text model still held it load (the stale copy is dropped).
    checkpoint = {
        "state_dict": {**task.state_dict(), "model.text.clip.logit_scale": torch.ones(())}
    }
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"])
    explicit = ClipMaterialTask(model=TINY, weights=weights, temperature=0.07)
    assert explicit.criterion.scale.item() == pytest.approx(1 / 0.07)
    assert explicit.protocol()["temperature_source"] == "config"
    # A new text tower (MiniLM projection) or a sigmoid loss on a softmax model: defaults.
    for kwargs in ({"text_tower": "minilm-random"}, {"loss": "siglip"}):
        other = ClipMaterialTask(model=TINY, weights=weights, **kwargs)
        assert other.protocol()["temperature_source"] == "default"
        assert other.criterion.temperature == pytest.approx(
            0.1 if kwargs.get("loss") == "siglip" else 0.07
        )

    siglip_config = tmp_path / "tiny_sigmoid.json"
    config = json.loads(Path(TINY).read_text())
    siglip_config.write_text(json.dumps({**config, "init_logit_bias": -10.0}))
    weights = _checkpoint(siglip_config, tmp_path / "sigmoid.pt", scale=20.0, bias=-7.0)
    task = ClipMaterialTask(model=str(siglip_config), weights=weights, loss="siglip")
    assert task.criterion.scale.item() == pytest.approx(20.0)
    assert task.criterion.logit_bias.item() == pytest.approx(-7.0)
    assert task.protocol()["logit_bias"] == pytest.approx(-7.0)


def test_groups_are_seeded_random_batches_by_default() -> None:
    """The talk's "batch of 64" is random batches: g64 groups are seeded shuffled groups unless
    ``group_order: dataset``; the protocol records which."""
    task = ClipMaterialTask(model=TINY)
    metric = task.build_metric("test")["g64"]
    assert (metric.group_order, metric.seed) == ("shuffled", 0)
    assert task.protocol()["group_order"] == "shuffled"
    ordered = ClipMaterialTask(model=TINY, group_order="dataset", group_seed=3)
    assert ordered.build_metric("test")["g64"].group_order == "dataset"
    assert ordered.protocol()["group_seed"] == 3
