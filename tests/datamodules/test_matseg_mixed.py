"""Mixed training on several scene roots (2D, 3D, released): per-root splits, weighted
draws, counts reported, DDP ranks partitioning the epoch's draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matbench.datamodules import MatSegDataModule
from matbench.datamodules.matseg import MixedRootSampler, MixedScenes
from matbench.datasets import MatSegScenes
from tests.data.matseg.data import make_scenes


def _roots(tmp_path: Path, n: int = 2) -> list[str]:
    roots = []
    for k in range(n):
        root = tmp_path / f"root{k}"
        make_scenes(root, seed=k)
        roots.append(str(root))
    return roots


def test_mixed_roots_split_report_and_sample(tmp_path: Path) -> None:
    roots = _roots(tmp_path)
    dm = MatSegDataModule(
        roots,
        root_weights=[3.0, 1.0],
        epoch_size=400,
        crop_size=24,
        val_size=20,
        val_fraction=0.5,
        batch_size=4,
        augment=False,
    )
    dm.setup("fit")
    assert isinstance(dm.train_dataset, MixedScenes) and len(dm.train_dataset) == 2
    assert dm.scene_counts == [
        {"root": roots[0], "train": 1, "val": 1, "weight": 3.0},
        {"root": roots[1], "train": 1, "val": 1, "weight": 1.0},
    ]
    assert dm.describe()["scenes"] == dm.scene_counts
    loader = dm.train_dataloader()
    sampler = loader.batch_sampler.sampler
    assert isinstance(sampler, MixedRootSampler) and len(sampler) == 400
    indices = list(sampler)
    counts = np.bincount(indices, minlength=2)
    assert counts.sum() == 400 and 270 <= counts[0] <= 330  # 3:1, binomial sd ~ 8.7
    assert list(sampler.counts) == list(counts)
    assert list(sampler) == indices  # a function of (seed, epoch)
    sampler.set_epoch(1)
    assert list(sampler) != indices
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 24, 24)
    assert all(k.split("/")[0] in ("0", "1") for k in batch["key"])
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[-2:] == (20, 20)


def test_mixed_sampler_ranks_partition_the_draws_and_zero_weight() -> None:
    one = list(MixedRootSampler([5, 3, 2], [1, 0, 1], 101, num_replicas=1, rank=0, seed=4))
    ranks = [list(MixedRootSampler([5, 3, 2], [1, 0, 1], 101, 2, r, 4)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 51
    # Rank r takes draws r, r + 2, ... of the same stream (102 = 101 padded to the world).
    assert ranks[0] == one[0::2] and ranks[1][:50] == one[1::2]
    assert not any(5 <= i < 8 for i in one)  # weight 0: root 1 never drawn
    with pytest.raises(ValueError, match="weights"):
        MixedRootSampler([5, 0], [1, 1], 10, 1, 0, 0)


def test_single_root_unchanged_and_bad_weights(tmp_path: Path) -> None:
    roots = _roots(tmp_path, 1)
    dm = MatSegDataModule(roots[0], crop_size=24, val_fraction=0.5)
    dm.setup("fit")
    assert type(dm.train_dataset) is MatSegScenes
    with pytest.raises(ValueError, match="root_weights has 1 values for 2 roots"):
        MatSegDataModule([roots[0], roots[0]], root_weights=[1.0])


def test_mixed_with_released_3d_scenes(shared_data: Path, tmp_path: Path) -> None:
    released = shared_data / "matseg" / "train_scenes"
    if not released.is_dir():
        pytest.skip("shared data not present")
    roots = [*_roots(tmp_path, 1), str(released)]
    dm = MatSegDataModule(roots, crop_size=32, val_fraction=0.5, batch_size=2, augment=False)
    dm.setup("fit")
    assert [c["train"] + c["val"] for c in dm.scene_counts] == [2, 2]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32)


@pytest.mark.slow
def test_train_mixed_config_fits_and_tests_with_counts_in_results(tmp_path: Path) -> None:
    from matbench.cli import main
    from tests.data.matseg.data import make_benchmark

    roots = _roots(tmp_path)
    bench = make_benchmark(tmp_path / "benchmark")
    config = Path(__file__).resolve().parents[2] / "configs" / "matseg" / "train_mixed.yaml"
    args = [
        "--config",
        str(config),
        "--model.backbone=tu-test_convnext",
        "--model.descriptor_dim=8",
        f"--data.root=[{roots[0]}, {roots[1]}]",
        "--data.root_weights=[1, 3]",
        f"--data.benchmark_root={bench}",
        "--data.min_size=32",
        "--data.max_size=32",
        "--data.val_size=32",
        "--data.val_fraction=0.5",
        "--data.batch_size=2",
        "--data.num_workers=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = main(["fit", *args, "--trainer.max_steps=2", "--trainer.val_check_interval=2"])
    sampler = cli.trainer.train_dataloader.batch_sampler.sampler
    assert isinstance(sampler, MixedRootSampler) and sampler.counts.sum() == 2
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    results = tmp_path / "results"
    main(["test", *args, f"--ckpt_path={ckpt}", f"--results_dir={results}"])
    import json

    record = json.loads(next(results.glob("*.json")).read_text())
    scenes = record["data"]["scenes"]
    assert [(s["root"], s["train"], s["val"], s["weight"]) for s in scenes] == [
        (roots[0], 1, 1, 1.0),
        (roots[1], 1, 1, 3.0),
    ]
