"""The old argument names keep working for one release, with a deprecation message naming the
new one: in Python, in old checkpoints' hyperparameters, in YAML configs and on the command line
(every shipped config uses the new names)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from matbench.tasks.clip import ClipMaterialTask
from matbench.tasks.matseg import MatSegTask
from matbench.utils.deprecation import MatbenchDeprecationWarning, translate_argv

TINY = str(Path(__file__).parents[1] / "models" / "tiny_clip.json")
CONFIGS = Path(__file__).parents[2] / "configs"


def test_old_python_keywords_map_to_the_new_names() -> None:
    with pytest.warns(MatbenchDeprecationWarning, match="'lock_text' is deprecated.*'freeze_text'"):
        task = ClipMaterialTask(
            model=TINY, pretrained=None, lock_text=True, text_tower="minilm-random"
        )
    assert task.hparams.freeze_text is True and task.hparams.weights is None
    assert "lock_text" not in task.hparams and "pretrained" not in task.hparams
    with pytest.raises(TypeError, match="give 'freeze_text' only"):
        ClipMaterialTask(model=TINY, lock_text=True, freeze_text=True)
    with pytest.warns(MatbenchDeprecationWarning, match="'encoder_weights'"):
        matseg = MatSegTask(model="rgb", encoder="tu-test_convnext", encoder_weights=None)
    assert matseg.hparams.backbone == "tu-test_convnext"
    # save_pretrained writes the new names (the Hub mixin recorded the old ones as passed)
    assert "backbone" in matseg._hub_mixin_config and "encoder" not in matseg._hub_mixin_config
    assert matseg._hub_mixin_config["backbone"] == "tu-test_convnext"


def test_an_old_checkpoint_loads(tmp_path: Path) -> None:
    task = ClipMaterialTask(model=TINY, text_tower="minilm-random", freeze_text=True)
    hparams = dict(task.hparams)
    hparams["lock_text"] = hparams.pop("freeze_text")  # as the last release wrote it
    hparams["pretrained"] = hparams.pop("weights")
    path = tmp_path / "old.ckpt"
    import lightning

    checkpoint = {
        "state_dict": task.state_dict(),
        "hyper_parameters": hparams,
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, path)
    with pytest.warns(MatbenchDeprecationWarning):
        loaded = ClipMaterialTask.load_from_checkpoint(path)
    assert loaded.hparams.freeze_text is True


def test_old_yaml_keys_and_command_line_arguments(tmp_path: Path) -> None:
    old = {
        "model": {
            "class_path": "matbench.tasks.ClipMaterialTask",
            "init_args": {"model": TINY, "pretrained": None, "lock_image": False},
        }
    }
    path = tmp_path / "clip" / "old.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(old))
    with pytest.warns(MatbenchDeprecationWarning) as caught:
        argv = translate_argv(["fit", "--config", str(path), "--model.lock_text=true"])
    assert len(caught) == 3
    assert argv[-1] == "--model.freeze_text=true"
    copy = Path(argv[2])
    assert copy.name == "old.yaml" and copy.parent.name == "clip"  # the run's name is kept
    init_args = yaml.safe_load(copy.read_text())["model"]["init_args"]
    assert init_args == {"model": TINY, "weights": None, "freeze_image": False}
    assert translate_argv(["fit", "--config", str(CONFIGS / "clip/lvis_materials.yaml")]) == [
        "fit",
        "--config",
        str(CONFIGS / "clip/lvis_materials.yaml"),
    ]


def test_the_parser_accepts_old_configs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from matbench.cli import main

    path = tmp_path / "old.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "class_path": "matbench.tasks.MatSegTask",
                    "init_args": {"model": "rgb", "encoder": "tu-test_convnext"},
                }
            }
        )
    )
    with pytest.warns(MatbenchDeprecationWarning), pytest.raises(SystemExit):
        main(["fit", "--config", str(path), "--model.encoder_weights=null", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert printed["backbone"] == "tu-test_convnext" and printed["backbone_weights"] is None
    assert "encoder" not in printed


def test_every_shipped_config_uses_the_new_names() -> None:
    from matbench.utils.deprecation import renamed_arguments_of

    old_names = set(renamed_arguments_of(None))
    for path in sorted(CONFIGS.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        model = (data or {}).get("model") if isinstance(data, dict) else None
        init_args = (model or {}).get("init_args") or {}
        assert not set(init_args) & old_names, path
        for run in (data or {}).get("runs", []) if isinstance(data, dict) else []:
            for arg in run.get("overrides") or []:
                assert not any(f"--model.{name}" == str(arg) for name in old_names), path


def test_a_rename_that_changes_values() -> None:
    """``finetune: head|full`` became ``freeze_backbone: true|false``: the value is converted
    in Python, YAML and on the command line, and a value the old argument refused is an error."""
    from matbench.tasks.two_stream import TwoStreamTask

    with pytest.warns(
        MatbenchDeprecationWarning, match="'finetune' is deprecated.*'freeze_backbone'"
    ):
        task = TwoStreamTask(
            num_classes=3, backbone="test_vit", image_size=32, streams="vision", finetune="full"
        )
    assert task.hparams.freeze_backbone is False and "finetune" not in task.hparams
    assert not task.model.frozen
    with pytest.raises(ValueError, match="'finetune' must be one of 'head', 'full', got 'all'"):
        TwoStreamTask(num_classes=3, streams="text", text_encoder="minilm-random", finetune="all")
    owner = "matbench.tasks.TwoStreamTask"
    with pytest.warns(MatbenchDeprecationWarning):
        argv = translate_argv(["fit", "--model", owner, "--model.finetune=head"])
    assert argv[-1] == "--model.freeze_backbone=true"
    with pytest.warns(MatbenchDeprecationWarning):
        argv = translate_argv(["fit", "--model", owner, "--model.finetune", "full"])
    assert argv[-2:] == ["--model.freeze_backbone", "false"]


def test_the_plain_models_take_the_new_names_and_warn_on_the_old() -> None:
    from matbench.models.clip import MaterialCLIP
    from matbench.models.matseg import MatSegUNet
    from matbench.models.two_stream import TwoStreamModel

    with pytest.warns(MatbenchDeprecationWarning, match="MaterialCLIP argument 'lock_image'"):
        clip = MaterialCLIP(model=TINY, lock_image=True, text_tower="minilm-random")
    assert not any(p.requires_grad for p in clip.image.parameters())
    with pytest.warns(MatbenchDeprecationWarning, match="'encoder' is deprecated.*'backbone'"):
        unet = MatSegUNet(encoder="tu-test_convnext", descriptor_dim=4)
    assert unet.descriptor_dim == 4
    with pytest.warns(MatbenchDeprecationWarning, match="'mask_threshold'"):
        model = TwoStreamModel(3, streams="text", text_encoder="minilm-random", mask_threshold=0.25)
    assert model.patch_fraction == 0.25
