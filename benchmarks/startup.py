"""Start-up time of the ``matbench`` command, measured side by side in one run.

Each command runs as a fresh ``python -m matbench …`` process (median of ``--repeats``), next
to a bare ``python -c pass`` and ``python -c "import torch"`` as yardsticks. Help, ``--version``
the tool commands' help and the runs' help (shipped pages, or the help cache for
``--print_config`` and ``--model.help``) must not import torch or Lightning: target <= 2 s
each, well below ``import lightning`` (what a Lightning subcommand pays when it runs). The
help cache is a temporary folder, warmed by one untimed run of each command.

Usage: ``python -m benchmarks.startup [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from matbench.cli import TOOL_COMMANDS  # light: lists every tool command, as `matbench --help`

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--help"],
    ["--version"],
    ["fitt"],
    *[[name, "--help"] for name in sorted(TOOL_COMMANDS)],
    ["fit", "--help"],
    ["test", "--help"],
    # served from the help cache after the first (warm-up) run of each
    ["fit", "--config", "configs/two_stream/fmd.yaml", "--print_config"],
    ["fit", "--model.help", "TwoStreamTask"],
]
YARDSTICKS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import lightning": [sys.executable, "-c", "import lightning"],
}


def seconds(argv: list[str], repeats: int, env: dict[str, str]) -> float:
    subprocess.run(argv, capture_output=True, check=False, env=env, cwd=ROOT)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="matbench-startup-")
    env = {**os.environ, "MATBENCH_CACHE_DIR": cache}
    rows = [(name, seconds(cmd, args.repeats, env)) for name, cmd in YARDSTICKS.items()]
    torch_time = rows[1][1]
    for command in COMMANDS:
        rows.append(
            (
                "matbench " + " ".join(command),
                seconds([sys.executable, "-m", "matbench", *command], args.repeats, env),
            )
        )
    shutil.rmtree(cache, ignore_errors=True)
    width = max(len(name) for name, _ in rows)
    print(f"{'command':<{width}} {'seconds':>8} {'/ import torch':>15}")
    for name, value in rows:
        print(f"{name:<{width}} {value:8.2f} {value / torch_time:15.2f}")


if __name__ == "__main__":
    main()
