"""Pretrained weights by name (the hub's convention) or by local file path."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from matbench.errors import CheckpointError, MatbenchError, WeightsError, WeightsNotFoundError
from matbench.results import plain
from matbench.utils import sha256_file

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_CONTAINER_KEYS = ("state_dict", "model", "module", "state_dict_ema")


def looks_like_path(weights: str) -> bool:
    """True when ``weights`` names a file rather than a hub tag."""
    return (
        weights.endswith(WEIGHT_SUFFIXES)
        or weights.startswith((".", "~", "/"))
        or Path(weights).expanduser().exists()
    )


def weights_file(weights: str) -> Path:
    """``weights`` as an existing file path, or FileNotFoundError naming it."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file '{weights}' does not exist")
    return path


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (Lightning checkpoints too)."""
    path = weights_file(str(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(path, f"cannot be read as a torch state dict ({err})") from err
    for key in _CONTAINER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(path, "does not hold a state dict of tensors")
    return dict(obj)


def load_weights(
    module: nn.Module, path: str | Path, strip_prefixes: tuple[str, ...] = ("module.",)
) -> None:
    """Load a local weights file into ``module``; shapes must match for every shared key.

    Keys absent from the file keep their initialisation (e.g. a new classifier head); a file
    that shares no key with the module is an error, as it is surely the wrong file.
    """
    load_state(module, strip_prefix(load_state_dict_file(path), strip_prefixes), source=path)


def strip_prefix(state: dict[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """Drop each prefix that every key has (``module.`` of DDP, ``bert.``…)."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_state(module: nn.Module, state: Mapping[str, Tensor], source: str | Path) -> None:
    """Load the keys ``state`` shares with ``module`` (see :func:`load_weights`); errors name
    ``source``."""
    shared = check_state(module, state, source)
    module.load_state_dict({k: state[k] for k in shared}, strict=False)


def load_exact_state(
    module: nn.Module, path: str | Path, what: str, prefixes: tuple[str, ...] = ("module.",)
) -> None:
    """Load a checkpoint that must hold exactly ``module``'s keys (after stripping
    ``prefixes``) with equal shapes; ValueError naming the file otherwise (``what`` names the
    model the file should belong to)."""
    state = strip_prefix(load_state_dict_file(path), prefixes)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a checkpoint of {what}: {len(missing)} keys missing (e.g. "
            f"{missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(
            f"{path}: shape mismatch for '{bad[0]}': file {tuple(state[bad[0]].shape)}, model "
            f"{tuple(own[bad[0]].shape)} ({len(bad)} mismatching keys; the architecture "
            "arguments must be those the checkpoint was trained with)"
        )
    module.load_state_dict(state, strict=True)


def check_state(module: nn.Module, state: Mapping[str, Tensor], source: str | Path) -> list[str]:
    """The keys ``state`` shares with ``module``; ValueError naming ``source`` when there are
    none or a shape differs."""
    own = module.state_dict()
    shared = [k for k in state if k in own]
    if not shared:
        raise ValueError(
            f"{source}: none of its {len(state)} keys match {type(module).__name__} "
            f"(e.g. file has '{next(iter(state), '')}', model has '{next(iter(own), '')}')"
        )
    bad = [k for k in shared if state[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        raise ValueError(
            f"{source}: shape mismatch for '{k}': file {tuple(state[k].shape)}, "
            f"model {tuple(own[k].shape)} ({len(bad)} mismatching keys)"
        )
    return shared


def read_checkpoint_hparams(path: str | Path) -> dict[str, Any]:
    """The saved hyperparameters of a Lightning checkpoint (weights-only load: no pickle);
    :class:`CheckpointError` naming the file when it cannot be read (truncated, not a
    checkpoint)."""
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(
            path, f"cannot be read as a checkpoint (truncated or not a torch file?): {err}"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(path, "not a Lightning checkpoint (no 'state_dict')")
    hparams = ckpt.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        raise CheckpointError(path, "'hyper_parameters' is not a mapping")
    hparams = dict(hparams)
    hparams.pop("_instantiator", None)
    return hparams


def check_checkpoint_task(
    path: str | Path, saved_class: str, config_class: str, init_args: dict[str, Any]
) -> None:
    """Refuse a checkpoint of another task than the config's (its hyperparameters would turn
    the run into that task on data it was not made for)."""
    if saved_class.rsplit(".", 1)[-1] == config_class.rsplit(".", 1)[-1]:
        return
    hint = "use a checkpoint of the same task, or the config of the checkpoint's task"
    if "checkpoint" in init_args:
        hint = (
            f"to load its weights into {config_class.rsplit('.', 1)[-1]}, pass --model.checkpoint"
        )
    raise CheckpointError(
        path,
        f"holds a {saved_class.rsplit('.', 1)[-1]} but the config's model is "
        f"{config_class.rsplit('.', 1)[-1]}: {hint}",
    )


def checkpoint_overrides(
    hparams: dict[str, Any], init_args: dict[str, Any]
) -> list[tuple[str, Any, Any]]:
    """``(name, config value, checkpoint value)`` of every model argument the checkpoint
    changes."""
    return [
        (key, init_args[key], value)
        for key, value in hparams.items()
        if key in init_args and plain(init_args[key]) != plain(value)
    ]


# -- the hub: fail fast and say what to do offline ----------------------------------------------
def hub_endpoint() -> str:
    """The Hugging Face endpoint weights by name come from (``HF_ENDPOINT`` or huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@lru_cache(maxsize=4)
def _reachable(endpoint: str, timeout: float) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname or "", port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # name resolution has no timeout of its own: bound the whole probe
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hub_offline() -> bool:
    """True when weights by name can only come from the local cache: ``HF_HUB_OFFLINE`` is set
    or the hub does not answer within 3 s. In the latter case the hub client is switched to
    offline mode for this process, so a missing file fails at once instead of after a minute
    of retries, and cached files still load."""
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return True
    if _reachable(hub_endpoint(), 3.0):
        return False
    hub.HF_HUB_OFFLINE = True
    return True


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tried_url(err: BaseException) -> str | None:
    """The URL a hub error (or one of its causes) names, if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        match = re.search(r"https?://\S+?(?=[\s'\")]|:\s|$)", str(current))
        if match:
            return match.group(0).rstrip(".,:")
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def loading_weights(argument: str, value: str | None) -> Iterator[None]:
    """Turn a failure to load the weights ``value`` of task argument ``argument`` into a
    `WeightsError` that names both and the offline choices.

    Weights by name fail within seconds when the hub is unreachable (see `hub_offline`).
    """
    if value is None:
        yield
        return
    local = looks_like_path(value)
    if local and not Path(value).expanduser().exists():
        raise WeightsNotFoundError(argument, value)
    offline = False if local else hub_offline()
    try:
        yield
    except MatbenchError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        if local:
            problem = f"not usable weights for this model: {_first_line(err)}"
        elif offline:
            problem = (
                f"not in the local Hugging Face cache, and the hub ({hub_endpoint()}) is "
                "unreachable or HF_HUB_OFFLINE is set"
            )
            tried = _tried_url(err)
            if tried:
                problem += f" (tried {tried})"
        else:
            problem = f"cannot be fetched: {_first_line(err)}"
        raise WeightsError(argument, value, problem) from err


def create_timm_model(
    name: str,
    weights: str | None = None,
    argument: str = "weights",
    frozen: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """A timm model with weights by name or by local file.

    Args:
        name: timm model name.
        weights: None = random init; ``"timm"`` = timm's default pretrained weights for
            ``name``; a local file (timm's key layout or one timm's ``checkpoint_filter_fn``
            for the architecture converts, e.g. resampling a ViT's position embedding; keys
            the file lacks, such as a classifier, keep their initialisation); any other
            string = a timm pretrained tag (``<name>.<tag>``).
        argument: The task argument that names ``weights`` (in errors).
        frozen: The caller only reads the weights: inside :func:`sharing_weights`, one build
            serves every such caller.
        kwargs: Passed to ``timm.create_model`` (e.g. ``num_classes=0``).
    """
    if frozen:
        key = ("timm", name, weights, repr(sorted(kwargs.items())))
        return built_once(key, lambda: create_timm_model(name, weights, argument, **kwargs))
    import timm

    if weights is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    with loading_weights(argument, weights):
        if looks_like_path(weights):
            model = timm.create_model(name, pretrained=False, **kwargs)
            load_state(model, timm_state_from_file(model, name, weights), source=weights)
            return model
        if weights != "timm":
            name = f"{name}.{weights}"
        return timm.create_model(name, pretrained=True, **kwargs)


def timm_state_from_file(model: nn.Module, name: str, weights: str) -> dict[str, Tensor]:
    """A local weights file's state dict converted for ``model`` by timm's own
    ``checkpoint_filter_fn`` of the architecture (e.g. a ViT's position embedding resampled
    to the model's size, original DINOv2 key names)."""
    state = strip_prefix(load_state_dict_file(weights), ("module.",))
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is None:
        return state
    try:
        return convert(state, model)
    except Exception as err:  # noqa: BLE001 - any failure means a wrong file
        raise ValueError(f"{weights}: not weights of timm model '{name}': {err}") from err


def check_timm_weights_file(name: str, weights: str, **kwargs: Any) -> None:
    """ValueError naming the file unless it holds weights of timm model ``name`` (for code
    that lets timm load the file itself, which skips mismatching keys with only a log line)."""
    import timm

    model = timm.create_model(name, pretrained=False, **kwargs)
    check_state(model, timm_state_from_file(model, name, weights), source=weights)


def timm_normalization(model: nn.Module) -> tuple[Tensor, Tensor]:
    """The (1, 3, 1, 1) mean and std a timm model's weights expect (ImageNet's by default)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float32)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), dtype=torch.float32)
    return mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)


def sha256(path: str | Path) -> str:
    """SHA-256 of a file (see :func:`matbench.utils.sha256_file`)."""
    return sha256_file(path)


def verify_sha256(path: str | Path, expected_prefix: str) -> None:
    """Raise ValueError unless the file's SHA-256 starts with ``expected_prefix``."""
    actual = sha256(path)
    if not actual.startswith(expected_prefix.lower()):
        raise ValueError(
            f"{path}: sha256 {actual[:16]}… does not match the expected {expected_prefix}…; "
            "the weights file is corrupt or not the one expected"
        )


# -- one build per model in a sweep ---------------------------------------------------------------
class _Built:
    """A model built inside a :func:`sharing_weights` scope, and the version counter and dtype
    of each of its tensors then: any in-place change (a checkpoint loaded into it, an
    optimizer step) or dtype conversion since shows, and the model is built again."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.state = self._state()

    def _tensors(self) -> list[Tensor]:
        return [*self.model.parameters(), *self.model.buffers()]

    def _state(self) -> list[tuple[int, torch.dtype]]:
        return [(t._version, t.dtype) for t in self._tensors()]

    def unchanged(self) -> bool:
        return self._state() == self.state

    def view(self) -> nn.Module:
        """A new module tree over the same weight tensors: a user may replace or delete its
        sub-modules and attributes (a text encoder drops the image tower) without touching
        the built model."""
        import copy

        memo = {id(t): t for t in self._tensors()}
        return copy.deepcopy(self.model, memo)


class _Shared:
    """The builds of one :func:`sharing_weights` scope, oldest first."""

    def __init__(self, max_models: int) -> None:
        self.max_models = max_models
        self.builds: dict[tuple[Any, ...], _Built] = {}


_scope: _Shared | None = None


@contextmanager
def sharing_weights(max_models: int = 1) -> Iterator[None]:
    """Within this scope, models built by :func:`built_once` with the same key share one
    build's weights (a sweep evaluates one model with several protocols: it is built, or its
    weights are read, once). The last ``max_models`` builds are kept."""
    global _scope
    outer, _scope = _scope, _Shared(max_models)
    try:
        yield
    finally:
        _scope = outer


def built_once(key: tuple[Any, ...], build: Callable[[], nn.Module]) -> nn.Module:
    """``build()``, or inside :func:`sharing_weights` a view of the model already built for
    ``key`` (the same tensors, a new module tree). For read-only users (frozen evaluation):
    weights changed in place since the build are detected and the model is built again.

    Args:
        key: Everything the built model depends on (kind, name, weights, arguments); a part
            naming a local file stands for its size and modification time too.
        build: Builds the model.
    """
    if _scope is None:
        return build()
    key = tuple(_file_identity(part) for part in key)
    builds = _scope.builds
    entry = builds.pop(key, None)
    if entry is None or not entry.unchanged():
        while len(builds) >= _scope.max_models:
            builds.pop(next(iter(builds)))  # the oldest build
        entry = _Built(build())
    builds[key] = entry  # now the newest
    return entry.view()


def _file_identity(part: Any) -> Any:
    """A key part naming a local file stands for that file's size and modification time too."""
    if isinstance(part, str) and part and looks_like_path(part):
        path = Path(part).expanduser()
        if path.is_file():
            stat = path.stat()
            return (part, stat.st_size, stat.st_mtime_ns)
    return part
