"""The progress bar of matbench's long-running tools (on stderr, so stdout stays clean)."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(
    total: int, desc: str, unit: str, enabled: bool = True, position: int | None = None
) -> Any:
    """A ``tqdm`` bar of ``total`` ``unit``s, refreshed at most twice a second; a silent
    one when not ``enabled``; ``position`` stacks several bars."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        file=sys.stderr,
        position=position,
        mininterval=0.5,
        dynamic_ncols=True,
    )
