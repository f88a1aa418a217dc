"""Description sidecars that do not fit their data are errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matbench.datamodules import FMDDataModule
from matbench.datasets.errors import DatasetFormatError
from matbench.datasets.fmd import FMD
from tests.data.fmd.data import make as make_fmd


@pytest.fixture
def fmd_root(tmp_path: Path) -> Path:
    return make_fmd(tmp_path / "fmd", per_class=2, size=(16, 12))


def test_a_sidecar_of_another_dataset_matches_nothing(fmd_root: Path, tmp_path: Path) -> None:
    sidecar = tmp_path / "dms_descriptions.json"
    sidecar.write_text(json.dumps({"test/abc#3": "a dull, even surface"}))
    with pytest.raises(DatasetFormatError, match=r"dms_descriptions\.json: none of its 1 keys"):
        FMD(fmd_root, descriptions=sidecar)


def test_a_sidecar_key_matching_no_sample_is_named(fmd_root: Path, tmp_path: Path) -> None:
    sidecar = tmp_path / "d.json"
    sidecar.write_text(
        json.dumps(
            {
                "metal/metal_moderate_001_new.jpg": "a cold sheen",
                "metal/metal_moderate_999_new.jpg": "a typo'd key",
            }
        )
    )
    module = FMDDataModule(str(fmd_root), image_size=16, descriptions=str(sidecar))
    with pytest.raises(DatasetFormatError, match=r"d\.json: 1 keys match no sample.*_999_"):
        module.setup("fit")


@pytest.mark.parametrize("value", ["", "   ", 3, None])
def test_empty_or_non_string_descriptions(value: object, fmd_root: Path, tmp_path: Path) -> None:
    sidecar = tmp_path / "d.json"
    sidecar.write_text(json.dumps({"metal/metal_moderate_001_new.jpg": value}))
    with pytest.raises(DatasetFormatError, match=r"d\.json: 1 descriptions are not non-empty"):
        FMD(fmd_root, descriptions=sidecar)
