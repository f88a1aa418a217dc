"""Shared fixtures: no test touches the network; all run on CPU in fp32."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Spawned processes (DDP ranks, CLI runs) print every thread's Python stack if they die of a
# fatal signal, so that a crash inside a rank leaves more than its exit signal behind.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A DDP test runs once more only when a rank process died of a signal (rank 1 of
    ``clip_lvis_open_clip_text`` died of SIGABRT once in CI, its stderr cut from the log, and
    not in 30 repeats here): a wrong metric or an exception raised in a rank still fails at
    once."""
    for item in items:
        if item.get_closest_marker("ddp") is not None:
            item.add_marker(
                pytest.mark.flaky(reruns=1, only_rerun=[r"ProcessExitedException: .*signal"])
            )


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
