"""Means and 95% intervals of repeated runs (the confirmation on fresh seeds).

An interval is Student's t interval of the mean: ``mean ± t(0.975, n - 1) · sd / sqrt(n)`` with the
sample standard deviation (``ddof = 1``); with one run there is no interval (NaN).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values, their standard deviation and the 95% interval of the mean
    (NaN where ``n`` is too small)."""

    mean: float
    std: float
    low: float
    high: float
    n: int


def interval(values: Iterable[float]) -> Interval:
    """Mean, standard deviation and 95% t interval of the finite ``values``."""
    v = np.asarray([float(x) for x in values if x is not None and math.isfinite(float(x))], dtype=float)
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, sd, mean - half, mean + half, n)


def summarize(runs: pd.DataFrame, metrics: Iterable[str], by: str = "trial_id") -> pd.DataFrame:
    """One row per ``by`` value: ``runs`` (how many), and per metric its mean (under the metric's
    name), ``<metric>_std``, ``<metric>_ci_low`` and ``<metric>_ci_high``."""
    rows = []
    for key, g in runs.groupby(by, sort=False):
        row: dict = {by: key, "runs": len(g)}
        for m in metrics:
            iv = interval(pd.to_numeric(g[m], errors="coerce")) if m in g.columns else interval([])
            row.update({m: iv.mean, f"{m}_std": iv.std, f"{m}_ci_low": iv.low, f"{m}_ci_high": iv.high})
        rows.append(row)
    cols = [by, "runs"] + [f"{m}{s}" for m in metrics for s in ("", "_std", "_ci_low", "_ci_high")]
    return pd.DataFrame(rows, columns=cols)
