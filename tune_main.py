#!/usr/bin/env python
"""Search layer-freezing policies with Ray Tune + Optuna (multi-objective) + ASHA.

    python tune_main.py                                  # the embedded demo (local Ray, CPU)
    python tune_main.py --preset paper-cifar10-vgg16 --address auto --gpus-per-trial 0.25
    python tune_main.py --space my_space.yaml --storage /shared/results --name vgg-try1
    python tune_main.py --resume results/demo-20261122-153000
    python tune_main.py --list-presets

Each trial trains one network with the LayerOut trainer and reports, every epoch, the metrics of
DESIGN.md ("What a trial reports") with a checkpoint; Optuna searches the freezing schedule
(``search_spaces/``) for the two objectives val_accuracy and compute_saved_frac (both max);
ASHA stops trials whose val_accuracy lags at its rungs. The experiment directory
``<storage>/<name>`` gets Ray Tune's files plus experiment.json, trials.csv and epochs.csv, then
the analysis (Pareto front, plots, report, the knee's policy).

Bad input (a malformed space, an unknown preset, a resume of a directory that is not an
experiment) prints one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from layerout.errors import ArgumentParser, UserError, cli_main

ROOT = Path(__file__).resolve().parent
SAMPLERS = ("tpe", "nsga2", "random")
EXPERIMENT_FORMAT = "layerout-experiment"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python tune_main.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--preset", help="a preset in search_spaces/presets/ (default: demo)")
    what.add_argument("--space", metavar="FILE.yaml", help="a search-space YAML file")
    what.add_argument("--resume", metavar="DIR", help="continue an interrupted experiment directory")
    what.add_argument("--list-presets", action="store_true", help="list the presets, one line each")
    p.add_argument("--num-samples", type=int, help="trials to run (default: the space's num_samples)")
    p.add_argument("--max-concurrent", type=int,
                   help="trials running at once (default: the space's max_concurrent; 0 = as resources allow)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler (default: tpe)")
    p.add_argument("--scheduler", choices=("asha", "none"),
                   help="early stopping (default: the space's early_stopping.scheduler)")
    p.add_argument("--seed", type=int, help="sampler and training seed (default: the space's seed)")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="Optuna storage for optuna-dashboard: sqlite:///study.db (any SQLAlchemy URL) "
                        "or a journal file path (*.log / *.journal)")
    p.add_argument("--address",
                   help="Ray cluster to join: auto, HOST:PORT or ray://HOST:10001 (default: start a local Ray)")
    p.add_argument("--storage", default="./results", help="where experiments live: a shared path or a URI "
                                                             "(s3://..., gs://...) (default: ./results)")
    p.add_argument("--name", help="experiment name (default: <space name>-YYYYmmdd-HHMMSS)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPUs per trial; fractions share a GPU, e.g. 0.25 = 4 trials per GPU (default 0)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="restarts of a trial whose worker died, from its last epoch (default 2)")
    p.add_argument("--data-dir", help="dataset folder (default ~/.cache/layerout-tune/data)")
    p.add_argument("--no-download", action="store_true", help="never download datasets")
    p.add_argument("--no-analysis", action="store_true", help="skip the Pareto analysis at the end")
    return p


# ------------------------------------------------------------------------------ helpers
def _check_args(args: argparse.Namespace) -> None:
    if args.num_samples is not None and args.num_samples < 1:
        raise UserError(f"--num-samples: must be >= 1, got {args.num_samples}")
    if args.max_concurrent is not None and args.max_concurrent < 0:
        raise UserError(f"--max-concurrent: must be >= 0, got {args.max_concurrent}")
    if not args.cpus_per_trial > 0 or not math.isfinite(args.cpus_per_trial):
        raise UserError(f"--cpus-per-trial: must be > 0, got {args.cpus_per_trial:g}")
    if args.gpus_per_trial < 0 or not math.isfinite(args.gpus_per_trial):
        raise UserError(f"--gpus-per-trial: must be >= 0, got {args.gpus_per_trial:g}")
    if args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial):
        raise UserError(f"--gpus-per-trial: above 1 it must be a whole number, got {args.gpus_per_trial:g}")
    if args.max_failures < 0:
        raise UserError(f"--max-failures: must be >= 0, got {args.max_failures}")
    if args.seed is not None and not 0 <= args.seed < 2**31:
        raise UserError(f"--seed: must be within [0, 2147483647], got {args.seed}")
    if args.name is not None and (not args.name or any(c in args.name for c in "/\\") or args.name.startswith(".")):
        raise UserError(f"--name: must be a plain directory name, got {args.name!r}")


def _is_loopback(address: str | None) -> bool:
    if not address:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1")


def _storage_root(storage: str) -> str:
    if "://" in storage:
        return storage.rstrip("/")
    return str(Path(os.path.expanduser(storage)).resolve())


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for mod, dist in (("torch", "torch"), ("ray", "ray"), ("optuna", "optuna"), ("layerout_tune", "layerout-tune")):
        try:
            out[mod] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[mod] = "unknown"
    return out


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _optuna_storage(url: str | None):
    """An Optuna storage object (validated here, before Ray starts)."""
    if not url:
        return None
    import optuna

    try:
        if "://" in url:
            return optuna.storages.RDBStorage(url)
        from optuna.storages.journal import JournalFileBackend

        path = Path(url).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad --optuna-storage
        msg = " ".join(str(exc).split())[:200]
        raise UserError(f"--optuna-storage {url!r}: cannot open ({exc.__class__.__name__}: {msg}); use "
                        "sqlite:///path/study.db or a journal file path") from None


def _sampler(name: str, seed: int, num_samples: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if name == "nsga2":
        pop = min(50, max(8, num_samples // 3))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _check_dataset(space: Any, data_dir: str | None, download: bool) -> None:
    """Make sure a real dataset is there (downloading it once, in the driver, not in every
    trial at the same time); a missing dataset offline is a UserError naming the files."""
    if space.dataset in ("digits", "synthetic"):
        return
    from layerout.data import load_data

    load_data(space.dataset, device="cpu", val_frac=space.train["val_frac"], seed=space.seed,
              data_dir=data_dir, download=download)


def _init_ray(address: str | None, num_cpus: int | None = None) -> Any:
    """Start the embedded local Ray (on loopback), or join the cluster at ``address``."""
    if _is_loopback(address):
        # Bind to and talk over 127.0.0.1 (REFERENCE.md "Ray on the development machines").
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # legacy output: silent at verbose=0 (TrialProgress prints)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import logging

    import ray

    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env=_runtime_env(address))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            msg = " ".join(str(exc).split())[:300]
            raise UserError(f"--address {address}: cannot connect to a Ray cluster ({msg})") from None
    else:
        # address="local" always starts a new instance, even where a killed cluster left its
        # address file behind.
        # Its token-authentication notice is for clusters people join; this one is private to the run.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    return ray


def _runtime_env(address: str) -> dict[str, Any] | None:
    """Ship this project's code to the cluster's workers unless they already have it
    (LAYEROUT_TUNE_SHIP_CODE=0 for clusters where every node has the package installed)."""
    if os.environ.get("LAYEROUT_TUNE_SHIP_CODE", "1") == "0":
        return None
    return {"working_dir": str(ROOT),
            "excludes": [".venv/", ".git/", "results/", "**/__pycache__/", "*.egg-info/", "out/",
                         ".pytest_cache/", ".hypothesis/", "benchmarks/", "docs/", "*.pt", "*.db"]}


def _check_resources(ray: Any, cpus: float, gpus: float, local: bool) -> None:
    res = ray.cluster_resources()
    have_gpu, have_cpu = float(res.get("GPU", 0)), float(res.get("CPU", 0))
    msgs = []
    if gpus > 0 and have_gpu < gpus:
        msgs.append(f"--gpus-per-trial {gpus:g}: the Ray cluster has {have_gpu:g} GPUs")
    if cpus > have_cpu:
        msgs.append(f"--cpus-per-trial {cpus:g}: the Ray cluster has {have_cpu:g} CPUs")
    if msgs and local:
        ray.shutdown()
        raise UserError("; ".join(msgs) + " (no trial could ever start)")
    for m in msgs:
        print(f"warning: {m}; trials wait until the cluster grows", file=sys.stderr)


def _write_json(path: str, doc: dict[str, Any]) -> None:
    from search_spaces.tune_glue import storage_fs, write_text

    fs, p = storage_fs(path)
    write_text(fs, p, json.dumps(doc, indent=2, default=str) + "\n")


def _read_experiment(exp_dir: str) -> dict[str, Any]:
    from search_spaces.tune_glue import read_text, storage_fs

    fs, p = storage_fs(exp_dir)
    text = read_text(fs, p + "/experiment.json")
    if text is None:
        raise UserError(f"{exp_dir}: not an experiment directory (no experiment.json written by tune_main.py)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{exp_dir}/experiment.json: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPERIMENT_FORMAT:
        raise UserError(f"{exp_dir}/experiment.json: field 'format' must be {EXPERIMENT_FORMAT!r}")
    if doc.get("version") != 1:
        raise UserError(f"{exp_dir}/experiment.json: field 'version' is {doc.get('version')!r}; this tool reads 1")
    return doc


class _TuneMessages:
    """Ray Tune's interrupt messages, in this tool's terms (it tells people to call Tuner.restore)."""

    def filter(self, record: Any) -> bool:
        msg = record.getMessage()
        if msg.startswith("Stop signal received"):
            print("\ninterrupted: stopping the running trials and saving the search state "
                  "(interrupt again to quit at once)", file=sys.stderr, flush=True)
            return False
        return "has been interrupted" not in msg and "Tuner.restore(" not in msg


def _fit(tuner: Any) -> Any:
    """``tuner.fit()``, with SIGTERM handled like Ctrl-C: Ray Tune stops the running trials and
    saves the search state, the tables and analysis of what finished are written, and
    ``--resume`` continues from there."""
    import logging
    import signal

    logging.getLogger("ray.tune.tune").addFilter(_TuneMessages())
    try:
        old = signal.signal(signal.SIGTERM, lambda sig, frame: os.kill(os.getpid(), signal.SIGINT))
    except ValueError:  # not the main thread: leave signals alone
        old = None
    try:
        return tuner.fit()
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _progress(num_samples: int, epochs: int) -> Any:
    """Console output: one line per finished trial (Ray's status tables are off, verbose=0)."""
    from search_spaces.tune_ray import TrialProgress

    return TrialProgress(num_samples, epochs)


def _trainable(tune: Any, opts: dict[str, Any]) -> Any:
    from search_spaces.tune_glue import train_trial

    res = {"cpu": opts["cpus_per_trial"], "gpu": opts["gpus_per_trial"]}
    return tune.with_resources(tune.with_parameters(train_trial, opts=opts), res)


# ------------------------------------------------------------------------------ start / resume
def _start(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from search_spaces.space import load_space, paper_enqueue

    space = load_space(args.space or args.preset or "demo")
    if args.seed is not None:
        space = replace(space, seed=args.seed)
    num_samples = args.num_samples or space.num_samples
    max_conc = space.max_concurrent if args.max_concurrent is None else args.max_concurrent
    scheduler = args.scheduler or space.early_stopping.scheduler
    storage = _storage_root(args.storage)
    name = args.name or f"{space.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    exp_dir = f"{storage}/{name}"

    from search_spaces.tune_glue import storage_fs

    fs, p = storage_fs(exp_dir)
    import pyarrow.fs as pafs

    if fs.get_file_info(p).type != pafs.FileType.NotFound:
        raise UserError(f"{exp_dir}: already exists; continue it with --resume {exp_dir}, or choose another --name")
    ot_storage = _optuna_storage(args.optuna_storage)
    data_dir = str(Path(os.path.expanduser(args.data_dir)).resolve()) if args.data_dir else None
    if not args.address:
        _check_dataset(space, data_dir, not args.no_download)

    opts = {"cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
            "threads": max(1, int(args.cpus_per_trial)), "data_dir": data_dir, "download": not args.no_download}
    options = {"preset": args.preset if not args.space else None, "space": args.space, "num_samples": num_samples,
               "max_concurrent": max_conc, "sampler": args.sampler, "scheduler": scheduler, "seed": space.seed,
               "optuna_storage": args.optuna_storage, "address": args.address, "storage": storage, "name": name,
               "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
               "max_failures": args.max_failures, "data_dir": data_dir, "download": not args.no_download}
    meta = {"format": EXPERIMENT_FORMAT, "version": 1, "name": name, "space": space.to_dict(),
            "space_file": space.source, "options": options, "versions": _versions(), "model": space.model,
            "dataset": space.dataset, "units": space.units, "epochs": space.epochs,
            "objectives": [list(o) for o in space.objectives], "created": _now(), "finished": None}

    ray = _init_ray(args.address)
    try:
        _check_resources(ray, args.cpus_per_trial, args.gpus_per_trial, local=not args.address)
        _write_json(f"{exp_dir}/experiment.json", meta)
        from ray import tune
        from ray.tune.schedulers import FIFOScheduler
        from ray.tune.search.optuna import OptunaSearch

        from search_spaces.space import define_by_run
        from search_spaces.tune_glue import trial_dirname
        from search_spaces.tune_ray import PaperASHA

        objectives = space.objectives
        searcher = OptunaSearch(space=define_by_run(space, space.num_units),
                                metric=[n for n, _ in objectives], mode=[m for _, m in objectives],
                                sampler=_sampler(args.sampler, space.seed, num_samples),
                                study_name=name, storage=ot_storage)
        study = getattr(searcher, "_ot_study", None)
        import warnings

        try:  # axis names in optuna-dashboard
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" in Optuna
                study.set_metric_names([n for n, _ in objectives])
        except Exception:  # noqa: BLE001 - cosmetic; older Optuna or a storage without it
            pass
        for fixed, attrs in paper_enqueue(space)[:num_samples]:  # the paper's five configurations go first
            study.enqueue_trial(fixed, user_attrs=attrs)
        if scheduler == "asha":
            metric, mode = next(((n, m) for n, m in objectives if n == "val_accuracy"), objectives[0])
            # ASHA, except that the paper's configurations always train the full budget
            sched = PaperASHA(time_attr="epoch", metric=metric, mode=mode, max_t=space.epochs,
                              grace_period=space.early_stopping.grace_period,
                              reduction_factor=space.early_stopping.reduction_factor)
        else:
            sched = FIFOScheduler()
        tuner = tune.Tuner(
            _trainable(tune, opts),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=sched, num_samples=num_samples,
                                        max_concurrent_trials=max_conc or None, reuse_actors=True,
                                        trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=0,
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[_progress(num_samples, space.epochs)]),
        )
        print(f"experiment: {exp_dir}\n  space {space.source} ({space.model} on {space.dataset}, "
              f"{space.num_units} units, {space.epochs} epochs), {num_samples} trials, sampler {args.sampler}, "
              f"scheduler {scheduler}" + (", the paper's configurations first" if space.paper_configs else "")
              + (f"\n  watch the study: optuna-dashboard {args.optuna_storage}" if args.optuna_storage else ""),
              flush=True)
        t0 = time.time()
        results = _fit(tuner)
        return _finish(exp_dir, meta, results, time.time() - t0, args.no_analysis)
    finally:
        ray.shutdown()


def _resume(args: argparse.Namespace) -> int:
    exp_dir = _storage_root(args.resume)
    meta = _read_experiment(exp_dir)
    opts_saved = meta.get("options") or {}
    cpus = args.cpus_per_trial if "--cpus-per-trial" in (args._given or []) else opts_saved.get("cpus_per_trial", 1.0)
    gpus = args.gpus_per_trial if "--gpus-per-trial" in (args._given or []) else opts_saved.get("gpus_per_trial", 0.0)
    address = args.address if args.address is not None else None
    opts = {"cpus_per_trial": cpus, "gpus_per_trial": gpus, "threads": max(1, int(cpus)),
            "data_dir": opts_saved.get("data_dir"), "download": opts_saved.get("download", True)}
    ray = _init_ray(address)
    try:
        from ray import tune

        if not tune.Tuner.can_restore(exp_dir):
            raise UserError(f"{exp_dir}: has experiment.json but no Ray Tune state to resume "
                            "(the search never started)")
        _check_resources(ray, cpus, gpus, local=not address)
        print(f"resuming experiment: {exp_dir}", flush=True)
        from search_spaces.tune_glue import repair_checkpoint_refs

        for line in repair_checkpoint_refs(exp_dir):
            print(f"  {line}", flush=True)
        tuner = tune.Tuner.restore(exp_dir, trainable=_trainable(tune, opts), resume_unfinished=True,
                                   resume_errored=True)
        t0 = time.time()
        results = _fit(tuner)
        meta.setdefault("resumed", []).append(_now())
        return _finish(exp_dir, meta, results, time.time() - t0, args.no_analysis)
    finally:
        ray.shutdown()


def _finish(exp_dir: str, meta: dict[str, Any], results: Any, wall_s: float, no_analysis: bool) -> int:
    """Write trials.csv / epochs.csv / experiment.json, then the analysis; print where things are."""
    trials_df, n_err = write_tables(exp_dir, meta, results)
    n = len(trials_df)
    planned = int((meta.get("options") or {}).get("num_samples") or n)
    unfinished = int((~trials_df["status"].isin(["TERMINATED", "ERROR"])).sum()) if n else 0
    interrupted = bool(unfinished or n < planned)
    meta["finished"] = None if interrupted else _now()
    if interrupted:
        meta["interrupted"] = _now()
    else:
        meta.pop("interrupted", None)
    meta["wall_clock_s"] = round(float(meta.get("wall_clock_s") or 0) + wall_s, 1)
    meta["trials"] = int(n)
    _write_json(f"{exp_dir}/experiment.json", meta)
    done = int(((trials_df["status"] == "TERMINATED") & ~trials_df["stopped_early"].astype(bool)).sum()) if n else 0
    stopped = int(trials_df["stopped_early"].astype(bool).sum()) if n else 0
    print(f"\n{n} of {planned} trials in {wall_s:.0f} s: {done} trained the full {meta.get('epochs')} epochs, "
          f"{stopped} stopped early by ASHA, {n_err} errored" + (f", {unfinished} unfinished" if unfinished else ""))
    print(f"results: {exp_dir}/trials.csv, {exp_dir}/epochs.csv, {exp_dir}/experiment.json")
    if n and not no_analysis:
        _analysis(exp_dir, trials_df, meta)
    if interrupted:
        print(f"\nthe search was interrupted after {n - unfinished} of {planned} trials; the analysis above covers "
              f"those. Continue it with:\n  python tune_main.py --resume {exp_dir}")
        return 130
    if n and n_err == n:
        print(f"error: every trial failed; see the error.txt files under {exp_dir}", file=sys.stderr)
        return 1
    return 0


def write_tables(exp_dir: str, meta: dict[str, Any], results: Any) -> tuple[Any, int]:
    """trials.csv and epochs.csv from the ResultGrid's trials and their stored result.json."""
    from search_spaces.tune_glue import (build_tables, read_result_lines, read_text, saved_trial_statuses,
                                         storage_fs, write_text)

    fs, base = storage_fs(exp_dir)
    records = []
    analysis = getattr(results, "_experiment_analysis", None)
    trials = list(getattr(analysis, "trials", None) or [])
    saved = saved_trial_statuses(fs, base)
    if trials:
        for t in trials:
            path = str(t.path)
            err = None
            status = t.status
            if saved.get(t.trial_id) in ("RUNNING", "PENDING", "PAUSED"):
                status = "RUNNING"  # interrupted: --resume continues it
            elif status == "ERROR":
                err = read_text(fs, path + "/error.txt") or "error"
            records.append({"trial_id": t.trial_id, "status": status, "config": t.config,
                            "rows": read_result_lines(read_text(fs, path + "/result.json")), "error": err})
    else:  # fall back on the public Result objects
        for r in results:
            rows = read_result_lines(read_text(fs, str(r.path) + "/result.json"))
            tid = (r.metrics or {}).get("trial_id") or Path(str(r.path)).name.replace("trial_", "")
            records.append({"trial_id": tid, "status": "ERROR" if r.error else None, "config": r.config,
                            "rows": rows, "error": str(r.error) if r.error else None})
    trials_df, epochs_df = build_tables(records, int(meta.get("epochs") or 0))
    write_text(fs, base + "/trials.csv", trials_df.to_csv(index=False))
    write_text(fs, base + "/epochs.csv", epochs_df.to_csv(index=False))
    n_err = int((trials_df["status"] == "ERROR").sum()) if len(trials_df) else 0
    return trials_df, n_err


def _analysis(exp_dir: str, trials_df: Any, meta: dict[str, Any]) -> None:
    """The Pareto table, then where the plot, report and knee policy were written."""
    from search_spaces.tune_glue import is_local, pareto_rows, pareto_text

    objectives = [tuple(o) for o in meta.get("objectives") or [("val_accuracy", "max"), ("compute_saved_frac", "max")]]
    if is_local(exp_dir):
        from analysis.export import export_policy
        from analysis.run import run_analysis

        exp = Path(exp_dir.replace("file://", ""))
        try:
            res = run_analysis(exp, quiet=True)
            knee = export_policy(exp, pick="knee", out=exp / "policies" / "knee.json")
            print("\n" + res.table)
            print(f"\nPareto plot: {exp / 'pareto.png'}\nreport:      {exp / 'report.html'}\n"
                  f"knee policy: {knee}  (all {len(res.policies)} front policies in {exp / 'policies'})")
            print(f"train with it: python -m layerout.train --policy {knee} --out {exp / 'runs' / 'knee'}")
            print(f"other picks: python -m analysis.export {exp_dir} --pick max-accuracy (or min-compute, "
                  "or --min-accuracy 0.97) -o policy.json")
            return
        except UserError as exc:
            print(f"analysis: {exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - the results are stored; the analysis must not lose them
            print(f"analysis failed ({exc.__class__.__name__}: {exc}); the results are stored, rerun it with "
                  f"python -m analysis {exp_dir}", file=sys.stderr)
    else:
        print("\nthe experiment is in remote storage: copy it to a local folder and run python -m analysis on it "
              "for the plots, report and policy files")
    # Fallback (remote storage, or the analysis failed): the non-dominated full-budget trials.
    front = pareto_rows(trials_df, objectives)
    if len(front):
        print("\nPareto front (trials that trained the full budget; sorted by compute saved):")
        print(pareto_text(front))
    else:
        print("\nno trial trained the full budget: no Pareto front yet")


# ------------------------------------------------------------------------------ entry points
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args._given = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    _check_args(args)
    if args.list_presets:
        from search_spaces.space import list_presets

        for name, desc in list_presets():
            print(f"{name:<26} {desc}")
        return 0
    if args.resume:
        clash = [a for a in args._given if a not in ("--resume", "--address", "--cpus-per-trial",
                                                     "--gpus-per-trial", "--no-analysis")]
        if clash:
            raise UserError(f"--resume continues an experiment as it was started; {', '.join(clash)} cannot "
                            "be changed (allowed with --resume: --address, --cpus-per-trial, --gpus-per-trial, --no-analysis)")
        return _resume(args)
    return _start(args)


def cli(argv: list[str] | None = None) -> None:
    cli_main(main, argv)


if __name__ == "__main__":
    cli()
