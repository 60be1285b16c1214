"""The tabulated benchmark's finite space and its table of learning curves.

The space is a project search space (``space.yaml``) whose continuous ranges are cut to a grid:
``GRID`` gives a step to Optuna's ``suggest_float`` / ``suggest_int`` for the parameters named
there, and nothing else changes. ``grid_space`` hands the project's own define-by-run function
(``search_spaces.trials.DefineByRun``) family spaces that ask Optuna with those steps, so a
replayed search proposes exactly the configurations the table holds, through the same
``trial_to_config`` a real search uses. ``enumerate_configs`` walks every path of that
define-by-run function once (every configuration of the space), and ``reference_configs`` adds
the unfrozen model at every budget (the reference points).

The table (``table.csv.gz``, built by ``build.py``) has one row per (configuration, seed, epoch):
what ``layerout.trainer.Trainer`` reported after that epoch. ``Table`` reads it and looks a
trial config up (``Table.curve``).
"""
from __future__ import annotations

import copy
import json
import re
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from search_spaces.families.base import FamilySpace
from search_spaces.space import SearchSpace, load_space
from search_spaces.trials import BASELINE, BUDGET_PARAM, config_epochs, define_by_run, reference_points, \
    trial_to_config

HERE = Path(__file__).resolve().parent
SPACE = HERE / "space.yaml"
TABLE = HERE / "table.csv.gz"
# Optuna parameter (trailing unit index dropped: layerout.v0 -> layerout.v) -> the grid's step
GRID: dict[str, float] = {"layerout.v": 0.3, "layerout.warmup_epochs": 2, "freezeout.t0": 0.1,
                          "adaptive.threshold": 20.0}
# what the table stores per epoch (besides its keys); all as the trainer reports them
METRICS = ("val_accuracy", "test_accuracy", "compute_saved_frac", "planned_compute_saved_frac", "compute_spent_gflop")
KEY_COLUMNS = ("config_id", "family", "schedule", "run_epochs", "seed", "epoch")


def step_of(name: str) -> float | None:
    """The grid step of Optuna parameter ``name`` (``layerout.v2`` -> the step of ``layerout.v``)."""
    return GRID.get(name, GRID.get(re.sub(r"\d+$", "", name)))


class GridTrial:
    """An Optuna trial whose ``suggest_float`` / ``suggest_int`` use the grid's steps (Optuna's own
    ``step=``: the samplers see a discrete distribution and propose only grid values)."""

    def __init__(self, trial: Any) -> None:
        self._trial = trial

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        return self._trial.suggest_float(name, low, high, step=step or step_of(name), log=log)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._trial.suggest_int(name, low, high, step=int(step_of(name) or step), log=log)


def _on_grid(family: FamilySpace) -> FamilySpace:
    """``family`` (a family's ranges) asking Optuna through ``GridTrial``: a subclass of its own
    class, so that everything else about it (``schedule``, ``isinstance``) is unchanged."""
    base = type(family)

    def suggest(self: FamilySpace, trial: Any, ctx: Any) -> dict[str, Any]:
        return base.suggest(self, GridTrial(trial), ctx)

    grid_cls = type(base.__name__, (base,), {"suggest": suggest, "__module__": __name__})
    out = copy.copy(family)
    out.__class__ = grid_cls
    return out


def grid_space(space: SearchSpace | None = None, seed: int | None = None) -> SearchSpace:
    """The benchmark's space (default ``space.yaml``) with every family on the grid; ``seed``:
    the search's seed (the samplers' and, in a real search, the training seed)."""
    space = space or load_space(str(SPACE))
    space = replace(space, families={k: _on_grid(f) for k, f in space.families.items()})
    return space if seed is None else replace(space, seed=int(seed))


class _PathTrial:
    """A stand-in Optuna trial that answers each suggestion with the value a path of indices
    picks (0 past the path's end) and records how many values each suggestion had."""

    number = 0
    user_attrs: dict[str, Any] = {}

    def __init__(self, path: list[int]) -> None:
        self.path, self.sizes, self.asked = list(path), [], []

    def _pick(self, values: list[Any], name: str) -> Any:
        i = len(self.sizes)
        self.sizes.append(len(values))
        self.asked.append((name, values))
        if i == len(self.path):
            self.path.append(0)
        return values[self.path[i]]

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._pick(list(choices), name)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._pick(list(range(int(low), int(high) + 1, int(step))), name)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        if not step:
            raise ValueError(f"{name}: a continuous range [{low}, {high}] has no finite grid (give it a step in GRID)")
        n = int(np.floor((high - low) / step + 1e-9))  # Optuna's rule: high cut down to the last whole step
        return self._pick([low + k * step for k in range(n + 1)], name)


def enumerate_configs(fn: Callable[[Any], dict[str, Any]],
                      domains: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """Every trial config a define-by-run function ``fn`` can return over finite choices, each
    once, in a fixed order; ``domains`` (if given) gets every parameter's values. (Written here:
    Optuna's GridSampler needs the grid spelled out in advance, which a define-by-run space with
    conditional parameters does not have.)"""
    out, todo = [], deque([[]])
    while todo:
        path = todo.popleft()
        trial = _PathTrial(path)
        out.append(fn(trial))
        if domains is not None:
            for name, values in trial.asked:
                domains.setdefault(name, values)
        for depth in range(len(path), len(trial.sizes)):  # the choices this path left at their first value
            for i in range(1, trial.sizes[depth]):
                todo.append(trial.path[:depth] + [i])
    return out


def reference_configs(space: SearchSpace) -> list[dict[str, Any]]:
    """The unfrozen model's configs at every budget of the space: the baseline and the reference
    points, as a search enqueues them."""
    refs = [(BASELINE, space.epochs), *reference_points(space)]
    return [trial_to_config(space, {"family": "none", "reference": name, BUDGET_PARAM: e}) for name, e in refs]


def table_key(config: dict[str, Any], budget: int) -> str:
    """What identifies a configuration in the table: its schedule and the epochs it trains (the
    rest of the recipe is the space's; the seed is the table's)."""
    return json.dumps({"schedule": config.get("schedule"), "epochs": config_epochs(config, budget)}, sort_keys=True)


def all_configs(space: SearchSpace) -> list[dict[str, Any]]:
    """The table's configurations: the reference points first, then every configuration the
    grid space's define-by-run function can propose; each once."""
    seen: dict[str, dict[str, Any]] = {}
    for config in reference_configs(space) + enumerate_configs(define_by_run(space)):
        seen.setdefault(table_key(config, space.epochs), config)
    return list(seen.values())


def grid_domains(space: SearchSpace) -> dict[str, list[Any]]:
    """Every Optuna parameter of the grid space and its values (a flat space for searchers that
    have no conditional parameters: each trial draws them all and uses its family's)."""
    domains: dict[str, list[Any]] = {}
    enumerate_configs(define_by_run(space), domains)
    return domains


@dataclass
class Table:
    """The stored table: ``rows`` (one per configuration, seed and epoch), ``space`` (the grid
    space it was built from) and an index from ``table_key`` to ``config_id``."""

    rows: pd.DataFrame
    space: SearchSpace

    def __post_init__(self) -> None:
        first = self.rows.drop_duplicates("config_id").sort_values("config_id")
        self.configs = first[["config_id", "family", "schedule", "run_epochs"]].reset_index(drop=True)
        self.ids = {json.dumps({"schedule": json.loads(s), "epochs": int(e)}, sort_keys=True): int(c)
                    for c, s, e in zip(first["config_id"], first["schedule"], first["run_epochs"])}
        self.seeds = sorted(int(s) for s in self.rows["seed"].unique())
        self._curves = {(int(c), int(s)): g.sort_values("epoch").to_dict("records")
                        for (c, s), g in self.rows.groupby(["config_id", "seed"])}

    @property
    def budget(self) -> int:
        return self.space.epochs

    @property
    def val_images(self) -> int:
        """Images in the validation split: one image is ``1 / val_images`` of accuracy."""
        if not hasattr(self, "_val_images"):
            from layerout.data import load_data

            t = self.space.train
            self._val_images = int(load_data(self.space.dataset, device="cpu", val_frac=t["val_frac"],
                                             seed=self.seeds[0]).n_val)
        return self._val_images

    def unfrozen_epoch_gflop(self, seed: int) -> float:
        """The training GFLOPs of one unfrozen epoch (the replay's unit of time)."""
        r = self.rows
        return float(r[(r["family"] == "none") & (r["seed"] == seed) & (r["epoch"] == 1)]["compute_spent_gflop"].iloc[0])

    def config_id(self, config: dict[str, Any]) -> int:
        key = table_key(config, self.budget)
        if key not in self.ids:
            raise KeyError(f"configuration not in the table: {key}")
        return self.ids[key]

    def config_of(self, config_id: int) -> dict[str, Any]:
        """The trial config of a configuration (as the grid space's define-by-run function makes it)."""
        if not hasattr(self, "_configs"):
            self._configs = {self.ids[k]: c for c in all_configs(self.space)
                             if (k := table_key(c, self.budget)) in self.ids}
        return self._configs[int(config_id)]

    def curve(self, config_id: int, seed: int) -> list[dict[str, Any]]:
        """The run's per-epoch rows (``METRICS`` and ``epoch``), first epoch first."""
        return self._curves[int(config_id), int(seed)]

    def final(self, seed: int) -> pd.DataFrame:
        """Every configuration's last epoch on table seed ``seed``."""
        r = self.rows[self.rows["seed"] == seed]
        return r[r["epoch"] == r["run_epochs"]].sort_values("config_id").reset_index(drop=True)


def load_table(path: str | Path = TABLE, space: SearchSpace | None = None) -> Table:
    rows = pd.read_csv(path)
    missing = [c for c in (*KEY_COLUMNS, *METRICS) if c not in rows.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    return Table(rows=rows, space=space or grid_space())
