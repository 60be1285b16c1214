"""An experiment's front: candidates, Pareto front, knee, baseline and hypervolumes in one place."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import pandas as pd

import numpy as np

from analysis.curve import add_margins, beats_curve, shorter_curve, verdict
from analysis.pareto import drop_missing, hypervolume_2d, knee_point, pareto_front
from analysis.results import Experiment, baseline_trials, finished_mask, select_trials
from analysis.stats import summarize
from layerout.errors import UserError
from layerout.metrics import CONFIRMED_METRICS

# what the confirmation on fresh seeds measures per run (confirm.csv); its means replace a
# confirmed trial's single-run values in the front

HISTORY_COLUMNS = ["trials_ended", "epochs_trained", "hypervolume", "trial_id"]


@dataclass
class Front:
    """``candidates``: trials allowed on the front (``stopped`` marks ones the scheduler stopped early);
    ``front``: the Pareto front rows (a ``knee`` bool column added), best accuracy first;
    ``knee``: the knee's trial id, the one trial every output calls the knee (``choose_knee``);
    ``knee_above_curve``: whether it was chosen among the policies above the shorter-training curve
    (False: none beats the curve, so it is the whole front's knee); ``baseline_accuracy``: mean val accuracy of the finished
    unfrozen baseline trial(s), or None; ``hypervolume``: {"(0, 0)": hv, "(baseline, 0)": hv}
    in (fraction x fraction) units; ``dropped``: trial ids ignored for missing metrics;
    ``curve``: the shorter-training curve (``analysis.curve``); the front's rows carry their margin
    over it (``analysis.curve.MARGIN_COLUMNS``); ``confirm``: the per-seed runs of confirm.csv
    (None: not confirmed; the candidates' values of confirmed trials are then their means over the
    fresh seeds, their search values kept as ``search_<metric>``); ``val_images``: the validation
    split's size; ``verdict``: whether freezing beat training for fewer epochs, in words."""

    candidates: pd.DataFrame
    front: pd.DataFrame
    knee: str
    objectives: tuple[tuple[str, str], ...]
    baseline: pd.DataFrame
    baseline_accuracy: float | None
    hypervolume: dict[str, float]
    include_stopped: bool
    dropped: list[str]
    curve: pd.DataFrame = None  # type: ignore[assignment]
    confirm: pd.DataFrame | None = None
    val_images: int | None = None
    verdict: str = ""
    knee_above_curve: bool = False

    @property
    def knee_row(self) -> pd.Series:
        return self.front[self.front["trial_id"] == self.knee].iloc[0]


def _metric_columns(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if not str(c).startswith("config/") and c not in ("epochs_done", "stopped_early")
            and pd.api.types.is_numeric_dtype(trials[c])]


def compute_front(exp: Experiment, include_stopped: bool = False) -> Front:
    """Select trials, build the front over the experiment's objectives, find the knee.

    Raises ``UserError`` when no trial finished (see ``select_trials``) or none has metrics.
    """
    objectives = exp.objectives
    missing = [n for n, _ in objectives if n not in exp.trials.columns]
    if missing:
        raise UserError(
            f"{exp.path / 'experiment.json'}: field 'objectives' names {', '.join(missing)}, "
            f"which trials.csv does not have; allowed: {', '.join(_metric_columns(exp.trials))}"
        )
    cand = confirmed_values(select_trials(exp, include_stopped=include_stopped), exp.confirm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clean = drop_missing(cand, objectives)
    for w in caught:
        warnings.warn(str(w.message), w.category, stacklevel=2)
    dropped = sorted(set(cand["trial_id"]) - set(clean["trial_id"]))
    if clean.empty:
        raise UserError(
            f"{exp.path}: no finished trial has {'/'.join(n for n, _ in objectives)} values "
            f"({len(cand)} finished, all missing metrics)"
        )
    curve = shorter_curve(clean, exp.epoch_budget)
    clean = add_margins(clean, curve, exp.confirm)  # every candidate's margin over training shorter
    front = pareto_front(clean, objectives).copy()
    knee_label, above = choose_knee(front, objectives)
    front["knee"] = front.index == knee_label
    knee = str(front.loc[knee_label, "trial_id"])

    base = baseline_trials(clean)
    base_acc = float(base["val_accuracy"].mean()) if len(base) and base["val_accuracy"].notna().any() else None
    hv: dict[str, float] = {}
    if len(objectives) == 2 and all(m == "max" for _, m in objectives):
        pts = front[[n for n, _ in objectives]].to_numpy(dtype=float)
        hv["(0, 0)"] = hypervolume_2d(pts, (0.0, 0.0))
        if base_acc is not None and objectives[0][0] == "val_accuracy":
            hv["(baseline, 0)"] = hypervolume_2d(pts, (base_acc, 0.0))
    return Front(
        candidates=clean,
        front=front,
        knee=knee,
        objectives=objectives,
        baseline=base,
        baseline_accuracy=base_acc,
        hypervolume=hv,
        include_stopped=include_stopped,
        dropped=dropped,
        curve=curve,
        confirm=exp.confirm,
        val_images=exp.val_images,
        verdict=verdict(clean, front, curve, exp.val_images, exp.path),
        knee_above_curve=above,
    )


def choose_knee(front: pd.DataFrame, objectives: tuple[tuple[str, str], ...]) -> tuple[Any, bool]:
    """The knee's index label in ``front`` and whether it lies above the shorter-training curve.

    The one rule behind every "knee" the tool prints or writes (the console, ``pareto.csv``, the
    plots, the report, ``policies/knee.json``, ``--pick knee``): the knee of the freezing policies
    above the shorter-training curve when there are any (what is worth exporting: a point that
    trades accuracy for compute better than training less), else the knee of the whole front.
    With other than two objectives: the front's first row (best first objective)."""
    if len(objectives) != 2:
        return front.index[0], False
    above = beats_curve(front) if "margin" in front.columns else front.iloc[:0]
    if len(above):
        return knee_point(above, objectives), True
    return knee_point(front, objectives), False


def knee_rule_text(fr: Front) -> str:
    """How the knee was chosen, in the words every output uses (``analysis.front.choose_knee``)."""
    if fr.knee_above_curve:
        n = len(beats_curve(fr.front))
        return f"the knee of the {n} front polic{'y' if n == 1 else 'ies'} above the shorter-training curve"
    return "no freezing policy beats the shorter-training curve, so this is the knee of the whole front"


def confirmed_values(cand: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """``cand`` with each confirmed trial's ``CONFIRMED_METRICS`` replaced by their means over its
    fresh seeds (the search's single-run values kept as ``search_<metric>``) and ``confirmed_runs``
    (how many seeds; 0 for the others)."""
    out = cand.copy()
    out["confirmed_runs"] = 0
    if runs is None or runs.empty:
        return out
    means = summarize(runs, [m for m in CONFIRMED_METRICS if m in runs.columns]).set_index("trial_id")
    hit = out["trial_id"].astype(str).isin(means.index)
    for m in CONFIRMED_METRICS:
        if m not in means.columns:
            continue
        out[f"search_{m}"] = out[m]
        out.loc[hit, m] = out.loc[hit, "trial_id"].astype(str).map(means[m]).to_numpy()
    out.loc[hit, "confirmed_runs"] = out.loc[hit, "trial_id"].astype(str).map(means["runs"]).to_numpy()
    return out


def pick_trial(fr: Front, pick: str = "knee", min_accuracy: float | None = None,
               among: pd.DataFrame | None = None) -> pd.Series:
    """The front row chosen by ``pick`` (knee | max-accuracy | min-compute) or ``min_accuracy``,
    among the rows ``among`` (default: the whole front). The knee is always ``fr.knee``, the one
    knee of the experiment (``choose_knee``), whatever ``among`` holds.

    ``min_accuracy`` (a fraction) takes precedence: the most compute-saving front point whose
    val_accuracy is at least that; ``UserError`` if none reaches it. ``max-accuracy``: the highest
    val_accuracy (ties: more compute saved). ``min-compute``: the most compute saved (ties: higher
    val_accuracy). Remaining ties go to the trial evaluated first. test_accuracy is never used.
    """
    rows = fr.front if among is None else among
    if rows.empty:
        raise UserError("no front policy to choose from")
    f = rows.assign(_pos=rows.index.to_numpy())  # table order = evaluation order
    if min_accuracy is not None:
        ok = f[f["val_accuracy"] >= min_accuracy - 1e-12]
        if ok.empty:
            best = f["val_accuracy"].max()
            raise UserError(
                f"--min-accuracy {min_accuracy * 100:g}%: no front policy reaches it "
                f"(best validation accuracy is {best * 100:.2f}%)"
            )
        return ok.sort_values(["compute_saved_frac", "val_accuracy", "_pos"], ascending=[False, False, True]).iloc[0]
    if pick == "knee":  # one knee: the Front's, whichever rows are looked at (choose_knee)
        return fr.knee_row
    if pick == "max-accuracy":
        return f.sort_values(["val_accuracy", "compute_saved_frac", "_pos"], ascending=[False, False, True]).iloc[0]
    if pick == "min-compute":
        return f.sort_values(["compute_saved_frac", "val_accuracy", "_pos"], ascending=[False, False, True]).iloc[0]
    raise UserError(f"--pick {pick!r}: allowed: knee, max-accuracy, min-compute")


def hypervolume_history(exp: Experiment, ref: tuple[float, float] = (0.0, 0.0)) -> pd.DataFrame:
    """How the front grew during the search: one row per trial that ended (finished, stopped early
    or failed; unfinished ones are left out), in the order they ended (``last_report_time``, then
    table order): ``trials_ended`` (1, 2, ...), ``epochs_trained`` (epochs of every trial ended so
    far, stopped ones included), ``hypervolume`` of the front of the trials so far that trained
    the full budget (the front's rule) against the fixed reference point ``ref``, and
    ``trial_id``. Empty unless the experiment has two objectives, both maximized."""
    objectives = exp.objectives
    t = exp.trials
    if len(objectives) != 2 or any(m != "max" for _, m in objectives) or t.empty:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    ended = t[t["status"].isin(["TERMINATED", "ERROR"])].copy()
    ended["_full"] = finished_mask(exp)[ended.index]
    ended["_pos"] = np.arange(len(ended))
    when = pd.to_numeric(ended["last_report_time"], errors="coerce") if "last_report_time" in ended else None
    ended["_when"] = when if when is not None else np.nan
    ended = ended.sort_values(["_when", "_pos"], na_position="last", kind="stable")
    names = [n for n, _ in objectives]
    points: list[list[float]] = []
    rows = []
    epochs = 0.0
    for i, (_, r) in enumerate(ended.iterrows(), 1):
        epochs += float(r["epochs_done"]) if pd.notna(r["epochs_done"]) else 0.0
        if bool(r["_full"]):
            vals = [float(r[n]) for n in names]
            if all(np.isfinite(vals)):
                points.append(vals)
        rows.append({"trials_ended": i, "epochs_trained": epochs,
                     "hypervolume": hypervolume_2d(points, ref) if points else 0.0, "trial_id": str(r["trial_id"])})
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)
