"""The process group, when there is one."""

from __future__ import annotations

import torch.distributed as dist


def world_and_rank() -> tuple[int, int]:
    """``(world size, rank)`` of the default process group; ``(1, 0)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0
