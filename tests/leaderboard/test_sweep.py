"""``matbench leaderboard`` end to end on fake data with tiny random-init models: the runs of
the cartesian product, skipped protocols with their reason, resumption, cached features,
recorded failures and sharding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matbench.cli import main
from matbench.leaderboard import models as leaderboard_models
from matbench.leaderboard.models import resolve_model
from matbench.leaderboard.probe import WEIGHT_DECAYS
from matbench.leaderboard.registry import BENCHMARKS
from matbench.leaderboard.runner import Run, load_records, plan, shard
from tests.data.fmd.data import make as make_fmd
from tests.data.matseg.data import make_benchmark

TINY_CLIP = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")
TIMM = "timm:test_vit@none"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("leaderboard-data")
    return {
        "fmd": make_fmd(root / "fmd", per_class=5),
        "matseg": make_benchmark(root / "matseg"),
    }


def records_by_key(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in load_records(out)}


def test_sweep_runs_resumes_and_reuses_features(
    data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "board"
    argv = [
        "leaderboard",
        "--models", f"{TIMM},{TINY_CLIP}",
        "--benchmarks", "fmd,matseg",
        "--root", f"fmd={data['fmd']}",
        "--root", f"matseg={data['matseg']}",
        "--out", str(out),
        "--num_workers", "0",
        "--probe_epochs", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    records = records_by_key(out)
    timm, clip = resolve_model(TIMM).slug, resolve_model(TINY_CLIP).slug
    assert set(records) == {
        f"{m}__{b}"
        for m in (timm, clip)
        for b in ("fmd__zero_shot", "fmd__linear_probe", "matseg__dense")
    }
    skipped = records[f"{timm}__fmd__zero_shot"]
    assert skipped["status"] == "skipped" and "no text tower" in skipped["reason"]
    for key, record in records.items():
        assert {"key", "model", "benchmark", "protocol", "status", "versions"} <= set(record)
        if record["status"] != "ok":
            continue
        assert isinstance(record["metrics"][record["headline"]], float), key
        assert (out / record["config"]).is_file()
        assert record["images_per_second"] > 0
    probe = records[f"{clip}__fmd__linear_probe"]
    assert probe["status"] == "ok"
    assert probe["metrics"]["weight_decay"] in WEIGHT_DECAYS
    assert len(probe["metrics"]["per_class_accuracy"]) == 10
    assert probe["data"]["class_names"][0] == "fabric"
    zero_shot = records[f"{clip}__fmd__zero_shot"]
    assert (out / zero_shot["results"]).is_file()
    assert zero_shot["data"]["num_samples"] == probe["data"]["num_samples"]  # same test split
    # 3 images; c.jpeg has one material only: no triplet
    assert records[f"{timm}__matseg__dense"]["metrics"]["all_num_images"] == 2
    for suffix in ("html", "md", "csv"):
        assert (out / f"leaderboard.{suffix}").is_file()
    assert "timm:test_vit@none" in (out / "leaderboard.md").read_text()

    # resumed: nothing runs again
    capsys.readouterr()
    assert main([*argv, "--skip_existing"]) == 0
    assert "0 ok, 0 failed, 0 skipped, 6 existing" in capsys.readouterr().out

    # a lost record: the probe runs again from the cached features, without loading the model
    (out / "runs" / f"{timm}__fmd__linear_probe.json").unlink()

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded although its features are cached")

    monkeypatch.setattr(leaderboard_models, "build_featurizer", no_model)
    assert main([*argv, "--skip_existing"]) == 0
    again = records_by_key(out)[f"{timm}__fmd__linear_probe"]
    assert again["status"] == "ok" and again["images"] == 0
    assert again["metrics"] == records[f"{timm}__fmd__linear_probe"]["metrics"]


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(
    data: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "board"
    empty = tmp_path / "no_benchmark_here"
    empty.mkdir()
    code = main(
        [
            "leaderboard",
            "--models",
            f"{TIMM},{TINY_CLIP}",
            "--benchmarks",
            "matseg",
            "--root",
            f"matseg={empty}",
            "--out",
            str(out),
        ]  # fmt: skip
    )
    assert code == 1
    records = load_records(out)
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert all(str(empty) in r["error"] for r in records)
    page = (out / "leaderboard.md").read_text()
    assert page.count("| failed |") == 2


def test_shards_are_disjoint_and_cover_every_run() -> None:
    models = [resolve_model(TIMM), resolve_model(TINY_CLIP)]
    runs = plan(models, list(BENCHMARKS.values()))
    assert len(runs) == 2 * sum(len(b.protocols) for b in BENCHMARKS.values())
    shards = [shard(runs, rank, 3, seed=0) for rank in range(3)]
    keys = [r.key for part in shards for r in part]
    assert sorted(keys) == sorted(r.key for r in runs)
    assert len(set(keys)) == len(keys)
    assert [r.key for r in shard(runs, 1, 3, seed=0)] == [r.key for r in shards[1]]
    assert all(isinstance(r, Run) for r in shards[0])


def test_distributed_ranks_run_different_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "board"
    argv = [
        "leaderboard",
        "--models", TIMM,
        "--benchmarks", "lvis_materials,fgovd_material",
        "--root", f"lvis={tmp_path}",
        "--root", f"fgovd={tmp_path}",
        "--out", str(out),
        "--distributed",
    ]  # fmt: skip
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(argv) == 0
        seen.append({r["key"] for r in load_records(out)} - set().union(*seen))
    assert all(len(part) == 1 for part in seen)  # one run each, different runs
    ranks = {r["rank"] for r in load_records(out)}
    assert ranks == {0, 1}
    for record in load_records(out):
        assert record["status"] == "skipped" and "text tower" in record["reason"]


def test_missing_root_is_refused_before_anything_runs(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["leaderboard", "--models", TIMM, "--benchmarks", "fmd", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--root fmd=" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_matbench_checkpoints_run_what_their_task_supports(
    data: dict[str, Path], tmp_path: Path
) -> None:
    import torch

    from matbench.tasks import ClipMaterialTask, MatSegTask

    def save(task: torch.nn.Module, path: Path) -> str:
        # as LightningCLI saves them: the parsed init arguments and the task's class path
        hparams = {k: v for k, v in task.hparams.items() if k != "ignore"}
        hparams["_class_path"] = f"{type(task).__module__}.{type(task).__name__}"
        hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
        checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": hparams}
        task.on_save_checkpoint(checkpoint)
        torch.save({**checkpoint, "pytorch-lightning_version": "2.6.0"}, path)
        return str(path)

    clip_task = ClipMaterialTask(model=TINY_CLIP, text_tower="open_clip")
    clip = save(clip_task, tmp_path / "clip.ckpt")
    clip_task.save_pretrained(tmp_path / "clip_folder")  # the same model as a folder
    matseg = save(MatSegTask(backbone="tu-test_convnext", descriptor_dim=8), tmp_path / "ms.ckpt")
    out = tmp_path / "board"
    code = main(
        [
            "leaderboard",
            "--models",
            f"{clip},{tmp_path / 'clip_folder'},{matseg}",
            "--benchmarks",
            "fmd,matseg",
            "--root",
            f"fmd={data['fmd']}",
            "--root",
            f"matseg={data['matseg']}",
            "--out",
            str(out),
            "--num_workers",
            "0",
            "--probe_epochs",
            "1",
        ]  # fmt: skip
    )
    assert code == 0
    records = load_records(out)
    folder = {
        (r["benchmark"], r["protocol"]): r for r in records if r["model"]["name"].endswith("folder")
    }
    records = [r for r in records if not r["model"]["name"].endswith("folder")]
    status = {(r["model"]["task"], r["benchmark"], r["protocol"]): r for r in records}
    # a save_pretrained folder runs what its .ckpt runs, with the same numbers
    for (task, benchmark, protocol), record in status.items():
        if task == "ClipMaterialTask":
            same = folder[(benchmark, protocol)]
            assert same["status"] == record["status"], same.get("error")
            assert same["metrics"] == record["metrics"]
    assert {k: r["status"] for k, r in status.items()} == {
        ("ClipMaterialTask", "fmd", "zero_shot"): "ok",
        ("ClipMaterialTask", "fmd", "linear_probe"): "ok",
        ("ClipMaterialTask", "matseg", "dense"): "skipped",
        ("MatSegTask", "fmd", "zero_shot"): "skipped",
        ("MatSegTask", "fmd", "linear_probe"): "ok",
        ("MatSegTask", "matseg", "dense"): "ok",
    }
    zero_shot = status[("ClipMaterialTask", "fmd", "zero_shot")]
    assert zero_shot["weights"] == "random" or "clip.ckpt" in json.dumps(zero_shot)
    assert "checkpoint" in (out / zero_shot["config"]).read_text()
