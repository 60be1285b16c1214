"""Confirm the front on fresh seeds: is a policy's lead over training less more than luck?

    python -m analysis.confirm EXPERIMENT_DIR [--top K] [--seeds N] [--address ADDR|local]
                               [--connect-timeout S] [--cpus-per-trial C] [--gpus-per-trial G] [--max-concurrent M]

A search trains every configuration once, on one seed, and the front and the knee pick the
luckiest single runs. This command re-trains the ``K`` best freezing policies of the front (the
knee first, then the largest margins over the shorter-training curve; off-front policies fill
in when the front has fewer), the baseline and every shorter-training reference point, each with
``N`` fresh seeds: the ``N`` smallest seeds (0, 1, 2, ...) that no trial of the search trained
with. Each run trains the trial's exported policy and recipe (its own epochs, its schedule as it
ran) with only the training seed changed, on the search's Ray resources, never stopped early.

It writes ``confirm.csv`` (docs/FORMATS.md: per policy its mean, standard deviation and 95%
interval of validation accuracy, test accuracy, compute saved and time saved, then one row per
seed), replacing an earlier confirmation, and runs the analysis again: the front, the knee, the
margins, the plots' error bars, the report and the exports then use the confirmed means (and
``policies/knee.json``, where the search wrote one, is exported again). Ray is imported only to
run the trials (``tuning.confirm``); everything else here, like the rest of ``analysis``, works
without it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from analysis._cli import ArgumentParser, run_cli
from analysis.curve import curve_at, is_unfrozen, point_name
from analysis.export import export_policy, train_recipe
from analysis.front import Front, compute_front
from analysis.policies import parse_schedule, schedule_summary
from analysis.results import Experiment, load_experiment, trial_epochs
from analysis.stats import summarize
from layerout.errors import UserError
from layerout.experiment import CONFIRM_CSV, POLICIES_DIR
from layerout.files import atomic_write, cannot_write
from layerout.progress import check_interval
from layerout.metrics import CONFIRMED_METRICS
from layerout.schedules.none import UNFROZEN

DEFAULT_TOP = 3
DEFAULT_SEEDS = 3
# confirm.csv: one summary row per policy (kind "summary": the metrics' means, standard deviations
# and 95% intervals over its runs), then its runs (kind "run": one seed each)
CONFIRM_COLUMNS = (["kind", "trial_id", "role", "name", "family", "epochs", "seed", "runs"]
                   + [f"{m}{s}" for m in CONFIRMED_METRICS for s in ("", "_std", "_ci_low", "_ci_high")]
                   + ["search_val_accuracy", "search_compute_saved_frac", "confirm_trial", "error"])
Runner = Callable[..., list[dict[str, Any]]]


@dataclass
class ConfirmResult:
    """What a confirmation did: ``path`` (confirm.csv), ``table`` (its rows), the ``seeds`` used,
    the trial ids confirmed (``policies``: freezing policies, ``curve``: the baseline and the
    reference points) and the ``verdict`` of the analysis that followed."""

    path: Path
    table: pd.DataFrame
    seeds: list[int]
    policies: list[str] = field(default_factory=list)
    curve: list[str] = field(default_factory=list)
    verdict: str = ""
    analysis: Any = None


def used_seeds(exp: Experiment) -> set[int]:
    """Every seed a trial of the search trained or drew with: its recipe's ``train.seed`` and its
    schedule's own ``seed`` (LayerOut's draws)."""
    out: set[int] = set()
    t = exp.trials
    for col in ("config/train/seed", "config/seed", "config/schedule/seed"):
        if col in t.columns:
            out.update(int(v) for v in pd.to_numeric(t[col], errors="coerce").dropna())
    for p in t.get("policy", pd.Series(dtype=str)):
        s = (parse_schedule(p) or {}).get("seed")
        if isinstance(s, int) and not isinstance(s, bool):
            out.add(s)
    seed = (exp.meta.get("space") or {}).get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        out.add(seed)
    return out


def fresh_seeds(exp: Experiment, n: int) -> list[int]:
    """The ``n`` smallest seeds (0, 1, 2, ...) no trial of the search used."""
    used, out, s = used_seeds(exp), [], 0
    while len(out) < n:
        if s not in used:
            out.append(s)
        s += 1
    return out


def choose(fr: Front, top: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the freezing policies to confirm, the curve's runs to confirm). Policies: the front's
    freezing policies not stopped early, the knee first, then by margin over the shorter-training
    curve (largest first); when the front has fewer than ``top``, the other finished freezing
    trials with the largest margins. Curve: one trial per point of the shorter-training curve
    (the baseline and the reference points)."""
    cand = fr.candidates
    free = cand[~is_unfrozen(cand) & ~cand["stopped"].astype(bool)].copy()
    free["_margin"] = [r["val_accuracy"] - curve_at(fr.curve, float(r["compute_saved_frac"]))[0]
                       for _, r in free.iterrows()]
    front_ids = set(fr.front["trial_id"])
    free["_front"] = free["trial_id"].isin(front_ids)
    free["_knee"] = free["trial_id"] == fr.knee
    free = free.sort_values(["_knee", "_front", "_margin"], ascending=[False, False, False], na_position="last",
                            kind="stable")
    policies = free.head(max(0, int(top))).drop(columns=["_margin", "_front", "_knee"])
    first = [ts[0] for ts in fr.curve["trials"]] if fr.curve is not None and len(fr.curve) else []
    curve = cand[cand["trial_id"].isin(first)]
    return policies, curve


def _name(row: pd.Series, budget: int | None, epochs: float) -> str:
    if row["family"] == UNFROZEN:
        return row.get("paper_config") or point_name(row.get("reference", ""), epochs, budget)
    return row.get("paper_config") or schedule_summary(parse_schedule(row.get("policy")))


def confirm_jobs(exp: Experiment, rows: pd.DataFrame, seeds: list[int]) -> list[dict[str, Any]]:
    """One job per (trial, seed): the trial's recipe (``analysis.export.train_recipe``: its own
    epochs, the budget a shorter run is measured against) with the training seed replaced, and
    its schedule as it ran (the ``policy`` column, what ``analysis.export`` writes)."""
    space_train = (exp.meta.get("space") or {}).get("train") or {}
    epochs = trial_epochs(rows, exp.epoch_budget)
    jobs = []
    for idx, r in rows.iterrows():
        schedule = parse_schedule(r.get("policy"))
        if schedule is None or "kind" not in schedule:
            raise UserError(f"{exp.path / 'trials.csv'}: trial {r['trial_id']}: column 'policy' is empty or not a "
                            "JSON schedule dict; it cannot be trained again")
        train = train_recipe(exp, r)
        for k in ("device", "fast_path"):  # where the search ran (not part of an exported recipe)
            if k in space_train:
                train[k] = space_train[k]
        for seed in seeds:
            jobs.append({"trial_id": str(r["trial_id"]), "seed": int(seed), "name": _name(r, exp.epoch_budget,
                                                                                            float(epochs[idx])),
                         "family": r["family"], "paper_config": r.get("paper_config", ""),
                         "reference": r.get("reference", ""), "train": {**train, "seed": int(seed)},
                         "schedule": schedule})
    return jobs


def confirm_table(exp: Experiment, chosen: pd.DataFrame, roles: dict[str, str], runs: list[dict[str, Any]]) -> pd.DataFrame:
    """confirm.csv's rows: per chosen trial a ``summary`` row, then its ``run`` rows."""
    runs_df = pd.DataFrame(runs)
    if runs_df.empty:
        return pd.DataFrame(columns=CONFIRM_COLUMNS)
    runs_df["trial_id"] = runs_df["trial_id"].astype(str)
    metrics = [m for m in CONFIRMED_METRICS if m in runs_df.columns]
    for m in metrics:
        runs_df[m] = pd.to_numeric(runs_df[m], errors="coerce")
    summ = summarize(runs_df, metrics).set_index("trial_id")
    epochs = trial_epochs(chosen, exp.epoch_budget)
    out = []
    for idx, r in chosen.iterrows():
        tid = str(r["trial_id"])
        if tid not in summ.index:
            continue
        base = {"trial_id": tid, "role": roles.get(tid, "policy"), "name": _name(r, exp.epoch_budget, float(epochs[idx])),
                "family": r["family"], "epochs": int(epochs[idx])}
        s = summ.loc[tid]
        out.append({"kind": "summary", **base, "runs": int(s["runs"]),
                    **{c: s[c] for c in summ.columns if c != "runs"},
                    "search_val_accuracy": r.get("val_accuracy"),
                    "search_compute_saved_frac": r.get("compute_saved_frac")})
        for _, run in runs_df[runs_df["trial_id"] == tid].iterrows():
            out.append({"kind": "run", **base, "seed": int(run["seed"]), **{m: run.get(m) for m in metrics},
                        "confirm_trial": run.get("confirm_trial", ""), "error": run.get("error", "") or ""})
    table = pd.DataFrame(out, columns=CONFIRM_COLUMNS)
    for c in ("epochs", "seed", "runs"):
        table[c] = pd.to_numeric(table[c], errors="coerce").astype("Int64")
    return table


def _default_runner(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    from tuning.confirm import run_confirm_jobs  # Ray, only to train

    return run_confirm_jobs(*args, **kwargs)


def confirm(exp_dir: str | Path, top: int = DEFAULT_TOP, seeds: int = DEFAULT_SEEDS, *, runner: Runner | None = None,
            quiet: bool = False, log: Callable[[str], None] = print, threads: int | None = None,
            **run_options: Any) -> ConfirmResult:
    """Re-train the ``top`` best front policies, the baseline and the reference points of the
    experiment in ``exp_dir`` on ``seeds`` fresh seeds, write confirm.csv and analyse the
    experiment again (module docstring). ``runner`` trains the jobs (default:
    ``tuning.confirm.run_confirm_jobs`` on Ray, given ``run_options``: ``address``,
    ``connect_timeout``, ``cpus_per_trial``, ``gpus_per_trial``, ``max_concurrent``, ``progress_interval``,
    ``model``, ``dataset``). Every run computes with the intra-op threads its trial recorded, so that a
    fresh seed is the only difference from the search (``threads``: another count, said in one line)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024):
        raise UserError(f"--threads: must be an integer within [1, 1024], got {threads!r}")
    if not isinstance(top, int) or top < 0:
        raise UserError(f"--top: must be an integer >= 0, got {top!r}")
    if not isinstance(seeds, int) or not 1 <= seeds <= 100:
        raise UserError(f"--seeds: must be an integer within [1, 100], got {seeds!r}")
    exp = load_experiment(exp_dir)
    reason = cannot_write(exp.path)
    if reason:  # before anything is trained: its runs, confirm.csv and the analysis go into the experiment
        raise UserError(f"{exp.path}: cannot write there ({reason}); a confirmation writes its runs, {CONFIRM_CSV} and "
                        f"the analysis into the experiment: confirm a writable copy (cp -r {exp.path} COPY; python -m "
                        "analysis.confirm COPY)")
    fr = compute_front(replace(exp, confirm=None))  # chosen on the search's own runs
    policies, curve = choose(fr, top)
    if curve.empty:
        log("note: no run of the unfrozen model finished: only the freezing policies are confirmed, and there is no "
            "shorter-training curve to compare them with")
    chosen = pd.concat([curve, policies])
    roles = {str(t): "curve" for t in curve["trial_id"]} | {str(t): "policy" for t in policies["trial_id"]}
    new = fresh_seeds(exp, seeds)
    jobs = confirm_jobs(exp, chosen, new)
    if threads is not None:
        recorded = sorted({j["train"]["threads"] for j in jobs if j["train"].get("threads")})
        if recorded and recorded != [threads]:
            log(f"note: computing with {threads} intra-op threads, while the search's trials used "
                f"{', '.join(map(str, recorded))}: the runs differ from the search's by more than their seeds")
        jobs = [{**j, "train": {**j["train"], "threads": threads}} for j in jobs]
    log(f"confirming {len(policies)} front polic{'y' if len(policies) == 1 else 'ies'} "
        f"({', '.join(map(str, policies['trial_id'])) or 'none'}) and {len(curve)} shorter-training point"
        f"{'' if len(curve) == 1 else 's'} ({', '.join(map(str, curve['trial_id'])) or 'none'}) on {len(new)} fresh "
        f"seeds {', '.join(map(str, new))}: {len(jobs)} runs")
    runs = (runner or _default_runner)(str(exp.path), jobs, log=log, **run_options)
    table = confirm_table(exp, chosen, roles, runs)
    path = atomic_write(exp.path / CONFIRM_CSV, table.to_csv(index=False))
    from analysis.run import run_analysis  # matplotlib: only when there is something to draw

    res = run_analysis(exp.path, quiet=quiet)
    knee = exp.path / POLICIES_DIR / "knee.json"
    if knee.is_file():
        try:
            export_policy(exp.path, pick="knee", out=knee)
            log(f"knee policy exported again with the confirmed means: {knee}")
        except UserError as exc:
            knee.unlink()
            log(f"{exc} (removed the search's {knee})")
    return ConfirmResult(path=path, table=table, seeds=new, policies=[str(t) for t in policies["trial_id"]],
                         curve=[str(t) for t in curve["trial_id"]], verdict=res.result.verdict, analysis=res)


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m analysis.confirm",
        description="Re-train the best front policies, the baseline and the shorter-training reference points of a "
        "finished search on fresh seeds (on Ray, with the search's resources), write confirm.csv and analyse the "
        "experiment again with the confirmed means: whether freezing beat training for fewer epochs, with a 95% "
        "interval.")
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="the experiment directory tune_main.py printed")
    p.add_argument("--top", type=int, default=DEFAULT_TOP,
                   help=f"freezing policies of the front to confirm (default {DEFAULT_TOP}; the knee first)")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help=f"fresh seeds per policy (default {DEFAULT_SEEDS}; the smallest the search never used)")
    p.add_argument("--address", help="Ray cluster to run on (default: the search's; local: a fresh local Ray)")
    p.add_argument("--connect-timeout", type=float, metavar="SECONDS",
                   help="how long the cluster at the address may take to answer (default: the search's, 30)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per run (default: the search's)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per run (default: the search's)")
    p.add_argument("--max-concurrent", type=int, help="runs at once (default: the search's)")
    p.add_argument("--threads", type=int,
                   help="intra-op CPU threads per run (default: what each trial recorded, so the runs differ "
                        "from the search's only in their seeds)")
    p.add_argument("--progress-interval", type=float, metavar="SECONDS",
                   help="seconds between status updates: a progress bar on a terminal, a status line in a log "
                        "(default 5 on a terminal, 60 otherwise; 0: none)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not Path(args.experiment_dir).is_dir():
        raise UserError(f"{args.experiment_dir}: no such directory (a local experiment directory; copy a remote "
                        "one first)")
    check_interval(args.progress_interval)  # before anything is chosen or trained
    try:
        res = confirm(args.experiment_dir, top=args.top, seeds=args.seeds, address=args.address,
                      connect_timeout=args.connect_timeout, cpus_per_trial=args.cpus_per_trial,
                      gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                      progress_interval=args.progress_interval, threads=args.threads)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runs stopped, nothing of them recorded
        print(f"\ninterrupted: this confirmation recorded nothing ({CONFIRM_CSV} and the analysis are as they were); "
              f"run it again to confirm: python -m analysis.confirm {args.experiment_dir}", file=sys.stderr)
        return 130
    print(f"\nconfirm.csv: {res.path}")
    print(res.verdict)
    return 0


if __name__ == "__main__":
    run_cli(main)
