"""Shared fixtures: no test touches the network; all run on CPU in fp32."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    hub = tmp_path_factory.mktemp("hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hub))
    monkeypatch.setenv("TORCH_HOME", str(hub / "torch"))
    # Cached dataset indexes go to a fresh folder per test, never to ~/.cache.
    monkeypatch.setenv("MATBENCH_CACHE_DIR", str(hub / "matbench-cache"))


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def shared_data() -> Path:
    """The real reference files in ../shared/data; the test skips when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA model and processor, built offline once per session."""
    from matbench.vlm.tiny import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))
