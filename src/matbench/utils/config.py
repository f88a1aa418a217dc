"""Reading one section (``model`` or ``data``) of an experiment config without LightningCLI."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


def config_section(
    config: str | Path, section: str, package: str, default: str | None = None
) -> tuple[type, dict[str, Any]]:
    """The class and ``init_args`` of one ``{class_path, init_args}`` section of a YAML config.

    Args:
        config: The experiment config file.
        section: ``"model"`` or ``"data"``.
        package: Where a short class name (no dot) is looked up, e.g. ``matbench.tasks``.
        default: Class path used when the section has none.
    """
    import yaml

    path = Path(config)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as err:
        raise FileNotFoundError(f"config '{config}' does not exist") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{config}: not valid YAML ({err})") from err
    part = data.get(section) if isinstance(data, dict) else None
    if not isinstance(part, dict):
        raise ValueError(f"{config}: no '{section}' section")
    class_path = part.get("class_path", default)
    if not class_path:
        raise ValueError(f"{config}: the '{section}' section has no class_path")
    if "." not in class_path:
        class_path = f"{package}.{class_path}"
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{config}: cannot import {section} class '{class_path}' ({err})") from err
    return cls, dict(part.get("init_args") or {})
