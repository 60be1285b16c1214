"""What the search machinery costs per trial at scale, next to plain Ray Tune, with no training.

Both sides run the same trial function, ``synthetic_trial``: it trains nothing and reports a
learning curve drawn from a seed made of its config (accuracy rising to a plateau that falls as
the compute saved rises), one result per epoch, in microseconds. So the wall-clock per trial is
what the driver and Ray cost.

- ``ours``: ``tuning.run_search`` on the ``demo`` space (its searcher ``TruthfulOptunaSearch``,
  MOASHA, the progress, scheduler-state and logger callbacks, repeat detection, ``trials.csv``,
  ``epochs.csv``, ``rungs.csv``, experiment.json), with the trial function swapped for
  ``synthetic_trial``; then ``python -m analysis`` on the experiment (time, peak memory).
- ``plain``: a ``ray.tune.Tuner`` with Ray's ``OptunaSearch`` (TPE on one objective, a space of
  its own: the family and four floats) and ``ASHAScheduler`` (same grace period, reduction factor,
  budget), Ray's default loggers, the same trial function, trials at a time and ``reuse_actors``.
- ``plain-space``: the same, but Ray's ``OptunaSearch`` gets our demo space (its define-by-run
  function) and our two objectives (TPE, as our searcher has them; ASHA on accuracy): the
  difference to ``ours`` is what the project adds (telling Optuna the truth, no repeated
  configurations, MOASHA, the callbacks and files), not the sampler's cost.

Each side runs in its own process (its peak resident memory is the driver's). Reported: the
wall-clock per trial of the search (Ray started to tables written) and of the Tuner's fit alone,
their ratios ours / plain and ours / plain-space; the time per MOASHA decision (and ASHA's) and per searcher suggestion,
for the decisions with the most results at their rung and the last suggestions; the experiment
directory's size per trial by kind of file. One run of each side: the ratio carries the machine's
noise (on a shared machine, tens of percent); the JSON keeps every figure.

    python benchmarks/search_scale.py --quick      # 20 trials a side, under 2 minutes
    python benchmarks/search_scale.py --trials 1000 --json benchmarks/results/search-scale-1000.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, ROOT, environment, finish_environment, table, trial_function, write_json  # noqa: E402

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
FAMILIES = ("none", "layerout", "freezeout", "prefix", "adaptive")
SIDES = ("plain", "plain-space", "ours")


# ------------------------------------------------------------------------------ the trial
def synthetic_trial(config: dict[str, Any], opts: dict[str, Any] | None = None, objects: Any = None) -> None:
    """A trial that trains nothing: every metric the project reports, per epoch, from a seed made
    of the config (the same config gives the same curve on both sides)."""
    from ray import tune

    rng = random.Random(zlib.crc32(json.dumps(config, sort_keys=True, default=str).encode()))
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    epochs = int(train.get("epochs") or config.get("epochs") or 8)
    saving = 0.0 if config.get("family") == "none" else 0.8 * rng.random()
    plateau = 0.97 - 0.3 * saving ** 2 + 0.02 * rng.random()
    policy = json.dumps(config.get("schedule") or {"kind": "none"}, sort_keys=True)
    gflop = 0.0
    for e in range(1, epochs + 1):
        acc = plateau * (1 - math.exp(-e / 1.5)) + 0.01 * (rng.random() - 0.5)
        saved_now = saving * min(1.0, e / max(1, epochs // 2))
        gflop += 0.1 * (1 - saved_now)
        tune.report({"epoch": e, "train_loss": 1 - acc, "val_loss": 1.05 - acc, "val_accuracy": acc,
                     "test_accuracy": acc - 0.01 if e == epochs else None, "params_frozen_frac": saved_now,
                     "compute_saved_frac": saved_now * e / epochs, "planned_compute_saved_frac": saving,
                     "compute_spent_gflop": gflop, "time_saved_frac": saved_now * 0.8, "train_time_s": 1e-3 * e,
                     "lr": 0.05, "frozen_units": "000", "synthetic": True, "policy": policy,
                     "steps_per_epoch": 23, "threads": 1, "time_clock": "process_cpu", "val_images": 360})


# ------------------------------------------------------------------------------ timing hooks
class Timer:
    """Wraps a method on its class and records (size, seconds) per call: ``size(self, args)``
    says how large the structure it worked on was (results at the rung, trials in the study)."""

    def __init__(self, cls: type, name: str, size: Callable[..., int]) -> None:
        self.calls: list[tuple[int, float]] = []
        inner = getattr(cls, name)
        timer = self

        def timed(obj: Any, *args: Any, **kw: Any) -> Any:
            n = size(obj, *args)
            t0 = time.perf_counter()
            try:
                return inner(obj, *args, **kw)
            finally:
                timer.calls.append((n, time.perf_counter() - t0))
        setattr(cls, name, timed)

    def summary(self) -> dict[str, Any]:
        """Medians over all calls and over the largest tenth (by size), in milliseconds."""
        if not self.calls:
            return {"calls": 0}
        ms = [s * 1000 for _, s in self.calls]
        big = sorted(self.calls, key=lambda c: c[0])[-max(1, len(self.calls) // 10):]
        return {"calls": len(self.calls), "median_ms": statistics.median(ms), "max_ms": max(ms),
                # every call's (size, ms), for how the cost grows with the rung or the study
                "by_size": [[n, round(s * 1000, 4)] for n, s in self.calls],
                "total_s": sum(ms) / 1000, "largest_size": big[-1][0], "largest_tenth_min_size": big[0][0],
                "largest_tenth_median_ms": statistics.median(s * 1000 for _, s in big)}


def _rung_size(sched: Any, *args: Any) -> int:
    t = args[-1].get("epoch")  # on_trial_result(tune_controller, trial, result)
    passed = [m for m in sched.milestones if isinstance(t, (int, float)) and m <= t]
    return len(sched.rungs[passed[-1]]) if passed else 0


def _asha_size(sched: Any, *args: Any) -> int:
    brackets = getattr(sched, "_brackets", None) or []
    return max((len(r) for b in brackets for _, r in getattr(b, "_rungs", [])), default=0)


def _study_size(search: Any, *args: Any) -> int:
    study = getattr(search, "_ot_study", None)
    try:
        return len(study.get_trials(deepcopy=False)) if study is not None else 0
    except Exception:  # noqa: BLE001 - a size for the table only
        return 0


# ------------------------------------------------------------------------------ the two sides
def run_ours(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import tuning.search as search
    from tuning import SearchOptions
    from tuning.schedulers import MOASHA
    from tuning.searcher import TruthfulOptunaSearch

    moasha = Timer(MOASHA, "on_trial_result", _rung_size)
    suggest = Timer(TruthfulOptunaSearch, "suggest", _study_size)
    complete = Timer(TruthfulOptunaSearch, "on_trial_complete", _study_size)
    opts = SearchOptions(num_samples=args.trials, max_concurrent=args.concurrent, storage=str(out),
                         name="ours", progress_interval=0, confirm_seeds=0)
    t0 = time.perf_counter()
    with trial_function(synthetic_trial):
        result = search.run_search("demo", opts, log=lambda line: None)
    wall = time.perf_counter() - t0
    return {"trials": len(result.trials), "search_s": wall, "fit_s": float(result.meta.get("wall_clock_s") or 0),
            "repeats": int(result.repeats), "optuna_trials": len(result.trials) + int(result.repeats),
            "exp_dir": str(result.exp_dir), "stopped_early": int(result.stopped_early),
            "moasha": moasha.summary(), "searcher_suggest": suggest.summary(),
            "searcher_complete": complete.summary()}


def run_plain(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """``plain``: a space of its own (the family and four floats), one objective. ``plain-space``:
    our demo space (its define-by-run function) and our two objectives with Optuna's TPE, as our
    searcher has them, so that the difference to ``ours`` is what the project adds."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    suggest = Timer(OptunaSearch, "suggest", _study_size)
    complete = Timer(OptunaSearch, "on_trial_complete", _study_size)
    asha = Timer(ASHAScheduler, "on_trial_result", _asha_size)
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.concurrent, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        asha_args = dict(time_attr="epoch", max_t=8, grace_period=2, reduction_factor=2)
        if args.side == "plain":
            space: Any = {"family": tune.choice(list(FAMILIES)), "a": tune.uniform(0, 1), "b": tune.uniform(0, 1),
                          "c": tune.uniform(0, 1), "d": tune.uniform(0, 1), "epochs": 8}
            searcher = OptunaSearch(seed=0)
            tc = dict(metric="val_accuracy", mode="max", scheduler=ASHAScheduler(**asha_args))
        else:
            from search_spaces.space import load_space
            from search_spaces.trials import define_by_run

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            demo = load_space("demo")
            searcher = OptunaSearch(space=define_by_run(demo), metric=["val_accuracy", "compute_saved_frac"],
                                    mode=["max", "max"], sampler=optuna.samplers.TPESampler(seed=0))
            space, tc = None, dict(scheduler=ASHAScheduler(metric="val_accuracy", mode="max", **asha_args))
        tuner = tune.Tuner(
            tune.with_resources(synthetic_trial, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=args.trials,
                                        max_concurrent_trials=args.concurrent, reuse_actors=True, **tc),
            run_config=tune.RunConfig(name="plain", storage_path=str(out), verbose=0))
        f0 = time.perf_counter()
        grid = tuner.fit()
        fit = time.perf_counter() - f0
        n = len(grid)
    finally:
        ray.shutdown()
    return {"trials": n, "search_s": time.perf_counter() - t0, "fit_s": fit, "exp_dir": str(out / "plain"),
            "asha": asha.summary(), "searcher_suggest": suggest.summary(), "searcher_complete": complete.summary()}


def dir_size(path: Path) -> dict[str, int]:
    """Bytes under ``path`` by kind of file."""
    kinds = {"checkpoints": 0, "result.json": 0, "tensorboard": 0, "progress.csv": 0, "search state": 0,
             "other": 0}
    for p in path.rglob("*"):
        if not p.is_file():
            continue
        size, parts = p.stat().st_size, p.parts
        if any(s.startswith("checkpoint_") for s in parts):
            kinds["checkpoints"] += size
        elif p.name == "result.json":
            kinds["result.json"] += size
        elif p.name.startswith("events.out.tfevents"):
            kinds["tensorboard"] += size
        elif p.name == "progress.csv":
            kinds["progress.csv"] += size
        elif p.parent == path:
            kinds["search state"] += size  # the experiment's own files: tables, Ray's and the searcher's state
        else:
            kinds["other"] += size
    kinds["total"] = sum(kinds.values())
    return kinds


def run_analysis(exp_dir: str, out: Path) -> dict[str, Any]:
    """``python -m analysis`` in a fresh process: wall-clock, peak resident memory (wait4), exit status."""
    cmd = [sys.executable, "-m", "analysis", exp_dir, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    with open(out.parent / "analysis.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "exit_status": os.waitstatus_to_exitcode(status),
            "files": files, "log": str(out.parent / "analysis.log")}


def side_main(args: argparse.Namespace) -> int:
    """One side, in its own process; its figures go to ``--side-json``."""
    out = Path(args.out)
    rec = (run_ours if args.side == "ours" else run_plain)(args, out)
    rec["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rec["dir_bytes"] = dir_size(Path(rec["exp_dir"]))
    Path(args.side_json).write_text(json.dumps(rec, indent=2, default=str))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="20 trials a side (under 2 minutes)")
    ap.add_argument("--concurrent", type=int, default=2, help="trials at a time on both sides")
    ap.add_argument("--no-analysis", action="store_true", help="skip python -m analysis on our experiment")
    ap.add_argument("--keep", metavar="DIR", help="keep the experiments here (default: a temporary folder)")
    ap.add_argument("--json", default=str(OUT_DIR / "search_scale.json"))
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES),
                    help="which sides to run (ours always; default all)")
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--side-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.trials = 20
    if args.side:
        return side_main(args)
    env = environment("cpu")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="search-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    sides: dict[str, Any] = {}
    try:
        for side in [x for x in SIDES if x in args.sides or x == "ours"]:
            side_json = work / f"{side}.json"
            cmd = [sys.executable, __file__, "--side", side, "--trials", str(args.trials), "--concurrent",
                   str(args.concurrent), "--out", str(work / side), "--side-json", str(side_json)]
            with open(work / f"{side}.log", "w") as log:
                rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                print(f"the {side} side failed (exit {rc}); its output: {work / f'{side}.log'}", file=sys.stderr)
                print((work / f"{side}.log").read_text()[-3000:], file=sys.stderr)
                return 1
            sides[side] = json.loads(side_json.read_text())
            print(f"  done: {side}, {sides[side]['trials']} trials in {sides[side]['search_s']:.1f} s", flush=True)
        analysis = None if args.no_analysis else run_analysis(sides["ours"]["exp_dir"], work / "analysis")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    finish_environment(env)
    ours = sides["ours"]
    run = [x for x in SIDES if x in sides]
    per = {s: {k: sides[s][k] / max(1, sides[s]["trials"]) for k in ("search_s", "fit_s")} for s in sides}
    ratios = {base: {k: per["ours"][k] / per[base][k] for k in ("search_s", "fit_s")} for base in run if base != "ours"}
    rows = [[s, sides[s]["trials"], per[s]["search_s"] * 1000, per[s]["fit_s"] * 1000, sides[s]["driver_peak_rss_mb"],
             sides[s]["dir_bytes"]["total"] / max(1, sides[s]["trials"]) / 1024] for s in run]
    print(table(rows, ["side", "trials", "ms/trial (search)", "ms/trial (fit)", "driver peak MB", "dir KB/trial"]))
    for base, r in ratios.items():
        print(f"ours / {base} per trial: search {r['search_s']:.2f}x, fit {r['fit_s']:.2f}x")
    dec = [["MOASHA decision (ours)", ours["moasha"]], *[[f"ASHA decision ({s})", sides[s]["asha"]] for s in run if s != "ours"],
           *[[f"suggest ({s})", sides[s]["searcher_suggest"]] for s in run],
           *[[f"on_trial_complete ({s})", sides[s]["searcher_complete"]] for s in run]]
    print(table([[name, s.get("calls"), s.get("median_ms"), s.get("largest_size"), s.get("largest_tenth_median_ms"),
                  s.get("max_ms"), s.get("total_s")] for name, s in dec],
                ["call", "calls", "median ms", "largest size", "ms at the largest tenth", "max ms", "total s"]))
    print(f"\nours: {ours['optuna_trials']} Optuna trials for {ours['trials']} runs ({ours['repeats']} repeated "
          "proposals, not trained again)")
    print("\nexperiment directory, bytes per trial by kind:")
    kinds = list(ours["dir_bytes"])
    print(table([[k, *[sides[s]["dir_bytes"].get(k, 0) / max(1, sides[s]["trials"]) for s in run]] for k in kinds],
                ["kind", *run]))
    if analysis:
        print(f"\npython -m analysis on {ours['trials']} trials: {analysis['wall_s']:.1f} s, peak {analysis['peak_rss_mb']:.0f} MB, "
              f"exit {analysis['exit_status']}")
    print("\nTargets:")
    for base, r in ratios.items():
        print(f"  our driver <= 1.3x {base} Ray Tune's wall-clock per trial ({ours['trials']} trials): {r['fit_s']:.2f}x "
              f"-> {'met' if r['fit_s'] <= 1.3 else 'not met'}")
    if analysis:
        print(f"  analysis <= 60 s and <= 2 GB ({ours['trials']} trials): {analysis['wall_s']:.1f} s, "
              f"{analysis['peak_rss_mb']:.0f} MB")
    path = write_json(args.json, {"environment": env, "trials": args.trials, "concurrent": args.concurrent,
                                  "sides": sides, "per_trial_s": per, "ratio_ours_to": ratios,
                                  "analysis": analysis})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
