"""Speed of the evaluation layer, measured side by side in one run.

1. MatSeg triplet accuracy of one image with N points: the vectorised
   :func:`matbench.metrics.functional.triplet_accuracy` against a plain per-anchor Python loop
   (anchor -> pivot -> comparison point, as the protocol is written), at N = 50, 100, 200.
   The dense fallback (used for more than 16 distinct weights) is timed too. All must agree;
   target: >= 50x faster at N = 200.
2. The segmentation confusion-matrix update (:class:`matbench.metrics.SegmentationMetrics`) on a
   46-class batch of 1024 x 1024 int64 label maps (10 % ignored pixels), in megapixels per
   second. Target: >= 100 Mpx/s.

Usage: ``python -m benchmarks.metrics [--threads 1] [--repeats 5] [--batch 2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from matbench.metrics import SegmentationMetrics
from matbench.metrics.functional import triplet as triplet_module
from matbench.metrics.functional import triplet_accuracy


def loop_triplet(similarity: torch.Tensor, weight: torch.Tensor, groups: torch.Tensor) -> dict:
    """The protocol as plain Python loops: per anchor, per pivot, per comparison point."""
    s, w, g = similarity.tolist(), weight.tolist(), groups.tolist()
    n = len(s)
    acc, top1 = {}, {}
    for a in range(n):
        pivots = []
        for b in range(n):
            if b == a:
                continue
            correct, total = 0.0, 0
            for c in range(n):
                if c in (a, b) or w[a][c] == w[a][b]:
                    continue
                total += 1
                if s[a][b] == s[a][c]:
                    correct += 0.5
                elif (w[a][b] > w[a][c]) == (s[a][b] > s[a][c]):
                    correct += 1
            if total:
                pivots.append(correct / total)
        if pivots:
            acc[a] = sum(pivots) / len(pivots)
            others = [b for b in range(n) if b != a]
            best_s = max(s[a][b] for b in others)
            best_w = max(w[a][b] for b in others)
            tied = [b for b in others if s[a][b] == best_s]
            top1[a] = sum(w[a][b] == best_w for b in tied) / len(tied)

    def by_material(values: dict) -> float:
        per_group: dict = {}
        for a, v in values.items():
            per_group.setdefault(g[a], []).append(v)
        return statistics.fmean(statistics.fmean(v) for v in per_group.values())

    return {
        "by_point": statistics.fmean(acc.values()),
        "by_material": by_material(acc),
        "top1_by_point": statistics.fmean(top1.values()),
        "top1_by_material": by_material(top1),
    }


def random_image(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N points in ~N/10 groups with random 0.6 / 0.3 / 0 relations; cosine similarities."""
    gen = torch.Generator().manual_seed(seed)
    num_groups = max(2, n // 10)
    groups = torch.randint(0, num_groups, (n,), generator=gen)
    levels = torch.tensor([0.0, 0.3, 0.6])
    between = torch.triu(levels[torch.randint(0, 3, (num_groups, num_groups), generator=gen)], 1)
    weight = (between + between.T)[groups][:, groups]
    weight[groups[:, None] == groups[None, :]] = 1.0
    desc = F.normalize(torch.randn(n, 16, generator=gen), dim=1)
    return desc @ desc.T, weight, groups


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Fastest wall-clock and fastest process-CPU time of ``repeats`` calls, after a warm-up.

    On a shared machine the CPU time shows the cost of the code itself; the wall time also
    holds the time spent waiting for a core.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best is kept)")
    parser.add_argument("--batch", type=int, default=2, help="1024x1024 maps per batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{os.cpu_count()} CPUs, load average {load}"
    )

    print("\nTriplet accuracy, one image (loop timed once, vectorised best of repeats)")
    print("  vectorised = default path (by weight levels); dense = (anchor, pivot, point) tensors")
    print(
        f"{'N':>5} {'loop [ms]':>11} {'vectorised [ms]':>16} {'speed-up':>9} "
        f"{'dense [ms]':>11} {'speed-up':>9} {'max |diff|':>11}"
    )
    for n in (50, 100, 200):
        s, w, g = random_image(n)
        start = time.perf_counter()
        slow = loop_triplet(s, w, g)
        loop_s = time.perf_counter() - start
        fast_s, _ = best_time(lambda s=s, w=w, g=g: triplet_accuracy(s, w, g), args.repeats)
        fast = triplet_accuracy(s, w, g)
        levels = triplet_module._MAX_LEVELS
        triplet_module._MAX_LEVELS = 0  # force the dense path, for comparison only
        try:
            dense_s, _ = best_time(lambda s=s, w=w, g=g: triplet_accuracy(s, w, g), args.repeats)
            dense = triplet_accuracy(s, w, g)
        finally:
            triplet_module._MAX_LEVELS = levels
        diff = max(max(abs(fast[k] - slow[k]), abs(dense[k] - slow[k])) for k in slow)
        print(
            f"{n:>5} {loop_s * 1e3:>11.1f} {fast_s * 1e3:>16.2f} {loop_s / fast_s:>8.0f}x "
            f"{dense_s * 1e3:>11.2f} {loop_s / dense_s:>8.0f}x {diff:>11.1e}"
        )

    print(f"\nSegmentation confusion update, 46 classes, {args.batch} x 1024 x 1024 int64")
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, 1024, 1024)
    target = torch.randint(0, 46, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < 0.1] = 255
    preds = torch.randint(0, 46, shape, generator=gen)
    metric = SegmentationMetrics(46)
    wall, cpu = best_time(lambda: metric.update(preds, target), args.repeats)
    mpx = args.batch * 1024 * 1024 / 1e6
    print(
        f"{mpx:.2f} Mpx per update: {wall * 1e3:.1f} ms wall = {mpx / wall:.0f} Mpx/s; "
        f"{cpu * 1e3:.1f} ms CPU = {mpx / cpu:.0f} Mpx/s"
    )


if __name__ == "__main__":
    main()
