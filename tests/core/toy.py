"""A toy task and datamodule, only for testing the task/datamodule/CLI machinery."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import Metric

from matbench.datamodules.base import BaseDataModule
from matbench.tasks.base import BaseTask


class IndexDataset(Dataset):
    """``n`` samples: a fixed random vector, a label, and the sample's index."""

    def __init__(
        self, n: int, dim: int = 4, seed: int = 0, noise: float = 0.0, group: int = 1
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=gen)
        self.y = (self.x[:, 0] > 0).long()
        self.noise = noise
        self.group = group

    def sample_groups(self) -> torch.Tensor:
        """Consecutive runs of ``group`` samples share an "image"."""
        return torch.arange(len(self.x)) // self.group

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int | list[int]) -> dict | list[dict]:
        if isinstance(i, list):  # a whole batch (ImageBatchSampler)
            return [self[j] for j in i]
        x = self.x[i]
        if self.noise:  # a random augmentation drawn from the global RNG
            x = x + self.noise * torch.randn_like(x)
        return {"image": x, "label": self.y[i], "index": i}


class ToyDataModule(BaseDataModule):
    """Toy data.

    Args:
        num_samples: Samples per split.
        batch_size: Samples per batch.
        num_workers: Loader workers.
        noise: Standard deviation of random noise added to training samples.
        group: Training samples come in "images" of this many (> 1: grouped batches).
        image_batches: Training batches cut only between "images" (``ImageBatchSampler``).
    """

    def __init__(
        self,
        num_samples: int = 11,
        batch_size: int = 4,
        num_workers: int = 0,
        noise: float = 0.0,
        group: int = 1,
        image_batches: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.group_by_image = group > 1
        self.image_batches = image_batches

    def setup(self, stage: str | None = None) -> None:
        n = self.hparams.num_samples
        self.train_dataset = IndexDataset(
            n, seed=0, noise=self.hparams.noise, group=self.hparams.group
        )
        self.val_dataset = IndexDataset(n, seed=1)
        self.test_dataset = IndexDataset(n, seed=2)
        self.predict_dataset = self.test_dataset


class SeenIndices(Metric):
    """Counts samples and sums their indices and labels: exposes duplicates or losses."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("index_sum", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("correct", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, index: torch.Tensor, correct: torch.Tensor) -> None:
        self.count += index.numel()
        self.index_sum += index.sum()
        self.correct += correct.sum()

    def compute(self) -> dict:
        return {
            "count": self.count,
            "index_sum": self.index_sum,
            "accuracy": self.correct / self.count.clamp_min(1),
            "per_sample": [1.0, 2.0],
        }


class ToyTask(BaseTask):
    """A linear classifier.

    Args:
        hidden: Hidden width.
        lr: Learning rate.
    """

    def __init__(self, hidden: int = 8, lr: float = 0.05) -> None:
        super().__init__()

    def configure_models(self) -> None:
        self.net = nn.Sequential(
            nn.Linear(4, self.hparams.hidden), nn.ReLU(), nn.Linear(self.hparams.hidden, 2)
        )

    def build_metric(self, stage: str) -> Metric:
        return SeenIndices()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])
        self.log("train/loss", loss)
        return loss

    def _eval(self, stage: str, batch: dict, dataloader_idx: int) -> None:
        logits = self.net(batch["image"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        self.log_eval_loss(stage, loss, logits.shape[0])
        correct = (logits.argmax(1) == batch["label"]).float()
        self.eval_metric(stage, dataloader_idx).update(batch["index"], correct)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval("val", batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval("test", batch, dataloader_idx)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self.net(batch["image"]).argmax(1)
