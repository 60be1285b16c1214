"""Re-train trials of a finished search on fresh seeds, on Ray: the runner behind
``python -m analysis.confirm`` (and ``tune_main.py --confirm-seeds``).

``run_confirm_jobs(exp_dir, jobs)`` runs one Ray Tune trial per job (a trial config with its
training seed replaced: ``analysis.confirm.confirm_jobs``) with the search's resources (its
``--cpus-per-trial``, ``--gpus-per-trial``, ``--max-concurrent`` and ``--address``, unless given
again), as a Ray Tune experiment in the experiment directory's ``confirm/`` folder (replaced by
each confirmation), and returns one row per job: its final metrics, or its error. The trials run
``train_trial``, so they train exactly as the search's did; they are never stopped early.
"""
from __future__ import annotations

import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune
from ray.tune import Callback

from layerout import userland
from layerout.checks import cut
from layerout.errors import UserError
from layerout.experiment import CONFIRM_DIR, RESULT_JSON, USER_ERROR, epochs_of, parse_result_lines
from tuning import storage
from tuning.search import (SearchOptions, _check_resources, _fit, _init_ray, _private_files, _trainable,
                           read_experiment)
from tuning.trainable import train_trial, trial_dirname

RUN_METRICS = ("val_accuracy", "test_accuracy", "compute_saved_frac", "time_saved_frac", "train_time_s")


def confirm_trial(config: dict[str, Any], opts: dict[str, Any] | None = None,
                  objects: dict[str, Any] | None = None) -> None:
    """One confirmation run: ``train_trial`` of the job's trial config (``config["job"]``)."""
    train_trial(config["job"], opts, objects)


def _pct(x: Any, digits: int = 1) -> str:
    try:
        return f"{100 * float(x):5.{digits}f}%"
    except (TypeError, ValueError):
        return "   -  "


class ConfirmProgress(Callback):
    """One console line per confirmation run that ends."""

    def __init__(self, total: int) -> None:
        self.total, self.done = int(total), 0

    def _line(self, trial: Any, failed: bool) -> None:
        self.done += 1
        job = (trial.config or {}).get("job") or {}
        res = trial.last_result or {}
        head = (f"[confirm {self.done:>{len(str(self.total))}}/{self.total}] trial {job.get('trial_id')} "
                f"{str(job.get('name', '')):<22} seed {job.get('seed')}")
        if failed or res.get(USER_ERROR):
            print(f"{head}  FAILED{': ' + str(res[USER_ERROR]) if res.get(USER_ERROR) else ''}", flush=True)
            return
        print(f"{head}  val acc {_pct(res.get('val_accuracy'), 2)}  compute saved {_pct(res.get('compute_saved_frac'))}"
              f"  time saved {_pct(res.get('time_saved_frac'))}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, failed=True)


def run_confirm_jobs(exp_dir: str | Path, jobs: list[dict[str, Any]], *, address: str | None = None,
                     cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
                     max_concurrent: int | None = None, connect_timeout: float | None = None,
                     model: Any = None, dataset: Any = None,
                     log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every job (``{"trial_id", "seed", "name", "train": {...}, "schedule": {...}}``) on
    Ray with the search's resources; one row per job: ``trial_id``, ``seed``, ``confirm_trial``
    (the Ray trial id), ``epochs`` (trained), the final ``RUN_METRICS``, and ``error`` (empty when
    it trained its budget). A search given its model or data as Python objects needs them again
    (``model=``, ``dataset=``)."""
    exp_dir = storage.storage_root(str(exp_dir))
    meta = read_experiment(exp_dir)
    saved = meta.get("options") or {}
    known = set(SearchOptions.__dataclass_fields__)
    options = SearchOptions(**{k: v for k, v in saved.items() if k in known})
    # the search's cluster unless another address is given ("local": a fresh local Ray)
    address = saved.get("address") if address is None else (None if address == "local" else address)
    options = replace(options, address=address,
                      cpus_per_trial=options.cpus_per_trial if cpus_per_trial is None else cpus_per_trial,
                      gpus_per_trial=options.gpus_per_trial if gpus_per_trial is None else gpus_per_trial,
                      max_concurrent=options.max_concurrent if max_concurrent is None else max_concurrent,
                      connect_timeout=options.connect_timeout if connect_timeout is None else connect_timeout)
    options.check()
    code = meta.get("code") or {}
    for role, obj in (("model", model), ("dataset", dataset)):
        name = (code.get("objects") or {}).get(role)
        if name is None:
            continue
        if obj is None or isinstance(obj, str):
            raise UserError(f"{exp_dir}: its {role} {name} was a Python object given to run_search; confirm it from "
                            f"Python with analysis.confirm.confirm({exp_dir!r}, {role}=...) and the same object")
        userland.register_object(obj, name)
    if not jobs:
        return []
    folder = storage.local_path(f"{exp_dir}/{CONFIRM_DIR}") if storage.is_local(exp_dir) else None
    if folder is not None and folder.exists():
        shutil.rmtree(folder)  # a new confirmation replaces the previous one (and confirm.csv)
    with _private_files():
        _init_ray(options.address, options.connect_timeout, code)
        try:
            _check_resources(options.cpus_per_trial, options.gpus_per_trial, local=not options.address)
            tuner = tune.Tuner(
                _trainable(options, code, options.address, fn=confirm_trial),
                param_space={"job": tune.grid_search(list(jobs))},
                tune_config=tune.TuneConfig(max_concurrent_trials=options.max_concurrent or None, reuse_actors=True,
                                            trial_dirname_creator=trial_dirname),
                run_config=tune.RunConfig(
                    name=CONFIRM_DIR, storage_path=exp_dir, verbose=0,
                    failure_config=tune.FailureConfig(max_failures=options.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    callbacks=[ConfirmProgress(len(jobs))]),
            )
            t0 = time.time()
            results = _fit(tuner, exp_dir)
            log(f"confirmation: {len(jobs)} runs in {time.time() - t0:.0f} s")
            return [_row(r) for r in results]
        finally:
            ray.shutdown()


def _row(result: Any) -> dict[str, Any]:
    """One job's row from its Ray result: the last reported epoch's metrics, or its error."""
    job = (result.config or {}).get("job") or {}
    path = str(result.path)
    lines, _ = parse_result_lines(storage.read_text(f"{path}/{RESULT_JSON}"))
    rows = epochs_of([r for r in lines if not r.get(USER_ERROR)])
    last = rows[-1] if rows else {}
    user_error = next((str(r[USER_ERROR]) for r in lines if r.get(USER_ERROR)), None)
    budget = int((job.get("train") or {}).get("epochs") or 0)
    error = user_error or (cut(" ".join(str(result.error).split()), 300) if result.error is not None else None)
    if error is None and int(last.get("epoch") or 0) < budget:
        error = f"ended after {int(last.get('epoch') or 0)} of {budget} epochs"
    out = {"trial_id": str(job.get("trial_id")), "seed": job.get("seed"),
           "confirm_trial": Path(path).name.removeprefix("trial_"), "epochs": last.get("epoch"),
           **{m: (last.get(m) if error is None else None) for m in RUN_METRICS}, "error": error or ""}
    if error:
        print(f"warning: confirmation run of trial {out['trial_id']} with seed {out['seed']} failed: {error}",
              file=sys.stderr, flush=True)
    return out
