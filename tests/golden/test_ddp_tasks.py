"""Every task fits and tests with 2 CPU processes (ddp_spawn, gloo); its test metrics equal
those of a single-process test of the same checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.golden.cases import CASES, DDP_ONLY_CASES, common_args, fit_case, run_test

DDP = ("--trainer.strategy=ddp_spawn", "--trainer.devices=2")


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES) + sorted(DDP_ONLY_CASES))
def test_ddp_equals_single_process(name: str, tmp_path: Path) -> None:
    case = CASES.get(name) or DDP_ONLY_CASES[name]
    # The fake MatSeg scenes leave one validation scene: rank 1 validates nothing.
    common = common_args(case, tmp_path)
    ckpt = fit_case(case, tmp_path, common, *DDP)
    single = run_test(case, tmp_path, common, ckpt)
    ddp = run_test(case, tmp_path, common, ckpt, *DDP)
    assert single.keys() == ddp.keys()
    for key, value in single.items():
        if math.isnan(value):
            assert math.isnan(ddp[key]), key
        else:
            assert ddp[key] == pytest.approx(value, abs=1e-6), key
