"""Two "nodes" on one machine (torchrun, static rendezvous on loopback): the test metrics of a
multi-node run equal the single-process ones."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "core" / "toy.yaml"
MULTINODE = ROOT / "configs" / "multinode" / "ddp_2nodes.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(results: Path) -> dict:
    (run,) = results.glob("*.json")
    return json.loads(run.read_text())["metrics"]


@pytest.mark.ddp
def test_two_node_test_equals_single_process(tmp_path: Path) -> None:
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun not installed beside this python")
    config = yaml.safe_load(TOY.read_text())
    config["data"]["init_args"]["num_samples"] = 13  # odd, uneven over 2 ranks
    toy = tmp_path / "toy.yaml"
    toy.write_text(yaml.safe_dump(config))
    common = ["--config", str(toy), "--trainer.logger", "false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, "-m", "matbench", "test", *common, "--results_dir", str(single)],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )

    multi = tmp_path / "multi"
    port = _free_port()
    torchrun = str(Path(sys.executable).parent / "torchrun")
    procs = [
        subprocess.Popen(
            [
                torchrun,
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(rank),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "matbench",
                "test",
                *common,
                "--config",
                str(MULTINODE),
                "--trainer.accelerator",
                "cpu",
                "--trainer.devices",
                "1",
                "--trainer.sync_batchnorm",
                "false",
                "--results_dir",
                str(multi),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert "world_size: 2" in outputs[0] or "distributed_backend=gloo" in outputs[0]

    expected, got = _metrics(single), _metrics(multi)
    assert expected["count"] == 13 and expected["index_sum"] == sum(range(13))
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
