"""Benchmark: 3D MatSeg scenes per minute with N Blender processes against one, side by side.

:func:`matbench.synth.render.write_3d_scenes` renders the same scenes (same seed and count)
with ``--workers 1`` and ``--workers N``, each Blender process on one Cycles thread, at the demo's
scene size; the whole path is timed (scene drawing, Blender start, Cycles, masks, files).
Target: rate(N) >= 0.85 x N x rate(1). The one-process rate is measured before and after the
parallel run and averaged, as the machine may be shared.

Each run is pinned to as many CPUs as it has processes (``--no-pin`` turns this off): Cycles
renders on the one thread it is given, but Blender builds the scene (modifiers, subdivision,
Embree's BVH, image loading) on every core it sees, so an unpinned single process uses about
1.4 cores here and the ratio would compare N processes with 1.4 cores' worth of one. "Cores
used" (CPU seconds per wall second) shows what each run got; on a busy machine N processes may
get less than N cores. Each process renders ``--per-worker`` scenes (default 4), so that the
fixed cost of a run (the probe that finds Blender, the tail where processes finish unevenly)
does not dominate. The script also checks that the runs wrote byte-identical scenes. Needs bpy
(``pip install "matbench[render]"``).

    python -m benchmarks.synth                       # N = all cores, 4 scenes per process
    python -m benchmarks.synth --workers 2 --per-worker 3 --size 160 --samples 16
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from matbench.synth.render import RenderConfig, blender_python, write_3d_scenes


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def scenes_per_minute(
    out: Path, n: int, seed: int, workers: int, config: RenderConfig, pin: bool
) -> tuple[float, float]:
    """Render ``n`` scenes on ``workers`` processes (pinned to ``workers`` CPUs with ``pin``:
    the pool and the Blender processes inherit the affinity); returns scenes per minute and
    the cores the run got on average (CPU seconds of this process and its children per wall
    second)."""
    allowed = os.sched_getaffinity(0) if pin else None
    if allowed is not None:
        os.sched_setaffinity(0, sorted(allowed)[:workers])
    try:
        cpu = _cpu_seconds()
        start = time.perf_counter()
        records, failures = write_3d_scenes(out, n, seed, config=config, workers=workers)
        seconds = time.perf_counter() - start
    finally:
        if allowed is not None:
            os.sched_setaffinity(0, allowed)
    if failures:
        raise SystemExit(f"{len(failures)} scenes failed: {failures[0].errors}")
    return 60.0 * len(records) / seconds, (_cpu_seconds() - cpu) / seconds


def tree(root: Path) -> dict[str, bytes]:
    """Every scene file under ``root`` by relative path (the run's settings file left out)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "render_config.json"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--per-worker", type=int, default=4, help="scenes per process")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin each run to as many CPUs as it has processes",
    )
    parser.add_argument("--size", type=int, default=192, help="image side (demo: 128-224 px)")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _, version, _ = blender_python(device="cpu")
    config = RenderConfig(
        width=args.size,
        height=args.size,
        samples=args.samples,
        device="cpu",
        threads=1,
        map_size=256,
        max_materials=4,
    )
    # The same scenes (same seed and count) in every run: only the process count differs.
    n = args.workers * args.per_worker
    pin = args.pin and hasattr(os, "sched_setaffinity")
    if pin and args.workers > len(os.sched_getaffinity(0)):
        raise SystemExit(f"--workers {args.workers}: only {len(os.sched_getaffinity(0))} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (one_a, cores_a), (many, cores_many), (one_b, cores_b) = (
            scenes_per_minute(root / name, n, args.seed, workers, config, pin)
            for name, workers in (("one_a", 1), ("many", args.workers), ("one_b", 1))
        )
        identical = tree(root / "one_a") == tree(root / "many") == tree(root / "one_b")
    one = (one_a + one_b) / 2
    ratio = many / one
    print(
        f"3D scenes (Blender {version}, {args.size}x{args.size} px, {args.samples} samples, "
        f"Cycles CPU, 1 thread per process, {os.cpu_count()} cores, "
        f"{'each run pinned to as many CPUs as processes' if pin else 'not pinned'}, "
        f"{n} scenes per run)"
    )
    print(
        f"  1 process : {one:6.2f} scenes/min  (runs before/after: {one_a:.2f}, {one_b:.2f}; "
        f"cores used {cores_a:.2f}, {cores_b:.2f})"
    )
    print(f"  {args.workers} processes: {many:6.2f} scenes/min  (cores used {cores_many:.2f})")
    # CPU seconds per scene: equal in both modes means no parallel overhead, so the rate
    # scales with the cores the runs get.
    cpu_one = 60.0 * (cores_a / one_a + cores_b / one_b) / 2
    cpu_many = 60.0 * cores_many / many
    print(
        f"  CPU per scene: {cpu_one:.2f} s (1 process), {cpu_many:.2f} s ({args.workers} processes)"
    )
    print(f"  the three runs wrote byte-identical scenes: {'yes' if identical else 'NO'}")
    target = 0.85 * args.workers
    verdict = "meets" if ratio >= target else "misses"
    print(
        f"  speed-up  : {ratio:.2f}x with {args.workers} processes ({verdict} 0.85 x N = {target:.2f})"
    )


if __name__ == "__main__":
    main()
