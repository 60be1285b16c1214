"""Where a trial's time goes in the demo search: start-up, training, evaluation, FLOP probes,
checkpoints, reporting, and what Ray costs between trials.

Runs ``tuning.run_search("demo")`` (real training: digits + digits_cnn, 24 trials, 2 at a time,
MOASHA) with the trial function wrapped: in each worker process, the trainer's methods are timed
(exclusive time: a section inside another counts once, in the inner one):

- ``start-up``: from the trial function's start to its first training epoch, less what is listed
  below (data, model, optimizer, schedule, trainer; the FLOP probe of the unfrozen model)
- ``calibration``: the unfrozen-step timing that ``time_saved_frac`` needs when epoch 0 freezes
- ``training``: ``Trainer.train_epoch`` less evaluation, FLOP probes and planning: the loop
- ``evaluation``: ``Trainer._evaluate_split`` (validation every epoch, test at the end)
- ``flop probes``: ``layerout.compute.step_flops`` (one per mask the trial meets; cached per
  worker process for built-in models, so a reused worker probes a mask once)
- ``planning``: ``planned_compute_saved_frac`` less its FLOP probes
- ``checkpoints``: the trainer's ``checkpoint.pt`` and ``epochs.csv`` every epoch
- ``reporting``: ``ray.tune.report`` (result, and the checkpoint copied to the trial's folder)
- ``other``: the rest of the trial function (its end, the clean-up)
- ``between trials``: the workers' time outside any trial function: trials at a time x the
  search's wall-clock, less the trials' own time (Ray starting, scheduling and ending trials)

    python benchmarks/trial_time.py            # about a minute on 2 cores
    python benchmarks/trial_time.py --no-shared-flops   # every trial probes its own masks (the old behaviour)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, environment, finish_environment, table, trial_function, write_json  # noqa: E402

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
SECTIONS = ("start-up", "calibration", "training", "evaluation", "flop probes", "planning", "checkpoints",
            "reporting", "other")
OUT_ENV = "LAYEROUT_TRIAL_TIME_DIR"  # where each trial writes its breakdown (the workers inherit it)
SHARED_ENV = "LAYEROUT_TRIAL_TIME_SHARED_FLOPS"


class Clock:
    """Exclusive time per section, nested sections subtracted from their parents."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.total: dict[str, float] = {}
        self.stack: list[list[Any]] = []  # [name, start, time of children]
        self.first_epoch: float | None = None

    def enter(self, name: str) -> None:
        self.stack.append([name, time.perf_counter(), 0.0])

    def leave(self) -> None:
        name, start, children = self.stack.pop()
        spent = time.perf_counter() - start
        self.total[name] = self.total.get(name, 0.0) + spent - children
        if self.stack:
            self.stack[-1][2] += spent


CLOCK: Clock | None = None


def _install() -> None:
    """Time the trainer's methods in this worker process (once)."""
    import ray.tune
    from layerout import compute
    from layerout import trainer as trainer_module
    from layerout.trainer import Trainer

    if getattr(Trainer, "_trial_time_installed", False):
        return

    def wrap(owner: Any, attr: str, name: str, mark_first: bool = False) -> None:
        inner = getattr(owner, attr)

        def timed(*args: Any, **kw: Any) -> Any:
            clock = CLOCK
            if clock is None:
                return inner(*args, **kw)
            if mark_first and clock.first_epoch is None:
                clock.first_epoch = time.perf_counter()
            clock.enter(name)
            try:
                return inner(*args, **kw)
            finally:
                clock.leave()
        setattr(owner, attr, timed)

    wrap(Trainer, "train_epoch", "training", mark_first=True)
    wrap(Trainer, "_evaluate_split", "evaluation")
    wrap(Trainer, "planned_compute_saved_frac", "planning")
    wrap(Trainer, "_calibrate", "calibration")
    wrap(Trainer, "_save_checkpoint", "checkpoints")
    wrap(trainer_module, "write_csv", "checkpoints")  # epochs.csv, written after every epoch
    wrap(compute, "step_flops", "flop probes")
    wrap(ray.tune, "report", "reporting")
    Trainer._trial_time_installed = True


def timed_trial(config: dict[str, Any], opts: dict[str, Any] | None = None, objects: Any = None) -> None:
    """``tuning.trainable.train_trial`` with its time broken down (written to ``$LAYEROUT_TRIAL_TIME_DIR``)."""
    global CLOCK
    from layerout import compute
    from tuning.trainable import train_trial

    _install()
    if os.environ.get(SHARED_ENV) == "0":
        compute.SHARED_FLOPS.clear()  # as if every trial ran in a fresh process
    CLOCK = clock = Clock()
    clock.enter("other")
    try:
        train_trial(config, opts, objects)
    finally:
        clock.leave()
        end = time.perf_counter()
        total = end - clock.t0
        parts = dict(clock.total)
        first = clock.first_epoch or end
        # the time before the first epoch that no section claimed is the start-up
        before = first - clock.t0
        claimed_before = sum(parts.get(k, 0.0) for k in ("calibration", "flop probes")) if clock.first_epoch else 0.0
        startup = max(0.0, min(parts.get("other", 0.0), before - claimed_before))
        parts["start-up"] = startup
        parts["other"] = parts.get("other", 0.0) - startup
        rec = {"trial": os.path.basename(os.getcwd()), "pid": os.getpid(), "total_s": total,
               "family": config.get("family"), "parts_s": parts}
        out = Path(os.environ[OUT_ENV])
        (out / f"{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(rec))
        CLOCK = None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--no-shared-flops", action="store_true",
                    help="clear the per-process FLOP cache at every trial's start (each trial probes its masks)")
    ap.add_argument("--json", default=str(OUT_DIR / "trial_time.json"))
    args = ap.parse_args()
    import tuning.search as search
    from tuning import SearchOptions

    env = environment("cpu")
    work = Path(tempfile.mkdtemp(prefix="trial-time-"))
    parts_dir = work / "parts"
    parts_dir.mkdir()
    os.environ[OUT_ENV] = str(parts_dir)
    os.environ[SHARED_ENV] = "0" if args.no_shared_flops else "1"
    try:
        t0 = time.perf_counter()
        with trial_function(timed_trial):
            opts = SearchOptions(num_samples=args.num_samples, storage=str(work / "exp"), name="trial-time",
                                 progress_interval=0)
            result = search.run_search(args.preset, opts, log=lambda line: None)
        search_wall = time.perf_counter() - t0
        if result.errors:  # a breakdown of trials that failed measures nothing: say so, do not print it
            raise SystemExit(f"error: {result.errors} of {len(result.trials)} trials failed (their lines above say "
                             "why); no breakdown written")
        fit_wall = float(result.meta.get("wall_clock_s") or 0)
        concurrent = int(result.meta["options"].get("max_concurrent") or 1)
        trials = [json.loads(p.read_text()) for p in sorted(parts_dir.glob("*.json"))]
        dir_bytes = sum(p.stat().st_size for p in Path(result.exp_dir).rglob("*") if p.is_file())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish_environment(env)
    worker_s = concurrent * fit_wall
    sums = {k: sum(t["parts_s"].get(k, 0.0) for t in trials) for k in SECTIONS}
    in_trials = sum(t["total_s"] for t in trials)
    sums["between trials"] = max(0.0, worker_s - in_trials)
    rows = [[k, sums[k], 100 * sums[k] / worker_s if worker_s else None,
             statistics.median(t["parts_s"].get(k, 0.0) for t in trials) if k in SECTIONS and trials else None]
            for k in [*SECTIONS, "between trials"]]
    print(table(rows, ["section", "seconds, all trials", "% of workers' time", "median s per trial"]))
    share = sums["training"] / worker_s if worker_s else 0.0
    print(f"\n{len(trials)} trials, {concurrent} at a time, search fit {fit_wall:.1f} s (workers' time "
          f"{worker_s:.1f} s), search with Ray start and tables {search_wall:.1f} s; experiment folder "
          f"{dir_bytes / max(1, len(trials)) / 1024:.0f} KB per trial")
    print(f"\nTargets:\n  the training loops fill >= 60% of the workers' time: {100 * share:.0f}% -> "
          f"{'met' if share >= 0.6 else 'not met'}")
    path = write_json(args.json, {"environment": env, "preset": args.preset, "shared_flops": not args.no_shared_flops,
                                  "fit_s": fit_wall, "search_s": search_wall, "concurrent": concurrent,
                                  "workers_s": worker_s, "sections_s": sums, "training_share": share,
                                  "dir_bytes_per_trial": dir_bytes / max(1, len(trials)), "trials": trials})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
