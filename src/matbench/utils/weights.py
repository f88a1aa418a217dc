"""Pretrained weights by name (the hub's convention) or by local file path."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

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
        raise ValueError(f"{path}: cannot be read as a torch state dict ({err})") from err
    for key in _CONTAINER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: does not hold a state dict of tensors")
    return dict(obj)


def load_weights(
    module: nn.Module, path: str | Path, strip_prefixes: tuple[str, ...] = ("module.",)
) -> None:
    """Load a local weights file into ``module``; shapes must match for every shared key.

    Keys absent from the file keep their initialisation (e.g. a new classifier head); a file
    that shares no key with the module is an error, as it is surely the wrong file.
    """
    state = load_state_dict_file(path)
    for prefix in strip_prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    own = module.state_dict()
    shared = [k for k in state if k in own]
    if not shared:
        raise ValueError(
            f"{path}: none of its {len(state)} keys match {type(module).__name__} "
            f"(e.g. file has '{next(iter(state), '')}', model has '{next(iter(own), '')}')"
        )
    bad = [k for k in shared if state[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        raise ValueError(
            f"{path}: shape mismatch for '{k}': file {tuple(state[k].shape)}, "
            f"model {tuple(own[k].shape)} ({len(bad)} mismatching keys)"
        )
    module.load_state_dict({k: state[k] for k in shared}, strict=False)


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256(path: str | Path) -> str:
    """SHA-256 of a file (cached per path, size and modification time)."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def verify_sha256(path: str | Path, expected_prefix: str) -> None:
    """Raise ValueError unless the file's SHA-256 starts with ``expected_prefix``."""
    actual = sha256(path)
    if not actual.startswith(expected_prefix.lower()):
        raise ValueError(
            f"{path}: sha256 {actual[:16]}… does not match the expected {expected_prefix}…; "
            "the weights file is corrupt or not the one expected"
        )
