"""Every registry benchmark's datamodule builds from its data section on a fake copy of its
dataset (the real layouts, ``tests/data``), with the splits its protocols use."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from matbench.errors import ConfigError
from matbench.leaderboard.registry import BENCHMARKS, PROTOCOLS, get_benchmark
from tests.data.dms.data import make as make_dms
from tests.data.fgovd.data import make as make_fgovd
from tests.data.fmd.data import make as make_fmd
from tests.data.folder.data import make as make_folder
from tests.data.lvis_materials.data import make as make_lvis
from tests.data.matseg.data import make_benchmark

SHARED_TAXONOMY = Path(__file__).resolve().parents[3] / "shared" / "data" / "dms" / "taxonomy.json"


def make_dms_real_names(root: Path) -> Path:
    """The fake DMS copy with the real taxonomy (its label values get real DMS46 names, so
    that the classes21 map applies), when the reference file is there."""
    make_dms(root, size=(160, 120))  # regions above the protocol's 1024 px minimum
    if SHARED_TAXONOMY.is_file():
        (root / "taxonomy.json").write_text(SHARED_TAXONOMY.read_text())
    return root


WRITERS = {
    "fmd": lambda root: make_fmd(root, per_class=5),
    "dms": make_dms_real_names,
    "matseg": make_benchmark,
    "lvis": make_lvis,
    "fgovd": make_fgovd,
    "folder": lambda root: make_folder(root, ["brick", "stone", "wood"], per_class=5),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("registry")
    return {name: str(write(base / name)) for name, write in WRITERS.items()}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_datamodule_builds(name: str, roots: dict[str, str]) -> None:
    if name == "dms_test21" and not SHARED_TAXONOMY.is_file():
        pytest.skip(f"the real DMS taxonomy is needed for classes21 ({SHARED_TAXONOMY})")
    benchmark = get_benchmark(name)
    assert set(benchmark.protocols) <= set(PROTOCOLS)
    assert set(benchmark.headline) == set(benchmark.protocols)
    for probe in {False, "linear_probe" in benchmark.protocols}:
        section = benchmark.data_section(roots, probe=probe)
        module, _, cls_name = section["class_path"].rpartition(".")
        datamodule = getattr(importlib.import_module(module), cls_name)(**section["init_args"])
        datamodule.setup("test")
        assert len(datamodule.test_dataset) > 0
        if probe:
            datamodule.setup("fit")
            assert len(datamodule.train_dataset) > 0
            sample = datamodule.train_dataset[0]
            assert {"image", "label"} <= set(sample) and sample["image"].ndim == 3
            assert len(datamodule.class_names) > 1


def test_roots_are_required_and_named() -> None:
    with pytest.raises(ConfigError) as err:
        get_benchmark("dms_test21").data_section({"fmd": "/x"})
    assert "--root dms=" in err.value.hint
    with pytest.raises(ConfigError, match="unknown benchmark"):
        get_benchmark("imagenet")


def test_dms_label_spaces(roots: dict[str, str]) -> None:
    from matbench.datamodules import DMSDataModule

    if not SHARED_TAXONOMY.is_file():
        pytest.skip(f"the real DMS taxonomy is needed for classes21 ({SHARED_TAXONOMY})")
    names = {}
    for name in ("dms_test21", "dms46"):
        dm = DMSDataModule(**get_benchmark(name).data_section(roots)["init_args"])
        names[name] = dm.class_names
    assert len(names["dms_test21"]) == 21 and len(names["dms46"]) > 21
    assert Path(roots["dms"]).is_dir()
