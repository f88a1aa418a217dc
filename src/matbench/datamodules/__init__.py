"""Datamodules: splits, transforms and loaders, one per dataset."""

from matbench.datamodules.base import BaseDataModule, list_collate
from matbench.datamodules.cross import CrossDatasetDataModule
from matbench.datamodules.dms import DMSDataModule
from matbench.datamodules.fgovd import FGOVDDataModule
from matbench.datamodules.fmd import FMDDataModule
from matbench.datamodules.folder import MaterialFolderDataModule
from matbench.datamodules.lvis_materials import LVISMaterialsDataModule
from matbench.datamodules.matseg import MatSegBenchmarkDataModule, MatSegDataModule
from matbench.datamodules.regions import RegionIoUDataModule
from matbench.datamodules.sampler import GroupedSampler
from matbench.datamodules.streaming import StreamingDataModule

__all__ = [
    "BaseDataModule",
    "CrossDatasetDataModule",
    "DMSDataModule",
    "FGOVDDataModule",
    "FMDDataModule",
    "GroupedSampler",
    "LVISMaterialsDataModule",
    "MaterialFolderDataModule",
    "MatSegBenchmarkDataModule",
    "MatSegDataModule",
    "StreamingDataModule",
    "RegionIoUDataModule",
    "list_collate",
]
