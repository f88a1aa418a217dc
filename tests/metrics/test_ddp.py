"""Every metric class under DDP (2 CPU processes over gloo) equals the single-process result.

Two shardings per metric: an odd number of samples split unevenly over the ranks, and all
samples on rank 0 while rank 1 gets nothing. Retrieval additionally sees shuffled shards with
a repeated sample (what a padding sampler produces), which its index de-duplication removes.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics import Metric, MetricCollection

from matbench.metrics import (
    CandidateRankMetrics,
    ClassificationMetrics,
    MatSegMetrics,
    RetrievalMetrics,
    SegmentationMetrics,
    TripletAccuracy,
)
from tests.metrics import reference
from tests.metrics.helpers import retrieval_data, triplet_image

WORLD_SIZE = 2
TIMEOUT_S = 240


def _classification_batches() -> list[tuple]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 6, generator=gen)
    target = torch.randint(0, 5, (37,), generator=gen)  # class 5 absent
    return [(logits[r], target[r]) for r in torch.arange(37).split(5)]  # 8 batches


def _segmentation_batches() -> list[tuple]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(5):
        target = torch.randint(0, 4, (1, 12, 10), generator=gen)
        target[torch.rand(1, 12, 10, generator=gen) < 0.2] = 255
        out.append((torch.randint(0, 5, (1, 12, 10), generator=gen), target))
    return out


def _retrieval_batches() -> list[tuple]:
    image, text, captions = retrieval_data(2, 23, vocabulary=9)
    return [
        (image[r], text[r], [captions[i] for i in r.tolist()], r) for r in torch.arange(23).split(3)
    ]


def _triplet_images() -> list[tuple]:
    images = []
    for seed in range(7):
        has_relations = seed % 3 != 0
        s, w, g = triplet_image(40 + seed, 5 + 2 * seed, relations=has_relations, levels=5)
        images.append((s, w, g, has_relations))
    images.append((torch.rand(3, 3), torch.ones(3, 3), torch.zeros(3, dtype=torch.long), True))
    return images  # 8 images, one unscorable


def _candidate_batches() -> list[tuple]:
    gen = torch.Generator().manual_seed(3)
    scores = torch.round(torch.rand(41, 11, generator=gen) * 4) / 4  # ties
    lengths = torch.randint(2, 12, (41,), generator=gen)
    return [(scores[r], lengths[r]) for r in torch.arange(41).split(6)]  # 7 batches


# name -> (metric factory, all updates in dataset order)
CASES: dict[str, tuple[Callable[[], Metric | MetricCollection], Callable[[], list[tuple]]]] = {
    "classification": (lambda: ClassificationMetrics(6, top_k=3), _classification_batches),
    "segmentation": (lambda: SegmentationMetrics(5), _segmentation_batches),
    "retrieval_64": (lambda: RetrievalMetrics(group_size=64), _retrieval_batches),
    "retrieval_5": (lambda: RetrievalMetrics(group_size=5), _retrieval_batches),
    "retrieval_all": (lambda: RetrievalMetrics(group_size=None), _retrieval_batches),
    "retrieval_shuffled": (
        lambda: RetrievalMetrics(group_size=5, group_order="shuffled", seed=3),
        _retrieval_batches,
    ),
    "retrieval_collection": (
        lambda: MetricCollection(
            {"g5": RetrievalMetrics(group_size=5), "all": RetrievalMetrics(None)},
            compute_groups=True,  # as the CLIP task uses it: shared states
        ),
        _retrieval_batches,
    ),
    "candidate_ranks": (lambda: CandidateRankMetrics(max_negatives=10), _candidate_batches),
    "triplet_all": (lambda: TripletAccuracy(), _triplet_images),
    "triplet_soft": (lambda: TripletAccuracy(soft_only=True), _triplet_images),
    "matseg": (lambda: MatSegMetrics(), _triplet_images),
}


def _shard(name: str, updates: list[tuple], sharding: str, rank: int) -> list[tuple]:
    """The updates rank ``rank`` receives."""
    if sharding == "empty_rank":
        return updates if rank == 0 else []
    if name.startswith("retrieval"):
        # Interleaved samples, reversed order on rank 1, and rank 0 repeats two samples.
        rows = torch.cat([u[3] for u in updates])
        mine = rows[rank::WORLD_SIZE]
        if rank == 1:
            mine = mine.flip(0)
        else:
            mine = torch.cat([mine, rows[:2]])
        image = torch.cat([u[0] for u in updates])
        text = torch.cat([u[1] for u in updates])
        captions = [c for u in updates for c in u[2]]
        return [(image[r], text[r], [captions[i] for i in r.tolist()], r) for r in mine.split(4)]
    cut = (len(updates) + 1) // 2 + 1  # uneven: rank 0 gets more
    return updates[:cut] if rank == 0 else updates[cut:]


def _run(metric: Metric | MetricCollection, updates: list[tuple]) -> dict[str, Any]:
    for args in updates:
        metric.update(*args)
    return metric.compute()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        results: dict[str, Any] = {}
        for name, (factory, make_updates) in CASES.items():
            updates = make_updates()
            for sharding in ("uneven", "empty_rank"):
                results[f"{name}/{sharding}"] = _run(
                    factory(), _shard(name, updates, sharding, rank)
                )
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.ddp
def test_ddp_equals_single_process(tmp_path: Path) -> None:
    context = mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP workers did not finish within {TIMEOUT_S} s")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    assert not dist.is_initialized()
    for name, (factory, make_updates) in CASES.items():
        single = _run(factory(), make_updates())
        assert not math.isnan(next(v for v in single.values() if isinstance(v, float)))
        for sharding in ("uneven", "empty_rank"):
            for rank, results in enumerate(ranks):
                reference.assert_close(
                    results[f"{name}/{sharding}"],
                    single,
                    tol=1e-6,
                    path=f"{name}/{sharding}/rank{rank}",
                )
