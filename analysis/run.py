"""``run_analysis``: everything ``python -m analysis`` does, callable from tune_main.py."""
from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis.curve import resolution_text
from analysis.export import build_policy, policy_filename, retrain_command, write_policy_file
from analysis.front import Front, compute_front, knee_rule_text
from analysis.plots import plot_compare, plot_curves, plot_front_policies, plot_hypervolume, plot_pareto
from analysis.report import write_report
from analysis.results import SYNTHETIC_NOTE, Experiment, load_experiment
from layerout.errors import UserError
from layerout.schedules.none import UNFROZEN
from layerout.experiment import PARETO_CSV, POLICIES_DIR
from layerout.files import WriteError, atomic_write, write_reason
from layerout.formatting import pct

FRONT_COLUMNS = [
    "rank", "knee", "trial_id", "family", "paper_config", "reference", "stopped", "val_accuracy",
    "compute_saved_frac", "curve_accuracy", "margin", "margin_ci_low", "margin_ci_high", "beyond_curve",
    "confirmed_runs", "time_saved_frac", "params_frozen_frac", "test_accuracy", "epochs_done", "status", "policy",
]


@dataclass
class AnalysisResult:
    """What one analysis produced. ``front``: the Pareto front table (pareto.csv rows);
    ``knee``: the knee's trial id; ``files``: name -> path of every file written;
    ``policies``: trial id -> front policy file; ``commands``: trial id -> retrain command;
    ``table``: the terminal table text."""

    experiment: Experiment
    result: Front
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    policies: dict[str, Path] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    table: str = ""
    compare: list[Experiment] = field(default_factory=list)

    @property
    def front(self) -> pd.DataFrame:
        return self.result.front

    @property
    def knee(self) -> str:
        return self.result.knee

    @property
    def hypervolume(self) -> dict[str, float]:
        return self.result.hypervolume


def front_table_text(fr: Front) -> str:
    """The front as a fixed-width terminal table (knee marked with *, stopped-early with ~; margin:
    over training the unfrozen model for fewer epochs at the same compute, in points)."""
    head = ["", "val acc", "compute saved", "margin", "time saved", "test acc", "family", "paper config / reference",
            "trial id"]
    rows = []
    for _, r in fr.front.iterrows():
        mark = ("*" if r["trial_id"] == fr.knee else "") + ("~" if bool(r.get("stopped", False)) else "")
        m = r.get("margin")
        margin = "-" if m is None or not math.isfinite(float(m)) else f"{100 * float(m):+.2f}"
        if margin != "-" and math.isfinite(float(r.get("margin_ci_low", math.nan))):
            margin += f" [{100 * float(r['margin_ci_low']):+.2f}, {100 * float(r['margin_ci_high']):+.2f}]"
        rows.append([mark, pct(r["val_accuracy"]), pct(r["compute_saved_frac"], 1), margin,
                     pct(r["time_saved_frac"], 1), pct(r["test_accuracy"]), str(r["family"]),
                     str(r["paper_config"] or r.get("reference", "") or "-"), str(r["trial_id"])])
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    right = {1, 2, 3, 4, 5}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    return "\n".join(lines)


def summary_text(exp: Experiment, fr: Front) -> str:
    obj = " and ".join(f"{n} ({m})" for n, m in fr.objectives)
    scope = "finished + stopped-early" if fr.include_stopped else "finished"
    lines = ([SYNTHETIC_NOTE] if exp.synthetic else []) + [fr.verdict] + [
             f"Pareto front of {exp.name}: {len(fr.front)} of {len(fr.candidates)} {scope} trials, "
             f"objectives {obj}; test accuracy is shown, never used to choose",
             front_table_text(fr),
             "  * knee" + ("   ~ stopped early by the scheduler" if fr.front.get("stopped", pd.Series()).any() else "")]
    if "(0, 0)" in fr.hypervolume:
        hv = f"hypervolume vs (0, 0): {fr.hypervolume['(0, 0)']:.5f}"
        if "(baseline, 0)" in fr.hypervolume:
            hv += (f"; vs (baseline {pct(fr.baseline_accuracy)}, 0): "
                   f"{fr.hypervolume['(baseline, 0)']:.5f}")
        else:
            hv += "; no baseline trial, so no hypervolume vs the baseline"
        lines.append(hv)
    k = fr.knee_row
    lines.append(f"knee: trial {k['trial_id']} ({k['family']}{', ' + k['paper_config'] if k['paper_config'] else ''}): "
                 f"val acc {pct(k['val_accuracy'])}, compute saved {pct(k['compute_saved_frac'], 1)}, "
                 f"time saved {pct(k['time_saved_frac'], 1)}{_single_seed(fr, k)}; {knee_rule_text(fr)}")
    if fr.dropped:
        lines.append(f"ignored (missing metrics): {', '.join(fr.dropped)}")
    noise = f"noise: {resolution_text(fr.val_images)}; "
    if fr.confirm is not None and len(fr.confirm):
        spread = fr.confirm.groupby("trial_id")["time_saved_frac"].std() if "time_saved_frac" in fr.confirm else None
        noise += (f"values of {fr.confirm['trial_id'].nunique()} trials are means over {fr.confirm['seed'].nunique()} "
                  "fresh seeds (confirm.csv), margins with their 95% interval")
        if spread is not None and spread.notna().any():
            noise += (f"; time saved varies between seeds by a standard deviation of up to "
                      f"{100 * float(spread.max()):.1f} points")
    else:
        noise += "one seed per point"
    lines.append(noise)
    return "\n".join(lines)


def pareto_csv_frame(fr: Front) -> pd.DataFrame:
    f = fr.front.copy()
    f.insert(0, "rank", range(1, len(f) + 1))
    first = [c for c in FRONT_COLUMNS if c in f.columns]
    return f[first + [c for c in f.columns if c not in first]]


def run_analysis(
    exp_dir: str | Path,
    include_stopped: bool = False,
    quiet: bool = False,
    out_dir: str | Path | None = None,
    compare: Sequence[str | Path] = (),
    write_policies: bool = True,
) -> AnalysisResult:
    """Analyse one experiment directory and write its files.

    Writes into ``out_dir`` (default: the experiment dir) ``pareto.csv``, ``pareto.png``,
    ``front_policies.png``, ``curves.png``, ``hypervolume.png``, ``report.html``, and (``write_policies``) every front
    policy as ``policies/<trial_id>.json`` so the report's retrain commands work; with
    ``compare`` also ``compare.png``. Prints the summary unless ``quiet``. Raises ``UserError``
    for a directory that is not an experiment or has no finished trial.
    """
    exp = load_experiment(exp_dir)
    fr = compute_front(exp, include_stopped=include_stopped)
    others = []
    for d in compare:
        e = load_experiment(d)
        others.append((e, compute_front(e, include_stopped=include_stopped)))
    out = Path(out_dir) if out_dir is not None else exp.path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(out, write_reason(exc)) from exc
    # Every file is made in a staging folder next to where it goes and moved into place only once
    # all are made: a failure half-way (a full disk, a bad row) replaces none of an earlier analysis.
    _remove_stale_stages(out)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{socket.gethostname()}-{os.getpid()}-", dir=out))
    except OSError as exc:
        raise WriteError(out / PARETO_CSV, write_reason(exc)) from exc
    try:
        try:
            res = _write_files(exp, fr, others, stage, out, write_policies)
        except WriteError as exc:  # named by the file it was for, not its staged copy
            raise WriteError(out / exc.path.relative_to(stage) if exc.path.is_relative_to(stage) else exc.path,
                             exc.reason) from exc.__cause__
        _publish(stage, out, res)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    res.table = summary_text(exp, fr)
    if not quiet:
        print(res.table)
        for e, f in others:
            print()
            print(summary_text(e, f))
        print()
        print("wrote " + ", ".join(str(p) for p in res.files.values()))
        if res.policies:
            print(f"front policies: {len(res.policies)} in {out / 'policies'}")
        print(f"report: {res.files['report.html']}")
    return res


STAGE_PREFIX = ".analysis-"  # + host-pid-: where an analysis makes its files before moving them into place


def _remove_stale_stages(out: Path) -> None:
    """Staging folders an analysis on this host left when it was killed (its process is gone)."""
    host = socket.gethostname()
    for d in out.glob(f"{STAGE_PREFIX}{host}-*-*"):
        pid = d.name[len(STAGE_PREFIX) + len(host) + 1:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists (another user's)
        return True
    return True


def _publish(stage: Path, out: Path, res: AnalysisResult) -> None:
    """Move the staged files into ``out`` (each ``os.replace``: a rename, which needs no space) and
    point the result's paths at them; a move that fails names the file it was for."""
    moved: dict[Path, Path] = {}
    for src in sorted(p for p in stage.rglob("*") if p.is_file()):
        dest = out / src.relative_to(stage)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
        except OSError as exc:
            raise WriteError(dest, write_reason(exc)) from exc
        moved[src] = dest
    res.out_dir = out
    res.files = {k: moved.get(v, v) for k, v in res.files.items()}
    res.policies = {k: moved.get(v, v) for k, v in res.policies.items()}


def _write_files(exp: Experiment, fr: Front, others: list[tuple[Experiment, Front]], out: Path, final: Path,
                 write_policies: bool) -> AnalysisResult:
    """Every file of the analysis, written into ``out`` (a staging folder; ``final``: where they go)."""
    res = AnalysisResult(experiment=exp, result=fr, out_dir=out, compare=[e for e, _ in others])
    res.files[PARETO_CSV] = atomic_write(out / PARETO_CSV, pareto_csv_frame(fr).to_csv(index=False))

    policy_rel: dict[str, str] = {}
    if write_policies:
        failed: list[tuple[str, str]] = []
        for _, r in fr.front.iterrows():
            label = "front (knee)" if r["trial_id"] == fr.knee else "front"
            dest = out / POLICIES_DIR / policy_filename(r["trial_id"])
            try:
                res.policies[r["trial_id"]] = write_policy_file(build_policy(exp, r, label), dest)
            except WriteError:
                raise
            except UserError as exc:
                failed.append((str(r["trial_id"]), str(exc).replace(str(out), str(final))))
        if failed:
            ids = ", ".join(t for t, _ in failed[:6]) + (" ..." if len(failed) > 6 else "")
            warnings.warn(f"no policy file for {len(failed)} front trial(s) ({ids}): {failed[0][1]}",
                          UserWarning, stacklevel=2)
    for _, r in fr.front.iterrows():
        rel = f"{POLICIES_DIR}/{policy_filename(r['trial_id'])}"
        policy_rel[r["trial_id"]] = rel if r["trial_id"] in res.policies else ""
        res.commands[r["trial_id"]] = retrain_command(exp, r, rel)

    images = {
        "pareto": plot_pareto(exp, fr, out / "pareto.png"),
        "front_policies": plot_front_policies(exp, fr, out / "front_policies.png"),
        "curves": plot_curves(exp, fr, out / "curves.png"),
        "hypervolume": plot_hypervolume(exp, fr, out / "hypervolume.png"),
    }
    if others:
        images["Fronts compared"] = plot_compare([(exp, fr)] + others, out / "compare.png")
    for p in images.values():
        res.files[p.name] = p
    res.files["report.html"] = write_report(out / "report.html", exp, fr, images, res.commands, policy_rel)
    return res


def _single_seed(fr: Front, knee: pd.Series) -> str:
    """After a confirmation the knee can be a policy it did not run (a confirmed one fell below the
    curve on its means): say so on the knee's line, not only in the verdict."""
    confirmed = fr.confirm is not None and len(fr.confirm) > 0
    if not confirmed or str(knee.get("family")) == UNFROZEN or int(knee.get("confirmed_runs") or 0) >= 2:
        return ""
    return " (the search's single seed: not one of the confirmed policies)"
