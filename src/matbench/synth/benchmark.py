"""Point annotation of generated scenes in the MatSeg benchmark's terms (groups, relations)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from matbench.formats.matseg import EVAL_MAX_SIDE, ROUND_WEIGHT, SQUARE_WEIGHT  # noqa: F401

#: A pixel belongs to a pure region when one material's fraction exceeds this.
PURE_FRACTION = 0.9
#: A mixed region holds exactly two materials, each with a fraction in this range ...
MIX_RANGE = (0.4, 0.6)
#: ... that together make up at least this fraction.
MIX_TOTAL = 0.95
#: Uniform draws per point of best-candidate sampling (:func:`sample_disks`).
SPREAD_CANDIDATES = 10
#: Relation weights of the benchmark format (old names of the format module's constants).
WEIGHT_SQUARE, WEIGHT_ROUND = SQUARE_WEIGHT, ROUND_WEIGHT


@dataclass
class Annotation:
    """Point annotation of one image.

    Args:
        groups: Group id (from 1) -> points ``(x, y, r)`` (column, row, radius in pixels).
        materials: Group id -> the materials (mask indices) the group is made of: one for a
            pure group, two for a mixed one.
        relations: ``(group ids, weight)``: weight 0.6 is written as a ``[..]`` line, 0.3 as
            ``(..)``.
    """

    groups: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    materials: dict[int, tuple[int, ...]] = field(default_factory=dict)
    relations: list[tuple[tuple[int, ...], float]] = field(default_factory=list)


def sample_disks(
    region: np.ndarray,
    rng: np.random.Generator,
    count: int,
    radius: int,
    min_radius: int = 2,
    margin: float = 1.0,
) -> list[tuple[int, int, int]]:
    """Up to ``count`` disks of ``region``, each at least ``margin`` px inside its border,
    spread over the region.

    The radius is ``radius``, or smaller (down to ``min_radius``) when the region is too thin.
    Disks do not overlap where the region has room; centres are always more than ``r`` apart.
    Centres are drawn by best-candidate sampling (Mitchell): the first uniformly, each further
    one the farthest from those already chosen among :data:`SPREAD_CANDIDATES` uniform
    draws. Points of one group are so spread over all of its region rather than clustered, so
    that where the points lie says little about which group they belong to.

    Returns:
        ``(x, y, r)`` tuples; empty if not even a ``min_radius`` disk fits.
    """
    if not region.any():
        return []
    # Pad with background so that the image border counts as a region border.
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    fit = int(np.floor(depth.max() - margin))
    r = min(radius, fit)
    if r < min_radius:
        return []
    ys, xs = np.divmod(np.flatnonzero(depth >= r + margin), region.shape[1])
    # Distance of every candidate centre to the nearest chosen one.
    nearest = np.full(xs.size, np.inf)
    chosen: list[tuple[int, int, int]] = []
    while len(chosen) < count:
        # Disjoint disks while they fit, then centres more than r apart.
        eligible = np.flatnonzero(nearest > 2 * r + 1)
        if eligible.size == 0:
            eligible = np.flatnonzero(nearest > r)
        if eligible.size == 0:
            break
        draws = eligible[rng.integers(eligible.size, size=1 if not chosen else SPREAD_CANDIDATES)]
        best = int(draws[np.argmax(nearest[draws])])
        x, y = int(xs[best]), int(ys[best])
        chosen.append((x, y, r))
        nearest = np.minimum(nearest, np.hypot(xs - x, ys - y))
    return chosen


def _mixed_regions(fractions: np.ndarray, min_pixels: int) -> dict[tuple[int, int], np.ndarray]:
    n = fractions.shape[0]
    low, high = MIX_RANGE
    present = fractions >= low
    # At most two materials can reach 0.4 at once: the first and the last such index.
    two = present.sum(axis=0) == 2
    if not two.any():
        return {}
    first = np.argmax(present, axis=0)
    last = n - 1 - np.argmax(present[::-1], axis=0)
    f_first = np.take_along_axis(fractions, first[None], axis=0)[0]
    f_last = np.take_along_axis(fractions, last[None], axis=0)[0]
    ok = two & (f_first <= high) & (f_last <= high) & (f_first + f_last >= MIX_TOTAL)
    pair_id = np.where(ok, first * n + last, -1)
    ids, counts = np.unique(pair_id[ok], return_counts=True)
    return {
        (int(i) // n, int(i) % n): pair_id == i
        for i, c in zip(ids.tolist(), counts.tolist(), strict=True)
        if c >= min_pixels
    }


def annotate(
    fractions: np.ndarray,
    rng: np.random.Generator,
    points_per_group: tuple[int, int] = (3, 8),
    min_points: int = 2,
) -> Annotation | None:
    """Points, groups and relations for an image whose material fractions are known.

    - A pure group per material: disks inside the region where its fraction exceeds
      :data:`PURE_FRACTION`.
    - A mixed group per pair of materials that are both clearly present (each fraction in
      :data:`MIX_RANGE`, together at least :data:`MIX_TOTAL`), related with weight 0.6
      (``[m,a]``) to each of the two pure groups, and with weight 0.3 (``(m,n)``) to every
      other mixed group that shares one material with it.

    These weights order points as the cosine between their fraction vectors does, so a
    descriptor that encodes the fractions scores (close to) 1.

    Args:
        fractions: ``float`` (materials, H, W) visible fractions in [0, 1].
        rng: Random generator (radius, number and position of points).
        points_per_group: Range of points per group.
        min_points: Groups with fewer points are dropped.

    Returns:
        The annotation, or ``None`` if fewer than two groups could be placed (nothing to score).
    """
    _, h, w = fractions.shape
    side = min(h, w)
    # Distance kept from region borders: 1 px, plus what rounding costs when the protocol
    # shrinks the image to EVAL_MAX_SIDE (~1.25 px there, i.e. 1.25 / scale px here).
    scale = min(1.0, EVAL_MAX_SIDE / max(h, w))
    margin = 1.0 if scale == 1.0 else 1.0 + 1.25 / scale
    min_radius = max(2, round(2 / scale))
    radius = int(rng.integers(min_radius, max(min_radius, side // 40) + 1))
    annotation = Annotation()
    pure_ids: dict[int, int] = {}

    def add(region: np.ndarray, r: int, materials: tuple[int, ...]) -> int | None:
        count = int(rng.integers(points_per_group[0], points_per_group[1] + 1))
        points = sample_disks(region, rng, count, r, min_radius=min_radius, margin=margin)
        if len(points) < min_points:
            return None
        gid = len(annotation.groups) + 1
        annotation.groups[gid] = points
        annotation.materials[gid] = materials
        return gid

    for i in range(fractions.shape[0]):
        gid = add(fractions[i] > PURE_FRACTION, radius, (i,))
        if gid is not None:
            pure_ids[i] = gid
    mixed_ids: dict[tuple[int, int], int] = {}
    min_pixels = int(np.pi * (min_radius + margin) ** 2)
    for pair, region in _mixed_regions(fractions, min_pixels).items():
        gid = add(region, max(min_radius, radius // 2), pair)
        if gid is not None:
            mixed_ids[pair] = gid
    for pair, gid in mixed_ids.items():
        for material in pair:
            if material in pure_ids:
                annotation.relations.append(((gid, pure_ids[material]), SQUARE_WEIGHT))
    pairs = list(mixed_ids)
    for k, a in enumerate(pairs):
        for b in pairs[k + 1 :]:
            if len(set(a) & set(b)) == 1:
                annotation.relations.append(((mixed_ids[a], mixed_ids[b]), ROUND_WEIGHT))
    if len(annotation.groups) < 2:
        return None
    return annotation


def scene_maker(mode: str) -> Callable[..., Any]:
    """The scene generator of a mode, called as ``maker(rng, images, config) -> Scene``.

    - ``infusion``: MatSeg pattern infusion (:func:`matbench.synth.scene.make_scene`);
    - ``illumination``: materials of similar colour under varying coloured light and cast
      shadows, which pixel colour cannot segment
      (:func:`matbench.synth.illumination.make_illumination_scene`).
    """
    if mode == "infusion":
        from matbench.synth.scene import make_scene

        return make_scene
    if mode == "illumination":
        from matbench.synth.illumination import make_illumination_scene

        return make_illumination_scene
    raise ValueError(f"unknown generator mode {mode!r}: expected 'infusion' or 'illumination'")
