"""Datamodules: splits, transforms and loaders, one per dataset."""

from matbench.datamodules.base import BaseDataModule, list_collate

__all__ = ["BaseDataModule", "list_collate"]
