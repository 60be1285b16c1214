"""Trial schedulers (early stopping) for the search.

- ``MOASHA``: asynchronous successive halving for two (or more) objectives, after Schmucker et al.
  2021 (arXiv 2106.12639). Rungs are ASHA's (``grace_period * reduction_factor**k`` epochs). When a
  trial first reaches a rung, its result is ranked among every result recorded at that rung by
  non-dominated sorting, ties within a front broken by the epsilon-net spread rule; it continues
  when its rank is in the top ``1 / reduction_factor`` (``rung_rank``, a pure function). The rank is
  the rank of *this* result among the recorded ones, so a result that dominates every recorded
  point always continues. The epsilon net's one free choice, the objective whose best point it
  starts from (Schmucker et al. draw it at random), is taken in the new result's favour, as ASHA
  lets a result equal to its cut-off continue: a result is stopped only when it falls outside the
  top ``1 / reduction_factor`` whichever objective the net starts from. The search ranks on (val_accuracy, planned_compute_saved_frac): what a
  trial's policy will save by the end, not what it has saved so far.
  An ``adaptive`` trial's plan is 0 until its first freeze; it is ranked on the larger of its
  plan and the median final saving of its family's finished trials (``tuning.rungs.PlanPrior``).
  The rule itself lives in ``tuning.rungs`` (fast, and monotone: raising an objective never turns
  CONTINUE into STOP, which the plain epsilon net over the new result's front is not).
- ``PaperASHA``: Ray's ASHA (accuracy alone) that never stops the protected configurations.

Neither ever stops a protected configuration: one whose config has a ``paper_config`` (the paper's
five, the reference points every Pareto plot shows) or a ``reference`` (``PROTECTED_KEYS``). Their
results still count at the rungs.

Ray pickles the scheduler into ``tuner.pkl`` when a search starts and never saves it again, so a
resumed search would get MOASHA (or ASHA) back with empty rungs. ``SchedulerState`` is a Ray Tune callback
holding the scheduler: callback states are saved with every experiment snapshot (the trials and
the searcher in the same one) and restored before the restored trials reach the scheduler, so
its rungs and decisions survive ``--resume``, also after the driver was killed.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from layerout.dominance import pareto_mask
from layerout.registry import resolved
from layerout.schedules import schedule_from_dict
from search_spaces.schedulers import SCHEDULERS
from search_spaces.space import SearchSpace
from search_spaces.trials import config_epochs
from tuning.rungs import PlanPrior, RungTable, rank_at_rung
from tuning.internals import asha_settings, asha_state, load_asha_state, uncount_asha_stop

PROTECTED_KEYS = ("paper_config", "reference")
PLANNED = "planned_compute_saved_frac"  # the objective a learning schedule's prior stands in for
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def protected(config: dict[str, Any] | None) -> str:
    """Why a trial may never be stopped (``"paper_config=baseline"``), or "" when it may."""
    for key in PROTECTED_KEYS:
        value = (config or {}).get(key)
        if value:
            return f"{key}={value}"
    return ""


def learns(config: dict[str, Any] | None) -> str:
    """The family of a trial whose schedule learns from training (its plan holds its current
    mask: ``adaptive`` deciding afresh, not replaying), or ""."""
    sched = (config or {}).get("schedule")
    if not isinstance(sched, dict):
        return ""
    try:
        learning = bool(schedule_from_dict(sched).needs_grad_stats)
    except Exception:  # noqa: BLE001 - a config the trial itself will report on; not ours to judge here
        return ""
    return str((config or {}).get("family") or sched.get("kind") or "") if learning else ""


# ------------------------------------------------------------------------------ the rank rule
def spread_order(points: np.ndarray, start: int = 0) -> list[int]:
    """The epsilon-net order of ``points`` (rows; columns already scaled): first the point best in
    objective ``start``, then again and again the point farthest from those already chosen
    (Euclidean), so that the first k cover the set as evenly as k points can. Ties go to the lower
    row index. (Written here: Optuna and Ray have no such ordering; it is the spread rule of
    Schmucker et al.)"""
    n = len(points)
    if n == 0:
        return []
    first = int(np.lexsort((np.arange(n), -points[:, start]))[0])
    order = [first]
    dist = np.linalg.norm(points - points[first], axis=1)
    dist[first] = -np.inf
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))  # argmax returns the first (lowest index) of equal maxima
        order.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
        dist[order] = -np.inf
    return order


def pareto_order(values: np.ndarray, start: int = 0) -> list[int]:
    """Row indices of ``values`` (every column maximized, no NaN) best first: by non-dominated
    front (``layerout.dominance.pareto_mask`` peeled front by front), within a front by the
    epsilon-net spread rule on the objectives scaled to [0, 1] over all rows, starting from the
    best point in objective ``start``."""
    values = np.asarray(values, dtype=float)
    lo, hi = values.min(axis=0), values.max(axis=0)
    scaled = (values - lo) / np.where(hi > lo, hi - lo, 1.0)
    left = np.arange(len(values))
    order: list[int] = []
    while len(left):
        on_front = pareto_mask(values[left])
        front = left[on_front]
        order.extend(int(front[i]) for i in spread_order(scaled[front], start))
        left = left[~on_front]
    return order


def rung_rank(new: Sequence[float], recorded: Sequence[Sequence[float]], reduction_factor: float
              ) -> tuple[int, int, bool]:
    """The rank rule at one rung: (rank of ``new`` among ``recorded`` + itself, 0 = best; the
    number of results ranked; whether it continues). Values are maximized (negate minimized
    objectives). It continues when ``rank < (len(recorded) + 1) / reduction_factor``: the first
    result at a rung always continues, one that dominates every recorded result is alone on the
    first front (rank 0) and continues, one that is the best of its front in some objective is
    first there, and one dominated by at least the cut-off's number of recorded results stops.
    Exact duplicates of a recorded result come after it. Within the contested front the order is
    the epsilon net of the recorded front with the new result entering it monotonically
    (``tuning.rungs``): raising an objective never turns CONTINUE into STOP. ``pareto_order``
    is the plain epsilon-net order it agrees with in most cases."""
    new_row = [float(v) for v in new]
    rows = np.asarray([list(map(float, r)) for r in recorded], dtype=float).reshape(-1, len(new_row))
    return rank_at_rung(new_row, rows, reduction_factor)


# ------------------------------------------------------------------------------ MOASHA
class MOASHA(FIFOScheduler):
    """Pareto-aware asynchronous successive halving (see the module docstring).

    ``objectives``: ``(metric, "max"|"min")`` pairs it ranks on; ``max_t``: the epoch budget.
    Trials finish by themselves at ``max_t``; a result without every objective (or a NaN) is not
    ranked. ``rungs``: milestone -> {trial id: objective values}; ``decisions``: one row per
    result ranked (``decision_rows``)."""

    def __init__(self, objectives: Sequence[tuple[str, str]], max_t: int, grace_period: int = 1,
                 reduction_factor: float = 2, time_attr: str = "epoch") -> None:
        super().__init__()
        if grace_period < 1 or reduction_factor <= 1 or max_t < 1:
            raise ValueError("MOASHA needs grace_period >= 1, reduction_factor > 1 and max_t >= 1")
        self.objectives = [(str(m), str(mode)) for m, mode in objectives]
        if not self.objectives or any(mode not in ("max", "min") for _, mode in self.objectives):
            raise ValueError(f"MOASHA objectives must be (metric, max|min) pairs, got {objectives!r}")
        self.time_attr, self.max_t = time_attr, int(max_t)
        self.grace_period, self.reduction_factor = int(grace_period), float(reduction_factor)
        milestones, m = [], self.grace_period
        while m < self.max_t:
            milestones.append(m)
            m = int(math.ceil(m * self.reduction_factor))
        self.rungs: dict[int, dict[str, list[float]]] = {m: {} for m in milestones}
        self.decisions: list[dict[str, Any]] = []
        self._decided: dict[tuple[str, int], str] = {}
        self.prior = PlanPrior()  # finished learning trials' savings (tuning.rungs.PlanPrior)

    # Ray Tune passes the TuneConfig metric (none: the searcher has several); ours are our own
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    @property
    def milestones(self) -> list[int]:
        return sorted(self.rungs)

    @property
    def num_stopped(self) -> int:
        return sum(1 for d in self.decisions if d["decision"] == "stop")

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self.decide(trial.trial_id, trial.config, result)

    def decide(self, trial_id: str, config: dict[str, Any] | None, result: dict) -> str:
        """CONTINUE or STOP for one result of a trial (``on_trial_result`` without Ray)."""
        t = result.get(self.time_attr)
        end = min(self.max_t, config_epochs(config, self.max_t))  # a trial asked for fewer epochs ends there
        if not isinstance(t, (int, float)) or t >= end:
            return CONTINUE
        passed = [m for m in self.milestones if m <= t]
        if not passed:
            return CONTINUE
        rung = passed[-1]
        if (trial_id, rung) in self._decided:  # a result reported again (a restarted trial)
            return STOP if self._decided[trial_id, rung] == "stop" else CONTINUE
        if trial_id in self.rungs[rung]:
            return CONTINUE
        try:
            raw = [float(result[m]) for m, _ in self.objectives]
        except (KeyError, TypeError, ValueError):
            return CONTINUE
        if not all(math.isfinite(v) for v in raw):
            return CONTINUE
        family = learns(config)
        if family:  # an adaptive trial: ranked on what its family's finished trials saved, if more
            raw = [self._prior().planned(family, end, v) if m == PLANNED else v
                   for v, (m, _) in zip(raw, self.objectives)]
        signed = [v if mode == "max" else -v for v, (_, mode) in zip(raw, self.objectives)]
        table = self._table(rung)
        rank, of, keep = table.rank(signed, self.reduction_factor)
        self.rungs[rung][trial_id] = raw
        table.add(signed)
        why = protected(config)
        decision = "continue" if keep else ("kept: " + why if why else "stop")
        self._decided[trial_id, rung] = "stop" if decision == "stop" else "continue"
        self.decisions.append({"rung": rung, "trial_id": trial_id,
                               **{m: v for (m, _), v in zip(self.objectives, raw)},
                               "rank": rank + 1, "of": of, "decision": decision})
        return STOP if decision == "stop" else CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.finished(trial.config, result)

    def finished(self, config: dict[str, Any] | None, result: dict | None) -> None:
        """A trial ended (``on_trial_complete`` without Ray): a learning schedule that trained
        to its end adds its final saving to its family's prior."""
        family, result = learns(config), result or {}
        end = min(self.max_t, config_epochs(config, self.max_t))
        t, final = result.get(self.time_attr), result.get(PLANNED, result.get("compute_saved_frac"))
        if family and isinstance(t, (int, float)) and t >= end and isinstance(final, (int, float)):
            self._prior().record(family, end, float(final))

    def _prior(self) -> PlanPrior:
        return self.__dict__.setdefault("prior", PlanPrior())  # a scheduler pickled before priors

    def _table(self, rung: int) -> RungTable:
        """The rung's results as a ``RungTable`` (signed: every objective maximized), kept
        beside ``rungs`` so that a decision does not sort the rung again; rebuilt from ``rungs``
        when they no longer match (a restored state, an older pickle without tables)."""
        tables = self.__dict__.setdefault("_tables", {})
        table = tables.get(rung)
        if table is None or len(table) != len(self.rungs[rung]):
            signs = [1.0 if mode == "max" else -1.0 for _, mode in self.objectives]
            table = tables[rung] = RungTable(len(signs), [[s * v for s, v in zip(signs, vals)]
                                                          for vals in self.rungs[rung].values()])
        return table

    def debug_string(self) -> str:
        return (f"MOASHA: rungs at {self.milestones} epochs, {self.num_stopped} trials stopped, "
                f"ranking on {', '.join(m for m, _ in self.objectives)}")

    def decision_rows(self) -> list[dict[str, Any]]:
        """One row per result ranked: rung, trial_id, each objective, rank (1 = best) of how
        many, and the decision (``continue``, ``stop`` or ``kept: paper_config=...``)."""
        return [dict(d) for d in self.decisions]

    # the part of the scheduler that must survive --resume (SchedulerState)
    def state_dict(self) -> dict[str, Any]:
        return {"rungs": {m: dict(r) for m, r in self.rungs.items()}, "decisions": [dict(d) for d in self.decisions],
                "prior": {k: list(v) for k, v in self._prior().finals.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rungs = {int(m): dict(r) for m, r in state["rungs"].items()}
        self._tables = {}
        self.prior = PlanPrior(state.get("prior"))  # absent in a state saved before priors
        self.decisions = [dict(d) for d in state["decisions"]]
        self._decided = {(d["trial_id"], int(d["rung"])): ("stop" if d["decision"] == "stop" else "continue")
                         for d in self.decisions}


class SchedulerState(Callback):
    """Saves MOASHA's rungs and decisions (or ASHA's rungs) with every Ray Tune experiment
    snapshot and puts them back on ``--resume`` (see the module docstring). The scheduler and this
    callback come out of the same ``tuner.pkl``, so the reference still points at the scheduler
    Ray uses."""

    def __init__(self, scheduler: MOASHA | AsyncHyperBandScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:  # never empty: Ray writes no file for an empty state
        if isinstance(self.scheduler, MOASHA):
            return {"moasha": self.scheduler.state_dict()}
        return {"asha": asha_state(self.scheduler)}

    def set_state(self, state: dict[str, Any]) -> None:
        if state and "moasha" in state and isinstance(self.scheduler, MOASHA):
            self.scheduler.load_state_dict(state["moasha"])
        elif state and "asha" in state and isinstance(self.scheduler, AsyncHyperBandScheduler):
            load_asha_state(self.scheduler, state["asha"])


# ------------------------------------------------------------------------------ ASHA
class PaperASHA(AsyncHyperBandScheduler):
    """ASHA (asynchronous successive halving on one metric) that lets the protected configurations
    (``protected``) finish."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        time_attr, max_t = asha_settings(self)
        if action == STOP and protected(trial.config) and result.get(time_attr, 0) < max_t:
            uncount_asha_stop(self)
            return CONTINUE
        return action


# ------------------------------------------------------------------------------ the choice (--scheduler)
# what MOASHA ranks on in place of an objective: what the trial's policy will save, not what it has saved so far
RANKED_AS = {"compute_saved_frac": PLANNED}


def build_moasha(space: SearchSpace) -> TrialScheduler:
    """MOASHA on every objective."""
    es = space.early_stopping
    # every objective, with compute_saved_frac replaced by what the trial's policy will save
    return MOASHA(objectives=[(RANKED_AS.get(n, n), m) for n, m in space.objectives], max_t=space.epochs,
                  grace_period=es.grace_period, reduction_factor=es.reduction_factor)


def build_asha(space: SearchSpace) -> TrialScheduler:
    """ASHA on accuracy (else the first objective)."""
    objectives = space.objectives
    metric, mode = next(((n, m) for n, m in objectives if n == "val_accuracy"), objectives[0])
    # ASHA, except that the paper's configurations always train the full budget
    return PaperASHA(time_attr="epoch", metric=metric, mode=mode, max_t=space.epochs,
                     grace_period=space.early_stopping.grace_period,
                     reduction_factor=space.early_stopping.reduction_factor)


def build_fifo(space: SearchSpace) -> TrialScheduler:
    """No early stopping: every trial trains its whole budget."""
    return FIFOScheduler()


def build_scheduler(space: SearchSpace, name: str) -> TrialScheduler:
    """The scheduler ``name`` (registered in ``search_spaces.schedulers``, checked before) for ``space``."""
    return resolved(SCHEDULERS[name])(space)


def keeps_state(scheduler: TrialScheduler) -> bool:
    """Whether ``SchedulerState`` must save the scheduler's rungs for ``--resume``."""
    return isinstance(scheduler, (MOASHA, PaperASHA))
