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

from analysis.front import Front, hypervolume_history
from analysis.policies import parse_schedule, unit_freeze_values
from analysis.results import Experiment
from layerout.files import atomic_write

DPI = 130
FAMILY_COLORS = {
    "none": "#222222",
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


def plot_pareto(exp: Experiment, fr: Front, path: str | Path) -> Path:
    """Every trial faint (by family), the front as a line with markers, baseline, paper
    configurations and the knee labelled; axes in percent."""
    fig = _new_figure(8.0, 5.6)
    ax = fig.add_subplot(1, 1, 1)
    t = exp.trials
    has = t["val_accuracy"].notna() & t["compute_saved_frac"].notna()
    cand_ids = set(fr.candidates["trial_id"])
    stopped_ids = set(fr.candidates.loc[fr.candidates["stopped"], "trial_id"])
    others = t[has & ~t["trial_id"].isin(cand_ids)]
    cands = t[has & t["trial_id"].isin(cand_ids)]

    for fam, grp in cands.groupby("family", sort=True):
        full = grp[~grp["trial_id"].isin(stopped_ids)]
        stp = grp[grp["trial_id"].isin(stopped_ids)]
        ax.scatter(_pct(full["compute_saved_frac"]), _pct(full["val_accuracy"]), s=22, alpha=0.35,
                   color=family_color(fam), edgecolors="none", label=f"{fam or '?'} ({len(grp)})")
        if len(stp):
            ax.scatter(_pct(stp["compute_saved_frac"]), _pct(stp["val_accuracy"]), s=26, alpha=0.5,
                       color=family_color(fam), marker="x", linewidths=1.0)
    if len(others):
        ax.scatter(_pct(others["compute_saved_frac"]), _pct(others["val_accuracy"]), s=20, alpha=0.4,
                   color="#999999", marker="x", linewidths=0.8,
                   label=f"not finished / stopped early ({len(others)})")
    if stopped_ids:
        ax.scatter([], [], color="#555555", marker="x", label="stopped early (included)")

    f = fr.front.sort_values("compute_saved_frac")
    ax.plot(_pct(f["compute_saved_frac"]), _pct(f["val_accuracy"]), "-", color="black", lw=1.6,
            zorder=3, label=f"Pareto front ({len(f)})")
    f_stop = f["stopped"].astype(bool) if "stopped" in f.columns else pd.Series(False, index=f.index)
    for sel, marker, size in ((~f_stop, "o", 46), (f_stop, "X", 70)):
        g = f[sel]
        if len(g):
            ax.scatter(_pct(g["compute_saved_frac"]), _pct(g["val_accuracy"]), s=size, zorder=4, marker=marker,
                       c=[family_color(x) for x in g["family"]], edgecolors="black", linewidths=1.0)

    if fr.baseline_accuracy is not None:
        ax.axhline(100 * fr.baseline_accuracy, color="#444444", lw=0.8, ls=":", zorder=1)

    # labels: baseline and paper configurations (finished or not), then the knee
    with_metrics = t[has]
    labelled = with_metrics[(with_metrics["paper_config"] != "") | (with_metrics["family"] == "none")]
    # The paper's points often sit close together (random v on few units): stagger their labels at
    # growing vertical distances; the baseline's goes below it.
    offsets = [(12, 12), (12, -16), (18, 26), (18, -30), (24, 40), (24, -44)]
    i = 0
    for _, r in labelled.iterrows():
        name = r["paper_config"] or "baseline"
        if r["trial_id"] not in cand_ids:
            name += " (not finished)"
        elif r["trial_id"] in stopped_ids:
            name += " (stopped early)"
        if r["family"] == "none":
            ax.scatter([100 * r["compute_saved_frac"]], [100 * r["val_accuracy"]], marker="*", s=170,
                       color="gold", edgecolors="black", zorder=5)
        else:
            ax.scatter([100 * r["compute_saved_frac"]], [100 * r["val_accuracy"]], marker="D", s=40,
                       facecolors="none", edgecolors="black", zorder=5)
        if r["family"] == "none":
            dx, dy = (4, -20)
        else:
            dx, dy = offsets[i % len(offsets)]
            i += 1
        ax.annotate(name, (100 * r["compute_saved_frac"], 100 * r["val_accuracy"]), xytext=(dx, dy),
                    textcoords="offset points", fontsize=8, ha="left" if dx >= 0 else "right",
                    arrowprops=dict(arrowstyle="-", color="#555555", lw=0.6), zorder=6)
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

    ax.set_xlabel("compute saved (% of unfrozen training FLOPs)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(_title(exp), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return _save(fig, path)


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
        pc = f" [{r['paper_config']}]" if r["paper_config"] else ""
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


def plot_curves(exp: Experiment, fr: Front, path: str | Path) -> Path:
    """Validation accuracy by epoch for the front's trials and the baseline."""
    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    e = exp.epochs
    base_ids = list(fr.baseline["trial_id"])
    front_ids = [x for x in fr.front["trial_id"] if x not in base_ids]
    cmap = colormaps["viridis"]
    drawn = 0
    for i, tid in enumerate(front_ids):
        d = e[e["trial_id"] == tid].sort_values("epoch")
        if d.empty:
            continue
        row = fr.front[fr.front["trial_id"] == tid].iloc[0]
        knee = tid == fr.knee
        color = "crimson" if knee else cmap(i / max(1, len(front_ids) - 1) * 0.85)
        label = f"{tid} {row['family']}" + (f" [{row['paper_config']}]" if row["paper_config"] else "")
        label += f" · {100 * row['compute_saved_frac']:.0f}% saved" + (" (knee)" if knee else "")
        ax.plot(d["epoch"], _pct(d["val_accuracy"]), "-o", ms=2.5, lw=2.2 if knee else 1.2,
                color=color, label=label, zorder=4 if knee else 3)
        drawn += 1
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
