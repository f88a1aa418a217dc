"""Start-up time of the ``matbench`` command, measured side by side in one run.

Each command runs as a fresh ``python -m matbench …`` process (median of ``--repeats``), next
to a bare ``python -c pass`` and ``python -c "import torch"`` as yardsticks. Help, ``--version``
and the tool commands' help must not import torch or Lightning: target <= 2 s each, and well
below ``import lightning`` (what every Lightning subcommand pays, help included).

Usage: ``python benchmarks/startup.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = [
    ["--help"],
    ["--version"],
    ["fitt"],
    ["report", "--help"],
    ["benchmark", "--help"],
    ["materials", "--help"],
    ["embed-text", "--help"],
    ["synth", "--help"],
    ["demo", "--help"],
    ["data", "--help"],
    ["fit", "--help"],
]
YARDSTICKS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import lightning": [sys.executable, "-c", "import lightning"],
}


def seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [(name, seconds(cmd, args.repeats)) for name, cmd in YARDSTICKS.items()]
    torch_time = rows[1][1]
    for command in COMMANDS:
        rows.append(
            (
                "matbench " + " ".join(command),
                seconds([sys.executable, "-m", "matbench", *command], args.repeats),
            )
        )
    print(f"{'command':<28} {'seconds':>8} {'/ import torch':>15}")
    for name, value in rows:
        print(f"{name:<28} {value:8.2f} {value / torch_time:15.2f}")


if __name__ == "__main__":
    main()
