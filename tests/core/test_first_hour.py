"""A new user's first hour: clear fast errors, help, quiet runs, named runs, LR schedules,
checkpoints that hold what they must."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matbench.cli import DESCRIPTION, TOOL_COMMANDS, main
from matbench.errors import ConfigError, DatasetNotFoundError, WeightsError

ROOT = Path(__file__).resolve().parents[2]
TOY = Path(__file__).with_name("toy.yaml")
FMD_CONFIG = ROOT / "configs" / "two_stream" / "fmd.yaml"
TINY_TWO_STREAM = [
    "--model.backbone=test_vit",
    "--model.text_encoder=minilm-random",
    "--model.text_weights=null",
    "--model.image_size=32",
    "--data.image_size=32",
    "--data.descriptions=null",
    "--data.num_workers=0",
    "--data.batch_size=4",
    "--trainer.accelerator=cpu",
]


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code)


# -- 1. weights and data errors: fast, one line, the argument, the offline choices ---------------
@pytest.fixture
def fmd_root(tmp_path: Path) -> Path:
    from tests.data.fmd.data import make

    return make(tmp_path / "fmd", per_class=1)


def test_hub_weights_offline_is_one_clear_line(
    fmd_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", "--config", str(FMD_CONFIG), "--data.root", str(fmd_root), *TINY_TWO_STREAM]
    assert _exit_code([*argv, "--model.weights=timm", "--trainer.logger=false"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
    assert lines[0].startswith("error: --model.weights 'timm': not in the local Hugging Face")
    assert "--model.weights null" in lines[1] and "HF_HUB_OFFLINE=1" in lines[1]
    assert "Traceback" not in err and "Namespace(" not in err and "Union" not in err


def test_unreachable_hub_fails_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not offline by setting, but the hub does not answer: the client is switched to offline
    mode at once and the error names the argument."""
    import huggingface_hub.constants as hub

    from matbench.models.clip import LateFusion

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    with pytest.raises(WeightsError, match="--model.fusion_weights 'timm'.*unreachable"):
        LateFusion(16, "test_vit", pretrained="timm", num_heads=2)
    assert hub.HF_HUB_OFFLINE  # switched: no retries, later loads use the cache only


#: The console script's path (``matbench`` = ``matbench.cli:main`` with ``sys.argv``), timed
#: from after the imports to the exit.
CONSOLE = """
import atexit, sys, time
start = time.perf_counter()
import matbench.datamodules, matbench.lightning_cli, matbench.tasks
from matbench.cli import main
imported, cpu = time.perf_counter(), time.process_time()
atexit.register(lambda: print(
    f"timing {imported - start:.2f} {time.perf_counter() - imported:.2f} "
    f"{time.process_time() - cpu:.2f}"
))
sys.argv = ["matbench", *sys.argv[1:]]
main()
"""


def test_shipped_config_offline_end_to_end(fmd_root: Path, tmp_path: Path) -> None:
    """The shipped FMD config as it is (DINOv2 and CLIP text weights from the hub), with a hub
    that refuses connections and HF_HUB_OFFLINE unset: one error line within seconds."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    argv = ["fit", "--config", str(FMD_CONFIG), "--data.root", str(fmd_root)]
    run = subprocess.run(
        [sys.executable, "-c", CONSOLE, *argv, "--data.descriptions=null"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith(("error:", "hint:"))]
    assert errors[0].startswith("error: --model.weights 'timm': not in the local Hugging Face")
    assert f"127.0.0.1:{port}" in errors[0] and "unreachable" in errors[0]
    assert "--model.weights null" in errors[1] and "HF_HUB_OFFLINE=1" in errors[1]
    assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) < 10, run.stderr
    imports, after, cpu = (float(t) for t in run.stdout.split("timing ")[1].split())
    # after the imports (Lightning, the tasks): parse, data check, the ViT built, one refused
    # connection, no retries; CPU time, as the wall time follows the machine's load
    print(f"offline error: imports {imports:.2f} s, then {after:.2f} s ({cpu:.2f} s CPU)")
    assert cpu < 15, f"{cpu:.1f} s CPU from the imports to the error ({after:.1f} s wall)"


def test_missing_and_wrong_weight_files(
    fmd_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", "--config", str(FMD_CONFIG), "--data.root", str(fmd_root), *TINY_TWO_STREAM]
    assert _exit_code([*argv, f"--model.weights={tmp_path / 'nope.pth'}"]) == 2
    assert "error: --model.weights" in capsys.readouterr().err
    wrong = tmp_path / "wrong.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), wrong)
    assert _exit_code([*argv, f"--model.weights={wrong}"]) == 2
    err = capsys.readouterr().err
    assert f"error: --model.weights '{wrong}': not usable weights for this model" in err


def test_data_root_is_checked_before_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # weights 'timm' would fail too: the data error must come first
    argv = ["fit", "--config", str(FMD_CONFIG), f"--data.root={tmp_path / 'none'}"]
    assert _exit_code([*argv, *TINY_TWO_STREAM, "--model.weights=timm"]) == 2
    err = capsys.readouterr().err
    assert "error: FMD: no usable dataset found in root" in err and "--data.root" in err


def test_debug_shows_the_error_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["fit", "--config", str(FMD_CONFIG), f"--data.root={tmp_path / 'none'}"]
    with pytest.raises(DatasetNotFoundError):
        main([*argv, "--debug"])
    monkeypatch.setenv("MATBENCH_DEBUG", "1")
    with pytest.raises(DatasetNotFoundError):
        main(argv)


# -- 2. help, typos, suites ----------------------------------------------------------------------
def test_help_typo_and_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert " ".join(DESCRIPTION.split()) in " ".join(out.split())
    assert "--version" in out and "--debug" in out
    assert all(name in out for name in TOOL_COMMANDS)

    assert _exit_code(["fitt", "--config", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'fitt'; did you mean fit" in err
    assert all(name in err for name in TOOL_COMMANDS)

    suite = ROOT / "configs" / "suite" / "fmd_dms_matseg.yaml"
    assert _exit_code(["test", "--config", str(suite), "--print_config"]) == 2
    assert f"matbench benchmark --config {suite}" in capsys.readouterr().err


# -- 3. start-up: help and tools answer without importing torch or Lightning --------------------
def test_help_and_tool_help_do_not_import_torch() -> None:
    tools = list(TOOL_COMMANDS)
    code = (
        "import sys, contextlib, io\n"
        "from matbench.cli import main\n"
        f"for argv in [['--help'], ['--version'], *[[t, '--help'] for t in {tools!r}]]:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'open_clip', 'timm') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "", f"imported by help/tool help: {run.stdout}"


# -- 4, 8, 9: a quiet, named run; checkpoints; the user's ModelCheckpoint --------------------------
NOISE = (
    "💡 Tip",
    "litlogger",
    "litmodels",
    "LeafSpec",
    "module(s) in eval mode",
    "dirpath has changed",
    "args and argv",
    "will override existing callbacks",
    "smaller than the logging interval",
)


def _toy(tmp_path: Path, *args: str) -> None:
    main(
        [
            *args[:1],
            "--config",
            str(TOY),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "logs"),
            "--trainer.enable_progress_bar=false",
            *args[1:],
        ]
    )


def test_named_quiet_run_with_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _toy(tmp_path, "fit", "--run_name", "r1", "--trainer.log_every_n_steps=50")
    run_dir = tmp_path / "logs" / "core" / "toy" / "r1"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    out = capfd.readouterr()
    text = out.out + out.err
    assert not [n for n in NOISE if n in text], text
    assert "matbench fit done" in text and str(last) in text and str(run_dir) in text

    # a short fit (3 batches, log interval 50) still logs its curve, and the learning rate
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"train/loss", "train/lr"} <= set(events.Tags()["scalars"])

    for _ in range(2):  # test twice: one log folder, inside the run
        _toy(tmp_path, "test", f"--ckpt_path={last}", f"--results_dir={tmp_path / 'res'}")
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["checkpoints", "test"]
    text = capfd.readouterr().out
    assert "matbench test done" in text and str(tmp_path / "res") in text
    record = json.loads(next((tmp_path / "res").glob("*.json")).read_text())
    assert record["checkpoint"] == str(last) and Path(record["checkpoint"]).is_absolute()
    assert record["loss"] > 0  # test/loss, as logged

    # without a logger, nothing lands in the current directory
    before = set(tmp_path.iterdir())
    _toy(tmp_path, "validate", "--trainer.logger=false")
    assert set(tmp_path.iterdir()) == before


def test_users_model_checkpoint_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    callback = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(mine), "filename": "toy-{epoch}", "save_top_k": -1},
    }
    _toy(tmp_path, "fit", "--run_name", "r2", f"--trainer.callbacks=[{json.dumps(callback)}]")
    assert sorted(p.name for p in mine.iterdir()) == ["toy-epoch=0.ckpt", "toy-epoch=1.ckpt"]
    assert not (tmp_path / "logs" / "core" / "toy" / "r2" / "checkpoints").exists()


# -- 8. learning-rate schedule -------------------------------------------------------------------
def _open_clip_cosine(base_lr: float, warmup: int, steps: int, step: int) -> float:
    """open_clip_train.scheduler.cosine_lr, written out."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, steps - warmup
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr


def test_cosine_schedule_matches_open_clip() -> None:
    from matbench.tasks.base import lr_lambda, warmup_steps

    assert warmup_steps(0.1, 50) == 5 and warmup_steps(7, 50) == 7
    factor = lr_lambda("cosine", 5, 50)
    for step in range(50):
        assert factor(step) * 0.3 == pytest.approx(_open_clip_cosine(0.3, 5, 50, step))
    constant = lr_lambda("constant", 3, 50)
    assert [constant(s) for s in (0, 2, 3, 49)] == [pytest.approx(1 / 3), 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_lambda("step", 0, 10)


@pytest.mark.parametrize("task", ["TwoStreamTask", "ClipMaterialTask", "MatSegTask"])
def test_every_trainable_task_has_the_schedule(task: str) -> None:
    import inspect

    import matbench.tasks as tasks

    params = inspect.signature(getattr(tasks, task)).parameters
    assert params["lr_schedule"].default == "cosine" and params["warmup"].default > 0


# -- 8. trainable-only checkpoints of frozen pretrained backbones ---------------------------------
def test_checkpoint_keeps_only_what_was_trained(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    from matbench.tasks import TwoStreamTask

    vit = timm.create_model("test_vit", num_classes=0, img_size=32)
    weights = tmp_path / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(weights))
    kwargs = {"backbone": "test_vit", "weights": str(weights), "image_size": 32, "num_classes": 3}
    task = TwoStreamTask(**kwargs, hidden_dim=8)
    torch.nn.init.normal_(task.model.head[0].weight)
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    assert set(checkpoint["matbench_frozen"]) == {"model.vision", "model.text"}
    assert all(k.startswith("model.head.") for k in checkpoint["state_dict"])
    path = tmp_path / "head.ckpt"
    torch.save({**checkpoint, "pytorch-lightning_version": "2.6.0"}, path)

    loaded = TwoStreamTask.load_from_checkpoint(path, map_location="cpu")
    for key, value in task.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key

    # other frozen weights than the ones trained with: an error, not silently wrong numbers
    other = timm.create_model("test_vit", num_classes=0, img_size=32)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(weights))
    with pytest.raises(ConfigError, match="model.vision"):
        TwoStreamTask.load_from_checkpoint(path, map_location="cpu")


# -- 14. class count and image size ---------------------------------------------------------------
def test_class_count_and_image_size_mismatch(
    fmd_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", "--config", str(FMD_CONFIG), "--data.root", str(fmd_root), *TINY_TWO_STREAM]
    argv += ["--model.weights=null", "--trainer.logger=false"]
    assert _exit_code([*argv, "--model.num_classes=3"]) == 2
    err = capsys.readouterr().err
    assert "num_classes=3 but FMDDataModule has 10 classes" in err
    assert "--model.num_classes 10" in err
    assert _exit_code([*argv, "--data.image_size=28"]) == 2
    assert "pass --data.image_size 32" in capsys.readouterr().err


# -- 11. the progress bar of a run limited by steps ----------------------------------------------
def test_step_limited_progress_bar() -> None:
    from types import SimpleNamespace

    from matbench.callbacks import StepProgressBar

    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(1).strip() == "Epoch 1"
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(1).strip() == "Epoch 1/2"


# -- 11. what TensorBoard shows ------------------------------------------------------------------
def _image_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return set(events.Tags()["images"])


def test_tensorboard_gets_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.data.fmd.data import make as make_fmd
    from tests.data.matseg.data import make as make_matseg

    fmd_root = make_fmd(tmp_path / "fmd", per_class=2)
    monkeypatch.chdir(tmp_path)
    logs = ["--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    main(["test", "--config", str(FMD_CONFIG), "--data.root", str(fmd_root), *TINY_TWO_STREAM,
          "--model.weights=null", "--run_name=ts",
          f"--results_dir={tmp_path / 'res'}", "--trainer.enable_progress_bar=false", *logs])  # fmt: skip
    run_dir = tmp_path / "logs" / "two_stream" / "fmd" / "ts" / "test"
    assert "test/confusion_matrix" in _image_tags(run_dir)

    bench = make_matseg(tmp_path / "matseg") / "benchmark"
    config = ROOT / "configs" / "matseg" / "rgb_baseline.yaml"
    logger = json.dumps(
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
         "init_args": {"save_dir": str(tmp_path / "logs"), "name": "matbench"}}
    )  # fmt: skip
    main(["test", "--config", str(config), f"--data.root={bench}", f"--trainer.logger={logger}",
          "--run_name=rgb", f"--results_dir={tmp_path / 'res'}"])  # fmt: skip
    tags = _image_tags(tmp_path / "logs" / "matseg" / "rgb_baseline" / "rgb" / "test")
    assert "test/similarity_map_0" in tags


def test_disk_feature_cache_is_not_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from matbench.tasks.two_stream import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache" / "matbench" / "features"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "matbench" / "features"


def test_schedule_in_a_run_follows_open_clip(tmp_path: Path) -> None:
    """A fit of 12 steps with 3 warmup steps: the rate of every optimizer step is open_clip's."""
    import lightning as L

    from tests.core.toy import ToyDataModule, ToyTask

    task = ToyTask(lr=0.1)
    task.hparams.update(lr_schedule="cosine", warmup=3)
    seen: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(
        max_steps=12, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_checkpointing=False, callbacks=[Record()], default_root_dir=str(tmp_path),
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(task, datamodule=ToyDataModule(num_samples=16, batch_size=4))
    assert seen == pytest.approx([_open_clip_cosine(0.1, 3, 12, s) for s in range(12)])
