"""Figures of an experiment: pareto.png, front_policies.png, curves.png, hypervolume.png, compare.png.

Drawn on matplotlib ``Figure`` objects with the Agg canvas (no pyplot, no global backend
change), so this works headless and inside a user's notebook alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.curve import is_unfrozen, point_name
from analysis.front import Front, hypervolume_history
from analysis.policies import parse_schedule, unit_freeze_values
from analysis.results import Experiment, trial_epochs
from analysis.stats import summarize
from layerout.files import atomic_write
from layerout.metrics import CONFIRMED_METRICS
from layerout.schedules.none import UNFROZEN

DPI = 130
FAMILY_COLORS = {
    UNFROZEN: "#222222",
    "layerout": "#1f77b4",
    "freezeout": "#2ca02c",
    "prefix": "#ff7f0e",
    "adaptive": "#9467bd",
}
_OTHER = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


def family_color(family: str) -> str:
    fam = str(family)
    if fam in FAMILY_COLORS:
        return FAMILY_COLORS[fam]
    return _OTHER[sum(map(ord, fam)) % len(_OTHER)]


def _new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, dpi=DPI, bbox_inches="tight", format="png"))


def _pct(s: pd.Series | np.ndarray) -> np.ndarray:
    return 100.0 * np.asarray(s, dtype=float)


def _title(exp: Experiment) -> str:
    bits = ["SYNTHETIC DATA (accuracy meaningless)", exp.name] if exp.synthetic else [exp.name]
    md = " on ".join(str(x) for x in (exp.model, exp.dataset) if x)
    if md:
        bits.append(md)
    if exp.epoch_budget:
        bits.append(f"{exp.epoch_budget} epochs")
    return " · ".join(bits)


# --------------------------------------------------------------------------------------------
# pareto.png


def _collapsed(df: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct (compute saved, val accuracy) point of ``df``, with ``count``: runs that
    reached exactly the same point are one marker with a count."""
    if df.empty:
        return df.assign(count=pd.Series(dtype=int))
    key = [df["compute_saved_frac"].round(9), df["val_accuracy"].round(9)]
    first = df.groupby(key, sort=False).head(1).copy()
    sizes = df.groupby(key, sort=False).size()
    first["count"] = [int(sizes[(round(x, 9), round(y, 9))]) for x, y in
                      zip(first["compute_saved_frac"], first["val_accuracy"])]
    return first


def _count_labels(ax, pts: pd.DataFrame, color: str = "#333333") -> None:  # noqa: ANN001
    for _, r in pts[pts["count"] > 1].iterrows():
        ax.annotate(f"×{r['count']}", (100 * r["compute_saved_frac"], 100 * r["val_accuracy"]), xytext=(4, 3),
                    textcoords="offset points", fontsize=7, color=color, zorder=7)


def confirmed_summary(fr: Front) -> pd.DataFrame:
    """Per confirmed trial (index: trial id): runs, and the mean, sd and 95% interval of each
    confirmed metric (``analysis.stats.summarize``); empty when the front was not confirmed."""
    if fr.confirm is None or fr.confirm.empty:
        return pd.DataFrame()
    return summarize(fr.confirm, [m for m in CONFIRMED_METRICS if m in fr.confirm.columns]).set_index("trial_id")


def _error_bars(ax, rows: pd.DataFrame, summary: pd.DataFrame, color: str) -> None:  # noqa: ANN001
    """95% intervals over the fresh seeds of the confirmed ``rows`` (both axes)."""
    for _, r in rows.iterrows():
        tid = str(r["trial_id"])
        if tid not in summary.index:
            continue
        s = summary.loc[tid]
        x, y = 100 * s["compute_saved_frac"], 100 * s["val_accuracy"]

        def err(m: str) -> list[list[float]] | None:
            lo, hi = s[f"{m}_ci_low"], s[f"{m}_ci_high"]
            if not (np.isfinite(lo) and np.isfinite(hi)):
                return None
            return [[100 * (s[m] - lo)], [100 * (hi - s[m])]]

        ax.errorbar([x], [y], yerr=err("val_accuracy"), xerr=err("compute_saved_frac"), fmt="none",
                    ecolor=color, elinewidth=1.1, capsize=3, alpha=0.9, zorder=4)


def plot_pareto(exp: Experiment, fr: Front, path: str | Path) -> Path:
    """Every trial faint (by family; runs that reached the same point as one marker with a
    count), the front as a line with markers, the shorter-training curve (the unfrozen model
    trained for the whole budget and for fewer epochs, joined; held flat beyond its cheapest
    point), the confirmed points' 95% intervals over fresh seeds, baseline, reference points,
    paper configurations and the knee labelled; axes in percent. A confirmed trial is drawn at
    its means over the fresh seeds."""
    fig = _new_figure(8.0, 5.6)
    ax = fig.add_subplot(1, 1, 1)
    t = exp.trials
    cand_ids = set(fr.candidates["trial_id"])
    # confirmed trials at their confirmed means (the front's values), the others as the search left them
    t = pd.concat([t[~t["trial_id"].isin(cand_ids)], fr.candidates[[c for c in t.columns if c in fr.candidates]]])
    has = t["val_accuracy"].notna() & t["compute_saved_frac"].notna()
    stopped_ids = set(fr.candidates.loc[fr.candidates["stopped"], "trial_id"])
    others = t[has & ~t["trial_id"].isin(cand_ids)]
    cands = t[has & t["trial_id"].isin(cand_ids)]
    _pareto_trials(ax, cands, others, stopped_ids)
    _pareto_front_line(ax, fr)
    _pareto_curve_and_intervals(ax, fr, cands)
    _pareto_labels(ax, exp, t[has], cand_ids, stopped_ids)
    _pareto_knee(ax, fr)
    ax.set_xlabel("compute saved (% of unfrozen training FLOPs)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(_title(exp), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return _save(fig, path)


def _pareto_trials(ax, cands: pd.DataFrame, others: pd.DataFrame, stopped_ids: set) -> None:
    """The trials that may enter the front by family (stopped ones as crosses), the others grey."""
    for fam, grp in cands.groupby("family", sort=True):
        full = _collapsed(grp[~grp["trial_id"].isin(stopped_ids)])
        stp = _collapsed(grp[grp["trial_id"].isin(stopped_ids)])
        ax.scatter(_pct(full["compute_saved_frac"]), _pct(full["val_accuracy"]), s=22, alpha=0.35,
                   color=family_color(fam), edgecolors="none", label=f"{fam or '?'} ({len(grp)})")
        _count_labels(ax, full)
        if len(stp):
            ax.scatter(_pct(stp["compute_saved_frac"]), _pct(stp["val_accuracy"]), s=26, alpha=0.5,
                       color=family_color(fam), marker="x", linewidths=1.0)
            _count_labels(ax, stp)
    if len(others):
        ax.scatter(_pct(others["compute_saved_frac"]), _pct(others["val_accuracy"]), s=20, alpha=0.4,
                   color="#999999", marker="x", linewidths=0.8,
                   label=f"not finished / stopped early ({len(others)})")
    if stopped_ids:
        ax.scatter([], [], color="#555555", marker="x", label="stopped early (included)")


def _pareto_front_line(ax, fr: Front) -> None:
    """The front: a line, its points by family (stopped early: X)."""
    f = fr.front.sort_values("compute_saved_frac")
    ax.plot(_pct(f["compute_saved_frac"]), _pct(f["val_accuracy"]), "-", color="black", lw=1.6,
            zorder=3, label=f"Pareto front ({len(f)})")
    f_stop = f["stopped"].astype(bool) if "stopped" in f.columns else pd.Series(False, index=f.index)
    for sel, marker, size in ((~f_stop, "o", 46), (f_stop, "X", 70)):
        g = f[sel]
        if len(g):
            ax.scatter(_pct(g["compute_saved_frac"]), _pct(g["val_accuracy"]), s=size, zorder=4, marker=marker,
                       c=[family_color(x) for x in g["family"]], edgecolors="black", linewidths=1.0)


def _pareto_curve_and_intervals(ax, fr: Front, cands: pd.DataFrame) -> None:
    """The baseline's accuracy, the shorter-training curve, the confirmed points' intervals."""
    summary = confirmed_summary(fr)
    if fr.baseline_accuracy is not None:
        ax.axhline(100 * fr.baseline_accuracy, color="#444444", lw=0.8, ls=":", zorder=1)
    curve = fr.curve
    if curve is not None and len(curve):
        ax.plot(_pct(curve["compute_saved_frac"]), _pct(curve["val_accuracy"]), "--", color="#555555", lw=1.4,
                zorder=2, label="training shorter (unfrozen model, fewer epochs)")
        x_max = float(cands["compute_saved_frac"].max()) if len(cands) else 0.0
        last = curve.iloc[-1]
        if x_max > last["compute_saved_frac"]:  # held flat beyond the cheapest reference point
            ax.plot([100 * last["compute_saved_frac"], 100 * x_max], [100 * last["val_accuracy"]] * 2, ":",
                    color="#555555", lw=1.2, zorder=2)
    if len(summary):
        lo, hi = ax.get_ylim()
        _error_bars(ax, cands[cands["trial_id"].astype(str).isin(summary.index)], summary, "#333333")
        # intervals over few seeds can be wide: show them, but not at the cost of the points' scale
        span = hi - lo
        blo, bhi = ax.get_ylim()
        ax.set_ylim(max(blo, lo - span, 0.0), min(bhi, hi + span, 100.5))
        ax.errorbar([], [], yerr=[], fmt="none", ecolor="#333333", capsize=3,
                    label=f"95% interval over {int(summary['runs'].max())} fresh seeds")


def _pareto_labels(ax, exp: Experiment, with_metrics: pd.DataFrame, cand_ids: set, stopped_ids: set) -> None:
    """Baseline, reference points and paper configurations (finished or not), marked and named."""
    labelled = with_metrics[(with_metrics["paper_config"] != "") | is_unfrozen(with_metrics)]
    labelled = labelled.drop_duplicates(["compute_saved_frac", "val_accuracy", "paper_config", "reference"])
    own = trial_epochs(labelled, exp.epoch_budget)
    # The paper's points often sit close together (random v on few units): stagger their labels at
    # growing vertical distances; the baseline's goes below it.
    offsets = [(12, 12), (12, -16), (18, 26), (18, -30), (24, 40), (24, -44)]
    i = 0
    for idx, r in labelled.iterrows():
        name = r["paper_config"] or point_name(r.get("reference", ""), float(own[idx]), exp.epoch_budget)
        shorter = r["family"] == UNFROZEN and name != "baseline" and not r["paper_config"]
        if r["trial_id"] not in cand_ids:
            name += " (not finished)"
        elif r["trial_id"] in stopped_ids:
            name += " (stopped early)"
        if shorter:
            ax.scatter([100 * r["compute_saved_frac"]], [100 * r["val_accuracy"]], marker="s", s=42,
                       color="#dddddd", edgecolors="black", zorder=5)
        elif r["family"] == UNFROZEN:
            ax.scatter([100 * r["compute_saved_frac"]], [100 * r["val_accuracy"]], marker="*", s=170,
                       color="gold", edgecolors="black", zorder=5)
        else:
            ax.scatter([100 * r["compute_saved_frac"]], [100 * r["val_accuracy"]], marker="D", s=40,
                       facecolors="none", edgecolors="black", zorder=5)
        if shorter:
            dx, dy = (6, -14)
        elif r["family"] == UNFROZEN:
            dx, dy = (4, -20)
        else:
            dx, dy = offsets[i % len(offsets)]
            i += 1
        ax.annotate(name, (100 * r["compute_saved_frac"], 100 * r["val_accuracy"]), xytext=(dx, dy),
                    textcoords="offset points", fontsize=8, ha="left" if dx >= 0 else "right",
                    arrowprops=dict(arrowstyle="-", color="#555555", lw=0.6), zorder=6)


def _pareto_knee(ax, fr: Front) -> None:
    """The knee, circled and named; room above the top points for the labels."""
    k = fr.knee_row
    ax.scatter([100 * k["compute_saved_frac"]], [100 * k["val_accuracy"]], s=260, facecolors="none",
               edgecolors="crimson", linewidths=2.2, zorder=6, label="knee")
    ax.annotate(f"knee ({k['trial_id']})", (100 * k["compute_saved_frac"], 100 * k["val_accuracy"]),
                xytext=(0.98, 0.97), textcoords="axes fraction", ha="right", va="top", fontsize=9,
                color="crimson", fontweight="bold", zorder=7,
                arrowprops=dict(arrowstyle="-", color="crimson", lw=0.8, shrinkB=9))
    # top right: no trial dominates the knee, so the corner above and right of it is empty
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.08 * (hi - lo))  # room for the labels above the top points


# --------------------------------------------------------------------------------------------
# front_policies.png


def _num_units(exp: Experiment, fr: Front) -> int:
    if exp.units:
        return len(exp.units)
    for p in fr.front["policy"]:
        d = parse_schedule(p)
        if d and isinstance(d.get("v"), list):
            return len(d["v"])
    if "frozen_units" in exp.epochs.columns:
        lens = exp.epochs["frozen_units"].dropna().astype(str).str.len()
        if len(lens):
            return int(lens.max())
    return 1


def measured_frozen_fraction(exp: Experiment, trial_id: str, num_units: int) -> np.ndarray:
    """Fraction of epochs each unit was frozen, from epochs.csv ``frozen_units`` ('0110' strings)."""
    e = exp.epochs
    if "frozen_units" not in e.columns:
        return np.full(num_units, np.nan)
    masks = e.loc[e["trial_id"] == str(trial_id), "frozen_units"].dropna().astype(str)
    masks = [m.zfill(num_units) for m in masks if set(m) <= {"0", "1"} and len(m) <= num_units]
    if not masks:
        return np.full(num_units, np.nan)
    arr = np.array([[c == "1" for c in m] for m in masks], dtype=float)
    return arr.mean(axis=0)


def front_policy_matrix(exp: Experiment, fr: Front) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scheduled values, measured frozen fractions, row labels); rows = front, cols = units."""
    k = _num_units(exp, fr)
    rows, meas, labels = [], [], []
    for _, r in fr.front.iterrows():
        vals, _note = unit_freeze_values(parse_schedule(r["policy"]), k, exp.epoch_budget)
        rows.append(vals)
        meas.append(measured_frozen_fraction(exp, r["trial_id"], k))
        tag = " ★knee" if r["trial_id"] == fr.knee else ""
        tag_name = r["paper_config"] or r.get("reference", "")
        pc = f" [{tag_name}]" if tag_name else ""
        labels.append(f"{r['trial_id']} {r['family']}{pc} {100 * r['val_accuracy']:.1f}%/"
                      f"{100 * r['compute_saved_frac']:.1f}%{tag}")
    return np.array(rows, dtype=float).reshape(-1, k), np.array(meas, dtype=float).reshape(-1, k), labels


def plot_front_policies(exp: Experiment, fr: Front, path: str | Path) -> Path:
    """Heatmap: rows = front policies (best accuracy first), columns = units input -> output.

    Left: the schedule's per-unit freeze probability (layerout v; freezeout/adaptive: fraction of
    training frozen; prefix: 1 for the frozen prefix). Right, when epochs.csv has masks: the
    fraction of epochs each unit was actually frozen."""
    sched, meas, labels = front_policy_matrix(exp, fr)
    n, k = sched.shape
    show_meas = bool(np.isfinite(meas).any())
    names = exp.units if len(exp.units) == k else [str(i) for i in range(k)]
    panel_w = max(3.2, 0.32 * k + 1.2)
    fig = _new_figure(panel_w * (2 if show_meas else 1) + 3.8, max(2.6, 0.34 * n + 2.0))
    cmap = colormaps["magma_r"].with_extremes(bad="#dddddd")
    panels = [(sched, "scheduled: freeze probability / fraction frozen")]
    if show_meas:
        panels.append((meas, "measured: fraction of epochs frozen"))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    im = None
    for ax, (mat, title) in zip(axes, panels):
        im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", cmap=cmap, vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set_title(title, fontsize=9)
        if k <= 40:
            ax.set_xticks(range(k))
            ax.set_xticklabels(names, rotation=90, fontsize=7 if k > 16 else 8)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
        ax.set_xlabel("unit (input → output)")
        if k <= 20 and n <= 30:
            for i in range(n):
                for j in range(k):
                    v = mat[i, j]
                    if np.isfinite(v):
                        ax.text(j, i, f"{v:.2f}".lstrip("0") if v < 1 else "1", ha="center", va="center",
                                fontsize=6.5, color="white" if v > 0.55 else "black")
    axes[0].set_yticks(range(n))
    axes[0].set_yticklabels(labels, fontsize=7.5)
    for lab, (_, r) in zip(axes[0].get_yticklabels(), fr.front.iterrows()):
        if r["trial_id"] == fr.knee:
            lab.set_color("crimson")
            lab.set_fontweight("bold")
    fig.colorbar(im, ax=list(axes), fraction=0.04 if show_meas else 0.06, pad=0.02)
    fig.suptitle(f"Front policies (val acc / compute saved) · {_title(exp)}", fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# curves.png


CURVES_NAMED = 12  # front trials named one by one in curves.png; beyond, a colour scale of compute saved


def plot_curves(exp: Experiment, fr: Front, path: str | Path) -> Path:
    """Validation accuracy by epoch for the front's trials and the baseline. Up to
    ``CURVES_NAMED`` front trials each get a legend line; a larger front (a search of thousands of
    trials) is coloured by compute saved with a colour bar, and only the knee is named, so that
    the legend never covers the curves."""
    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    e = exp.epochs
    base_ids = list(fr.baseline["trial_id"])
    front_ids = [x for x in fr.front["trial_id"] if x not in base_ids]
    cmap = colormaps["viridis"]
    named = len(front_ids) <= CURVES_NAMED
    saved = fr.front.set_index("trial_id")["compute_saved_frac"].astype(float)
    lo, hi = (float(saved.min()), float(saved.max())) if len(saved) else (0.0, 1.0)
    drawn = 0
    for i, tid in enumerate(front_ids):
        d = e[e["trial_id"] == tid].sort_values("epoch")
        if d.empty:
            continue
        row = fr.front[fr.front["trial_id"] == tid].iloc[0]
        knee = tid == fr.knee
        where = i / max(1, len(front_ids) - 1) if named else (float(row["compute_saved_frac"]) - lo) / ((hi - lo) or 1.0)
        color = "crimson" if knee else cmap(where * 0.85)
        tag_name = row["paper_config"] or row.get("reference", "")
        label = f"{tid} {row['family']}" + (f" [{tag_name}]" if tag_name else "")
        label += f" · {100 * row['compute_saved_frac']:.0f}% saved" + (" (knee)" if knee else "")
        ax.plot(d["epoch"], _pct(d["val_accuracy"]), "-o" if named or knee else "-", ms=2.5,
                lw=2.2 if knee else 1.2 if named else 0.8, alpha=1.0 if named or knee else 0.6,
                color=color, label=label if named or knee else None, zorder=4 if knee else 3)
        drawn += 1
    if not named and front_ids:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import LinearSegmentedColormap, Normalize

        # the colours drawn (viridis up to 0.85), labelled in percent saved
        part = LinearSegmentedColormap.from_list("viridis_085", [cmap(x * 0.85) for x in np.linspace(0, 1, 64)])
        bar = fig.colorbar(ScalarMappable(norm=Normalize(100 * lo, 100 * hi), cmap=part), ax=ax, fraction=0.04, pad=0.02)
        bar.set_label(f"compute saved (%), {len(front_ids)} front trials", fontsize=8)
    for tid in base_ids:
        d = e[e["trial_id"] == tid].sort_values("epoch")
        if d.empty:
            continue
        ax.plot(d["epoch"], _pct(d["val_accuracy"]), "--", color="black", lw=2.0,
                label=f"{tid} baseline (unfrozen)", zorder=5)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no per-epoch results (epochs.csv) for the front's trials",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Validation accuracy of the front's trials · {_title(exp)}", fontsize=10)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="lower right", ncol=2 if drawn > 10 else 1, framealpha=0.85)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# hypervolume.png


def plot_hypervolume(exp: Experiment, fr: Front, path: str | Path) -> Path:
    """Hypervolume of the front so far (reference point (0, 0)) against the trials ended and
    against the epochs trained, as step curves: how fast the search found its front, and what it
    paid in training for it. Trials that ended without training the full budget add epochs, not
    points."""
    hist = hypervolume_history(exp)
    fig = _new_figure(10.0, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    if hist.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "needs two maximized objectives and ended trials", ha="center", va="center",
                    transform=ax.transAxes)
    else:
        for ax, col, label in ((axes[0], "trials_ended", "trials ended"),
                               (axes[1], "epochs_trained", "epochs trained (all trials ended so far)")):
            x = np.concatenate([[0.0], hist[col].to_numpy(dtype=float)])
            y = np.concatenate([[0.0], hist["hypervolume"].to_numpy(dtype=float)])
            ax.step(x, y, where="post", color="#1f77b4", lw=1.8)
            ax.plot(x[1:], y[1:], "o", ms=2.5, color="#1f77b4")
            ax.set_xlabel(label)
            ax.grid(True, alpha=0.3)
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].set_ylabel("hypervolume of the front so far, vs (0, 0)")
    fig.suptitle(f"Search progress · {_title(exp)}", fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# compare.png


def plot_compare(items: Sequence[tuple[Experiment, Front]], path: str | Path) -> Path:
    """Fronts of several experiments on one plot (every trial faint in its experiment's colour)."""
    fig = _new_figure(8.0, 5.6)
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab10"]
    for i, (exp, fr) in enumerate(items):
        color = cmap(i % 10)
        c = fr.candidates
        ax.scatter(_pct(c["compute_saved_frac"]), _pct(c["val_accuracy"]), s=14, alpha=0.25,
                   color=color, edgecolors="none")
        f = fr.front.sort_values("compute_saved_frac")
        hv = fr.hypervolume.get("(0, 0)")
        label = f"{exp.name}: {len(f)} on front of {len(c)}" + (f", HV {hv:.4f}" if hv is not None else "")
        ax.plot(_pct(f["compute_saved_frac"]), _pct(f["val_accuracy"]), "-o", ms=5, lw=1.6,
                color=color, label=label)
        k = fr.knee_row
        ax.scatter([100 * k["compute_saved_frac"]], [100 * k["val_accuracy"]], s=180, facecolors="none",
                   edgecolors=color, linewidths=2.0)
    ax.set_xlabel("compute saved (% of unfrozen training FLOPs)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Pareto fronts compared (rings: knees; HV vs (0, 0))", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return _save(fig, path)
