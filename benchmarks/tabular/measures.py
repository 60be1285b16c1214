"""What a replayed search found, measured by the tool's own analysis.

A replayed search's trials become a real search's tables (``layerout.experiment.build_tables``)
and an ``analysis.results.Experiment``; its front, hypervolume, shorter-training curve and margins
are ``analysis.front.compute_front``'s, its history ``analysis.front.hypervolume_history``'s. The
hypervolume the freezing policies add over training less is ``analysis.curve.area_above_curve``
of the front over the search's own curve. The oracle is the same analysis of a "search" that ran
every configuration of the table to the end (one table seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.curve import area_above_curve, beats_curve, shorter_curve
from analysis.front import compute_front, hypervolume_history
from analysis.results import Experiment, experiment_from_tables, select_trials
from layerout.experiment import TrialRecord, build_tables
from tabular.replay import Replay, _result, ReplayTrial
from tabular.table import Table

OBJECTIVES = ["val_accuracy", "compute_saved_frac"]


def experiment(records: list[TrialRecord], table: Table, name: str) -> Experiment:
    """The trials as the experiment a real search would have left."""
    space = table.space
    meta = {"name": name, "epochs": space.epochs, "objectives": [list(o) for o in space.objectives],
            "model": space.model, "dataset": space.dataset, "units": space.units}
    trials, epochs = build_tables(records, space.epochs)
    return experiment_from_tables(meta, trials, epochs, Path(name))


@dataclass
class Verdict:
    """Does freezing beat training less on this front, and by how much (the best margin over the
    curve of a front policy, in accuracy; NaN when no freezing policy is on the front)."""

    beats: bool
    margin: float

    def same_as(self, other: "Verdict", tolerance: float) -> bool:
        """The same answer: both say no, or both say yes with best margins within ``tolerance``."""
        if self.beats != other.beats:
            return False
        return not self.beats or abs(self.margin - other.margin) <= tolerance + 1e-12


@dataclass
class FrontStats:
    hypervolume: float  # of the whole front, against (0, 0)
    gain: float  # the area the front adds above the shorter-training curve
    verdict: Verdict
    front_size: int


def front_stats(exp: Experiment) -> FrontStats:
    fr = compute_front(exp)
    f = fr.front
    freezing = f[(f["family"] != "none") & pd.to_numeric(f["margin"], errors="coerce").notna()]
    margin = float(pd.to_numeric(freezing["margin"]).max()) if len(freezing) else math.nan
    gain = area_above_curve(f[OBJECTIVES].to_numpy(dtype=float), fr.curve)
    return FrontStats(hypervolume=fr.hypervolume["(0, 0)"], gain=gain,
                      verdict=Verdict(beats=not beats_curve(f).empty, margin=margin), front_size=len(f))


def anytime(exp: Experiment) -> pd.DataFrame:
    """After each trial that ended (in the order they ended): the epochs trained so far, the
    hypervolume of the front so far (``hypervolume_history``) and its area above the curve drawn
    by the unfrozen runs finished so far."""
    hist = hypervolume_history(exp)
    cand = select_trials(exp)
    ids = hist["trial_id"].astype(str).tolist()
    ended = cand["trial_id"].map({t: k for k, t in enumerate(ids, 1)}).fillna(np.inf).to_numpy()  # step it ended at
    points = cand[OBJECTIVES].to_numpy(dtype=float)
    unfrozen = set(cand.loc[cand["family"] == "none", "trial_id"])
    gains, curve = [], None
    for k in range(1, len(ids) + 1):
        if curve is None or ids[k - 1] in unfrozen:  # the curve changes only when an unfrozen run ends
            curve = shorter_curve(cand[ended <= k], exp.epoch_budget)
        gains.append(area_above_curve(points[ended <= k], curve) if not curve.empty else 0.0)
    return pd.DataFrame({"epochs_trained": hist["epochs_trained"].to_numpy(dtype=float),
                         "hypervolume": hist["hypervolume"].to_numpy(dtype=float), "gain": gains})


def oracle(table: Table, table_seed: int) -> FrontStats:
    """The table's true front on one seed: every configuration trained to its end."""
    records = []
    for i, row in enumerate(table.configs.itertuples()):
        config = table.config_of(int(row.config_id))
        t = ReplayTrial(f"{i:05d}", config, int(row.config_id), table.curve(int(row.config_id), table_seed), order=i)
        t.rows = [_result(table, t, r, float(k)) for k, r in enumerate(t.curve)]
        records.append(TrialRecord(trial_id=t.trial_id, status="TERMINATED", config=config, rows=t.rows))
    return front_stats(experiment(records, table, f"oracle-seed{table_seed}"))


def first_reach(curve: pd.DataFrame, column: str, level: float) -> float:
    """Epochs trained when ``column`` first reached ``level`` (inf if it never did)."""
    hit = curve[curve[column] >= level - 1e-12]
    return float(hit["epochs_trained"].iloc[0]) if len(hit) else math.inf


def summarize_run(rep: Replay, table: Table, oracles: dict[int, FrontStats], levels: tuple[float, ...]) -> dict[str, Any]:
    """One replayed search's numbers: final front, its fraction of the oracle's, verdict, and the
    anytime curve (fractions of the oracle's hypervolume and gain against epochs trained)."""
    exp = experiment(rep.records(), table, f"{rep.method}-s{rep.seed}")
    st, orc = front_stats(exp), oracles[rep.table_seed]
    any_t = anytime(exp)
    hv_frac = any_t["hypervolume"] / orc.hypervolume
    gain_frac = any_t["gain"] / orc.gain if orc.gain > 0 else pd.Series(np.nan, index=any_t.index)
    curve = pd.DataFrame({"epochs_trained": any_t["epochs_trained"], "hv_frac": hv_frac, "gain_frac": gain_frac})
    t = exp.trials
    out = {"method": rep.method, "seed": rep.seed, "table_seed": rep.table_seed, "trials": len(t),
           "epochs_trained": rep.epochs_trained, "stopped_early": int(t["stopped_early"].sum()),
           "repeats": rep.repeats, "distinct": rep.distinct, "exhausted": rep.exhausted, "hypervolume": st.hypervolume, "gain": st.gain,
           "hv_frac": st.hypervolume / orc.hypervolume,
           "gain_frac": st.gain / orc.gain if orc.gain > 0 else math.nan, "front_size": st.front_size,
           "beats_curve": st.verdict.beats, "best_margin": st.verdict.margin,
           "verdict_same": st.verdict.same_as(orc.verdict, 1.0 / table.val_images),
           "verdict_same_sign": st.verdict.beats == orc.verdict.beats,
           "anytime": {k: [round(float(x), 6) if math.isfinite(x) else None for x in curve[k]] for k in curve.columns}}
    for lv in levels:
        out[f"epochs_to_hv_{round(100 * lv)}"] = first_reach(curve, "hv_frac", lv)
        out[f"epochs_to_gain_{round(100 * lv)}"] = first_reach(curve, "gain_frac", lv) if orc.gain > 0 else math.nan
    return out
