"""MOASHA's rank rule at one rung, fast and monotone (numpy only: no Ray, no pandas, no analysis).

``tuning.schedulers.rung_rank`` delegates here. The first version re-sorted every recorded result
into fronts and ran the epsilon net over every front, for each objective it may start from, on
every decision: 2.4 s with 1,000 results at a rung. And it was not monotone: the net prefers
points far from those already chosen, so raising a result's accuracy could bring it closer to a
chosen point and turn CONTINUE into STOP. This module decides the same way in the cases that do
not depend on the net, and uses the net only where it decides, in a form that is monotone:

1. Fronts of the *recorded* results alone (two objectives: one sort, one vectorized pass per front,
   ``front_levels``). The new result's front ``f`` is the number of fronts among the recorded
   results that dominate it; ``B``, the recorded results on better fronts, come before it
   whatever it is, and the results it dominates fall behind it. Raising an objective never
   raises ``f`` or ``B``.
2. With ``K`` results continuing (rank ``r`` continues when ``r * rf < n``): ``B >= K`` stops,
   ``B + |F| < K`` continues (``F``: the recorded results on front ``f`` that it does not
   dominate), and only in between does the order within the front decide.
3. There, the epsilon net of the recorded front (objectives scaled to [0, 1] over the recorded
   results; Euclidean distances; from the best point in the chosen objective, then the point
   farthest from those chosen; ties to the earlier result) is computed alone, and the new result
   enters it at the first step where it is farther from every chosen point than the point the
   net would take next. Its distance to a chosen point counts only what it beats that point by
   (``max(new - chosen, 0)``): a distance that never shrinks when an objective rises. Chosen
   points it dominates do not count in its rank. The starting objective is taken in its favour.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from layerout.dominance import pareto_mask


def peel_fronts(values: np.ndarray) -> Iterator[np.ndarray]:
    """The row indices of each non-dominated front of ``values`` (every column maximized, no
    NaN), best front first, computed one front at a time so that a caller can stop early. Two
    columns: one sort, then one vectorized running maximum per front (numpy has no longest-chain
    primitive; this is the 2-D non-dominated sort without a Python loop over rows). More
    columns: ``pareto_mask`` on what is left."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        return
    if values.shape[1] != 2:
        left = np.arange(n)
        while len(left):
            on = pareto_mask(values[left])
            yield left[on]
            left = left[~on]
        return
    x, y = values[:, 0], values[:, 1]
    # x descending, then y descending: every earlier row has x >= this one's, and a higher y
    # where x is equal, so a row is dominated exactly when an earlier row has a y >= its own and
    # is not its exact duplicate (duplicates sit side by side and share a front)
    left = np.lexsort((-y, -x))
    while len(left):
        xl, yl = x[left], y[left]
        prev = np.empty_like(yl)
        prev[0] = -np.inf
        np.maximum.accumulate(yl[:-1], out=prev[1:])
        on = yl > prev
        dup = np.zeros(len(left), dtype=bool)
        dup[1:] = (xl[1:] == xl[:-1]) & (yl[1:] == yl[:-1])
        if dup.any():
            head = np.maximum.accumulate(np.where(dup, 0, np.arange(len(left))))
            on = on[head]
        yield left[on]
        left = left[~on]


def front_levels(values: np.ndarray) -> np.ndarray:
    """Front index of each row (0 = non-dominated): the length of the longest chain of rows
    dominating it (``peel_fronts`` to the end)."""
    level = np.zeros(len(values), dtype=np.int64)
    for k, rows in enumerate(peel_fronts(values)):
        level[rows] = k
    return level


def _dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of ``a`` that dominate the point ``b`` (all >=, one >)."""
    return (a >= b).all(axis=1) & (a > b).any(axis=1)


def place_in_front(new: np.ndarray, front: np.ndarray, dominated: np.ndarray, scale: np.ndarray,
                   start: int) -> int:
    """``new``'s place (0 = first) in the epsilon net of ``front`` (recorded rows of its front,
    in recording order) started from objective ``start``: the net of ``front`` alone, ``new``
    entering at the first step where its distance ``|max(new - chosen, 0)|`` to every chosen
    point exceeds the distance of the point the net takes next (ties to the recorded point).
    Chosen points ``new`` dominates (``dominated``) are not counted."""
    m = len(front)
    if m == 0:
        return 0
    pts = front / scale
    nw = new / scale
    first = int(np.lexsort((np.arange(m), -pts[:, start]))[0])
    if nw[start] > pts[first, start]:
        return 0
    place = 0 if dominated[first] else 1
    dist = np.linalg.norm(pts - pts[first], axis=1)
    dist[first] = -np.inf
    reach = float(np.linalg.norm(np.maximum(nw - pts[first], 0.0)))
    for _ in range(m - 1):
        nxt = int(np.argmax(dist))
        if reach > dist[nxt]:
            return place
        place += 0 if dominated[nxt] else 1
        reach = min(reach, float(np.linalg.norm(np.maximum(nw - pts[nxt], 0.0))))
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
        dist[nxt] = -np.inf
    return place


def cut_off(n: int, reduction_factor: float) -> int:
    """How many of ``n`` ranked results continue: the ranks ``r`` (0 = best) with
    ``r * reduction_factor < n``."""
    k = int(np.ceil(n / reduction_factor))
    while k > 1 and (k - 1) * reduction_factor >= n:  # float rounding, either way
        k -= 1
    while k * reduction_factor < n:
        k += 1
    return k


def rank_at_rung(new: Sequence[float], recorded: np.ndarray, reduction_factor: float,
                 levels: np.ndarray | None = None) -> tuple[int, int, bool]:
    """(rank of ``new`` among ``recorded`` + itself, 0 = best; the number ranked; whether it
    continues: ``rank * reduction_factor < n``). ``recorded``: (n, d) array-like, every column
    maximized, no NaN; ``levels``: ``front_levels(recorded)`` when the caller keeps them
    (``RungTable``), else the fronts are peeled only as far as needed. The rank is exact when the
    result continues or the order within its front stops it; when the recorded results on
    better fronts alone fill the top ``1/rf``, it stops as soon as that is known and its rank is
    the number of them counted (those dominating it, when they are enough; else the better
    fronts up to the one that fills the cut-off): past the cut-off either way."""
    new = np.asarray(new, dtype=float)
    recorded = np.asarray(recorded, dtype=float).reshape(-1, len(new))
    n = len(recorded) + 1
    if n == 1:
        return 0, 1, True
    keep = cut_off(n, reduction_factor)
    above = _dominates(recorded, new)
    n_above = int(np.count_nonzero(above))
    if n_above >= keep:
        return n_above, n, False
    better, front = 0, np.empty(0, dtype=np.int64)
    if levels is not None:
        f = int(levels[above].max()) + 1 if n_above else 0
        sizes = np.bincount(levels, minlength=f + 1)
        filled = np.cumsum(sizes[:f])
        if f and filled[-1] >= keep:
            return int(filled[np.argmax(filled >= keep)]), n, False
        better = int(filled[-1]) if f else 0
        front = np.flatnonzero(levels == f)
    else:
        for rows in peel_fronts(recorded):
            if n_above == 0:  # no recorded result left dominates it: this is its front
                front = np.sort(rows)
                break
            n_above -= int(np.count_nonzero(above[rows]))
            better += len(rows)
            if better >= keep:
                return better, n, False
    pts = recorded[front]  # in recording order: ties in the net go to the earlier result
    dominated = (new >= pts).all(axis=1) & (new > pts).any(axis=1)
    lo, hi = recorded.min(axis=0), recorded.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    place = min(place_in_front(new, pts, dominated, scale, s) for s in range(len(new)))
    rank = better + place
    return rank, n, rank * reduction_factor < n


class RungTable:
    """The results recorded at one rung as an array, with their front levels kept up to date as
    results are added, so that a decision costs a few vectorized passes over the rung
    (``rank_at_rung`` with ``levels``) instead of a non-dominated sort. Adding a result raises
    only the levels of the results it dominates: ``level(p) = max(level(p), f + 1 + level of p
    among the results it dominates)``, ``f`` its own front."""

    def __init__(self, dims: int, rows: Sequence[Sequence[float]] = ()) -> None:
        self.values = np.asarray(rows, dtype=float).reshape(-1, dims)
        self.levels = front_levels(self.values)
        self._n = len(self.values)

    def __len__(self) -> int:
        return self._n

    def rank(self, new: Sequence[float], reduction_factor: float) -> tuple[int, int, bool]:
        """``rank_at_rung`` of ``new`` against the results recorded so far."""
        return rank_at_rung(new, self.values[:self._n], reduction_factor, self.levels[:self._n])

    def add(self, row: Sequence[float]) -> None:
        """Record one more result (signed: every column maximized)."""
        row = np.asarray(row, dtype=float)
        vals, levels = self.values[:self._n], self.levels[:self._n]
        above = _dominates(vals, row)
        f = int(levels[above].max()) + 1 if above.any() else 0
        below = np.flatnonzero((row >= vals).all(axis=1) & (row > vals).any(axis=1))
        if len(below):
            levels[below] = np.maximum(levels[below], f + 1 + front_levels(vals[below]))
        if self._n == len(self.values):  # grow by doubling: one copy per doubling, not per result
            cap = max(8, 2 * self._n)
            self.values = np.concatenate([self.values, np.empty((cap - self._n, vals.shape[1]))])
            self.levels = np.concatenate([self.levels, np.empty(cap - self._n, dtype=np.int64)])
        self.values[self._n], self.levels[self._n] = row, f
        self._n += 1


class PlanPrior:
    """What a schedule that learns from training (``adaptive``) saves by its end, from the trials
    of its family that trained to their end: a prior for the trials still running.

    Such a trial's ``planned_compute_saved_frac`` holds its current mask to the end: 0 until its
    first freeze, though it will freeze later (its plan only ever rises). Ranked on 0 it looks
    like the unfrozen baseline with less accuracy and is stopped more easily than it deserves.
    MOASHA ranks it on ``max(its own plan, the median final saving of the finished trials of the
    same family and epochs)``: its plan where it already promises more, the family's record
    where it has not decided yet. Before any such trial finished there is no prior and its own
    plan counts, as before. Keyed by (family, epochs): a shorter run's saving counts its
    shorter training too."""

    def __init__(self, finals: dict[str, list[float]] | None = None) -> None:
        self.finals: dict[str, list[float]] = {k: list(v) for k, v in (finals or {}).items()}

    @staticmethod
    def key(family: str, epochs: int) -> str:
        return f"{family}/{int(epochs)}"  # a string: the state is saved as JSON-like data

    def record(self, family: str, epochs: int, final: float) -> None:
        """A trial of ``family`` trained its ``epochs`` to the end and saved ``final``."""
        if np.isfinite(final):
            self.finals.setdefault(self.key(family, epochs), []).append(float(final))

    def estimate(self, family: str, epochs: int) -> float | None:
        """The median final saving of the finished trials of this family and length, or None."""
        done = self.finals.get(self.key(family, epochs))
        return float(np.median(done)) if done else None

    def planned(self, family: str, epochs: int, own: float) -> float:
        """The planned saving a learning trial is ranked on: its own, or the prior if higher."""
        prior = self.estimate(family, epochs)
        return own if prior is None else max(own, prior)
