"""BaseDataModule: argument checks and the unpadded distributed sampler."""

from __future__ import annotations

import pytest
import torch

from matbench.datamodules.base import (
    BaseDataModule,
    EpochSeededSampler,
    UnpaddedDistributedSampler,
    list_collate,
)


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


def _seed(sampler: EpochSeededSampler) -> int:
    return int(torch.empty((), dtype=torch.int64).random_(generator=sampler.generator))


def test_epoch_seeded_sampler_depends_on_seed_epoch_and_rank_only() -> None:
    data = list(range(10))
    a = EpochSeededSampler(data, num_replicas=2, rank=0, seed=3)
    first = (list(a), _seed(a))
    _seed(a)  # an extra iterator, as Lightning creates when it resumes
    a.set_epoch(1)
    second = (list(a), _seed(a))
    b = EpochSeededSampler(data, num_replicas=2, rank=0, seed=3)
    b.set_epoch(1)
    assert (list(b), _seed(b)) == second != first
    b.set_epoch(0)
    assert (list(b), _seed(b)) == first
    other_rank = EpochSeededSampler(data, num_replicas=2, rank=1, seed=3)
    assert _seed(other_rank) != first[1]


class _Ten(BaseDataModule):
    def setup(self, stage: str | None = None) -> None:
        self.train_dataset = self.val_dataset = [torch.tensor(float(i)) for i in range(10)]


@pytest.mark.parametrize("stage", ["train", "val"])
def test_loader_iterators_leave_the_global_rng_alone(stage: str) -> None:
    dm = _Ten(batch_size=4)
    dm.setup()
    loader = getattr(dm, f"{stage}_dataloader")()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    iter(loader)
    iter(loader)
    assert torch.equal(torch.rand(3), expected)


def test_training_workers_are_restarted_each_epoch() -> None:
    dm = _Ten(batch_size=4, num_workers=1)
    dm.setup()
    assert not dm.train_dataloader().persistent_workers
    assert dm.val_dataloader().persistent_workers
