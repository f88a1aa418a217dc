"""The import paths of the last release keep working for one release (re-exports of the
helpers that moved to their one home)."""

from __future__ import annotations

import importlib

import pytest

# (old module, name, new module): the old path must give the very object of the new home.
MOVED = [
    ("matbench.datasets.folder", "split_per_class", "matbench.datasets.utils"),
    ("matbench.datasets.folder", "resize_sample", "matbench.datasets.utils"),
    ("matbench.datasets.folder", "file_digest", "matbench.datasets.utils"),
    ("matbench.datasets.folder", "read_image", "matbench.datasets.utils"),
    ("matbench.datasets.folder", "read_mask", "matbench.datasets.utils"),
    ("matbench.datasets.folder", "IMAGE_EXTENSIONS", "matbench.decoding"),
    ("matbench.datasets.folder", "FALLBACK_DESCRIPTION", "matbench.datasets.descriptions"),
    ("matbench.datasets.folder", "LABEL_LEAK_POLICIES", "matbench.datasets.descriptions"),
    ("matbench.datasets.folder", "assign_descriptions", "matbench.datasets.descriptions"),
    ("matbench.datasets.folder", "load_descriptions", "matbench.datasets.descriptions"),
    ("matbench.datasets.folder", "names_class", "matbench.datasets.descriptions"),
    ("matbench.datasets.folder", "redact_class", "matbench.datasets.descriptions"),
    ("matbench.datasets.matseg", "IMAGE_EXTENSIONS", "matbench.decoding"),
    ("matbench.datasets.matseg", "load_rgb", "matbench.datasets.utils"),
    ("matbench.datasets.matseg", "to_tensor", "matbench.datasets.utils"),
    ("matbench.datasets.regions", "resized_size", "matbench.datasets.utils"),
    ("matbench.datasets.lvis_materials", "load_image_reduced", "matbench.datasets.utils"),
    ("matbench.synth.sources", "IMAGE_EXTENSIONS", "matbench.decoding"),
    ("matbench.datasets.matseg", "FINISHED", "matbench.formats.matseg"),
    ("matbench.datasets.matseg", "SCENE_IMAGE", "matbench.formats.matseg"),
    ("matbench.datasets.matseg", "SQUARE_WEIGHT", "matbench.formats.matseg"),
    ("matbench.datasets.matseg", "ROUND_WEIGHT", "matbench.formats.matseg"),
    ("matbench.datasets.matseg", "ROI_MIN_TOTAL", "matbench.formats.matseg"),
    ("matbench.datasets.matseg", "parse_points", "matbench.formats.matseg"),
    ("matbench.datasets.matseg", "parse_relations", "matbench.formats.matseg"),
    ("matbench.datasets.matseg", "check_group_ids", "matbench.formats.matseg"),
    ("matbench.synth.writer", "FINISHED", "matbench.formats.matseg"),
    ("matbench.synth.benchmark", "EVAL_MAX_SIDE", "matbench.formats.matseg"),
    ("matbench.tasks.clip", "ZeroShotTask", "matbench.tasks.zeroshot"),
    ("matbench.tasks.clip", "load_templates", "matbench.tasks.zeroshot"),
    ("matbench.tasks.clip", "load_class_names", "matbench.tasks.zeroshot"),
    ("matbench.tasks.clip", "prompt_name", "matbench.tasks.zeroshot"),
    ("matbench.tasks", "ZeroShotTask", "matbench.tasks.zeroshot"),
    ("matbench.models.clip", "ContrastiveLoss", "matbench.models.losses"),
    ("matbench.models.clip", "gather_with_local_grad", "matbench.models.losses"),
    ("matbench.tasks.matseg", "matseg_loss", "matbench.models.losses"),
    ("matbench.models.clip", "OpenCLIPTextTower", "matbench.models.text"),
]

#: Names that changed on the move: old name -> name in the new home.
RENAMED = {"load_image_reduced": "read_image_reduced", "OpenCLIPTextTower": "OpenCLIPTextEncoder"}


@pytest.mark.parametrize(("old", "name", "new"), MOVED, ids=lambda v: str(v))
def test_old_import_path_gives_the_new_home(old: str, name: str, new: str) -> None:
    moved = getattr(importlib.import_module(old), name)
    home = importlib.import_module(new)
    assert moved is getattr(home, RENAMED.get(name, name))


def test_old_names_of_the_relation_weights() -> None:
    from matbench.formats.matseg import ROUND_WEIGHT, SQUARE_WEIGHT
    from matbench.synth.benchmark import WEIGHT_ROUND, WEIGHT_SQUARE

    assert (WEIGHT_SQUARE, WEIGHT_ROUND) == (SQUARE_WEIGHT, ROUND_WEIGHT) == (0.6, 0.3)
