"""Is freezing worth it? The shorter-training curve and each policy's margin over it.

Freezing is one way to spend less compute; training the unfrozen model for fewer epochs is the
obvious other. Every search trains the unfrozen model for the whole budget (the baseline) and for
fractions of it (the reference points, ``reference_budgets``). Joined in order of compute saved,
they are the **shorter-training curve**: the accuracy training less buys at each compute saved.

A freezing policy's **margin** is its validation accuracy minus the curve's at the policy's
compute saved, in accuracy (fraction) units:

- between two points of the curve, the curve is the straight line joining them (linear
  interpolation, ``numpy.interp``);
- beyond the cheapest reference point (a policy that saves more compute than any shorter run
  measured), the curve is held flat at that point's accuracy, and the margin is flagged
  ``beyond_curve``: training even less would not be more accurate, so the margin there is a lower
  bound (conservative for freezing);
- on the other side nothing is needed: the baseline saves nothing, and no policy saves less.

With the confirmation on fresh seeds (``confirm.csv``) every confirmed policy and every point of
the curve has one run per seed, the same seeds for all. The margin is then **paired**: for each
seed, the policy's accuracy minus the curve drawn from that seed's reference runs at that seed's
compute saved; its mean and 95% t interval over the seeds are the confirmed margin. Pairing by
seed removes what the seed changes for every run alike (the validation split, the initial
weights).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.policies import parse_schedule, schedule_summary
from analysis.results import trial_epochs
from analysis.stats import interval
from layerout.formatting import pct
from layerout.schedules.none import UNFROZEN

CURVE_COLUMNS = ["name", "epochs", "compute_saved_frac", "val_accuracy", "trials"]
MARGIN_COLUMNS = ["curve_accuracy", "margin", "margin_ci_low", "margin_ci_high", "beyond_curve", "confirmed_runs"]
BASELINE = "baseline"


def is_unfrozen(trials: pd.DataFrame) -> pd.Series:
    """Trials of the unfrozen model (the ``none`` family: the baseline and the shorter runs)."""
    return trials["family"].astype(str) == UNFROZEN


def point_name(reference: Any, epochs: float, budget: int | None) -> str:
    """A curve point's name: its reference name, else ``baseline`` or ``shorter-<pct>%``."""
    if isinstance(reference, str) and reference:
        return reference
    if not budget or epochs >= budget:
        return BASELINE
    return f"shorter-{100 * epochs / budget:.0f}%"


def shorter_curve(candidates: pd.DataFrame, budget: int | None) -> pd.DataFrame:
    """The curve's points from the finished unfrozen trials (``candidates``: the trials allowed
    on the front; stopped ones are left out): one row per number of epochs trained, with its
    ``name``, ``epochs``, mean ``compute_saved_frac`` and ``val_accuracy`` and its ``trials``
    (list of trial ids), ordered by compute saved."""
    c = candidates
    keep = is_unfrozen(c)
    if "stopped" in c.columns:
        keep &= ~c["stopped"].astype(bool)
    u = c[keep]
    if u.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    epochs = trial_epochs(u, budget)
    refs = u["reference"] if "reference" in u.columns else pd.Series("", index=u.index)
    rows = []
    for e, g in u.groupby(epochs, sort=True):
        named = [r for r in refs[g.index] if isinstance(r, str) and r]
        rows.append({"name": point_name(named[0] if named else "", float(e), budget), "epochs": int(e),
                     "compute_saved_frac": float(g["compute_saved_frac"].mean()),
                     "val_accuracy": float(g["val_accuracy"].mean()), "trials": [str(t) for t in g["trial_id"]]})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS).sort_values("compute_saved_frac", kind="stable") \
        .reset_index(drop=True)


def curve_at(curve: pd.DataFrame, x: float) -> tuple[float, bool]:
    """The curve's accuracy at compute saved ``x`` and whether ``x`` lies beyond its cheapest
    point (where it is held flat); NaN without a curve."""
    if curve is None or curve.empty or not math.isfinite(x):
        return math.nan, False
    xs = curve["compute_saved_frac"].to_numpy(dtype=float)
    ys = curve["val_accuracy"].to_numpy(dtype=float)
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    beyond = bool(x > xs[-1] + 1e-12)
    return float(np.interp(x, xs, ys)), beyond  # np.interp holds the end values flat outside


def between(curve: pd.DataFrame, x: float) -> str:
    """Which points of the curve ``x`` is compared with: 'shorter-50% and shorter-75%', or one name."""
    if curve is None or curve.empty:
        return ""
    c = curve.sort_values("compute_saved_frac")
    xs, names = c["compute_saved_frac"].to_numpy(dtype=float), c["name"].tolist()
    if x >= xs[-1]:
        return names[-1]
    if x <= xs[0]:
        return names[0]
    i = int(np.searchsorted(xs, x, side="right"))
    return f"{names[i - 1]} and {names[i]}"


def paired_margin(runs: pd.DataFrame, trial_id: str, curve: pd.DataFrame) -> tuple[float, Any, int]:
    """The confirmed margin of ``trial_id``: per seed, its val accuracy minus the curve drawn from
    that seed's runs of the curve's points (at that seed's compute saved). Returns (mean curve
    accuracy, the margin's Interval, seeds used); seeds without a run of the policy or of any
    curve point are left out."""
    mine = runs[runs["trial_id"] == str(trial_id)]
    point_of = {t: i for i, ts in enumerate(curve["trials"]) for t in ts}
    ref = runs[runs["trial_id"].isin(point_of)]
    diffs, curve_vals = [], []
    for seed, r in mine.groupby("seed"):
        rr = ref[ref["seed"] == seed]
        if rr.empty:
            continue
        pts = (rr.assign(_point=rr["trial_id"].map(point_of)).groupby("_point")[["compute_saved_frac", "val_accuracy"]]
               .mean())
        ca, _ = curve_at(pts, float(r["compute_saved_frac"].mean()))
        if math.isfinite(ca):
            curve_vals.append(ca)
            diffs.append(float(r["val_accuracy"].mean()) - ca)
    iv = interval(diffs)
    return (float(np.mean(curve_vals)) if curve_vals else math.nan), iv, iv.n


def add_margins(front: pd.DataFrame, curve: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """``front`` with ``MARGIN_COLUMNS``: for each freezing policy, the curve's accuracy at its
    compute saved, its margin over the curve (val accuracy minus the curve's), the margin's 95%
    interval (confirmed policies only, paired by seed), whether it lies beyond the curve's
    cheapest point, and how many fresh seeds confirmed it (0: not confirmed). Unfrozen runs
    (the curve's own points) get no margin."""
    f = front.copy()
    vals: dict[str, list] = {c: [] for c in MARGIN_COLUMNS}
    confirmed = set(runs["trial_id"]) if runs is not None and len(runs) else set()
    for idx, r in f.iterrows():
        x, y = float(r["compute_saved_frac"]), float(r["val_accuracy"])
        ca, beyond = curve_at(curve, x)
        row = {"curve_accuracy": ca, "margin": y - ca, "margin_ci_low": math.nan, "margin_ci_high": math.nan,
               "beyond_curve": beyond, "confirmed_runs": 0}
        if r["family"] == UNFROZEN:
            row.update(curve_accuracy=math.nan, margin=math.nan, beyond_curve=False)
        elif str(r["trial_id"]) in confirmed and not curve.empty:
            pca, iv, n = paired_margin(runs, str(r["trial_id"]), curve)
            if n:
                row.update(curve_accuracy=pca, margin=iv.mean, margin_ci_low=iv.low, margin_ci_high=iv.high,
                           confirmed_runs=n)
        for c in MARGIN_COLUMNS:
            vals[c].append(row[c])
    for c in MARGIN_COLUMNS:
        f[c] = vals[c]
    f["beyond_curve"] = f["beyond_curve"].astype(bool)
    f["confirmed_runs"] = f["confirmed_runs"].astype(int)
    return f


def beats_curve(front: pd.DataFrame) -> pd.DataFrame:
    """The freezing policies of ``front`` above the shorter-training curve (margin > 0, the
    confirmed mean where confirmed), not stopped early."""
    f = front
    ok = ~is_unfrozen(f) & (pd.to_numeric(f["margin"], errors="coerce") > 0)
    if "stopped" in f.columns:
        ok &= ~f["stopped"].astype(bool)
    return f[ok]


def resolution_text(val_images: int | None) -> str:
    """'one validation image is 0.28 points (360 images)'."""
    if not val_images:
        return "the validation split's size is not recorded"
    return f"one validation image is {100 / val_images:.2f} points ({val_images} images)"


def _who(r: pd.Series) -> str:
    desc = schedule_summary(parse_schedule(r.get("policy")))
    return f"trial {r['trial_id']} ({desc})"


def _freezing(rows: pd.DataFrame) -> pd.DataFrame:
    """The freezing policies of ``rows`` that have a margin and were not stopped early."""
    f = rows[~is_unfrozen(rows) & pd.to_numeric(rows["margin"], errors="coerce").notna()]
    return f[~f["stopped"].astype(bool)] if "stopped" in f.columns else f


def verdict(candidates: pd.DataFrame, front: pd.DataFrame, curve: pd.DataFrame, val_images: int | None,
            exp_dir: Any = "DIR") -> str:
    """The answer, in one to three sentences: whether a freezing policy beat training the unfrozen
    model for fewer epochs, where and by how much, with its uncertainty. With a confirmation on
    fresh seeds, the best confirmed policy (on the front or not: confirming may knock a lucky one
    off) and its 95% interval, plus a note when an unconfirmed front policy looks better on its
    single seed; without one, the best policy of the front and the single-seed caveat."""
    res = resolution_text(val_images)
    if curve is None or curve.empty:
        return ("This search cannot say whether freezing beats training for fewer epochs: no run of the unfrozen "
                "model finished (the baseline and the reference points of reference_budgets).")
    confirmed = _freezing(candidates)
    confirmed = confirmed[confirmed["confirmed_runs"] >= 2]
    on_front = _freezing(front)
    pool = confirmed if len(confirmed) else on_front
    if pool.empty:
        return ("No freezing policy beat training for fewer epochs: the unfrozen model trained for the whole budget "
                "or shorter dominates every freezing policy (none is on the Pareto front).")
    b = pool.loc[pd.to_numeric(pool["margin"]).idxmax()]
    m = float(b["margin"])
    where = (f"{_who(b)} saved {pct(b['compute_saved_frac'], 1)} of the training compute at "
             f"{pct(b['val_accuracy'])} validation accuracy")
    against = "the unfrozen model trained for fewer epochs at the same compute"
    if bool(b["beyond_curve"]) and len(curve) == 1:
        against = (f"the unfrozen model trained for the whole budget ({curve.iloc[0]['name']}; no shorter run "
                   "finished, so its accuracy stands for the curve)")
    elif bool(b["beyond_curve"]):
        against += (f" (it saves more than the cheapest reference point, {curve.iloc[-1]['name']}: compared with "
                    "that point's accuracy, held flat)")
    if len(confirmed):
        n, lo, hi = int(b["confirmed_runs"]), float(b["margin_ci_low"]), float(b["margin_ci_high"])
        ci = f"95% interval {100 * lo:+.2f} to {100 * hi:+.2f} points over {n} fresh seeds"
        if lo > 0:
            text = f"Freezing beat training for fewer epochs: {where}, {100 * m:.2f} points above {against} ({ci})."
        elif hi < 0:
            text = (f"Freezing did not beat training for fewer epochs: the best confirmed freezing policy, {where}, "
                    f"was {100 * abs(m):.2f} points below {against} ({ci}).")
        else:
            text = (f"Freezing did not clearly beat training for fewer epochs: the best confirmed freezing policy, "
                    f"{where}, was {100 * abs(m):.2f} points {'above' if m > 0 else 'below'} {against}, within the "
                    f"noise ({ci}; {res}).")
        unconfirmed = on_front[(on_front["confirmed_runs"] < 2) & (pd.to_numeric(on_front["margin"]) > max(m, 0))]
        if len(unconfirmed):
            u = unconfirmed.loc[pd.to_numeric(unconfirmed["margin"]).idxmax()]
            text += (f" Not confirmed: {len(unconfirmed)} front polic{'y' if len(unconfirmed) == 1 else 'ies'} above "
                     f"it on a single seed (the best, trial {u['trial_id']}, {100 * float(u['margin']):+.2f} points).")
        return text
    if m > 0:
        return (f"On a single seed, freezing beat training for fewer epochs: {where}, {100 * m:.2f} points above "
                f"{against}; one seed is an anecdote ({res}): confirm it on fresh seeds with "
                f"python -m analysis.confirm {exp_dir}.")
    level = f"{100 * abs(m):.2f} points below" if abs(m) >= 5e-5 else "level with"
    return (f"No freezing policy beat training for fewer epochs: the best on the front, {where}, was {level} "
            f"{against} (a single seed; {res}).")


def _clipped_integral(u0: float, u1: float, cap: float) -> float:
    """The mean of ``min(cap, max(0, u))`` over ``u`` running linearly from ``u0`` to ``u1``."""
    def antiderivative(u: float) -> float:
        if u <= 0:
            return 0.0
        return u * u / 2 if u <= cap else cap * cap / 2 + cap * (u - cap)
    if abs(u1 - u0) < 1e-15:
        return min(cap, max(0.0, u0))
    return (antiderivative(u1) - antiderivative(u0)) / (u1 - u0)


def area_above_curve(points: Any, curve: pd.DataFrame) -> float:
    """The area the points (rows of validation accuracy, compute saved; a front) dominate above
    the shorter-training curve: what freezing adds to the hypervolume over training less. Zero
    when no point has a margin over the curve. The curve is ``curve_at``'s (straight lines between
    its points, held flat beyond its cheapest one), taken with what saves more: the accuracy
    training less reaches at compute saved s is the best of the curve at s or beyond it, so a
    policy that a cheaper reference point beats adds nothing. NaN without a curve.

    Exact (no grid): between consecutive breakpoints (the curve's and the points' compute saved)
    the front's accuracy is constant and the curve's is the larger of a line and a constant, so
    the area there is a clipped linear integral. (Written here: hypervolume libraries measure
    against a point, not above a curve.)"""
    if curve is None or curve.empty:
        return math.nan
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    p = p[np.isfinite(p).all(axis=1)]
    if not len(p):
        return 0.0
    acc, saved = p[:, 0], np.clip(p[:, 1], 0.0, 1.0)
    c = curve.sort_values("compute_saved_frac", kind="stable")
    xs, ys = c["compute_saved_frac"].to_numpy(dtype=float), c["val_accuracy"].to_numpy(dtype=float)
    cuts = np.unique(np.clip(np.concatenate([[0.0, 1.0], xs, saved]), 0.0, 1.0))
    at = np.interp(cuts, xs, ys)
    envelope = np.maximum.accumulate(at[::-1])[::-1]  # the best the curve reaches at s or beyond
    area = 0.0
    for i in range(len(cuts) - 1):
        lo, hi = cuts[i], cuts[i + 1]
        reach = acc[saved >= hi]  # the points dominating (lo, hi) in compute saved
        if not len(reach):
            continue
        best, floor = float(reach.max()), float(envelope[i + 1])
        if best > floor:  # the front above the curve's value beyond hi; capped there, and by the line
            area += (hi - lo) * _clipped_integral(best - at[i], best - at[i + 1], best - floor)
    return float(area)
