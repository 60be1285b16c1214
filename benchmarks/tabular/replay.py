"""Searches replayed against the table: a simulated clock drives the searcher and the scheduler
through the calls Ray Tune's controller makes, and every trial's epochs are looked up in the table.

What a real search does, step by step, and what the replay does in its place:

- a free slot (``concurrency`` trials at a time) asks the searcher for a trial
  (``Searcher.suggest``; ``Searcher.FINISHED`` ends the proposals) and tells the scheduler
  (``on_trial_add``);
- the trial trains: here its per-epoch rows come from the table (table seed = search seed mod the
  table's seeds), one report per epoch, each reached after that epoch's training FLOPs in units
  of an unfrozen epoch (a freezing trial's epochs are shorter, so trials end out of order as on a
  real machine where time follows FLOPs);
- each report goes to ``scheduler.on_trial_result``; a ``CONTINUE`` goes on to
  ``searcher.on_trial_result``; a ``STOP``, or the trial's last epoch, ends it:
  ``scheduler.on_trial_complete`` and ``searcher.on_trial_complete`` with that last result (Ray's
  ``TuneController._process_trial_result`` and ``stop_trial``).

The project's methods are the objects a real search builds (``tuning.study.make_searcher``:
``TruthfulOptunaSearch`` over the define-by-run space with the reference points enqueued and the
sampler ``--sampler`` names; ``tuning.schedulers.build_scheduler``: ``MOASHA``, ``PaperASHA`` or Ray's FIFO), on the grid
space (``table.grid_space``). The anchors get the same reference points first, never stopped: plain
Optuna (ask and tell, no early stopping, a repeated configuration trained again) and Syne Tune's
``MOASHA`` (its own random proposals over the same grid, its own rung rule on the same objectives).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import optuna
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from layerout.experiment import TrialRecord
from search_spaces.space import SearchSpace
from search_spaces.trials import define_by_run, reference_enqueue
from tabular.table import Table, reference_configs

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
FINISHED = Searcher.FINISHED


@dataclass
class ReplayTrial:
    """One trial of a replayed search (what a scheduler reads of a Ray Tune trial: ``trial_id``
    and ``config``), its table curve and the results reported so far."""

    trial_id: str
    config: dict[str, Any]
    config_id: int
    curve: list[dict[str, Any]]
    order: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    next_time: float = 0.0
    ended_at: float = math.nan

    @property
    def end(self) -> int:
        return len(self.curve)


class Method(Protocol):
    """What the replay loop drives: proposals, decisions, and being told a trial ended."""

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None: ...

    def on_trial_add(self, trial: ReplayTrial) -> None: ...

    def on_trial_result(self, trial: ReplayTrial, result: dict[str, Any]) -> str: ...

    def on_trial_complete(self, trial: ReplayTrial, result: dict[str, Any]) -> None: ...


@dataclass
class Replay:
    """A finished replayed search: its trials in the order they started, how many proposals
    repeated a configuration already run, and whether the searcher ran out of configurations."""

    method: str
    seed: int
    table_seed: int
    trials: list[ReplayTrial]
    repeats: int = 0
    exhausted: bool = False

    def records(self) -> list[TrialRecord]:
        """The trials as a real search's records (``layerout.experiment.build_tables`` input)."""
        return [TrialRecord(trial_id=t.trial_id, status="TERMINATED", config=t.config, rows=t.rows)
                for t in self.trials]

    @property
    def epochs_trained(self) -> int:
        return sum(len(t.rows) for t in self.trials)

    @property
    def distinct(self) -> int:
        """Configurations trained (a method that trains a repeated proposal again has fewer than trials)."""
        return len({t.config_id for t in self.trials})


def _result(table: Table, trial: ReplayTrial, row: dict[str, Any], clock: float) -> dict[str, Any]:
    """A report as ``tuning.trainable`` makes it (the metrics the searcher and schedulers read)."""
    out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
           if k not in ("config_id", "family", "schedule", "run_epochs", "seed")}
    e = int(row["epoch"])
    out.update(epoch=e, training_iteration=e, timestamp=clock, trial_id=trial.trial_id,
               policy=json.dumps(trial.config.get("schedule"), sort_keys=True), val_images=table.val_images)
    return out


def replay(table: Table, method: Method, name: str, seed: int, num_samples: int, concurrency: int) -> Replay:
    """Run one search of ``num_samples`` trials, ``concurrency`` at a time, against ``table``."""
    table_seed = table.seeds[seed % len(table.seeds)]
    unit = table.unfrozen_epoch_gflop(table_seed)
    running: dict[str, ReplayTrial] = {}
    trials: list[ReplayTrial] = []
    clock, finished = 0.0, False

    def duration(t: ReplayTrial, epoch: int) -> float:  # epoch 1.. of t, in unfrozen epochs
        spent = [0.0] + [float(r["compute_spent_gflop"]) for r in t.curve]
        return max(1e-6, (spent[epoch] - spent[epoch - 1]) / unit)

    def fill() -> None:
        nonlocal finished
        while not finished and len(running) < concurrency and len(trials) < num_samples:
            tid = f"{len(trials):05d}"
            config = method.suggest(tid)
            if config == FINISHED or config is None:
                finished = True  # (None: a searcher with nothing now; ours never answer that)
                return
            cid = table.config_id(config)
            t = ReplayTrial(tid, config, cid, table.curve(cid, table_seed), order=len(trials))
            t.next_time = clock + duration(t, 1)
            trials.append(t)
            running[tid] = t
            method.on_trial_add(t)

    fill()
    while running:
        t = min(running.values(), key=lambda x: (x.next_time, x.order))
        clock = t.next_time
        epoch = len(t.rows) + 1
        result = _result(table, t, t.curve[epoch - 1], clock)
        t.rows.append(result)
        decision = method.on_trial_result(t, result)
        if decision == STOP or epoch >= t.end:
            method.on_trial_complete(t, result)
            t.ended_at = clock
            del running[t.trial_id]
            fill()
        else:
            t.next_time = clock + duration(t, epoch + 1)
    return Replay(name, seed, table_seed, trials, repeats=int(getattr(method, "repeats", 0)),
                  exhausted=bool(getattr(method, "exhausted", False)))


# ------------------------------------------------------------------------------ the project's
class ProjectMethod:
    """The searcher and scheduler a real search builds (``tuning.study.make_searcher`` and
    ``tuning.schedulers.build_scheduler``), called as Ray Tune calls them."""

    def __init__(self, space: SearchSpace, scheduler: str, sampler: str, num_samples: int, name: str) -> None:
        from tuning import schedulers, study  # Ray's side: imported only by the methods that use it

        self.searcher = study.make_searcher(space, name, sampler, num_samples, None, f"replay:{name}",
                                           log=lambda line: None)
        self.searcher._quiet = True  # its console lines about repeated proposals
        self.scheduler = schedulers.build_scheduler(space, scheduler)

    @property
    def repeats(self) -> int:
        return self.searcher.repeats

    @property
    def exhausted(self) -> bool:
        return self.searcher.exhausted

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        return self.searcher.suggest(trial_id)

    def on_trial_add(self, trial: ReplayTrial) -> None:
        self.scheduler.on_trial_add(None, trial)

    def on_trial_result(self, trial: ReplayTrial, result: dict[str, Any]) -> str:
        decision = self.scheduler.on_trial_result(None, trial, result)
        if decision != STOP:
            self.searcher.on_trial_result(trial.trial_id, result)
        return decision

    def on_trial_complete(self, trial: ReplayTrial, result: dict[str, Any]) -> None:
        self.scheduler.on_trial_complete(None, trial, result)
        self.searcher.on_trial_complete(trial.trial_id, result=result)


# ------------------------------------------------------------------------------ anchors
class OptunaAnchor:
    """Plain Optuna (``study.ask`` / ``study.tell``) with the search's sampler, no early
    stopping, no check for repeated configurations; the reference points enqueued first."""

    def __init__(self, space: SearchSpace, sampler: str, num_samples: int) -> None:
        from tuning.study import make_sampler

        self.space, self.fn = space, define_by_run(space)
        self.study = optuna.create_study(directions=["maximize" if m == "max" else "minimize"
                                                     for _, m in space.objectives],
                                         sampler=make_sampler(sampler, space.seed, num_samples, log=lambda line: None))
        for fixed, attrs in reference_enqueue(space):
            self.study.enqueue_trial(fixed, user_attrs=attrs)
        self.asked: dict[str, optuna.Trial] = {}

    def suggest(self, trial_id: str) -> dict[str, Any]:
        trial = self.asked[trial_id] = self.study.ask()
        return self.fn(trial)

    def on_trial_add(self, trial: ReplayTrial) -> None:
        pass

    def on_trial_result(self, trial: ReplayTrial, result: dict[str, Any]) -> str:
        return CONTINUE

    def on_trial_complete(self, trial: ReplayTrial, result: dict[str, Any]) -> None:
        self.study.tell(self.asked.pop(trial.trial_id), [float(result[n]) for n, _ in self.space.objectives])


class _DictTrial:
    """An Optuna-like trial answering every suggestion from a dict of values (Syne Tune's
    configuration), so that the project's define-by-run function builds the trial config."""

    number = None
    user_attrs: dict[str, Any] = {}

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.values[name]

    def suggest_int(self, name: str, low: int, high: int, **kw: Any) -> int:
        return int(self.values[name])

    def suggest_float(self, name: str, low: float, high: float, **kw: Any) -> float:
        return float(self.values[name])


@dataclass
class _SyneTrial:
    trial_id: int


def _rank_priority() -> Any:
    """Syne Tune's non-dominated sort (epsilon net within fronts, from objective 0) read as what
    its MOASHA takes it for: each point's rank. Its ``NonDominatedPriority`` returns the sorted
    order (the indices of the points, best first), and its rung rule reads entry i of that list as
    point i's score, so a new point is judged by the index of the point that sorts last, not by
    its own place (a point that dominates every recorded one can be stopped)."""
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import NonDominatedPriority

    class RankPriority(NonDominatedPriority):
        def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
            order = np.asarray(super().priority_unsafe(objectives))
            ranks = np.empty(len(order), dtype=int)
            ranks[order] = np.arange(len(order))
            return ranks

    return RankPriority()


class SyneTuneMOASHA:
    """Syne Tune's ``MOASHA`` (``syne_tune.optimizer.schedulers.multiobjective.moasha``): its own
    proposals, uniform over a flat space holding every grid parameter (the family first, then the
    chosen family's values: the draw our random sampler makes), and its own rung rule, ranking on
    the objectives ours ranks on (validation accuracy and the planned compute saved) with the
    same grace period and reduction factor. The reference points run first and are never stopped
    (their results count at its rungs, as at ours). ``ranked``: its non-dominated sort read as
    ranks (``_rank_priority``) instead of as it ships."""

    def __init__(self, space: SearchSpace, domains: dict[str, list[Any]], seed: int, ranked: bool = False) -> None:
        from syne_tune.config_space import choice
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA as SyneMOASHA

        from tuning.schedulers import RANKED_AS

        np.random.seed(seed)  # Syne Tune's MOASHA draws its configurations from NumPy's global generator
        es = space.early_stopping
        self.metrics = [RANKED_AS.get(n, n) for n, _ in space.objectives]
        self.scheduler = SyneMOASHA(config_space={k: choice(v) for k, v in domains.items()}, metrics=self.metrics,
                                    do_minimize=False, time_attr="epoch", max_t=space.epochs,
                                    grace_period=es.grace_period, reduction_factor=es.reduction_factor,
                                    random_seed=seed, multiobjective_priority=_rank_priority() if ranked else None)
        self.fn = define_by_run(space)
        self.references = reference_configs(space)
        self.trials: dict[str, _SyneTrial] = {}

    def suggest(self, trial_id: str) -> dict[str, Any]:
        n = len(self.trials)
        self.trials[trial_id] = _SyneTrial(n)
        if n < len(self.references):
            return self.references[n]
        return self.fn(_DictTrial(self.scheduler.suggest().config))

    def on_trial_add(self, trial: ReplayTrial) -> None:
        self.scheduler.on_trial_add(self.trials[trial.trial_id])

    def on_trial_result(self, trial: ReplayTrial, result: dict[str, Any]) -> str:
        decision = self.scheduler.on_trial_result(self.trials[trial.trial_id], result)
        return STOP if decision == "STOP" and not trial.config.get("reference") else CONTINUE

    def on_trial_complete(self, trial: ReplayTrial, result: dict[str, Any]) -> None:
        self.scheduler.on_trial_complete(self.trials[trial.trial_id], result)
