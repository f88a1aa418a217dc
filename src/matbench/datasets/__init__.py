"""Datasets: an on-disk layout read into dict samples (no Lightning here)."""

from matbench.datasets.dms import DMS
from matbench.datasets.errors import DatasetFormatError, DatasetNotFoundError
from matbench.datasets.fgovd import FGOVD
from matbench.datasets.fmd import FMD
from matbench.datasets.folder import MaterialFolder
from matbench.datasets.lvis_materials import LVISMaterials
from matbench.datasets.matseg import MatSegBenchmark, MatSegScenes

__all__ = [
    "DMS",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "FGOVD",
    "FMD",
    "LVISMaterials",
    "MaterialFolder",
    "MatSegBenchmark",
    "MatSegScenes",
]
