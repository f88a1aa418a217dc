"""The feature cache: keys, hits and misses, invalidation, and identical results."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import matbench.datasets.folder as folder_module
from matbench.cache import FeatureCache, feature_collate
from matbench.datamodules.fmd import FMDDataModule
from matbench.datasets.fmd import FMD
from matbench.tasks.two_stream import TwoStreamTask
from tests.data.fmd.data import make as make_fmd

SIZE = 32


@pytest.fixture
def fmd_root(tmp_path: Path) -> Path:
    return make_fmd(tmp_path / "fmd", per_class=4)


def make_task(seed: int = 0, **kwargs) -> TwoStreamTask:
    """A tiny task; vision only unless ``streams`` says otherwise (MiniLM is slow to load)."""
    torch.manual_seed(seed)
    args = dict(num_classes=10, backbone="test_vit", image_size=SIZE, streams="vision")
    args.update(kwargs)
    return TwoStreamTask(**args)


def make_data(root: Path, **kwargs) -> FMDDataModule:
    args = dict(batch_size=4, image_size=SIZE, val_fraction=0.5)
    args.update(kwargs)
    return FMDDataModule(str(root), **args)


def trainer(tmp_path: Path, epochs: int = 3, devices: int = 1) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        default_root_dir=str(tmp_path / "run"),
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_cache_keys_change_with_model_and_sample(fmd_root: Path) -> None:
    fp = FMD(fmd_root, image_size=SIZE, split="train").fingerprint(0)
    a, b = FeatureCache("model-a"), FeatureCache("model-b")
    assert a.key(fp) == FeatureCache("model-a").key(dict(fp))
    assert a.key(fp) != b.key(fp)  # backbone / weights / text encoder
    assert FMD(fmd_root, image_size=48, split="train").fingerprint(0) != fp  # image size
    assert FMD(fmd_root, image_size=SIZE, split="test").fingerprint(0) != fp  # split
    assert FMD(fmd_root, image_size=SIZE, split="train", object_crop=True).fingerprint(0) != fp
    key = fp["key"]
    sidecar = fmd_root / "descriptions.json"
    sidecar.write_text(json.dumps({key: "rough and matte"}))
    assert FMD(fmd_root, image_size=SIZE, split="train", descriptions=sidecar).fingerprint(0) != fp
    mask_path = fmd_root / "mask" / key
    mask = np.asarray(Image.open(mask_path).convert("L")).copy()
    mask[:5] = 255
    Image.fromarray(mask).save(mask_path)
    assert FMD(fmd_root, image_size=SIZE, split="train").fingerprint(0) != fp  # mask content


def test_disk_entries_are_written_atomically(tmp_path: Path) -> None:
    cache = FeatureCache("m" * 64, directory=tmp_path / "c", memory=False)
    fp = {"dataset": "FMD", "split": "train", "key": "a/b.jpg", "detail": "x"}
    assert cache.get(fp) is None and cache.misses == 1
    cache.put(fp, torch.arange(4.0))
    path = cache.path(fp)
    assert path.parent.parts[-3:] == ("FMD", "train", "m" * 16)
    assert not list(path.parent.glob(".tmp-*"))
    assert torch.equal(FeatureCache("m" * 64, tmp_path / "c").get(fp), torch.arange(4.0))


def test_feature_collate_mixes_cached_and_fresh() -> None:
    base = {"label": torch.tensor(1), "key": "k", "index": 0, "description": "d"}
    fp = {"dataset": "D", "split": "s", "key": "k", "detail": "x"}
    fresh = {**base, "fingerprint": fp, "image": torch.zeros(3, 4, 4), "mask": torch.ones(4, 4)}
    cached = {**base, "fingerprint": fp, "features": torch.ones(5)}
    batch = feature_collate([cached, fresh, cached])
    assert batch["cached"].tolist() == [True, False, True]
    assert batch["features"].shape == (2, 5) and batch["image"].shape == (1, 3, 4, 4)
    plain = feature_collate([{**base, "image": torch.zeros(3, 4, 4)}])
    assert set(plain) == {"label", "key", "index", "description", "image"}


def test_hits_misses_and_no_decoding_after_the_first_epoch(
    fmd_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = folder_module.read_image
    monkeypatch.setattr(folder_module, "read_image", lambda p: calls.append(p) or real(p))
    task = make_task()
    data = make_data(fmd_root)
    trainer(tmp_path, epochs=3).fit(task, datamodule=data)
    n_train, n_val = len(data.train_dataset), len(data.val_dataset)
    assert (n_train, n_val) == (10, 10)
    assert task.cache.misses == n_train + n_val
    assert task.cache.hits == 2 * (n_train + n_val)
    assert len(calls) == n_train + n_val  # later epochs decode nothing
    assert task.cache_disabled_reason is None


def test_disk_cache_persists_and_a_changed_mask_is_a_miss(fmd_root: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "features"
    first = make_task(feature_cache="disk", cache_dir=str(cache_dir))
    trainer(tmp_path, epochs=1).fit(first, datamodule=make_data(fmd_root, num_workers=1))
    assert first.cache.misses == 20 and len(list(cache_dir.rglob("*.pt"))) == 20
    # a new task with the same frozen weights reads every entry from disk
    second = make_task(feature_cache="disk", cache_dir=str(cache_dir))
    data = make_data(fmd_root)
    trainer(tmp_path, epochs=1).fit(second, datamodule=data)
    assert second.cache.misses == 0 and second.cache.hits == 20
    # change one training mask: only that sample is recomputed
    key = data.splits["train"][0]
    mask_path = fmd_root / "mask" / key
    mask = np.asarray(Image.open(mask_path).convert("L")).copy()
    mask[:, : mask.shape[1] // 2] = 0
    Image.fromarray(mask).save(mask_path)
    third = make_task(feature_cache="disk", cache_dir=str(cache_dir))
    trainer(tmp_path, epochs=1).fit(third, datamodule=make_data(fmd_root))
    assert third.cache.misses == 1 and third.cache.hits == 19
    # another backbone (other weights) misses everything
    fourth = make_task(seed=5, feature_cache="disk", cache_dir=str(cache_dir))
    trainer(tmp_path, epochs=1).fit(fourth, datamodule=make_data(fmd_root))
    assert fourth.cache.misses == 20


def test_identical_logits_with_and_without_cache(fmd_root: Path, tmp_path: Path) -> None:
    cached = make_task(feature_cache="memory", streams="both", text_encoder="minilm")
    plain = copy.deepcopy(cached)  # the same weights, without loading MiniLM twice
    plain.hparams.feature_cache = "off"
    data = make_data(fmd_root)
    run = trainer(tmp_path)
    first = run.predict(cached, datamodule=data)
    second = run.predict(cached, datamodule=data)
    reference = run.predict(plain, datamodule=make_data(fmd_root))
    assert cached.cache.misses == 20 and cached.cache.hits == 20
    assert plain.cache is None and plain.cache_disabled_reason == "feature_cache is 'off'"
    for a, b, c in zip(first, second, reference, strict=True):
        assert a["key"] == c["key"]
        assert torch.equal(a["logits"], b["logits"])
        assert torch.allclose(a["logits"], c["logits"], atol=1e-6)
    # other frozen weights (e.g. a checkpoint loaded for test): a new cache, all misses
    old_cache = cached.cache
    with torch.no_grad():
        cached.model.vision.vit.patch_embed.proj.weight.mul_(2.0)
    changed = run.predict(cached, datamodule=data)
    assert cached.cache is not old_cache and cached.cache.misses == 20
    assert not torch.allclose(changed[0]["logits"], first[0]["logits"])


def test_cache_off_for_full_finetuning_and_augmented_training(
    fmd_root: Path, tmp_path: Path
) -> None:
    full = make_task(freeze_backbone=False)
    with pytest.warns(UserWarning, match="freeze_backbone=False"):
        trainer(tmp_path, epochs=1).fit(full, datamodule=make_data(fmd_root))
    assert full.cache is None and "freeze_backbone" in full.cache_disabled_reason
    augmented = make_task()
    data = make_data(fmd_root, augment=True)
    with pytest.warns(UserWarning, match="augmentation"):
        trainer(tmp_path, epochs=2).fit(augmented, datamodule=data)
    # the readers know nothing of the cache: the datamodule serves them through views
    assert not hasattr(data.train_dataset, "feature_cache")
    assert data.train_dataloader().dataset.cache is None
    assert data.val_dataloader().dataset.cache is augmented.cache
    assert data.val_dataloader().dataset.dataset is data.val_dataset
    # only validation samples are cached: 10 misses then 10 hits
    assert augmented.cache.misses == 10 and augmented.cache.hits == 10


@pytest.mark.ddp
def test_ddp_ranks_cache_their_own_samples_once(fmd_root: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "features"
    task = make_task(feature_cache="disk", cache_dir=str(cache_dir))
    run = trainer(tmp_path, epochs=1, devices=2)
    run.fit(task, datamodule=make_data(fmd_root))
    files = list(cache_dir.rglob("*.pt"))
    assert len(files) == 20  # 10 train + 10 val, each written once by the rank that saw it
    assert not list(cache_dir.rglob(".tmp-*"))
    single = make_task(feature_cache="disk", cache_dir=str(cache_dir))
    trainer(tmp_path, epochs=1).fit(single, datamodule=make_data(fmd_root))
    assert single.cache.misses == 0 and single.cache.hits == 20


def test_fit_checkpoints_carry_the_memory_cache(fmd_root: Path, tmp_path: Path) -> None:
    """A resumed fit reuses the checkpoint's features instead of recomputing them (which, in
    other batches, would differ in the last bits from an uninterrupted run's)."""
    first = make_task()
    trainer(tmp_path / "a", epochs=1).fit(first, datamodule=make_data(fmd_root))
    (last,) = (tmp_path / "a").rglob("last.ckpt")
    saved = torch.load(last, weights_only=True)["matbench_caches"]
    assert list(saved) == [f"features:{first.cache.model_id}"]
    packed = saved[f"features:{first.cache.model_id}"]
    assert len(packed["keys"]) == 20
    for key, row in zip(packed["keys"], packed["values"], strict=True):
        assert torch.equal(row, first.cache.entries[key])
    resumed = make_task()
    trainer(tmp_path / "b", epochs=2).fit(resumed, datamodule=make_data(fmd_root), ckpt_path=last)
    assert resumed.cache.misses == 0 and resumed.cache.hits == 20
    # a disk cache keeps itself: nothing in the checkpoint
    disk = make_task(feature_cache="disk", cache_dir=str(tmp_path / "features"))
    trainer(tmp_path / "c", epochs=1).fit(disk, datamodule=make_data(fmd_root))
    (last,) = (tmp_path / "c").rglob("last.ckpt")
    assert torch.load(last, weights_only=True)["matbench_caches"] == {}


@pytest.mark.ddp
def test_ddp_checkpoint_holds_every_ranks_features(fmd_root: Path, tmp_path: Path) -> None:
    task = make_task()
    run = trainer(tmp_path, epochs=1, devices=2)
    run.fit(task, datamodule=make_data(fmd_root))
    (last,) = (tmp_path / "run").rglob("last.ckpt")
    (packed,) = torch.load(last, weights_only=True)["matbench_caches"].values()
    assert len(packed["keys"]) == 20  # each rank computed half; the checkpoint has the union
