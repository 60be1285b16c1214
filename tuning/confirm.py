"""Re-train trials of a finished search on fresh seeds, on Ray: the runner behind
``python -m analysis.confirm`` (and ``tune_main.py --confirm-seeds``).

``run_confirm_jobs(exp_dir, jobs)`` runs one Ray Tune trial per job (a trial config with its
training seed replaced: ``analysis.confirm.confirm_jobs``) with the search's resources (its
``--cpus-per-trial``, ``--gpus-per-trial``, ``--max-concurrent`` and ``--address``, unless given
again), as a Ray Tune experiment in the experiment directory's ``.confirm-running/`` folder, which
replaces ``confirm/`` once every run has ended, and returns one row per job: its final metrics, or
its error. The trials run ``train_trial``, so they train exactly as the search's did; they are
never stopped early. Interrupted (Ctrl-C, SIGTERM), it stops the runs and raises
``KeyboardInterrupt``: no row is returned, and ``confirm/`` is left as it was.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune
from ray.tune import Callback

from layerout.checks import cut
from layerout.formatting import pct
from layerout.metrics import CONFIRM_RUN_METRICS
from layerout.experiment import CONFIRM_DIR, CONFIRM_RUNNING, RESULT_JSON, USER_ERROR, epochs_of, parse_result_lines
from layerout.progress import JobProgress, StatusDisplay
from search_spaces.trials import config_epochs
from tuning import internals, loggers, storage
from tuning.cluster import check_resources, fit, init_ray, trainable
from tuning.search import options_again, read_experiment, register_objects
from tuning.trust import private_files
from tuning.trainable import train_trial, trial_dirname



def confirm_trial(config: dict[str, Any], opts: dict[str, Any] | None = None,
                  objects: dict[str, Any] | None = None) -> None:
    """One confirmation run: ``train_trial`` of the job's trial config (``config["job"]``)."""
    train_trial(config["job"], opts, objects)


class ConfirmProgress(Callback):
    """One console line per confirmation run that ends, and the confirmation's status every
    ``interval`` seconds (a bar on a terminal, a status line in a log; ``layerout.progress``)."""

    def __init__(self, jobs: list[dict[str, Any]], interval: float | None = None) -> None:
        self.total, self.done = len(jobs), 0
        self.budgets = {_key(j): config_epochs(j, 0) for j in jobs}
        self.interval = interval
        self._shown: StatusDisplay | None = None

    def __getstate__(self) -> dict:  # Ray Tune pickles its callbacks: the console (a lock) stays here
        return {k: v for k, v in self.__dict__.items() if k != "_shown"} | {"_shown": None}

    @property
    def display(self) -> StatusDisplay:
        """The confirmation's counts and the console they are shown on (made on first use)."""
        if self._shown is None:
            job = JobProgress(self.total, max(self.budgets.values(), default=0), clock=time.time, noun="runs")
            for key, budget in self.budgets.items():
                job.queued(key, budget)
            self._shown = StatusDisplay(job, self.interval, label="confirm")
        return self._shown

    def _line(self, trial: Any, failed: bool) -> None:
        self.done += 1
        job = (trial.config or {}).get("job") or {}
        res = trial.last_result or {}
        self.display.job.ended(_key(job), int(res.get("epoch") or 0), failed=failed or bool(res.get(USER_ERROR)))
        head = (f"[confirm {self.done:>{len(str(self.total))}}/{self.total}] trial {job.get('trial_id')} "
                f"{str(job.get('name', '')):<22} seed {job.get('seed')}")
        if failed or res.get(USER_ERROR):
            self.display.write(f"{head}  FAILED{': ' + str(res[USER_ERROR]) if res.get(USER_ERROR) else ''}")
            return
        self.display.write(f"{head}  val acc {pct(res.get('val_accuracy'), 2)}  compute saved "
                           f"{pct(res.get('compute_saved_frac'))}  time saved {pct(res.get('time_saved_frac'))}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.display.job.started(_key((trial.config or {}).get("job") or {}))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.display.job.trained(_key((trial.config or {}).get("job") or {}), int(result.get("epoch") or 0))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, failed=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.display.tick()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.display.close()


def _key(job: dict[str, Any]) -> str:
    return f"{job.get('trial_id')}/{job.get('seed')}"


def run_confirm_jobs(exp_dir: str | Path, jobs: list[dict[str, Any]], *, address: str | None = None,
                     cpus_per_trial: float | None = None, gpus_per_trial: float | None = None,
                     max_concurrent: int | None = None, connect_timeout: float | None = None,
                     model: Any = None, dataset: Any = None, progress_interval: float | None = None,
                     log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every job (``{"trial_id", "seed", "name", "train": {...}, "schedule": {...}}``) on
    Ray with the search's resources; one row per job: ``trial_id``, ``seed``, ``confirm_trial``
    (the Ray trial id), ``epochs`` (trained), the final ``CONFIRM_RUN_METRICS``, and ``error`` (empty when
    it trained its budget). ``progress_interval``: seconds between status updates (None: a few
    on a terminal, a minute in a log; 0: none). A search given its model or data as Python objects needs them again
    (``model=``, ``dataset=``)."""
    exp_dir = storage.storage_root(str(exp_dir))
    meta = read_experiment(exp_dir)
    # the search's cluster unless another address is given ("local": a fresh local Ray)
    address = (meta.get("options") or {}).get("address") if address is None else (None if address == "local"
                                                                                    else address)
    options = options_again(meta, address=address, progress_interval=progress_interval,  # the console's own
                            cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                            max_concurrent=max_concurrent, connect_timeout=connect_timeout)
    loggers.check_loggers(options.loggers, f"{exp_dir}/experiment.json: options.loggers")
    code = meta.get("code") or {}
    register_objects(exp_dir, code, model, dataset, "confirm", "analysis.confirm.confirm")
    if not jobs:
        return []
    local = storage.is_local(exp_dir)
    folder = storage.local_path(f"{exp_dir}/{CONFIRM_RUNNING}") if local else None
    if folder is not None and folder.exists():
        shutil.rmtree(folder)  # an interrupted confirmation's runs: this one trains them all again
    with private_files():
        init_ray(options.address, options.connect_timeout, code)
        try:
            check_resources(options.cpus_per_trial, options.gpus_per_trial, local=not options.address)
            tuner = tune.Tuner(
                trainable(options, code, options.address, fn=confirm_trial),
                param_space={"job": tune.grid_search(list(jobs))},
                tune_config=tune.TuneConfig(max_concurrent_trials=options.max_concurrent or None, reuse_actors=True,
                                            trial_dirname_creator=trial_dirname),
                run_config=tune.RunConfig(
                    name=CONFIRM_RUNNING if local else CONFIRM_DIR, storage_path=exp_dir, verbose=0,
                    failure_config=tune.FailureConfig(max_failures=options.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    # the search's loggers (result.json always: the rows are read from it)
                    callbacks=[ConfirmProgress(jobs, options.progress_interval)] + (
                        [] if options.loggers is None else
                        loggers.logger_callbacks(options.loggers, f"{meta.get('name', 'search')}-confirm"))),
            )
            t0 = time.time()
            results = fit(tuner, exp_dir, options.loggers is not None,
                          "the confirmation recorded nothing: free some space, then run it again")
            if _interrupted(results, f"{exp_dir}/{CONFIRM_RUNNING if local else CONFIRM_DIR}", len(jobs)):
                raise KeyboardInterrupt("the confirmation was interrupted")
            log(f"confirmation: {len(jobs)} runs in {time.time() - t0:.0f} s")
            rows = [_row(r) for r in results]
            if folder is not None:  # every run ended: they replace the previous confirmation's
                for checkpoint in folder.glob("trial_*/checkpoint_*"):  # (a model each: only take space now)
                    shutil.rmtree(checkpoint, ignore_errors=True)
                done = folder.parent / CONFIRM_DIR
                if done.exists():
                    shutil.rmtree(done)
                folder.rename(done)
            return rows
        finally:
            ray.shutdown()


def _interrupted(results: Any, folder: str, jobs: int) -> bool:
    """True when ``fit()`` returned because it was interrupted: a run neither ended nor failed
    (Ray's saved state has it unfinished; after an interrupt its in-memory trials all read
    TERMINATED), or runs never started."""
    unfinished = {t.trial_id for t in internals.saved_trial_states(folder)
                  if t.status in ("RUNNING", "PENDING", "PAUSED")}
    ran = [r for r in results]
    return len(ran) < jobs or any(r.error is None and Path(str(r.path)).name.removeprefix("trial_") in unfinished
                                  for r in ran)


def _row(result: Any) -> dict[str, Any]:
    """One job's row from its Ray result: the last reported epoch's metrics, or its error."""
    job = (result.config or {}).get("job") or {}
    path = str(result.path)
    lines, _ = parse_result_lines(storage.read_text(f"{path}/{RESULT_JSON}"))
    rows = epochs_of([r for r in lines if not r.get(USER_ERROR)])
    last = rows[-1] if rows else {}
    user_error = next((str(r[USER_ERROR]) for r in lines if r.get(USER_ERROR)), None)
    budget = config_epochs(job, 0)
    error = user_error or (cut(" ".join(str(result.error).split()), 300) if result.error is not None else None)
    if error is None and int(last.get("epoch") or 0) < budget:
        error = f"ended after {int(last.get('epoch') or 0)} of {budget} epochs"
    out = {"trial_id": str(job.get("trial_id")), "seed": job.get("seed"),
           "confirm_trial": Path(path).name.removeprefix("trial_"), "epochs": last.get("epoch"),
           **{m: (last.get(m) if error is None else None) for m in CONFIRM_RUN_METRICS}, "error": error or ""}
    if error:
        print(f"warning: confirmation run of trial {out['trial_id']} with seed {out['seed']} failed: {error}",
              file=sys.stderr, flush=True)
    return out
