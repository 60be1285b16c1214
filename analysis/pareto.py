"""Pareto fronts of result tables (pandas) and the knee point; the geometry (non-dominated
sorting, 2-D hypervolume) is layerout.dominance.

Conventions (tested in tests/test_analysis.py):

- Dominance is the usual weak one: ``a`` dominates ``b`` when ``a`` is at least as good in every
  objective and strictly better in one. A point tied with another in one objective and worse in
  the other is therefore dominated (it is not on the front).
- **Duplicates are all kept**: trials with exactly the same objective values do not dominate each
  other, so if one is on the front all of them are (each is a different policy that reached the
  same point; pareto.csv lists every one). ``knee_point`` and ``hypervolume_2d`` work on the
  distinct points; where one duplicate must be chosen (the knee, an export) the first row in
  table order (the trial evaluated first) wins.
- Rows with a missing (NaN) objective, i.e. failed trials, are dropped with a ``UserWarning``.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

# the geometry lives below tuning/ and analysis/ (both use it); these names stay importable from here
from layerout.dominance import hypervolume_2d, pareto_mask  # noqa: F401
from layerout.metrics import DEFAULT_OBJECTIVES  # noqa: F401


def _check_objectives(objectives: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for name, mode in objectives:
        if mode not in ("max", "min"):
            raise ValueError(f"objective {name!r}: mode must be 'max' or 'min', got {mode!r}")
        out.append((str(name), mode))
    if not out:
        raise ValueError("need at least one objective")
    return out


def _as_max(df: pd.DataFrame, objectives: list[tuple[str, str]]) -> np.ndarray:
    """Objective values as a float array in which larger is better for every column."""
    cols = []
    for name, mode in objectives:
        v = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)
        cols.append(v if mode == "max" else -v)
    return np.column_stack(cols) if cols else np.empty((len(df), 0))


def drop_missing(df: pd.DataFrame, objectives: Sequence[tuple[str, str]] = DEFAULT_OBJECTIVES) -> pd.DataFrame:
    """``df`` without rows whose objectives are NaN; warns (naming the trials) if any were dropped."""
    objectives = _check_objectives(objectives)
    missing = [n for n, _ in objectives if n not in df.columns]
    if missing:
        raise KeyError(f"objective column(s) not in the table: {', '.join(missing)}")
    vals = _as_max(df, objectives)
    bad = ~np.isfinite(vals).all(axis=1) if len(df) else np.zeros(0, dtype=bool)
    if bad.any():
        ids = df["trial_id"].astype(str).tolist() if "trial_id" in df.columns else [str(i) for i in df.index]
        dropped = [ids[i] for i in np.flatnonzero(bad)]
        shown = ", ".join(dropped[:8]) + (" ..." if len(dropped) > 8 else "")
        warnings.warn(
            f"ignored {len(dropped)} row(s) with missing {'/'.join(n for n, _ in objectives)} "
            f"(failed trials?): {shown}",
            UserWarning,
            stacklevel=3,
        )
    return df[~bad]


def pareto_front(
    df: pd.DataFrame, objectives: Sequence[tuple[str, str]] = DEFAULT_OBJECTIVES
) -> pd.DataFrame:
    """The non-dominated rows of ``df`` (original index kept), best first objective first.

    ``objectives``: ``(column, "max"|"min")`` pairs. Rows with a NaN objective are dropped with a
    warning. Exact duplicates of a front point are all kept (see the module docstring). The
    result is sorted by the first objective, best first, then by the second, best first, then by
    table order.
    """
    objectives = _check_objectives(objectives)
    clean = drop_missing(df, objectives)
    if clean.empty:
        return clean.copy()
    vals = _as_max(clean, objectives)
    front = clean[pareto_mask(vals)].copy()
    fv = _as_max(front, objectives)
    # lexsort: last key is primary; negate for best first; position keeps table order stable
    keys = [np.arange(len(front))] + [-fv[:, j] for j in reversed(range(fv.shape[1]))]
    order = np.lexsort(keys)
    return front.iloc[order]


def knee_point(front: pd.DataFrame, objectives: Sequence[tuple[str, str]] = DEFAULT_OBJECTIVES):
    """Index label of the knee of a 2-objective front.

    Both objectives are scaled to [0, 1] over the front; the two ends of the front are joined
    by a line, and the knee is the point farthest from that line on the side of the ideal corner
    (best in both), i.e. where the trade-off bends most. Choices for degenerate fronts:

    - one distinct point: that point;
    - two distinct points, or a front that is straight or bends inward (no point beyond the
      line): the end with the best first objective (highest validation accuracy: the
      conservative choice, no accuracy given up for nothing);
    - ties in distance: the best first objective, then table order; duplicates: the first row.

    Raises ``ValueError`` for an empty front.
    """
    objectives = _check_objectives(objectives)
    if len(objectives) != 2:
        raise ValueError("knee_point needs exactly two objectives")
    front = drop_missing(front, objectives)
    if front.empty:
        raise ValueError("knee_point: the front is empty")
    vals = _as_max(front, objectives)
    pos = np.arange(len(front))
    # distinct points, keeping the first row of each duplicate group
    _, first = np.unique(vals, axis=0, return_index=True)
    first = np.sort(first)
    v, pos = vals[first], pos[first]
    best_first = int(pos[np.lexsort((pos, -v[:, 0]))[0]])
    if len(v) <= 2:
        return front.index[best_first]
    lo, hi = v.min(axis=0), v.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    z = (v - lo) / span
    # ends: best in objective 1 (A) and best in objective 2 (B)
    a = z[np.lexsort((-z[:, 1], -z[:, 0]))[0]]
    b = z[np.lexsort((-z[:, 0], -z[:, 1]))[0]]
    d = b - a
    norm = float(np.hypot(d[0], d[1]))
    if norm == 0.0:
        return front.index[best_first]
    # signed distance: positive towards the ideal corner (1, 1)
    cross = (d[0] * (z[:, 1] - a[1]) - d[1] * (z[:, 0] - a[0])) / norm
    ideal_side = np.sign(d[0] * (1 - a[1]) - d[1] * (1 - a[0])) or 1.0
    dist = cross * ideal_side
    if not (dist > 1e-12).any():
        return front.index[best_first]
    order = np.lexsort((pos, -v[:, 0], -np.round(dist, 12)))
    return front.index[int(pos[order[0]])]

