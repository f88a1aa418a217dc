"""The packaged benchmark registry of ``matbench leaderboard``.

A benchmark names its datamodule, the data root(s) it needs (given once per sweep:
``--root fmd=/data/FMD``), the protocols it can be evaluated with and the metric its tables
sort by. ``{root}``-style placeholders in the datamodule arguments are filled from the roots.

Protocols:

- ``zero_shot``: image-text models compare regions with class-name prompts (:class:`ZeroShotTask`);
  on FG-OVD, the caption ranking of :class:`FineGrainedMatchingTask`.
- ``retrieval``: LVIS-materials object-to-material retrieval with the model as it is
  (:class:`ClipMaterialTask` tested without training).
- ``linear_probe``: logistic regression on frozen image features
  (:mod:`matbench.leaderboard.probe`, CLIP_benchmark's protocol).
- ``dense``: per-pixel descriptors on the MatSeg triplet benchmark (:class:`MatSegTask`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from matbench.errors import ConfigError

PROTOCOLS = ("zero_shot", "retrieval", "linear_probe", "dense")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of the registry.

    Args:
        name: Registry key (``--benchmarks`` name).
        title: Table heading.
        roots: Root names the datamodule arguments use (``{fmd}``); each must be given.
        datamodule: Datamodule class path.
        data_args: Its arguments; strings may hold ``{root}`` placeholders.
        protocols: Protocols this benchmark is evaluated with.
        headline: Metric each protocol's rows are sorted by.
        published: Key of its rows in ``matbench/data/published.json`` ('' = none).
        probe_args: Datamodule arguments changed for the linear probe's feature extraction.
    """

    name: str
    title: str
    roots: tuple[str, ...]
    datamodule: str
    data_args: dict[str, Any]
    protocols: tuple[str, ...]
    headline: dict[str, str]
    published: str = ""
    probe_args: dict[str, Any] = field(default_factory=dict)

    def data_section(self, roots: dict[str, str], probe: bool = False) -> dict[str, Any]:
        """The ``data`` section of a run config, roots filled in."""
        missing = [r for r in self.roots if r not in roots]
        if missing:
            raise ConfigError(
                f"benchmark '{self.name}' needs the data root(s) {', '.join(missing)}",
                hint=" ".join(f"--root {r}=/path/to/{r}" for r in missing),
            )
        args = copy.deepcopy(self.data_args)
        if probe:
            args.update(copy.deepcopy(self.probe_args))
        return {"class_path": self.datamodule, "init_args": _fill(args, roots)}


def _fill(value: Any, roots: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**roots) if "{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, roots) for v in value]
    return value


_CLASSIFICATION = {"zero_shot": "mean_class_accuracy", "linear_probe": "mean_class_accuracy"}
# Full resolution: zero-shot cuts the region and applies the model's own transform; the probe
# cuts the same region crop. One seeded per-class split, so both score the same test images.
_FOLDER_ARGS = {
    "image_size": None,
    "object_crop": False,
    "train_fraction": 0.5,
    "val_fraction": 0.2,
    "seed": 0,
    "batch_size": 32,
    "num_workers": 2,
}

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="fmd",
            title="FMD (Flickr Material Database), 10 classes",
            roots=("fmd",),
            datamodule="matbench.datamodules.FMDDataModule",
            data_args={"root": "{fmd}", **_FOLDER_ARGS},
            protocols=("zero_shot", "linear_probe"),
            headline=_CLASSIFICATION,
            published="fmd",
        ),
        Benchmark(
            name="dms_test21",
            title="DMS-test-21 regions (21 classes)",
            roots=("dms",),
            datamodule="matbench.datamodules.DMSDataModule",
            data_args={
                "root": "{dms}",
                "mode": "region",
                "label_space": "classes21",
                "image_size": None,
                "batch_size": 32,
                "num_workers": 2,
            },
            protocols=("zero_shot", "linear_probe"),
            headline=_CLASSIFICATION,
            published="dms_test21",
        ),
        Benchmark(
            name="dms46",
            title="DMS46 regions (46 classes)",
            roots=("dms",),
            datamodule="matbench.datamodules.DMSDataModule",
            data_args={
                "root": "{dms}",
                "mode": "region",
                "image_size": None,
                "batch_size": 32,
                "num_workers": 2,
            },
            protocols=("zero_shot", "linear_probe"),
            headline=_CLASSIFICATION,
            published="dms",
        ),
        Benchmark(
            name="matseg",
            title="MatSeg triplet benchmark (dense descriptors)",
            roots=("matseg",),
            datamodule="matbench.datamodules.MatSegBenchmarkDataModule",
            data_args={"root": "{matseg}", "max_size": 700, "batch_size": 1, "num_workers": 0},
            protocols=("dense",),
            headline={"dense": "all_by_point"},
            published="matseg",
        ),
        Benchmark(
            name="lvis_materials",
            title="LVIS-materials retrieval (groups of 64)",
            roots=("lvis",),
            datamodule="matbench.datamodules.LVISMaterialsDataModule",
            data_args={
                "root": "{lvis}",
                "split": "seeded",
                "images": "coco",
                "image_size": 224,
                "caption": "material",
                "batch_size": 64,
                "num_workers": 2,
            },
            protocols=("retrieval",),
            headline={"retrieval": "g64_recall@1"},
            published="lvis_materials",
        ),
        Benchmark(
            name="fgovd_material",
            title="FG-OVD material (caption ranking)",
            roots=("fgovd",),
            datamodule="matbench.datamodules.FGOVDDataModule",
            data_args={
                "root": "{fgovd}",
                "benchmark": "material",
                "images": "coco",
                "crop": "box",
                "image_size": 224,
                "max_negatives": 10,
                "eval_batch_size": 64,
                "num_workers": 2,
            },
            protocols=("zero_shot",),
            headline={"zero_shot": "accuracy"},
            published="fgovd",
        ),
        Benchmark(
            name="folder",
            title="Material folder (image/<class>/..., your own photos)",
            roots=("folder",),
            datamodule="matbench.datamodules.MaterialFolderDataModule",
            data_args={"root": "{folder}", **_FOLDER_ARGS},
            protocols=("zero_shot", "linear_probe"),
            headline=_CLASSIFICATION,
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    """The registry entry ``name``; a :class:`ConfigError` listing the names otherwise."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown benchmark '{name}'", hint=f"known benchmarks: {', '.join(BENCHMARKS)}"
        ) from None
