"""The Optuna side of a search: its storage (``--optuna-storage``, for optuna-dashboard), its
sampler (``--sampler``) and the searcher Ray Tune asks (``tuning.searcher``) over the study,
created here with the paper's configurations and the reference points enqueued first."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna

from layerout.checks import short
from layerout.errors import UserError
from search_spaces.space import SearchSpace
from search_spaces.trials import define_by_run, paper_enqueue, reference_enqueue
from tuning.searcher import TruthfulOptunaSearch


Log = Callable[[str], None]


def print_line(line: str) -> None:
    print(line, flush=True)


def optuna_storage(url: str | None) -> Any:
    """An Optuna storage object (validated here, before Ray starts)."""
    if not url:
        return None
    try:
        if "://" in url:
            return optuna.storages.RDBStorage(url)
        path = Path(url).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad --optuna-storage
        msg = " ".join(str(exc).split())[:200]
        raise UserError(f"--optuna-storage {short(url)}: cannot open ({exc.__class__.__name__}: {msg}); use "
                        "sqlite:///path/study.db or a journal file path") from None


def nsga2_population(num_samples: int) -> int:
    """NSGA-II's population for a run of ``num_samples`` trials: a quarter of them (4 generations),
    at least 4, at most Optuna's default 50."""
    return min(50, max(4, num_samples // 4))


def make_sampler(name: str, seed: int, num_samples: int, log: Log = print_line,
             families: Sequence[str] = ()) -> optuna.samplers.BaseSampler:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if name == "nsga2":
        if len(families) > 1:  # Optuna's NSGA-II evolves the intersection search space only
            log(f"warning: --sampler nsga2: the {len(families)} freezing families ({', '.join(families)}) have "
                "parameters of their own, and NSGA-II evolves only those every trial has (the family); it draws "
                "the others at random. tpe models each parameter; or search one family per space")
        pop = nsga2_population(num_samples)
        if num_samples < 2 * pop:
            log(f"warning: --sampler nsga2: {num_samples} trials are fewer than two generations of its population "
                f"({pop}): it samples at random until {pop} trials have finished their whole budget")
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_searcher(space: SearchSpace, name: str, sampler: str, num_samples: int, ot_storage: Any, exp_dir: str,
              log: Log = print_line) -> TruthfulOptunaSearch:
    """The searcher (``tuning.searcher``: Ray's OptunaSearch, told the truth, no repeated work)
    over the space's define-by-run function. The study is created here first, in the storage the
    searcher then loads it from, so that the paper's configurations can be enqueued (with their
    names as user attributes), the objectives named for optuna-dashboard, and the study described
    (user attributes model, dataset, epochs, experiment_dir)."""
    objectives = space.objectives
    ot_storage = ot_storage or optuna.storages.InMemoryStorage()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=ot_storage, load_if_exists=True,
                                directions=["maximize" if m == "max" else "minimize" for _, m in objectives])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" in Optuna
        study.set_metric_names([n for n, _ in objectives])
    for key, value in (("model", space.model), ("dataset", space.dataset), ("epochs", space.epochs),
                       ("experiment_dir", exp_dir)):
        study.set_user_attr(key, value)
    # the paper's five configurations go first, then the reference points (a study restarted in
    # --optuna-storage has them already)
    queued = {(k, t.user_attrs.get(k)) for t in study.get_trials(deepcopy=False) for k in ("paper_config", "reference")}
    for fixed, attrs in (paper_enqueue(space) + reference_enqueue(space))[:num_samples]:
        if not queued & set(attrs.items()):
            study.enqueue_trial(fixed, user_attrs=attrs)
    return TruthfulOptunaSearch(space=define_by_run(space, space.num_units), metric=[n for n, _ in objectives],
                                mode=[m for _, m in objectives],
                                sampler=make_sampler(sampler, space.seed, num_samples, log, list(space.families)),
                                study_name=name, storage=ot_storage, epochs=space.epochs, seed=space.seed)
