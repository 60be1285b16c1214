"""From a search space to trials: the Optuna define-by-run function, trial parameters -> trial
config, the LayerOut paper's five configurations (evaluated first when a space asks) and the
shorter-training reference points (the unfrozen model trained for fractions of the budget).

A trial config is what Ray hands every trial::

    {"family": "prefix", "paper_config": "", "reference": "", "optuna_trial": 7,
     "train": {TrainConfig fields: model, dataset, seed, epochs, lr, ...},
     "schedule": {"kind": "prefix", "k": 2, "start_epoch": 0}}

A run shorter than the budget (a reference point, or a ``budget_frac`` trial) has its recipe and
schedule compressed by ``layerout.budget``: ``train.epochs`` its own epochs, ``train.budget_epochs``
the search's budget.
"""
from __future__ import annotations

import copy
from typing import Any

from layerout.budget import epochs_for, shorter_recipe, shorter_schedule
from layerout.checks import short
from layerout.errors import UserError
from layerout.schedules import paper_vectors, schedule_from_dict
from layerout.schedules.none import UNFROZEN
from search_spaces.families import FAMILY_SPACES, LayerOutSpace
from search_spaces.space import SearchSpace

PAPER_CONFIGS = ("baseline", "since_start", "warmup_random", "efreeze", "dfreeze")
BASELINE = "baseline"  # the reference point that trains the whole budget (the paper's baseline when it runs)
BUDGET_PARAM = "budget.epochs"  # the Optuna parameter of budget_frac: the epochs a trial trains


def config_epochs(config: dict[str, Any] | None, default: int) -> int:
    """The epochs a trial config (``trial_to_config``'s, or a confirmation job's) trains: its
    ``train.epochs`` (fewer than the search's for a shorter-training trial), else ``default``."""
    train = (config or {}).get("train")
    own = train.get("epochs") if isinstance(train, dict) else None
    return own if isinstance(own, int) and not isinstance(own, bool) and own > 0 else int(default)


def reference_points(space: SearchSpace) -> list[tuple[str, int]]:
    """The shorter-training reference points as (name, epochs), fewest epochs first: the unfrozen
    model trained for ``round(f * epochs)`` (half up) epochs for each fraction f of
    ``space.reference_budgets``, named by the fraction it really trains (``shorter-50%``);
    fractions that round to the whole budget, or to the epochs of another, are left out. The
    full-budget baseline is not among them (``reference_enqueue`` adds it)."""
    e_full = space.epochs
    out: dict[int, str] = {}
    for f in space.reference_budgets:
        e = epochs_for(f, e_full)
        if e < e_full and e not in out:
            out[e] = f"shorter-{100 * e / e_full:.0f}%"
    return [(name, e) for e, name in sorted(out.items())]


def budget_range(space: SearchSpace) -> tuple[int, int] | None:
    """The epochs a ``budget_frac`` trial may train, [low, high] (half up), or None when the
    space has no budget dimension (or it allows only the whole budget)."""
    if space.budget_frac is None:
        return None
    lo, hi = (epochs_for(f, space.epochs) for f in space.budget_frac)
    return None if lo >= space.epochs else (lo, hi)


def paper_points(space: SearchSpace) -> list[tuple[str, dict[str, Any]]]:
    """The paper's five configurations as (name, params): baseline, LayerOut since start (random
    v), after warm-up with random v, efreeze and dfreeze after warm-up (the paper's vectors for
    K = 7 and 16, a 0.9 -> 0.1 ramp otherwise)."""
    w = space.paper_warmup_epochs
    vecs = paper_vectors(space.num_units)
    lo = LayerOutSpace.param
    return [
        ("baseline", {"family": UNFROZEN}),
        ("since_start", {"family": "layerout", lo("v_mode"): "random_epoch", lo("warmup_epochs"): 0}),
        ("warmup_random", {"family": "layerout", lo("v_mode"): "random_epoch", lo("warmup_epochs"): w}),
        ("efreeze", LayerOutSpace.manual_params(vecs["efreeze"], w)),
        ("dfreeze", LayerOutSpace.manual_params(vecs["dfreeze"], w)),
    ]


def trial_to_config(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters -> ``{"family", "paper_config", "train": TrainConfig kwargs, "schedule": dict}``.

    ``params`` uses the define-by-run names (``family``, then ``<family>.<name>``). The schedule
    dict is complete (the schedule's own defaults fill what the trial did not choose) and is
    checked against the model's unit count and the epochs (UserError if bad).
    """
    fam = params.get("family")
    if fam not in FAMILY_SPACES:
        raise UserError(f"trial parameters: family: unknown family {short(fam)}; allowed: {', '.join(FAMILY_SPACES)}")
    ctx = space.context
    chosen = FAMILY_SPACES[fam].schedule(params, ctx, space.families.get(fam))
    epochs = int(params.get(BUDGET_PARAM) or ctx.epochs)  # a shorter run: its recipe and schedule compressed
    if not 1 <= epochs <= ctx.epochs:
        raise UserError(f"trial parameters: {BUDGET_PARAM}: must be within [1, {ctx.epochs}], got {short(epochs)}")
    chosen = shorter_schedule(chosen, epochs, ctx.epochs)
    schedule = schedule_from_dict(chosen)
    sched = schedule.to_dict()  # before bind: a random_once vector is drawn by the run, not stored here
    schedule.bind(num_units=ctx.num_units, epochs=epochs, steps_per_epoch=1, seed=space.seed)
    train = {"model": space.model, "dataset": space.dataset, "seed": space.seed, **copy.deepcopy(space.train)}
    if space.unit_prefixes is not None:
        train["units"] = copy.deepcopy(space.unit_prefixes)
    return {"family": fam, "paper_config": str(params.get("paper_config", "") or ""),
            "reference": str(params.get("reference", "") or ""), "train": shorter_recipe(train, epochs),
            "schedule": sched}


class DefineByRun:
    """Optuna define-by-run space for a :class:`SearchSpace` (picklable, so Ray can checkpoint it).

    Suggests ``family`` (a categorical over the space's families), then only that family's
    parameters. A trial enqueued with the user attribute ``paper_config`` (see
    :func:`paper_enqueue`) returns that paper configuration instead. Returns the trial config of
    :func:`trial_to_config` plus ``optuna_trial`` (the Optuna trial number: the order trials were
    suggested in, and the trial to look for in optuna-dashboard). A trial enqueued with the user
    attribute ``reference`` (:func:`reference_enqueue`) returns that reference point: the unfrozen
    model trained for the whole budget (``baseline``) or a shorter one. With ``budget_frac`` in
    the space, a sampled trial also chooses the epochs it trains (``budget.epochs``).
    """

    def __init__(self, space: SearchSpace):
        self.space = space
        self.paper = dict(paper_points(space)) if space.paper_configs else {}
        self.references = {BASELINE: space.epochs, **dict(reference_points(space))}

    def __call__(self, trial: Any) -> dict[str, Any]:
        space = self.space
        fams = list(space.families)
        number = getattr(trial, "number", None)
        attrs = getattr(trial, "user_attrs", None) or {}
        pc, ref = attrs.get("paper_config"), attrs.get("reference")
        if pc and pc in self.paper:
            params = dict(self.paper[pc])
            if params["family"] in fams:
                trial.suggest_categorical("family", fams)  # fixed by the enqueued params
            # the paper's baseline is the search's full-budget reference point
            extra = {"reference": BASELINE} if pc == "baseline" else {}
            return {**trial_to_config(space, {**params, "paper_config": pc, **extra}), "optuna_trial": number}
        if ref and ref in self.references:
            if UNFROZEN in fams:
                trial.suggest_categorical("family", fams)  # fixed by the enqueued params
            params = {"family": UNFROZEN, "reference": ref, BUDGET_PARAM: self.references[ref]}
            return {**trial_to_config(space, params), "optuna_trial": number}
        fam = trial.suggest_categorical("family", fams)
        params = {"family": fam, **space.families[fam].suggest(trial, space.context)}
        span = budget_range(space)
        if span is not None:
            params[BUDGET_PARAM] = trial.suggest_int(BUDGET_PARAM, *span)
        return {**trial_to_config(space, params), "optuna_trial": number}


def define_by_run(space: SearchSpace, num_units: int | None = None) -> DefineByRun:
    """The Optuna define-by-run function for ``space`` (``num_units`` defaults to the model's K)."""
    if num_units is not None and num_units != space.num_units:
        raise UserError(f"{space.source}: model {space.model} has {space.num_units} units, not {num_units}")
    return DefineByRun(space)


def paper_enqueue(space: SearchSpace) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(fixed params, user_attrs) for ``optuna.Study.enqueue_trial``: the paper's configurations,
    in order, when ``space.paper_configs`` is on (an empty list otherwise)."""
    if not space.paper_configs:
        return []
    out = []
    for name, params in paper_points(space):
        fixed = {"family": params["family"]} if params["family"] in space.families else {}
        out.append((fixed, {"paper_config": name}))
    return out


def reference_enqueue(space: SearchSpace) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(fixed params, user_attrs) for ``optuna.Study.enqueue_trial``: the reference points, after
    the paper's configurations: the full-budget baseline (unless the paper's baseline runs) and
    the shorter-training points, fewest epochs first."""
    names = ([] if space.paper_configs else [BASELINE]) + [name for name, _ in reference_points(space)]
    fixed = {"family": UNFROZEN} if UNFROZEN in space.families else {}
    return [(dict(fixed), {"reference": name}) for name in names]
