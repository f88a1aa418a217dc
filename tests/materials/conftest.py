from __future__ import annotations

from pathlib import Path

import pytest

from tests.materials.helpers import fit_dense


@pytest.fixture(scope="session")
def dense_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DenseMaterialTask checkpoint fitted two steps on fake DMS, shared by the chain tests."""
    return fit_dense(tmp_path_factory.mktemp("dense"))
