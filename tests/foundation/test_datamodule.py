"""BaseDataModule: argument checks and the unpadded distributed sampler."""

from __future__ import annotations

import pytest

from matbench.datamodules.base import BaseDataModule, UnpaddedDistributedSampler, list_collate


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 7])
def test_unpadded_sampler_covers_every_sample_once(n: int, world: int) -> None:
    dataset = list(range(n))
    seen = []
    for rank in range(world):
        sampler = UnpaddedDistributedSampler(dataset, num_replicas=world, rank=rank)
        indices = list(sampler)
        assert indices == sorted(indices)
        assert len(indices) == sampler.num_samples
        assert len(sampler) == max(len(indices), 1)
        seen += indices
    assert sorted(seen) == list(range(n))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        BaseDataModule(batch_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        BaseDataModule(num_workers=-1)


def test_missing_stage_dataset_is_reported() -> None:
    with pytest.raises(RuntimeError, match="no test dataset"):
        BaseDataModule().test_dataloader()


def test_list_collate() -> None:
    batch = list_collate([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert batch == {"a": [1, 2], "b": ["x", "y"]}
