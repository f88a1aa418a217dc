"""Batched reads: one decode per image for all the samples of a batch that come from it."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def load_once(keys: Sequence[Hashable], load: Callable[[Hashable], T]) -> Iterator[T]:
    """``load(key)`` for each key in order, calling ``load`` once per distinct key; a
    result is dropped after its key's last position, so a batch holds few decoded images."""
    last = {key: position for position, key in enumerate(keys)}
    held: dict[Hashable, T] = {}
    for position, key in enumerate(keys):
        if key not in held:
            held[key] = load(key)
        value = held[key]
        if last[key] == position:
            del held[key]
        yield value
