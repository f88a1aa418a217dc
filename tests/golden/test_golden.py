"""Golden metrics: each task's seeded tiny run must reproduce its stored test metrics.

Update the goldens after an intended change with one command::

    make golden        # = MATBENCH_UPDATE_GOLDEN=1 pytest tests/golden/test_golden.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from tests.golden.cases import CASES, run_case

GOLDEN_DIR = Path(__file__).parent
#: Absolute tolerance: CPU fp32 runs repeat exactly on one machine; other CPUs and BLAS
#: builds may differ in the last digits, which a few optimiser steps can amplify.
ATOL = 2e-3
UPDATE = os.environ.get("MATBENCH_UPDATE_GOLDEN") == "1"


def diff_table(expected: dict[str, float], got: dict[str, float], atol: float) -> list[str]:
    """Readable rows for every metric that is missing, new, or off by more than ``atol``."""
    rows = []
    for key in sorted(set(expected) | set(got)):
        e, g = expected.get(key), got.get(key)
        if e is None or g is None:
            rows.append(f"  {key:<28} golden={e!s:<12} got={g!s:<12} (missing)")
        elif not (math.isnan(e) and math.isnan(g)) and not abs(e - g) <= atol:
            rows.append(f"  {key:<28} golden={e:<12.6f} got={g:<12.6f} diff={g - e:+.6f}")
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, tmp_path: Path) -> None:
    got = run_case(CASES[name], tmp_path)
    path = GOLDEN_DIR / f"{name}.json"
    if UPDATE:
        record = {"metrics": got, "atol": ATOL, "torch": torch.__version__}
        path.write_text(
            json.dumps(
                {**record, "metrics": {k: (None if math.isnan(v) else v) for k, v in got.items()}},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        pytest.skip(f"golden written: {path}")
    if not path.is_file():
        pytest.fail(f"no golden file {path}: run `make golden` and commit it")
    golden = json.loads(path.read_text())
    expected = {k: (math.nan if v is None else v) for k, v in golden["metrics"].items()}
    rows = diff_table(expected, got, golden.get("atol", ATOL))
    assert not rows, f"{name}: test metrics differ from {path.name}:\n" + "\n".join(rows)


def test_diff_table_is_readable() -> None:
    rows = diff_table({"a": 0.5, "b": 1.0, "c": math.nan}, {"a": 0.5, "b": 0.9, "d": 1.0}, 1e-3)
    assert len(rows) == 3
    assert "b" in rows[0] and "diff=-0.100000" in rows[0]
    assert "missing" in rows[1] and "missing" in rows[2]
