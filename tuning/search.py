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

import csv
import datetime as _dt
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import ray
from ray import tune

from layerout import userland
from layerout.checks import cut, short
from layerout.data import data_dir_note, load_data
from layerout.datasets import reads_files
from layerout.errors import UserError
from layerout.experiment import (EXPERIMENT_JSON, FORMAT, RESULT_JSON, USER_ERROR, VERSION, meta_json, parse_meta,
                                 parse_result_lines)
from layerout.progress import slow_notice
from search_spaces.space import SearchSpace, load_space, read_space, space_from_dict
from search_spaces.trials import budget_range, config_epochs, reference_points
from tuning import cluster, internals, loggers, schedulers, storage, study, trust
from tuning import finish as end
from tuning.diskfull import NoSpace, is_no_space
from tuning.finish import SearchResult, now
from tuning.options import SearchOptions
from tuning.progress import RAY_LOG, TrialProgress, ray_log_to
from tuning.repair import repair_checkpoint_refs
from tuning.schedulers import SchedulerState
from tuning.searcher import TruthfulOptunaSearch
from tuning.study import Log, print_line
from tuning.trainable import trial_dirname
from tuning.usercode import SHIP_CODE_ENV, UserErrorStop, code_info, failures_to_stop, with_user_modules

__all__ = ["SearchResult", "read_experiment", "resume_search", "run_search"]


# trials x epochs from which a search's first lines say how much training it asks for
HUGE_ASK_EPOCHS = 100_000


def run_search(space: SearchSpace | str | dict, options: SearchOptions | None = None, log: Log = print_line, *,
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
    ot_storage = study.optuna_storage(options.optuna_storage)
    resolved = _resolve(space, options, root, name)
    code = code_info(space.model, space.dataset, space.code_paths, objects)
    meta = {"format": FORMAT, "version": VERSION, "name": name, "space": space.to_dict(),
            "space_document": space.document, "space_file": space.source, "options": asdict(resolved),
            "versions": _versions(), "model": space.model, "dataset": space.dataset, "units": space.units,
            "epochs": space.epochs, "objectives": [list(o) for o in space.objectives], "created": now(),
            "finished": None, "code": code}
    with trust.private_files():
        cluster.init_ray(options.address, options.connect_timeout, code)
        try:
            cluster.check_resources(options.cpus_per_trial, options.gpus_per_trial, local=not options.address)
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
    searcher = study.make_searcher(space, name, options.sampler, num_samples, ot_storage, exp_dir, log)
    sched = schedulers.build_scheduler(space, scheduler)
    progress = TrialProgress(num_samples, space.epochs, scheduler=scheduler, interval=options.progress_interval)
    progress.configure(repeats=lambda: searcher.repeats)
    asked = num_samples * space.epochs
    progress.estimate_once = asked >= HUGE_ASK_EPOCHS  # a line with the time it needs, after its first epoch
    callbacks: list[Any] = [progress]
    if schedulers.keeps_state(sched):
        callbacks.append(SchedulerState(sched))  # its rungs survive --resume
    if options.loggers is not None:  # result.json and the chosen loggers; Ray adds none of its own (fit)
        callbacks += loggers.logger_callbacks(options.loggers, name)
    callbacks += user_callbacks or []
    try:  # writes tuner.pkl
        tuner = tune.Tuner(
            cluster.trainable(options, code, options.address),
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
            raise NoSpace(f"{exp_dir}/{internals.TUNER_PKL}", resume_hint(exp_dir)) from None
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
    results = cluster.fit(tuner, exp_dir, options.loggers is not None, resume_hint(exp_dir))
    return end.finish(exp_dir, meta, results, time.time() - t0, tuner)


def resume_hint(exp_dir: str) -> str:
    return (f"the search stopped with its saved state whole: free some space, then continue it with python "
            f"tune_main.py --resume {exp_dir}")


def read_experiment(exp_dir: str) -> dict[str, Any]:
    """experiment.json of a local or remote experiment directory."""
    text = storage.read_text(f"{exp_dir}/{EXPERIMENT_JSON}")
    if text is None:
        raise UserError(f"{exp_dir}: not an experiment directory (no {EXPERIMENT_JSON} written by tune_main.py)")
    return parse_meta(text, f"{exp_dir}/{EXPERIMENT_JSON}")


def resume_search(exp_dir: str, address: str | None = None, cpus_per_trial: float | None = None,
                  gpus_per_trial: float | None = None, log: Log = print_line,
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
        trust.check_trusted(exp_dir)
        internals.check_restorable(exp_dir)  # a damaged one would make Ray start afresh over it
    else:
        space = _stored_space(meta, exp_dir)
    storage.check_writable(exp_dir, "--resume")
    with trust.private_files():
        cluster.init_ray(address, options.connect_timeout, code)
        try:
            cluster.check_resources(options.cpus_per_trial, options.gpus_per_trial, local=not address)
            if not restore:
                log(f"resuming experiment: {exp_dir}\n  Ray Tune saved no state before the search stopped: "
                    f"starting it afresh with the settings in {EXPERIMENT_JSON}")
                root, name = exp_dir.rsplit("/", 1)
                options = replace(_resolve(space, options, root, name), address=address)
                meta.setdefault("restarted", []).append(now())
                storage.write_text(f"{exp_dir}/{EXPERIMENT_JSON}", meta_json(meta))
                return _run_new(space, options, exp_dir, meta, study.optuna_storage(options.optuna_storage), code, log,
                                callbacks)
            log(f"resuming experiment: {exp_dir}")
            for line in repair_checkpoint_refs(exp_dir):
                log(f"  {line}")
            log_file = storage.local_path(f"{exp_dir}/{RAY_LOG}") if storage.is_local(exp_dir) else None
            try:
                with ray_log_to(log_file):  # its warnings about trials that never reported: to ray.log
                    tuner = tune.Tuner.restore(exp_dir, trainable=cluster.trainable(options, code, address),
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
                    results = cluster.fit(tuner, exp_dir, (meta.get("options") or {}).get("loggers") is not None,
                                   resume_hint(exp_dir))
            except internals.RestoreFailed as exc:
                raise UserError(f"{exp_dir}: Ray Tune could not restore the search from its saved state "
                                f"({cut(str(exc), 160)}); nothing was trained (details in {exp_dir}/{RAY_LOG})") from None
            meta.setdefault("resumed", []).append(now())
            return end.finish(exp_dir, meta, results, time.time() - t0, tuner)
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


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod, dist in (("torch", "torch"), ("ray", "ray"), ("optuna", "optuna"), ("layerout_tune", "layerout-tune")):
        try:
            out[mod] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[mod] = "unknown"
    return out


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
    if not reads_files(space.dataset):
        return
    with slow_notice(f"loading dataset {space.dataset} once in the driver" + (", downloading it if needed" if download
                                                                               else "")):
        load_data(space.dataset, device="cpu", val_frac=space.train["val_frac"], seed=space.seed,
                  data_dir=data_dir, download=download)
