"""Old argument names, kept working for one release with a deprecation message.

A task lists its renamed ``__init__`` arguments in ``renamed_arguments`` (old name -> new
name, or a :class:`Renamed` when the values changed too, or None when removed);
:class:`matbench.tasks.base.BaseTask` then accepts the old names in Python (and in the
hyperparameters of old checkpoints), and the command line rewrites them in YAML configs and
``--model.<old>`` arguments before parsing (:func:`translate_argv`), each time with a
:class:`MatbenchDeprecationWarning` that names the new key. Plain classes (the models) take
the same table through :func:`renamed_arguments`.
"""

from __future__ import annotations

import functools
import importlib
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class MatbenchDeprecationWarning(FutureWarning):
    """An argument or key that still works but will be removed in the next release."""


@dataclass(frozen=True)
class Renamed:
    """A renamed argument whose values changed too (``finetune: head`` became
    ``freeze_backbone: true``).

    Attributes:
        name: The new argument name.
        values: Each accepted old value -> its new value.
    """

    name: str
    values: Mapping[Any, Any]

    def __str__(self) -> str:
        return self.name

    def convert(self, owner: str, old: str, value: Any) -> Any:
        """The new value of ``old=value``; a value the old argument did not accept is an error."""
        if value not in self.values:
            accepted = ", ".join(repr(v) for v in self.values)
            raise ValueError(f"{owner}: '{old}' must be one of {accepted}, got {value!r}")
        return self.values[value]


#: One entry of a rename table: the new name, a :class:`Renamed`, or None (removed).
RenameEntry = str | Renamed | None


def apply_renames(
    owner: str,
    renamed: Mapping[str, RenameEntry],
    kwargs: Mapping[str, Any],
    overwrite: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """``kwargs`` with every old name of ``renamed`` replaced by its new name and value (a
    removed name is dropped), and the old names that were found; silent (see
    :func:`rename_kwargs`). Giving both names is an error unless ``overwrite`` (the old
    name's value wins: a record of defaults plus what was passed)."""
    out, found = dict(kwargs), []
    for old, new in renamed.items():
        if old not in out:
            continue
        found.append(old)
        value = out.pop(old)
        if new is None:  # removed: it had no effect (or only refused a value)
            continue
        if str(new) in out and not overwrite:
            raise TypeError(f"{owner}: give '{new}' only ('{old}' is its deprecated name)")
        out[str(new)] = new.convert(owner, old, value) if isinstance(new, Renamed) else value
    return out, found


def warn_renamed(owner: str, old: str, new: str, where: str = "") -> None:
    """Say that ``owner``'s argument ``old`` is now ``new``."""
    place = f"{where}: " if where else ""
    warnings.warn(
        f"{place}{owner} argument '{old}' is deprecated and will be removed in the next "
        f"release: use '{new}'",
        MatbenchDeprecationWarning,
        stacklevel=3,
    )


def rename_kwargs(
    owner: str, renamed: Mapping[str, RenameEntry], kwargs: dict[str, Any], where: str = ""
) -> dict[str, Any]:
    """``kwargs`` with every old name of ``renamed`` replaced by its new name (with a
    warning; a name mapped to None was removed and is dropped); giving both names is an
    error."""
    out, found = apply_renames(owner, renamed, kwargs)
    for old in found:
        if renamed[old] is None:
            warnings.warn(
                f"{where + ': ' if where else ''}{owner} argument '{old}' is no longer used "
                "and will be refused in the next release",
                MatbenchDeprecationWarning,
                stacklevel=3,
            )
        else:
            warn_renamed(owner, old, str(renamed[old]), where)
    return out


def accept_renamed(
    init: Callable[..., None],
    owner: str,
    renamed: Mapping[str, RenameEntry],
    after: Callable[[Any, Mapping[str, RenameEntry]], None] | None = None,
) -> Any:
    """``init`` (a class's ``__init__``) accepting the old keyword names of ``renamed``; the
    signature seen by ``inspect`` (and LightningCLI) stays the new one. ``after(self,
    renamed)`` runs when old names were given (to rename what was recorded before ``init``)."""

    import inspect

    takes_ignore = "ignore" in inspect.signature(init).parameters

    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        if not takes_ignore:
            # the base task's own argument, in the hyperparameters Lightning hands back
            kwargs.pop("ignore", None)
        init(self, *args, **rename_kwargs(owner, renamed, kwargs))
        if after is not None and set(kwargs) & set(renamed):
            after(self, renamed)

    return wrapped


def renamed_arguments(renamed: Mapping[str, RenameEntry]) -> Callable[[type], type]:
    """Class decorator: the class's ``__init__`` accepts the old names of ``renamed`` (old ->
    new) for one release, with a :class:`MatbenchDeprecationWarning`; the table is kept as
    ``cls.renamed_arguments``. For plain classes (models); tasks declare the table as a class
    attribute and :class:`~matbench.tasks.base.BaseTask` applies it."""

    def decorate(cls: type) -> type:
        cls.renamed_arguments = dict(renamed)  # type: ignore[attr-defined]
        cls.__init__ = accept_renamed(cls.__init__, cls.__name__, renamed)  # type: ignore[misc]
        return cls

    return decorate


# -- the command line -------------------------------------------------------------------------
def _task_class(name: str | None) -> type | None:
    if not name:
        return None
    try:
        if "." in name:
            module, _, attr = name.rpartition(".")
            return getattr(importlib.import_module(module), attr, None)
        return getattr(importlib.import_module("matbench.tasks"), name, None)
    except ImportError:
        return None


def renamed_arguments_of(class_path: str | None) -> dict[str, RenameEntry]:
    """The renamed arguments of the task ``class_path`` (a short or full name); for an
    unknown or unnamed task, the renames (not the removals) of every matbench task."""
    cls = _task_class(class_path)
    if cls is not None:
        return dict(getattr(cls, "renamed_arguments", {}))
    from matbench.tasks.base import BaseTask

    every: dict[str, RenameEntry] = {}
    todo = list(BaseTask.__subclasses__())
    while todo:
        sub = todo.pop()
        todo.extend(sub.__subclasses__())
        # renames only: a name one task removed may be another task's own argument
        every.update({k: v for k, v in getattr(sub, "renamed_arguments", {}).items() if v})
    return every


def _model_section(config: Any) -> dict[str, Any] | None:
    model = config.get("model") if isinstance(config, dict) else None
    return model if isinstance(model, dict) else None


def _config_paths(argv: Sequence[str]) -> list[tuple[int, str]]:
    """(position, path) of every ``--config`` value in ``argv``."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            found.append((i + 1, argv[i + 1]))
        elif arg.startswith("--config="):
            found.append((i, arg.split("=", 1)[1]))
    return found


def translate_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the deprecated model argument names replaced, in ``--model.<old>``
    arguments and in the ``model.init_args`` of ``--config`` files (a file that holds old
    names is replaced by a translated copy of the same name in a temporary folder)."""
    argv = list(argv)
    configs = _config_paths(argv)
    loaded: dict[int, Any] = {}
    class_path = None
    for position, path in configs:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # the parser reports it
        loaded[position] = data
        model = _model_section(data)
        if model and isinstance(model.get("class_path"), str):
            class_path = model["class_path"]
    for i, arg in enumerate(argv):
        if arg.startswith("--model.class_path="):
            class_path = arg.split("=", 1)[1]
        elif arg in ("--model", "--model.class_path") and i + 1 < len(argv):
            class_path = argv[i + 1]
        elif arg.startswith("--model=") and not arg.startswith("--model={"):
            class_path = arg.split("=", 1)[1]
    renamed = renamed_arguments_of(class_path)
    if not renamed:
        return argv
    for position, data in loaded.items():
        model = _model_section(data)
        init_args = model.get("init_args") if model else None
        if not isinstance(init_args, dict) or not set(init_args) & set(renamed):
            continue
        path = Path(
            argv[position].split("=", 1)[-1]
            if argv[position].startswith("--config=")
            else argv[position]
        )
        owner = str(model.get("class_path") or class_path or "the model")
        model["init_args"] = rename_kwargs(owner, renamed, init_args, where=str(path))
        folder = Path(tempfile.mkdtemp(prefix="matbench-config-")) / path.resolve().parent.name
        folder.mkdir(parents=True)
        copy = folder / path.name
        copy.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        argv[position] = f"--config={copy}" if argv[position].startswith("--config=") else str(copy)
    owner = str(class_path or "the model")
    for i, arg in enumerate(argv):
        for prefix in ("--model.init_args.", "--model."):
            if not arg.startswith(prefix):
                continue
            key, sep, value = arg[len(prefix) :].partition("=")
            new = renamed.get(key)
            if new is None:
                break
            warn_renamed(owner, key, str(new), "command line")
            if isinstance(new, Renamed):
                if sep:
                    value = _cli_value(new.convert(owner, key, value))
                elif i + 1 < len(argv):  # "--model.<old> <value>"
                    argv[i + 1] = _cli_value(new.convert(owner, key, argv[i + 1]))
            argv[i] = f"{prefix}{new}{sep}{value}"
            break
    return argv


def _cli_value(value: Any) -> str:
    """``value`` as a command-line (YAML) literal."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
