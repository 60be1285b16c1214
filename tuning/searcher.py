"""The searcher: Ray's ``OptunaSearch``, told the truth and never asked to train a configuration twice.

``TruthfulOptunaSearch`` changes what Optuna hears when a trial ends (Ray's ``OptunaSearch`` tells
a trial stopped early ``COMPLETE`` with its truncated values, so the study's ``best_trials``,
``plot_pareto_front`` and optuna-dashboard show them on the front and the sampler learns from
them):

- a trial that trained its whole budget: ``COMPLETE`` with its objectives;
- a trial that ended short of its budget: ``PRUNED``, no values. Ray Tune tells the searcher only
  about trials that ended (finished, stopped by the scheduler, failed for good); a trial running
  when the search was interrupted is not told anything and stays ``RUNNING`` in the study until
  ``--resume`` finishes it; one the restored search does not have (a database study is ahead of
  Ray's last saved state when the driver was killed) is told ``FAIL`` by ``--resume``
  (``fail_lost``);
- a trial that failed (or whose objectives are missing): ``FAIL``.

Each Optuna trial gets the user attribute ``ray_trial_id`` when it is suggested, and before it is
told: ``epochs_done``, ``stopped_early``, ``test_accuracy``, ``time_saved_frac`` and ``schedule``
(the schedule as it ran).

**No repeated work.** A suggested configuration identical to one already suggested (same schedule
dict and training recipe, seed included: the same run) is not trained again. Its Optuna trial is
told the first run's result (at once if that run has ended, else when it ends), with the user
attribute ``repeat_of`` (the first run's Ray trial id), and the sampler is asked for another point
for the same Ray trial. After ``RANDOM_AFTER`` repeats in a row the next points come from a random
sampler (a model-based sampler may keep proposing its favourite); after ``MAX_REPEATS`` in a row
the search ends early: the space has no other configuration the samplers find.

Ray pickles the whole searcher (``save``/``restore``) with every experiment snapshot, so the
configurations seen, the results known and the repeats waiting survive ``--resume``.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from layerout.experiment import USER_ERROR
from layerout.schedules import schedule_from_dict
from layerout.progress import say
from search_spaces.trials import config_epochs
from tuning import internals
from tuning.progress import exhausted_line, repeat_line

RANDOM_AFTER = 3
MAX_REPEATS = 40
logger = logging.getLogger(__name__)


def config_key(config: dict[str, Any]) -> str:
    """What makes two trial configs the same run: the schedule dict and the training recipe."""
    return json.dumps({"schedule": config.get("schedule"), "train": config.get("train")}, sort_keys=True,
                      default=str)


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _describe(config: dict[str, Any]) -> str:
    try:
        return schedule_from_dict(config.get("schedule")).describe()
    except Exception:  # noqa: BLE001 - only a label for a console line
        return str(config.get("family", "?"))


class TruthfulOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna what really happened and skips repeated configurations
    (see the module docstring). ``epochs``: the budget a trial must train to be ``COMPLETE``, unless
    its config asks for fewer (``train.epochs``: a shorter-training reference point, a
    ``budget_frac`` trial)."""

    def __init__(self, *args: Any, epochs: int, seed: int = 0, quiet: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epochs = int(epochs)
        self._quiet = quiet
        # its own stream: seeded like the samplers' (theirs start with random draws from the seed), it
        # would propose again exactly what they proposed first
        self._random = optuna.samplers.RandomSampler(seed=(int(seed) * 7919 + 104_729) % 2**31)
        self._first_run: dict[str, str] = {}  # config key -> Ray trial id of the run that trains it
        self._key_of: dict[str, str] = {}  # Ray trial id -> config key
        self._outcome: dict[str, tuple[str, list[float] | None, dict[str, Any]]] = {}  # Ray trial id -> told
        self._budget: dict[str, int] = {}  # Ray trial id -> the epochs its config asks for
        self._waiting: dict[str, list[optuna.Trial]] = {}  # Ray trial id -> repeats to tell when it ends
        self.repeats = 0
        self.exhausted = False

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (after ``--resume``: the restored searcher's copy)."""
        return internals.optuna_study(self)  # OptunaSearch keeps it private

    def fail_lost(self, known: set[str]) -> list[int]:
        """After a restore: tell ``FAIL`` the study's ``RUNNING`` trials whose Ray trial (or the
        run they repeat) is not among ``known``, the trials the restored search has. They were
        proposed after Ray's last saved state (the driver was killed), nothing will ever end them,
        and the study (optuna-dashboard) would show them running forever. Their numbers."""
        lost = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if (t.user_attrs.get("ray_trial_id") or t.user_attrs.get("repeat_of")) in known:
                continue
            try:
                self.study.tell(t.number, state=TrialState.FAIL)
                lost.append(t.number)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError) as exc:
                logger.warning("Optuna trial %s not updated: %s", t.number, exc)
        return lost

    # ------------------------------------------------------------------ suggest
    def suggest(self, trial_id: str) -> dict | str | None:
        streak = 0
        while True:
            sampler = self.study.sampler
            if streak >= RANDOM_AFTER:
                self.study.sampler = self._random
            try:
                config = super().suggest(trial_id)
            finally:
                self.study.sampler = sampler
            if not isinstance(config, dict):
                return config
            key = config_key(config)
            first = self._first_run.get(key)
            if first is None or first == trial_id:
                self._first_run[key] = trial_id
                self._key_of[trial_id] = key
                self.__dict__.setdefault("_budget", {})[trial_id] = config_epochs(config, self._epochs)
                asked = internals.optuna_trials(self)[trial_id]
                asked.set_user_attr("ray_trial_id", trial_id)  # for the dashboard, at once
                return config
            self._repeat(internals.optuna_trials(self).pop(trial_id), first, config)
            streak += 1
            if streak >= MAX_REPEATS:
                self.exhausted = True
                self._say(exhausted_line(streak, len(self._key_of)))
                return Searcher.FINISHED

    def _repeat(self, ot_trial: optuna.Trial, first: str, config: dict[str, Any]) -> None:
        """``ot_trial`` proposed the configuration Ray trial ``first`` trains: not trained again;
        it gets ``first``'s result, now or when ``first`` ends."""
        self.repeats += 1
        ot_trial.set_user_attr("repeat_of", first)
        told = first in self._outcome
        if told:
            self._tell_repeat(ot_trial, first)
        else:
            self._waiting.setdefault(first, []).append(ot_trial)
        self._say(repeat_line(ot_trial.number, first, _describe(config), told))

    def _tell_repeat(self, ot_trial: optuna.Trial, first: str) -> None:
        state, values, attrs = self._outcome[first]
        self._tell(ot_trial, state, values, {k: v for k, v in attrs.items() if k != "ray_trial_id"})

    def _tell(self, ot_trial: optuna.Trial, state: str, values: list[float] | None, attrs: dict[str, Any]) -> None:
        """Set the attributes, then tell. A trial the storage already has finished (a database
        study ahead of the searcher state restored after a killed driver) is left as it is."""
        try:
            for k, v in attrs.items():
                ot_trial.set_user_attr(k, v)
            self.study.tell(ot_trial, values, state=TrialState[state])
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError) as exc:
            logger.warning("Optuna trial %s not updated: %s", ot_trial.number, exc)

    def _say(self, line: str) -> None:
        if not self._quiet:
            say(line)  # above the search's progress bar on a terminal

    # ------------------------------------------------------------------ results
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in internals.completed_trials(self) or trial_id not in internals.optuna_trials(self):
            return
        ot_trial = internals.optuna_trials(self)[trial_id]
        result = result or {}
        epoch = result.get("epoch")
        budget = self.__dict__.get("_budget", {}).get(trial_id, self._epochs)  # its own epochs
        values = [_finite(result.get(m)) for m in self.metric]
        attrs: dict[str, Any] = {"ray_trial_id": trial_id}
        if result:
            try:
                schedule = json.loads(result["policy"]) if result.get("policy") else None
            except (TypeError, ValueError):
                schedule = None
            attrs.update({"epochs_done": int(epoch or 0),
                          "stopped_early": bool(not error and epoch is not None and int(epoch) < budget),
                          "test_accuracy": _finite(result.get("test_accuracy")),
                          "time_saved_frac": _finite(result.get("time_saved_frac")),
                          "schedule": schedule})
        if error or result.get(USER_ERROR) or epoch is None or any(v is None for v in values):
            state, told_values = "FAIL", None  # failed (a user error too), never ran, or no objective values
        elif int(epoch) < budget:
            state, told_values = "PRUNED", None  # stopped early by the scheduler
        else:
            state, told_values = "COMPLETE", values
        self._tell(ot_trial, state, told_values, attrs)
        internals.completed_trials(self).add(trial_id)
        self._outcome[trial_id] = (state, told_values, attrs)
        for waiting in self._waiting.pop(trial_id, []):
            self._tell_repeat(waiting, trial_id)
        if state == "FAIL":  # no result to reuse: a later proposal of it may train it again
            key = self._key_of.get(trial_id)
            if key is not None and self._first_run.get(key) == trial_id:
                del self._first_run[key]
