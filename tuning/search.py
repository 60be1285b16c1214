"""Run and resume searches: ``run_search(space, options)`` and ``resume_search(exp_dir)``.

A search is a Ray Tune experiment: Optuna (multi-objective, define-by-run over the space's
families) suggests trials, each trial trains one network (``tuning.trainable``), a scheduler may
stop trials early, and at the end the experiment directory (``layerout.experiment``) gets
``trials.csv``, ``epochs.csv`` and an updated ``experiment.json``. Both functions return a
:class:`SearchResult`; the analysis (Pareto front, plots, report) is the caller's next step.
Your own model and data (import paths in the space, or Python objects given to ``run_search``)
reach the workers as ``tuning.usercode`` describes.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import logging
import os
import platform
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
import pandas as pd
import ray
from ray import cloudpickle, tune
from ray.tune.schedulers import FIFOScheduler

from layerout import userland
from layerout.checks import cut, short
from layerout.data import FILE_DATASETS, data_dir_note, load_data
from layerout.errors import UserError
from layerout.experiment import (EPOCHS_CSV, EXPERIMENT_JSON, FORMAT, RESULT_JSON, RUNGS_CSV, TRIALS_CSV, USER_ERROR,
                                 VERSION, TrialRecord, build_tables, meta_json, parse_meta, parse_result_lines,
                                 rungs_csv, tables_csv)
from layerout.files import WriteError
from layerout.progress import slow_notice
from search_spaces.space import SearchSpace, load_space, read_space, space_from_dict
from search_spaces.trials import (budget_range, config_epochs, define_by_run, paper_enqueue, reference_enqueue,
                                  reference_points)
from tuning import internals, loggers, storage
from tuning.diskfull import NoSpace, NoSpaceWatch, QuietAboutNoSpace, is_no_space, no_space_file
from tuning.options import SAMPLERS, SCHEDULERS, SearchOptions  # noqa: F401 - also this module's names
from tuning.progress import RAY_LOG, TrialProgress, ray_log_to
from tuning.repair import repair_checkpoint_refs
from tuning.schedulers import MOASHA, PaperASHA, SchedulerState
from tuning.searcher import TruthfulOptunaSearch
from tuning.trainable import train_trial, trial_dirname
from tuning.usercode import SHIP_CODE_ENV, UserErrorStop, code_info, failures_to_stop, with_user_modules

ROOT = Path(__file__).resolve().parent.parent
# what MOASHA ranks on in place of an objective: what the trial's policy will save, not what it has saved so far
PLANNED = {"compute_saved_frac": "planned_compute_saved_frac"}
# what --resume may change: where the search runs, not what it computes
RESUME_OPTIONS = ("address", "cpus_per_trial", "gpus_per_trial")
# trials x epochs from which a search's first lines say how much training it asks for
HUGE_ASK_EPOCHS = 100_000
Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass
class SearchResult:
    """What a search (or a resumed one) left: the experiment directory, its experiment.json and
    tables, and how it ended."""

    exp_dir: str
    meta: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    wall_s: float
    planned: int
    errors: int = 0
    unfinished: int = 0
    skipped_lines: int = 0  # result.json lines that were not JSON (torn by a kill)
    notes: list[str] = field(default_factory=list)
    exhausted: bool = False  # the searcher found no new configuration: fewer trials than planned, by design
    repeats: int = 0  # proposals that repeated a configuration already run (not trained again)
    user_error: str | None = None  # the search stopped: its first trials failed with this error (tuning.usercode)

    @property
    def interrupted(self) -> bool:
        return bool(not self.user_error and (self.unfinished or (len(self.trials) < self.planned
                                                                  and not self.exhausted)))

    @property
    def full_budget(self) -> int:
        t = self.trials
        return int(((t["status"] == "TERMINATED") & ~t["stopped_early"].astype(bool)).sum()) if len(t) else 0

    @property
    def stopped_early(self) -> int:
        return int(self.trials["stopped_early"].astype(bool).sum()) if len(self.trials) else 0


# ------------------------------------------------------------------------------ start and resume
def run_search(space: SearchSpace | str | dict, options: SearchOptions | None = None, log: Log = _print, *,
               model: Any = None, dataset: Any = None, callbacks: list[Any] | None = None) -> SearchResult:
    """Run a new search of ``space``: a SearchSpace, a YAML path, a preset name, or a dict in the
    YAML's format. ``model`` / ``dataset`` replace the space's: an import path, or a Python object
    (an ``nn.Module`` class or a function returning a model; a function returning the data, see
    ``layerout.data.UserData``). An object importable by name is recorded by its import path;
    one that is not (defined in a notebook, a lambda) is sent to the trials by value
    (``tuning.usercode``), and ``resume_search`` needs it again. ``callbacks``: your own
    ``ray.tune.Callback`` objects, run next to the tool's (pickled with the search, so
    ``resume_search`` restores them)."""
    options = options or SearchOptions()
    options.check()
    callbacks = _user_callbacks(callbacks)
    objects: dict[str, str] = {}  # role -> name of an object sent by value
    if model is not None or dataset is not None or isinstance(space, dict):
        space, objects = _space_with(space, model, dataset)
    space = load_space(space) if isinstance(space, str) else space
    if options.seed is not None:
        space = replace(space, seed=options.seed)
    if options.loggers is None:  # the space's loggers: their packages checked before anything starts
        loggers.check_loggers(space.loggers, f"{space.source}: loggers:")
    root = storage.storage_root(options.storage)
    name = options.name or f"{space.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    exp_dir = f"{root}/{name}"
    storage.check_writable(root, "--storage")

    def taken() -> UserError:
        return UserError(f"{exp_dir}: already exists; continue it with --resume {exp_dir} (once no search runs "
                         "there), or choose another --name")

    if storage.exists(exp_dir):  # at once, before the dataset and Ray: the folder is claimed below
        raise taken()
    ot_storage = _optuna_storage(options.optuna_storage)
    resolved = _resolve(space, options, root, name)
    code = code_info(space.model, space.dataset, space.code_paths, objects)
    meta = {"format": FORMAT, "version": VERSION, "name": name, "space": space.to_dict(),
            "space_document": space.document, "space_file": space.source, "options": asdict(resolved),
            "versions": _versions(), "model": space.model, "dataset": space.dataset, "units": space.units,
            "epochs": space.epochs, "objectives": [list(o) for o in space.objectives], "created": _now(),
            "finished": None, "code": code}
    with _private_files():
        _init_ray(options.address, options.connect_timeout, code)
        try:
            _check_resources(options.cpus_per_trial, options.gpus_per_trial, local=not options.address)
            # one os.mkdir: of two searches started at once with this name, only one gets past here
            with storage.claimed(exp_dir, taken):
                storage.write_text(f"{exp_dir}/{EXPERIMENT_JSON}", meta_json(meta))
            return _run_new(space, resolved, exp_dir, meta, ot_storage, code, log, callbacks)
        finally:
            ray.shutdown()


def _resolve(space: SearchSpace, options: SearchOptions, root: str, name: str) -> SearchOptions:
    """The options as the search runs them: the space's values where the options leave them open;
    the dataset checked (downloaded once, here) unless it runs on a cluster."""
    num_samples = options.num_samples or space.num_samples
    max_conc = space.max_concurrent if options.max_concurrent is None else options.max_concurrent
    scheduler = options.scheduler or space.early_stopping.scheduler
    data_dir = str(Path(os.path.expanduser(options.data_dir)).resolve()) if options.data_dir else None
    note = data_dir_note(space.dataset, options.data_dir)
    if note:
        print(note, file=sys.stderr, flush=True)
    if not options.address:
        _check_dataset(space, data_dir, options.download)
    return replace(options, num_samples=num_samples, max_concurrent=max_conc, scheduler=scheduler,
                   seed=space.seed, storage=root, name=name, data_dir=data_dir,
                   loggers=loggers.resolved(options.loggers or space.loggers),
                   confirm_seeds=space.confirm_seeds if options.confirm_seeds is None else options.confirm_seeds,
                   confirm_top=space.confirm_top if options.confirm_top is None else options.confirm_top)


def _run_new(space: SearchSpace, options: SearchOptions, exp_dir: str, meta: dict[str, Any], ot_storage: Any,
             code: dict[str, Any], log: Log, user_callbacks: list[Any] | None = None) -> SearchResult:
    """Build the searcher, scheduler and Tuner of a new search and run it (Ray is up,
    experiment.json written)."""
    root, name = exp_dir.rsplit("/", 1)
    num_samples = int(options.num_samples or space.num_samples)
    scheduler = options.scheduler or space.early_stopping.scheduler
    searcher = _searcher(space, name, options.sampler, num_samples, ot_storage, exp_dir, log)
    sched = _scheduler(space, scheduler)
    progress = TrialProgress(num_samples, space.epochs, scheduler=scheduler, interval=options.progress_interval)
    progress.configure(repeats=lambda: searcher.repeats)
    asked = num_samples * space.epochs
    progress.estimate_once = asked >= HUGE_ASK_EPOCHS  # a line with the time it needs, after its first epoch
    callbacks: list[Any] = [progress]
    if isinstance(sched, (MOASHA, PaperASHA)):
        callbacks.append(SchedulerState(sched))  # its rungs survive --resume
    if options.loggers is not None:  # result.json and the chosen loggers; Ray adds none of its own (_fit)
        callbacks += loggers.logger_callbacks(options.loggers, name)
    callbacks += user_callbacks or []
    try:  # writes tuner.pkl
        tuner = tune.Tuner(
            _trainable(options, code, options.address),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=sched, num_samples=num_samples,
                                        max_concurrent_trials=options.max_concurrent or None, reuse_actors=True,
                                        trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=root, verbose=0,
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                # the same user error in the first trials: stop rather than run them all
                stop=UserErrorStop(failures_to_stop(options.max_concurrent, num_samples)),
                callbacks=callbacks))
    except OSError as exc:
        if is_no_space(exc):
            raise NoSpace(f"{exp_dir}/{internals.TUNER_PKL}", _resume_hint(exp_dir)) from None
        raise
    log(f"experiment: {exp_dir}\n  space {space.source} ({space.model} on {space.dataset}, "
        f"{space.num_units} units, {space.epochs} epochs), {num_samples} trials, sampler {options.sampler}, "
        f"scheduler {scheduler}" + (", the paper's configurations first" if space.paper_configs else "")
        + _reference_line(space) + _confirm_line(space, options, num_samples)
        + (f"\n  watch the study: optuna-dashboard {options.optuna_storage}" if options.optuna_storage else "")
        + (f"\n  loggers: result.json, {', '.join(options.loggers)}" if options.loggers else "")
        + _code_lines(space, code, options.address)
        + (f"\n  note: that asks for up to {num_samples:,} trials x {space.epochs:,} epochs = {asked:,} epochs of "
           "training; the time it needs is estimated after the first epoch" if asked >= HUGE_ASK_EPOCHS else ""))
    t0 = time.time()
    results = _fit(tuner, exp_dir, options.loggers is not None, _resume_hint(exp_dir))
    return _finish(exp_dir, meta, results, time.time() - t0, tuner)


def _resume_hint(exp_dir: str) -> str:
    return (f"the search stopped with its saved state whole: free some space, then continue it with python "
            f"tune_main.py --resume {exp_dir}")


def read_experiment(exp_dir: str) -> dict[str, Any]:
    """experiment.json of a local or remote experiment directory."""
    text = storage.read_text(f"{exp_dir}/{EXPERIMENT_JSON}")
    if text is None:
        raise UserError(f"{exp_dir}: not an experiment directory (no {EXPERIMENT_JSON} written by tune_main.py)")
    return parse_meta(text, f"{exp_dir}/{EXPERIMENT_JSON}")


def resume_search(exp_dir: str, address: str | None = None, cpus_per_trial: float | None = None,
                  gpus_per_trial: float | None = None, log: Log = _print,
                  connect_timeout: float | None = None, *, model: Any = None, dataset: Any = None,
                  progress_interval: float | None = None, callbacks: list[Any] | None = None) -> SearchResult:
    """Continue an interrupted search with its stored settings; only where it runs (and how often
    its status is shown, ``progress_interval``) may change. A search given a model or data
    function by value (``run_search(..., model=obj)``) needs the same objects again here. The
    callbacks the search started with come back with it (Ray Tune pickled them); ``callbacks``
    adds more.

    When Ray Tune saved no state before the driver stopped (it was killed between writing
    experiment.json and Ray's first save), the search starts afresh in the same directory from
    experiment.json's settings. Restoring unpickles Ray's files in the directory: a local one that
    other users can write is refused (``check_trusted``).
    """
    exp_dir = storage.storage_root(exp_dir)
    meta = read_experiment(exp_dir)
    options = options_again(meta, address=address, progress_interval=progress_interval,
                            cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                            connect_timeout=connect_timeout)
    callbacks = _user_callbacks(callbacks)
    code = meta.get("code") or {}
    register_objects(exp_dir, code, model, dataset, "resume", "resume_search")
    restore = internals.has_saved_state(exp_dir)
    if restore:
        check_trusted(exp_dir)
        internals.check_restorable(exp_dir)  # a damaged one would make Ray start afresh over it
    else:
        space = _stored_space(meta, exp_dir)
    storage.check_writable(exp_dir, "--resume")
    with _private_files():
        _init_ray(address, options.connect_timeout, code)
        try:
            _check_resources(options.cpus_per_trial, options.gpus_per_trial, local=not address)
            if not restore:
                log(f"resuming experiment: {exp_dir}\n  Ray Tune saved no state before the search stopped: "
                    f"starting it afresh with the settings in {EXPERIMENT_JSON}")
                root, name = exp_dir.rsplit("/", 1)
                options = replace(_resolve(space, options, root, name), address=address)
                meta.setdefault("restarted", []).append(_now())
                storage.write_text(f"{exp_dir}/{EXPERIMENT_JSON}", meta_json(meta))
                return _run_new(space, options, exp_dir, meta, _optuna_storage(options.optuna_storage), code, log,
                                callbacks)
            log(f"resuming experiment: {exp_dir}")
            for line in repair_checkpoint_refs(exp_dir):
                log(f"  {line}")
            log_file = storage.local_path(f"{exp_dir}/{RAY_LOG}") if storage.is_local(exp_dir) else None
            try:
                with ray_log_to(log_file):  # its warnings about trials that never reported: to ray.log
                    tuner = tune.Tuner.restore(exp_dir, trainable=_trainable(options, code, address),
                                               resume_unfinished=True, resume_errored=True)
            except Exception as exc:  # noqa: BLE001 - whatever unpickling a damaged file raises
                raise internals.damaged(f"{exp_dir}/{internals.TUNER_PKL}", exc) from None
            restored = internals.tuner_callbacks(tuner)
            searcher = internals.tuner_searcher(tuner)
            if isinstance(searcher, TruthfulOptunaSearch):
                lost = searcher.fail_lost({t.trial_id for t in internals.saved_trial_states(exp_dir)})
                if lost:
                    log(f"  Optuna trial{'s' * (len(lost) > 1)} {', '.join(map(str, lost))} of the study ran in "
                        "no trial Ray Tune saved (the driver stopped before its next save): told FAIL")
            ended = _ended_before(exp_dir, int(meta.get("epochs") or 0))
            for cb in restored:
                if isinstance(cb, TrialProgress):
                    cb.configure(interval=progress_interval, repeats=lambda: int(getattr(searcher, "repeats", 0)))
                    cb.ended_before(ended)
            restored += callbacks
            t0 = time.time()
            try:
                with internals.restore_failure_guard():
                    results = _fit(tuner, exp_dir, (meta.get("options") or {}).get("loggers") is not None,
                                   _resume_hint(exp_dir))
            except internals.RestoreFailed as exc:
                raise UserError(f"{exp_dir}: Ray Tune could not restore the search from its saved state "
                                f"({cut(str(exc), 160)}); nothing was trained (details in {exp_dir}/{RAY_LOG})") from None
            meta.setdefault("resumed", []).append(_now())
            return _finish(exp_dir, meta, results, time.time() - t0, tuner)
        finally:
            ray.shutdown()


def _ended_before(exp_dir: str, epochs: int) -> set[str]:
    """Trials that ended before the driver stopped (a user error in result.json, or their budget
    trained: the epochs in result.json or in the newest checkpoint a trial wrote itself, since
    the driver's copy of result.json may be as old as Ray's saved state). That state may have them
    continue, which ends at once: their end line was printed already."""
    out = set()
    for name in storage.list_names(exp_dir, folders=True):
        if not name.startswith("trial_"):
            continue
        folder = f"{exp_dir}/{name}"
        rows, _ = parse_result_lines(storage.read_text(f"{folder}/{RESULT_JSON}"))
        try:
            config = rows[-1].get("config") if rows else json.loads(storage.read_text(f"{folder}/params.json") or "")
        except ValueError:
            continue
        done = [int(r.get("epoch") or 0) for r in rows]
        for checkpoint in storage.list_names(folder, folders=True):
            if checkpoint.startswith("checkpoint_"):
                lines = (storage.read_text(f"{folder}/{checkpoint}/epochs.csv") or "").splitlines()
                done += [int(row["epoch"]) for row in csv.DictReader(lines) if str(row.get("epoch")).isdigit()]
        budget = config_epochs(config if isinstance(config, dict) else None, epochs)
        if any(r.get(USER_ERROR) for r in rows) or max(done, default=0) >= budget:
            out.add(name.removeprefix("trial_"))
    return out


def _stored_space(meta: dict[str, Any], exp_dir: str) -> SearchSpace:
    """The search space experiment.json was started with (``space_document``), validated again."""
    doc = meta.get("space_document")
    where = f"{exp_dir}/{EXPERIMENT_JSON}"
    if not isinstance(doc, dict):
        raise UserError(f"{where}: Ray Tune saved no state to resume, and this experiment.json has no "
                        "'space_document' to start the search afresh from; start a new search with --space")
    paths = (meta.get("code") or {}).get("paths") or []  # where the search found the user's code
    space = space_from_dict(doc, where=f"{where} (space_document)", default_name=str(meta.get("name") or "space"),
                            folder=paths[0] if paths else None)
    space = replace(space, source=str(meta.get("space_file") or space.source))
    seed = (meta.get("options") or {}).get("seed")
    return replace(space, seed=seed) if isinstance(seed, int) and not isinstance(seed, bool) else space


def check_trusted(exp_dir: str) -> None:
    """Refuse to restore a local experiment that users other than its owner could have changed.

    Restoring unpickles Ray Tune's files (``tuner.pkl``, the saved states): whoever can write them
    can make ``--resume`` run their code. Like ssh with key files, a directory or such a file that
    is writable by its group or by others is refused; remote storage is trusted as configured.
    """
    if not storage.is_local(exp_dir):
        return
    base = storage.local_path(exp_dir)
    paths = [base]
    for rel in internals.restore_files(exp_dir):  # each file and the folders between it and the experiment
        parts = Path(rel).parts
        paths += [base.joinpath(*parts[:i]) for i in range(1, len(parts) + 1)]
    for path in dict.fromkeys(paths):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o022:
            who = "its group and others" if mode & 0o022 == 0o022 else "its group" if mode & 0o020 else "others"
            raise UserError(f"--resume {exp_dir}: {path} can be written by {who} (mode {stat.filemode(mode)}); "
                            f"resuming runs code stored there, so only a directory only you can write is resumed "
                            f"(if you trust it: chmod -R go-w {exp_dir})")


@contextlib.contextmanager
def _private_files() -> Iterator[None]:
    """During a search, files and folders are created without write permission for group and
    others (umask 022 added), so that ``--resume`` trusts the experiment it made (``check_trusted``)."""
    old = os.umask(0o022)
    os.umask(old | 0o022)
    try:
        yield
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------ pieces
def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod, dist in (("torch", "torch"), ("ray", "ray"), ("optuna", "optuna"), ("layerout_tune", "layerout-tune")):
        try:
            out[mod] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[mod] = "unknown"
    return out


def _optuna_storage(url: str | None) -> Any:
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


def _sampler(name: str, seed: int, num_samples: int, log: Log = _print,
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


def _searcher(space: SearchSpace, name: str, sampler: str, num_samples: int, ot_storage: Any, exp_dir: str,
              log: Log = _print) -> TruthfulOptunaSearch:
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
                                sampler=_sampler(sampler, space.seed, num_samples, log, list(space.families)),
                                study_name=name, storage=ot_storage, epochs=space.epochs, seed=space.seed)


def _scheduler(space: SearchSpace, name: str) -> Any:
    es = space.early_stopping
    if name == "moasha":
        # every objective, with compute_saved_frac replaced by what the trial's policy will save
        return MOASHA(objectives=[(PLANNED.get(n, n), m) for n, m in space.objectives], max_t=space.epochs,
                      grace_period=es.grace_period, reduction_factor=es.reduction_factor)
    if name != "asha":
        return FIFOScheduler()
    objectives = space.objectives
    metric, mode = next(((n, m) for n, m in objectives if n == "val_accuracy"), objectives[0])
    # ASHA, except that the paper's configurations always train the full budget
    return PaperASHA(time_attr="epoch", metric=metric, mode=mode, max_t=space.epochs,
                     grace_period=space.early_stopping.grace_period,
                     reduction_factor=space.early_stopping.reduction_factor)


def _reference_line(space: SearchSpace) -> str:
    """The search's shorter-training reference points and budget dimension, for its first lines."""
    refs = [f"{name} ({e} epochs)" for name, e in reference_points(space)]
    line = "\n  reference points (the unfrozen model, never stopped early): the baseline" + (
        f", {', '.join(refs)}" if refs else "")
    span = budget_range(space)
    if span is not None:
        line += f"\n  budget_frac: trials train {span[0]} to {span[1]} of the {space.epochs} epochs"
    return line


def _confirm_line(space: SearchSpace, options: SearchOptions, num_samples: int) -> str:
    """What the confirmation at the end will add, said before the search starts."""
    seeds, top = options.confirm_seeds, options.confirm_top
    if not seeds:
        return "\n  confirmation on fresh seeds: off (--confirm-seeds N turns it on)"
    refs = reference_points(space)
    runs = seeds * (top + 1 + len(refs))
    epochs = seeds * (top * space.epochs + space.epochs + sum(e for _, e in refs))
    best = "the best front policy" if top == 1 else f"the {top} best front policies"
    return (f"\n  then the confirmation on {seeds} fresh seeds: {best}, the baseline"
            + (f" and {len(refs)} shorter-training point{'s' if len(refs) != 1 else ''}" if refs else "")
            + f": up to {runs} more runs, {epochs} more epochs (the search: up to {num_samples * space.epochs}; "
            "--confirm-seeds 0 skips it)")


def _trainable(options: SearchOptions, code: dict[str, Any] | None = None, address: str | None = None,
               fn: Callable[..., None] = train_trial) -> Any:
    """The trial function ``fn`` (``train_trial``) with its options, the user's objects and resources."""
    code = code or {}
    # where the trials import the user's modules from: the driver's folders, unless the modules
    # are shipped to a cluster (then the shipped copies, as on nodes that lack those folders)
    shipped = bool(address) and with_user_modules(None, code) is not None
    opts = {"threads": max(1, int(options.cpus_per_trial)), "data_dir": options.data_dir,
            "download": options.download, "code_paths": [] if shipped else list(code.get("paths") or [])}
    # by value: pickled here, loaded by the trial after it has set up its import path (train_trial)
    objects = {name: cloudpickle.dumps(userland.resolve(name, role))
               for role, name in (code.get("objects") or {}).items()}
    res = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(fn, opts=opts, objects=objects), res)


def options_again(meta: dict[str, Any], *, address: str | None, progress_interval: float | None,
                  **given: Any) -> SearchOptions:
    """The options a stored search ran with (experiment.json), for running on it again: its
    ``address`` and the console's ``progress_interval`` are the new ones, the other ``given``
    options replace the stored ones unless None. Checked."""
    known = set(SearchOptions.__dataclass_fields__)
    options = SearchOptions(**{k: v for k, v in (meta.get("options") or {}).items() if k in known})
    options = replace(options, address=address, progress_interval=progress_interval,
                      **{k: v for k, v in given.items() if v is not None})
    options.check()
    return options


def register_objects(exp_dir: str, code: dict[str, Any], model: Any, dataset: Any, verb: str, call: str) -> None:
    """A search given its model or data as Python objects needs the same objects again: register
    them under the names experiment.json's ``code`` recorded. The error when one is missing says
    to ``verb`` it from Python with ``call(exp_dir, <role>=...)``."""
    for role, obj in (("model", model), ("dataset", dataset)):
        name = (code.get("objects") or {}).get(role)
        if name is None:
            continue
        if obj is None or isinstance(obj, str):
            raise UserError(f"{exp_dir}: its {role} {name} was a Python object given to run_search; "
                            f"{verb} it from Python with {call}({exp_dir!r}, {role}=...) and the same object")
        userland.register_object(obj, name)


def _user_callbacks(callbacks: Any) -> list[Any]:
    """``callbacks=``: a list of ``ray.tune.Callback`` objects (one UserError otherwise)."""
    if callbacks is None:
        return []
    items = list(callbacks) if isinstance(callbacks, (list, tuple)) else None
    if items is None or not all(isinstance(cb, tune.Callback) for cb in items):
        bad = callbacks if items is None else next(cb for cb in items if not isinstance(cb, tune.Callback))
        raise UserError(f"callbacks: must be a list of ray.tune.Callback objects, got {short(bad)}")
    return items


def _space_with(space: Any, model: Any, dataset: Any) -> tuple[SearchSpace, dict[str, str]]:
    """The space with ``model`` / ``dataset`` put in (objects registered: role -> name of those
    sent by value)."""
    if isinstance(space, SearchSpace):
        raise UserError("run_search: model= and dataset= go with a space file, a preset name or a dict, not a "
                        "SearchSpace already validated")
    if isinstance(space, dict):
        data, where, default, folder = dict(space), "<space>", str(space.get("name") or "space"), Path.cwd()
    else:
        data, where, default, folder = read_space(space)
        data = dict(data) if isinstance(data, dict) else data
    objects: dict[str, str] = {}
    for role, obj in (("model", model), ("dataset", dataset)):
        if obj is None:
            continue
        name = obj if isinstance(obj, str) else userland.register_object(obj)
        if userland.registered(name):
            objects[role] = name
        if isinstance(data, dict):
            data[role] = name
    return space_from_dict(data, where=where, default_name=default, folder=folder), objects


def _code_lines(space: SearchSpace, code: dict[str, Any], address: str | None) -> str:
    """What the search tells about the user's code: automatic units, notes, what is shipped."""
    lines = []
    if space.units_from == "automatic" and space.unit_prefixes:
        lines.append("units (automatic): " + ", ".join("+".join(p) for _, p in space.unit_prefixes))
    lines += [f"note: {n}" for n in space.notes]
    if code.get("objects"):
        lines.append("sent to the trials by value: " + ", ".join(code["objects"].values()))
    if address and code.get("ship"):
        shipped = with_user_modules(None, code) is not None
        lines.append(("shipped to the workers: " if shipped else f"not shipped ({SHIP_CODE_ENV}=0): ")
                     + ", ".join(code["ship"]))
    return "".join(f"\n  {line}" for line in lines)


def _check_dataset(space: SearchSpace, data_dir: str | None, download: bool) -> None:
    """Make sure a real dataset is there (downloading it once, in the driver, not in every
    trial at the same time); a missing dataset offline is a UserError naming the files."""
    if space.dataset not in FILE_DATASETS:
        return
    with slow_notice(f"loading dataset {space.dataset} once in the driver" + (", downloading it if needed" if download
                                                                               else "")):
        load_data(space.dataset, device="cpu", val_frac=space.train["val_frac"], seed=space.seed,
                  data_dir=data_dir, download=download)


def _is_loopback(address: str | None) -> bool:
    if not address:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1")


def _init_ray(address: str | None, connect_timeout: float = 30.0, code: dict[str, Any] | None = None) -> None:
    """Start the embedded local Ray (on loopback), or join the cluster at ``address`` within
    ``connect_timeout`` seconds (shipping the trials' packages and the user's modules in ``code``)."""
    if _is_loopback(address):
        # Ray otherwise advertises the machine's network address even for a local instance, and a
        # driver may then fail to reach its own head; loopback keeps a laptop run self-contained.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # legacy output: silent at verbose=0 (TrialProgress prints)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address:
        _probe(address, connect_timeout)
        _join(address, connect_timeout, with_user_modules(_runtime_env(), code))
    else:
        # address="local" always starts a new instance, even where a killed cluster left its
        # address file behind. Its token-authentication notice is for clusters people join; this
        # one is private to the run.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto`` (Ray finds it)."""
    if address == "auto":
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _probe(address: str, timeout: float) -> None:
    """One TCP connection to the cluster's port, so that a wrong address fails at once."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except socket.timeout:
        raise UserError(f"--address {address}: nothing answered within {timeout:g} s (--connect-timeout); "
                        "check the address and that the head node is reachable") from None
    except OSError as exc:
        reason = (exc.strerror or exc.__class__.__name__).lower()
        raise UserError(f"--address {address}: cannot connect ({reason}); is a Ray head node running there "
                        "(ray start --head)?") from None


AUTH_HINT = ("a cluster with token authentication needs RAY_AUTH_MODE=token and its token here too "
             "(RAY_AUTH_TOKEN, or ~/.ray/auth_token)")


def _join(address: str, timeout: float, runtime_env: dict[str, Any] | None) -> None:
    """``ray.init(address)`` bounded by ``timeout``. Something listens there (``_probe``), but
    ray.init has no timeout of its own, retries for minutes when the listener is not a Ray head
    or refuses this driver's token, and cannot be interrupted while it waits: a watchdog ends the
    process with one error line past the deadline, or as soon as Ray's client reports a refused
    token. Ray's client prints its retries on the process's stderr (below Python), so stderr goes
    to a scratch file meanwhile; it is replayed when the connection succeeds."""
    sys.stdout.flush()
    sys.stderr.flush()
    captured = tempfile.TemporaryFile()
    real_stderr = os.dup(2)
    os.dup2(captured.fileno(), 2)
    done = threading.Event()

    def said() -> str:
        return os.pread(captured.fileno(), 1 << 20, 0).decode("utf-8", "replace")

    def fail(reason: str) -> None:
        os.write(real_stderr, f"error: --address {address}: {reason}\n".encode())
        os._exit(2)

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done.wait(0.25):
            if "InvalidAuthToken" in said():
                fail(f"the cluster refused this driver's authentication token; {AUTH_HINT}")
            if time.monotonic() > deadline:
                fail(f"something listens there but no Ray cluster answered within {timeout:g} s "
                     f"(--connect-timeout); check that it is a Ray head node's address and port; {AUTH_HINT}")

    watchdog = threading.Thread(target=watch, name="connect-watchdog", daemon=True)
    watchdog.start()
    error: str | None = None
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        error = cut(" ".join(str(exc).split()), 300)
    finally:
        done.set()
        watchdog.join()
        sys.stderr.flush()
        os.dup2(real_stderr, 2)
        os.close(real_stderr)
    text = said()
    captured.close()
    if error is not None:
        if "InvalidAuthToken" in text or "AuthenticationError" in error:
            raise UserError(f"--address {address}: the cluster refused this driver's authentication token; "
                            f"{AUTH_HINT}")
        raise UserError(f"--address {address}: cannot connect to a Ray cluster ({error})")
    if text.strip():
        sys.stderr.write(text)


# The packages the cluster side imports (the trial function, tuning.trainable; the searcher and the
# scheduler, which a ray:// driver runs there: MOASHA's non-dominated sorting is analysis.pareto's):
# the code a cluster's workers need; nothing else of the checkout (data, results, tests) is shipped.
TRIAL_PACKAGES = ("analysis", "layerout", "search_spaces", "tuning")


def _runtime_env() -> dict[str, Any] | None:
    """Ship the packages trials import to the cluster's workers (Ray ``py_modules``) unless they
    already have them (LAYEROUT_TUNE_SHIP_CODE=0 for clusters where every node has the package
    installed)."""
    if os.environ.get("LAYEROUT_TUNE_SHIP_CODE", "1") == "0":
        return None
    return {"py_modules": [str(ROOT / pkg) for pkg in TRIAL_PACKAGES]}


def _check_resources(cpus: float, gpus: float, local: bool) -> None:
    res = ray.cluster_resources()
    have_gpu, have_cpu = float(res.get("GPU", 0)), float(res.get("CPU", 0))
    msgs = []
    if gpus > 0 and have_gpu < gpus:
        msgs.append(f"--gpus-per-trial {gpus:g}: the Ray cluster has {have_gpu:g} GPUs")
    if cpus > have_cpu:
        msgs.append(f"--cpus-per-trial {cpus:g}: the Ray cluster has {have_cpu:g} CPUs")
    if msgs and local:
        raise UserError("; ".join(msgs) + " (no trial could ever start)")
    for m in msgs:
        print(f"warning: {m}; trials wait until the cluster grows", file=sys.stderr)


class _TuneMessages(logging.Filter):
    """Ray Tune's interrupt messages, in this tool's terms (it tells people to call Tuner.restore);
    none when the tool stopped the search itself (``watch``: a full disk)."""

    def __init__(self, watch: NoSpaceWatch | None = None) -> None:
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith("Stop signal received"):
            if self.watch is None or self.watch.file is None:
                print("\ninterrupted: stopping the running trials and saving the search state "
                      "(interrupt again to quit at once)", file=sys.stderr, flush=True)
            return False
        return "has been interrupted" not in msg and "Tuner.restore(" not in msg


def _fit(tuner: tune.Tuner, exp_dir: str, own_loggers: bool = True, no_space_hint: str = "") -> tune.ResultGrid:
    """``tuner.fit()``, with SIGTERM handled like Ctrl-C: Ray Tune stops the running trials and
    saves the search state, the tables and analysis of what finished are written, and
    ``--resume`` continues from there. Ray's warnings and errors go to the experiment's ray.log
    (local storage), the console gets one line per event and the status (``tuning.progress``).
    ``own_loggers``: the Tuner's callbacks hold the search's logger set (``tuning.loggers``), so
    Ray Tune adds none of its own (an experiment from before ``loggers`` existed gets Ray's).
    A write that fails for lack of space stops the search the same way, with its last saved state
    whole (``tuning.diskfull``), and raises ``NoSpace`` naming the file (with ``no_space_hint``)."""
    watch = NoSpaceWatch()
    callbacks = internals.tuner_callbacks(tuner)
    callbacks[:] = [cb for cb in callbacks if not isinstance(cb, NoSpaceWatch)] + [watch]
    messages = _TuneMessages(watch)
    tune_logger = logging.getLogger("ray.tune.tune")
    tune_logger.addFilter(messages)
    log = storage.local_path(f"{exp_dir}/{RAY_LOG}") if storage.is_local(exp_dir) else None
    quiet, consoles = QuietAboutNoSpace(), _ray_consoles()
    for h in consoles:
        h.addFilter(quiet)
    try:
        with ray_log_to(log), loggers.ray_defaults_off(own_loggers), internals.atomic_state_copies(watch.hit):
            results = _fit_signals(tuner)
    except OSError as exc:  # a write Ray makes itself, outside its trials and saved states
        if is_no_space(exc) and watch.file is None:
            raise NoSpace(no_space_file(exc, exp_dir), no_space_hint) from None
        raise
    finally:
        tune_logger.removeFilter(messages)
        for h in consoles:
            h.removeFilter(quiet)
        for cb in callbacks:  # interrupted: the bar ends before the summary
            if isinstance(cb, TrialProgress):
                cb.close()
    if watch.file is not None:
        raise NoSpace(watch.file, no_space_hint)
    return results


def _ray_consoles() -> list[logging.Handler]:
    """Ray's console handlers (on its ``ray`` logger)."""
    return [h for h in logging.getLogger("ray").handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def _fit_signals(tuner: tune.Tuner) -> tune.ResultGrid:
    """``tuner.fit()`` with SIGTERM sent on as SIGINT; the SIGINT handler as it was afterwards
    (Ray Tune leaves its own installed when fit() ends, and a Ctrl-C during the analysis would
    then only set its stale stop flag)."""
    try:
        old = signal.signal(signal.SIGTERM, lambda sig, frame: os.kill(os.getpid(), signal.SIGINT))
        old_int = signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread: leave signals alone
        old = old_int = None
    try:
        return tuner.fit()
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
            signal.signal(signal.SIGINT, old_int)


# ------------------------------------------------------------------------------ the end
def _records(exp_dir: str, results: tune.ResultGrid) -> tuple[list[TrialRecord], int]:
    """One record per trial of the ResultGrid, with its stored result.json lines; trials that the
    saved Ray state still has unfinished are RUNNING (``--resume`` continues them)."""
    unfinished = {t.trial_id for t in internals.saved_trial_states(exp_dir)
                  if t.status in ("RUNNING", "PENDING", "PAUSED")}
    records, skipped = [], 0
    for r in results:
        path = str(r.path)
        rows, bad = parse_result_lines(storage.read_text(f"{path}/{RESULT_JSON}"))
        skipped += bad
        trial_id = Path(path).name.removeprefix("trial_")
        if r.error is not None:  # failed for good (Ray's saved state may still say RUNNING when its worker died)
            status, error = "ERROR", storage.read_text(f"{path}/error.txt") or str(r.error)
        elif trial_id in unfinished:
            status, error = "RUNNING", None
        else:
            status, error = "TERMINATED", None
        records.append(TrialRecord(trial_id=trial_id, status=status, config=dict(r.config or {}), rows=rows,
                                   error=error))
    return records, skipped


def _stopped_on_user_error(records: list[TrialRecord], searcher: Any) -> list[TrialRecord]:
    """A search stopped because its first trials failed with the same user error (``tuning.usercode``):
    the searcher hears how the trials stopped with it ended (Ray tells it nothing of those: Optuna
    would show them running), and those that never reported leave the tables (they trained nothing)."""
    if isinstance(searcher, TruthfulOptunaSearch):
        for r in records:
            searcher.on_trial_complete(r.trial_id, result=r.rows[-1] if r.rows else None)
    return [r for r in records if r.rows or r.error]


def _finish(exp_dir: str, meta: dict[str, Any], results: tune.ResultGrid, wall_s: float,
            tuner: tune.Tuner) -> SearchResult:
    """Write trials.csv, epochs.csv, rungs.csv (MOASHA's decisions) and experiment.json."""
    try:
        return _write_end(exp_dir, meta, results, wall_s, tuner)
    except WriteError as exc:
        if is_no_space(exc):
            raise NoSpace(str(exc.path), f"the search's runs are saved: free some space, then python tune_main.py "
                                         f"--resume {exp_dir} writes its tables") from None
        raise


def _write_end(exp_dir: str, meta: dict[str, Any], results: tune.ResultGrid, wall_s: float,
               tuner: tune.Tuner) -> SearchResult:
    records, skipped = _records(exp_dir, results)
    searcher, scheduler = internals.tuner_searcher(tuner), internals.tuner_scheduler(tuner)
    user_error = getattr(internals.tuner_stopper(tuner), "reason", None)
    if user_error:
        records = _stopped_on_user_error(records, searcher)
    trials, epochs = build_tables(records, int(meta.get("epochs") or 0))
    trials_text, epochs_text = tables_csv(trials, epochs)
    storage.write_text(f"{exp_dir}/{TRIALS_CSV}", trials_text)
    storage.write_text(f"{exp_dir}/{EPOCHS_CSV}", epochs_text)
    if isinstance(scheduler, MOASHA):
        storage.write_text(f"{exp_dir}/{RUNGS_CSV}", rungs_csv(scheduler.decision_rows(),
                                                               [m for m, _ in scheduler.objectives]))
    exhausted = bool(getattr(searcher, "exhausted", False))
    repeats = int(getattr(searcher, "repeats", 0))
    n = len(trials)
    planned = int((meta.get("options") or {}).get("num_samples") or n)
    unfinished = int((~trials["status"].isin(["TERMINATED", "ERROR"])).sum()) if n else 0
    errors = int((trials["status"] == "ERROR").sum()) if n else 0
    result = SearchResult(exp_dir=exp_dir, meta=meta, trials=trials, epochs=epochs, wall_s=wall_s, planned=planned,
                          errors=errors, unfinished=unfinished, skipped_lines=skipped, exhausted=exhausted,
                          repeats=repeats, user_error=user_error)
    meta["repeats"] = repeats
    if user_error:
        meta["stopped_on_user_error"] = user_error
    if exhausted:
        meta["exhausted"] = True
    meta["finished"] = None if result.interrupted else _now()
    if result.interrupted:
        meta["interrupted"] = _now()
    else:
        meta.pop("interrupted", None)
    meta["wall_clock_s"] = round(float(meta.get("wall_clock_s") or 0) + wall_s, 1)
    meta["trials"] = n
    storage.write_text(f"{exp_dir}/{EXPERIMENT_JSON}", meta_json(meta))
    return result
