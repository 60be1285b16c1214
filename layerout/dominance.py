"""Non-dominated sorting and the 2-D hypervolume: the geometry of fronts, Ray-free and pandas-free.

It sits in ``layerout/`` because both sides use it: ``tuning.schedulers`` ranks results at a
rung with it on the search's driver, and ``analysis.pareto`` builds the fronts of finished
experiments. Keeping it below both means ``tuning/`` never imports ``analysis/``.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (every column maximized, no NaN)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        ge = (values >= values[i]).all(axis=1)
        gt = (values > values[i]).any(axis=1)
        if (ge & gt).any():
            keep[i] = False
    return keep


def hypervolume_2d(points: Iterable[Sequence[float]] | np.ndarray | Any, ref: Sequence[float]) -> float:
    """Area dominated by ``points`` and bounded below by ``ref``; both objectives maximized.

    ``points``: an (N, 2) array-like (or a 2-column DataFrame) of (objective 1, objective 2) with
    larger = better; ``ref``: the reference point (e.g. (0, 0), or (baseline accuracy, 0)). Points
    that do not beat ``ref`` in both objectives add nothing; NaN rows are ignored; duplicates and
    dominated points are harmless. An empty set has hypervolume 0.
    """
    p = np.asarray(points.to_numpy() if hasattr(points, "to_numpy") else list(points), dtype=float)
    if p.size == 0:
        return 0.0
    p = p.reshape(-1, 2)
    rx, ry = float(ref[0]), float(ref[1])
    p = p[np.isfinite(p).all(axis=1)]
    p = p[(p[:, 0] > rx) & (p[:, 1] > ry)]
    if len(p) == 0:
        return 0.0
    # sweep by the first objective, best first; each point adds the strip above the best y so far
    p = p[np.lexsort((-p[:, 1], -p[:, 0]))]
    hv, best_y = 0.0, ry
    for x, y in p:
        if y > best_y:
            hv += (x - rx) * (y - best_y)
            best_y = y
    return float(hv)
