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


def test_class_and_dataloader_names_are_declared_once() -> None:
    import lightning as L

    from matbench.datamodules import (
        CrossDatasetDataModule,
        DMSDataModule,
        FMDDataModule,
        LVISMaterialsDataModule,
        MaterialFolderDataModule,
        MatSegDataModule,
        StreamingDataModule,
    )
    from matbench.tasks.base import datamodule_class_names, datamodule_dataloader_names

    base = BaseDataModule()
    assert base.class_names is None and base.dataloader_names is None
    # one behaviour: a property of the class, never an attribute set somewhere in setup()
    for cls in (
        BaseDataModule,
        CrossDatasetDataModule,
        DMSDataModule,
        FMDDataModule,
        LVISMaterialsDataModule,
        MaterialFolderDataModule,
        MatSegDataModule,
        StreamingDataModule,
    ):
        assert isinstance(cls.class_names, property), cls
        assert isinstance(cls.dataloader_names, property), cls
    with pytest.raises(AttributeError):
        base.class_names = ["a"]  # a subclass overrides the property instead

    class Named(BaseDataModule):
        @property
        def class_names(self) -> list[str]:
            return ["glass", 7]

    assert datamodule_class_names(Named()) == ["glass", "7"]
    assert datamodule_class_names(None) is None
    assert datamodule_dataloader_names(Named()) is None
    # a plain LightningDataModule that declares nothing has no classes (no getattr default
    # hiding a misspelt name in the tasks: they all read through these two functions)
    plain = L.LightningDataModule()
    plain.class_names_typo = ["x"]
    assert datamodule_class_names(plain) is None
