"""CPU threads for small tensor work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_cpu_thread(device: str | torch.device = "cpu") -> Iterator[None]:
    """One CPU thread for small tensor work (a linear probe's fits, per-sample crops and
    resizes, mask checks): such ops gain nothing from more threads, and on a busy machine each
    op's thread hand-off costs 10x the work (measured on 2 loaded cores: 3.0 s vs 0.26 s per
    10-epoch fit of 200 x 384 features; 130-250 ms vs 12 ms per 224 px background blur; 107
    ms vs 17 ms per zero-shot region crop). Loader workers run with one thread already."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
