from __future__ import annotations

from pathlib import Path

import pytest

from matbench.vlm.tiny import make_tiny_vlm


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA model and processor, built offline once per session."""
    return make_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))
