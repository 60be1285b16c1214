#!/usr/bin/env python
"""Search layer-freezing policies with Ray Tune + Optuna (multi-objective) + early stopping.

    python tune_main.py                                  # the embedded demo (local Ray, CPU)
    python tune_main.py --preset paper-cifar10-vgg16 --address auto --gpus-per-trial 0.25
    python tune_main.py --space my_space.yaml --storage /shared/results --name vgg-try1
    python tune_main.py --resume results/demo-20261122-153000
    python tune_main.py --list-presets

Each trial trains one network with the LayerOut trainer and reports its metrics every epoch with a
checkpoint; Optuna searches the freezing schedule (``search_spaces/``) for the two objectives
val_accuracy and compute_saved_frac (both max); MOASHA (the default) stops trials that rank low on
both (accuracy and the compute their policy will save) at its rungs. The experiment directory ``<storage>/<name>`` gets Ray Tune's files plus experiment.json,
trials.csv and epochs.csv, then the analysis (Pareto front, plots, report, the knee's policy).
This file is only the command line: the search itself is ``tuning.run_search``.

Bad input (a malformed space, an unknown preset, a resume of a directory that is not an
experiment) prints one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# Only light modules here: torch, pandas and Ray are imported by the functions that run a search
# or an analysis, so that --help, --list-presets and bad arguments answer at once.
from layerout.errors import ArgumentParser, UserError, cli_main
from layerout.files import WriteError  # light: no torch
from search_spaces.space import list_presets
from tuning.loggers import LOGGERS
from tuning.options import SAMPLERS, SCHEDULERS, SearchOptions

if TYPE_CHECKING:
    from tuning.search import SearchResult

# the options' defaults are SearchOptions' (written once there)
DEFAULTS = SearchOptions()
RESUME_FLAGS = ("--resume", "--address", "--connect-timeout", "--cpus-per-trial", "--gpus-per-trial",
                "--progress-interval", "--no-analysis", "--confirm-seeds", "--confirm-top")


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
    p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULTS.sampler,
                   help=f"Optuna sampler (default: {DEFAULTS.sampler})")
    p.add_argument("--scheduler", choices=SCHEDULERS,
                   help="early stopping (default: the space's early_stopping.scheduler)")
    p.add_argument("--seed", type=int, help="sampler and training seed (default: the space's seed)")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="Optuna storage for optuna-dashboard: sqlite:///study.db (any SQLAlchemy URL) "
                        "or a journal file path (*.log / *.journal)")
    p.add_argument("--address",
                   help="Ray cluster to join: auto, HOST:PORT or ray://HOST:10001 (default: start a local Ray)")
    p.add_argument("--connect-timeout", type=float, default=DEFAULTS.connect_timeout, metavar="SECONDS",
                   help="with --address: how long to wait for the cluster to answer "
                        f"(default {DEFAULTS.connect_timeout:g})")
    p.add_argument("--storage", default=DEFAULTS.storage, help="where experiments live: a shared path or a URI "
                                                                  f"(s3://..., gs://...) (default: {DEFAULTS.storage})")
    p.add_argument("--name", help="experiment name (default: <space name>-YYYYmmdd-HHMMSS)")
    p.add_argument("--cpus-per-trial", type=float, default=DEFAULTS.cpus_per_trial,
                   help=f"CPUs per trial (default {DEFAULTS.cpus_per_trial:g})")
    p.add_argument("--gpus-per-trial", type=float, default=DEFAULTS.gpus_per_trial,
                   help="GPUs per trial; fractions share a GPU, e.g. 0.25 = 4 trials per GPU "
                        f"(default {DEFAULTS.gpus_per_trial:g})")
    p.add_argument("--max-failures", type=int, default=DEFAULTS.max_failures,
                   help=f"restarts of a trial whose worker died, from its last epoch (default {DEFAULTS.max_failures})")
    p.add_argument("--data-dir", help="dataset folder (default ~/.cache/layerout-tune/data)")
    p.add_argument("--no-download", action="store_true", help="never download datasets")
    p.add_argument("--no-analysis", action="store_true", help="skip the Pareto analysis at the end")
    p.add_argument("--logger", action="append", choices=LOGGERS, metavar="|".join(LOGGERS),
                   help="Ray Tune's loggers, repeatable: csv (progress.csv), tensorboard (event files), mlflow, wandb "
                        "(their packages: pip install 'layerout-tune[mlflow]' / '[wandb]'); replaces the default "
                        "csv and tensorboard (default: the space's loggers:); result.json is always written")
    p.add_argument("--progress-interval", type=float, metavar="SECONDS",
                   help="seconds between status updates: a progress bar on a terminal, a status line in a log "
                        "(default 5 on a terminal, 60 otherwise; 0: none)")
    p.add_argument("--confirm-seeds", type=int, metavar="N",
                   help="at the end, re-train the best front policies, the baseline and the shorter-training "
                        "reference points on N fresh seeds (python -m analysis.confirm; default: the space's "
                        "confirm.seeds, else 3; 0 = no confirmation)")
    p.add_argument("--confirm-top", type=int, metavar="K",
                   help="how many front policies the confirmation re-trains (default: the space's confirm.top, "
                        "else 2)")
    return p


def _options(args: argparse.Namespace) -> SearchOptions:
    return SearchOptions(num_samples=args.num_samples, max_concurrent=args.max_concurrent, sampler=args.sampler,
                         scheduler=args.scheduler, seed=args.seed, optuna_storage=args.optuna_storage,
                         address=args.address, connect_timeout=args.connect_timeout, storage=args.storage,
                         name=args.name,
                         cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                         max_failures=args.max_failures, data_dir=args.data_dir, download=not args.no_download,
                         progress_interval=args.progress_interval, loggers=args.logger,
                         confirm_seeds=args.confirm_seeds, confirm_top=args.confirm_top)


def report(result: SearchResult, no_analysis: bool, confirm_seeds: int | None = None,
           confirm_top: int | None = None) -> int:
    """Print how the search ended, then the confirmation on fresh seeds (when asked), the analysis
    and the verdict; the exit status."""
    exp_dir, n = result.exp_dir, len(result.trials)
    if result.skipped_lines:
        print(f"note: skipped {result.skipped_lines} result line(s) that were not JSON (torn by a kill)")
    epochs = int(result.meta.get("epochs") or 0)
    sched = (result.meta.get("options") or {}).get("scheduler") or "the scheduler"
    refs = result.trials["reference"].fillna("").astype(str) if n and "reference" in result.trials else None
    done = result.trials["epochs_done"] if n else None
    # the shorter-training reference points that trained their (fewer) epochs: not those that failed or never ran
    shorter = int(((refs != "") & (result.trials["status"] == "TERMINATED") & (done > 0) & (done < epochs)).sum()
                  ) if refs is not None else 0
    print(f"\n{n} of {result.planned} trials in {result.wall_s:.0f} s: {result.full_budget} trained the full "
          f"{epochs} epochs" + (f" (the {shorter} shorter-training reference points their fewer epochs)"
                                if shorter else "")
          + f", {result.stopped_early} stopped early by {sched}, {result.errors} errored"
          + (f", {result.unfinished} unfinished" if result.unfinished else ""))
    if n and epochs:
        trained = int(result.trials["epochs_done"].fillna(0).sum())
        print(f"epochs trained: {trained} of {n * epochs} ({100 * trained / (n * epochs):.0f}%)"
              + (f"; {result.repeats} proposed configuration{'s' if result.repeats != 1 else ''} repeated a "
                 f"trial and {'were' if result.repeats != 1 else 'was'} not trained again"
                 if result.repeats else ""))
    if result.exhausted:
        print(f"the search ended after {n} distinct configurations: the samplers kept proposing ones already run")
    print(f"results: {exp_dir}/trials.csv, {exp_dir}/epochs.csv, {exp_dir}/experiment.json")
    if result.user_error:  # nothing trained: no analysis, no confirmation (tuning.usercode)
        print(f"error: the search stopped after {n} of {result.planned} trials: the first ones all failed with "
              f"this error in your code or data (each trial's in trials.csv, column error): {result.user_error}",
              file=sys.stderr)
        return 2
    if n and not no_analysis:
        _confirm(result, confirm_seeds, confirm_top)
        _analysis(result)
    if result.interrupted:
        covered = "; the analysis above covers those" if n and not no_analysis else ""
        print(f"\nthe search was interrupted after {n - result.unfinished} of {result.planned} trials{covered}. "
              f"Continue it with:\n  python tune_main.py --resume {exp_dir}")
        return 130
    if n and result.errors == n:
        print(f"error: every trial failed; see the error.txt files under {exp_dir}", file=sys.stderr)
        return 1
    return 0


def _analysis(result: SearchResult) -> None:
    """The Pareto table, then where the plot, report and knee policy were written."""
    from analysis.export import export_policy
    from analysis.front import compute_front
    from analysis.results import experiment_from_tables
    from analysis.run import front_table_text, run_analysis
    from layerout.experiment import POLICIES_DIR
    from tuning.storage import is_local, local_path

    exp_dir = result.exp_dir
    try:
        if not is_local(exp_dir):
            # remote storage: the front from the tables in memory; plots and policies need a local copy
            exp = experiment_from_tables(result.meta, result.trials, result.epochs, Path(exp_dir))
            print("\n" + front_table_text(compute_front(exp)))
            print("\nthe experiment is in remote storage: copy it to a local folder and run python -m analysis on "
                  "it for the plots, report and policy files")
            return
        exp = local_path(exp_dir)
        res = run_analysis(exp, quiet=True)
        print("\n" + res.table)
        print(f"\nPareto plot: {exp / 'pareto.png'}\nreport:      {exp / 'report.html'}")
        knee_file = exp / POLICIES_DIR / "knee.json"
        try:  # the knee of the table above, exported when it beats training for fewer epochs
            knee = export_policy(exp, pick="knee", out=knee_file)
        except WriteError:
            raise
        except UserError as exc:
            knee_file.unlink(missing_ok=True)
            print(f"knee policy: none: {exc}\n(all {len(res.policies)} front policies in {exp / POLICIES_DIR}; the "
                  f"knee anyway: python -m analysis.export {exp_dir} --pick knee --ignore-curve -o knee.json)")
        else:
            print(f"knee policy: {knee}  (trial {res.result.knee}, the knee above; all "
                  f"{len(res.policies)} front policies in {exp / POLICIES_DIR})")
            print(f"train with it: python -m layerout.train --policy {knee} --out {exp / 'runs' / 'knee'}")
        print(f"other picks: python -m analysis.export {exp_dir} --pick max-accuracy (or min-compute, "
              "or --min-accuracy 0.97) -o policy.json")
        print(f"\nverdict: {res.result.verdict}")
    except WriteError as exc:
        if "no space left on device" not in str(exc):
            print(f"analysis: {exc}", file=sys.stderr)
            return
        raise UserError(f"{exc}; the search's results are stored: free some space, then python -m analysis "
                        f"{exp_dir}") from None
    except UserError as exc:
        print(f"analysis: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the results are stored; the analysis must not lose them
        print(f"analysis failed ({exc.__class__.__name__}: {exc}); the results are stored, rerun it with "
              f"python -m analysis {exp_dir}", file=sys.stderr)


def _confirm(result: SearchResult, seeds: int | None, top: int | None) -> None:
    """``python -m analysis.confirm`` at the end of a finished local search: the options given now
    (``--resume``), else those the search was started with (its flags, else the space's
    ``confirm: {seeds, top}``)."""
    from search_spaces.space import CONFIRM_TOP
    from tuning.storage import is_local, local_path

    opts, space = result.meta.get("options") or {}, result.meta.get("space") or {}
    if seeds is None:
        seeds = opts.get("confirm_seeds", space.get("confirm_seeds"))
        seeds = 0 if seeds is None else int(seeds)  # a search from before confirmations were run by default
    if top is None:
        top = int(opts.get("confirm_top") or space.get("confirm_top") or CONFIRM_TOP)
    if seeds <= 0:
        return
    if result.interrupted or not is_local(result.exp_dir):
        print("\nconfirmation skipped: " + ("the search did not finish" if result.interrupted else
                                            "the experiment is in remote storage") +
              f"; run python -m analysis.confirm {result.exp_dir} --top {top} --seeds {seeds} when it has")
        return
    from analysis.confirm import confirm

    opts = result.meta.get("options") or {}
    print(f"\nconfirming the front on {seeds} fresh seeds (python -m analysis.confirm)")
    try:
        confirm(local_path(result.exp_dir), top=top, seeds=seeds, quiet=True,
                address=opts.get("address") or "local", cpus_per_trial=opts.get("cpus_per_trial"),
                gpus_per_trial=opts.get("gpus_per_trial"), max_concurrent=opts.get("max_concurrent"),
                progress_interval=opts.get("progress_interval"))
    except KeyboardInterrupt:  # its runs stopped, nothing of them recorded: the search's results stand
        print(f"\nconfirmation interrupted: nothing of it was recorded; the search's results are stored: run python "
              f"-m analysis.confirm {result.exp_dir} --top {top} --seeds {seeds} (it ends with the analysis)")
        raise
    except UserError as exc:
        print(f"confirmation: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the search's results are stored; the confirmation must not lose them
        print(f"confirmation failed ({exc.__class__.__name__}: {exc}); the search's results are stored, rerun it with "
              f"python -m analysis.confirm {result.exp_dir} --top {top} --seeds {seeds}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    given = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    for flag, value, low in (("--confirm-seeds", args.confirm_seeds, 0), ("--confirm-top", args.confirm_top, 1)):
        if value is not None and not low <= value <= 100:
            raise UserError(f"{flag}: must be within [{low}, 100], got {value}")
    if args.list_presets:
        for name, desc in list_presets():
            print(f"{name:<26} {desc}")
        return 0
    if args.resume:
        clash = [a for a in given if a not in RESUME_FLAGS]
        if clash:
            raise UserError(f"--resume continues an experiment as it was started; {', '.join(clash)} cannot "
                            f"be changed (allowed with --resume: {', '.join(RESUME_FLAGS[1:])})")
        from tuning.search import resume_search

        result = resume_search(args.resume, address=args.address,
                               cpus_per_trial=args.cpus_per_trial if "--cpus-per-trial" in given else None,
                               gpus_per_trial=args.gpus_per_trial if "--gpus-per-trial" in given else None,
                               connect_timeout=args.connect_timeout, progress_interval=args.progress_interval)
    else:
        options = _options(args)
        options.check()  # before loading the space: a bad flag is reported first
        from search_spaces.space import load_space

        space = load_space(args.space or args.preset or "demo")  # its errors before Ray is imported
        from tuning.search import run_search

        result = run_search(space, options)
    return report(result, args.no_analysis, args.confirm_seeds, args.confirm_top)


def cli(argv: list[str] | None = None) -> None:
    cli_main(main, argv)


if __name__ == "__main__":
    cli()
