"""Read a stored experiment directory into pandas, without Ray.

An experiment directory (docs/ARCHITECTURE.md) holds ``experiment.json``, ``trials.csv`` (one
row per trial) and ``epochs.csv`` (one row per trial-epoch), next to Ray Tune's own files. When
the CSV files are missing (a search that was killed before writing them, or results copied
without them) the tables are rebuilt from Ray Tune's per-trial ``result.json`` files: JSON lines,
one per reported epoch, each carrying the metrics plus ``trial_id``, ``config`` and ``done``.

``load_experiment(dir)`` returns an :class:`Experiment`; ``select_trials`` picks the trials that
may enter a Pareto front (by default only those that trained the full epoch budget).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerout.errors import UserError
from layerout.experiment import (CONFIRM_CSV, CONFIRM_DIR, EPOCH_COLUMNS, EPOCHS_CSV, EXPERIMENT_JSON, FORMAT,
                                 POLICIES_DIR, RESULT_JSON, TRIALS_CSV, USER_ERROR, VERSION, TrialRecord, as_stored,
                                 build_tables, has_no_rows, is_cut_short, parse_result_lines, read_meta, read_table)
from layerout.metrics import DEFAULT_OBJECTIVES, METRICS
from layerout.schedules.none import UNFROZEN

_RAY_SKIP_DIRS = {POLICIES_DIR, CONFIRM_DIR, "__pycache__", ".git"}
# confirm.csv: the columns every run row needs (python -m analysis.confirm writes them)
CONFIRM_REQUIRED = ["kind", "trial_id", "seed", "val_accuracy", "compute_saved_frac"]
SYNTHETIC_NOTE = ("SYNTHETIC DATA: these trials trained on random tensors (throughput measurement); "
                  "their accuracies mean nothing")


@dataclass
class Experiment:
    """One experiment's stored results.

    ``meta``: experiment.json (a minimal stand-in when only Ray's files exist);
    ``trials``: one row per trial (trials.csv columns, normalized: ``trial_id`` and text columns
    as str, ``stopped_early`` as bool, ``epochs_done`` as float, missing metric columns as NaN);
    ``epochs``: one row per trial-epoch; ``source``: where the tables came from
    (``"csv"``, ``"ray"`` or ``"csv+ray"``); ``confirm``: confirm.csv's rows of one run each
    (``kind == "run"``: a trial re-trained on one fresh seed), or None when the front was not
    confirmed.
    """

    meta: dict
    trials: pd.DataFrame
    epochs: pd.DataFrame
    path: Path = field(default_factory=Path)
    source: str = "csv"
    confirm: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def epoch_budget(self) -> int | None:
        """Epochs every trial was asked to train (experiment.json ``epochs``; inferred if absent)."""
        e = self.meta.get("epochs")
        if isinstance(e, (int, float)) and not isinstance(e, bool) and e > 0:
            return int(e)
        return None

    @property
    def objectives(self) -> tuple[tuple[str, str], ...]:
        obj = self.meta.get("objectives")
        try:
            pairs = tuple((str(n), str(m)) for n, m in obj)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            return DEFAULT_OBJECTIVES
        return pairs if len(pairs) >= 2 else DEFAULT_OBJECTIVES

    @property
    def val_images(self) -> int | None:
        """Images in the validation split (the most common over the trials; None if not recorded):
        one image is ``1 / val_images`` of validation accuracy."""
        col = pd.to_numeric(self.trials.get("val_images", pd.Series(dtype=float)), errors="coerce").dropna()
        return int(col.mode().iloc[0]) if len(col) else None

    @property
    def units(self) -> list[str]:
        u = self.meta.get("units")
        return [str(x) for x in u] if isinstance(u, list) else []

    @property
    def model(self) -> str | None:
        return self.meta.get("model") or _first_config_value(self.trials, "model")

    @property
    def dataset(self) -> str | None:
        return self.meta.get("dataset") or _first_config_value(self.trials, "dataset")

    @property
    def synthetic(self) -> bool:
        """Trained on random tensors (the ``synthetic`` dataset): accuracies mean nothing."""
        if self.dataset == "synthetic":
            return True
        col = self.trials.get("synthetic")
        return bool(col is not None and col.map(lambda x: str(x).strip().lower() in ("true", "1")).any())


def _first_config_value(trials: pd.DataFrame, key: str) -> Any:
    for col in (f"config/{key}", f"config/train/{key}", key):
        if col in trials.columns:
            vals = trials[col].dropna()
            if len(vals):
                return vals.iloc[0]
    return None


# --------------------------------------------------------------------------------------------
# loading


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Load ``exp_dir`` into an :class:`Experiment`.

    Uses experiment.json, trials.csv and epochs.csv; a missing trials.csv or epochs.csv is
    rebuilt from Ray Tune's ``result.json`` files under ``exp_dir``. Raises ``UserError`` when the
    directory does not exist, is not an experiment (no experiment.json and no Ray results), a
    file is malformed, or no trial has reported anything yet.
    """
    path = Path(exp_dir)
    if not path.exists():
        raise UserError(f"{path}: no such directory")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory (expected an experiment directory)")
    meta_file = path / EXPERIMENT_JSON
    trials_file, epochs_file = path / TRIALS_CSV, path / EPOCHS_CSV
    meta: dict | None = None
    if meta_file.exists():
        meta = read_meta(path)

    ray_trials: pd.DataFrame | None = None
    ray_epochs: pd.DataFrame | None = None
    have_trials, have_epochs = trials_file.exists(), epochs_file.exists()
    cut = [f for f in (trials_file, epochs_file) if f.exists() and is_cut_short(f)]
    empty = [f for f in (trials_file, epochs_file) if f.exists() and f not in cut and has_no_rows(f)]
    result_files = _find_ray_results(path) if cut or empty or not (have_trials and have_epochs) else []
    # a table without rows is cut short when Ray's results hold some (not: every trial failed before an epoch)
    empty = [f for f in empty if result_files and (f == trials_file or _any_epoch(result_files))]
    known: pd.DataFrame | None = None  # the rows of a cut trials.csv that survived whole
    if cut or empty:
        names = " and ".join(f.name for f in cut + empty)
        how = ("cut short mid-line" if cut and not empty else "cut short (no rows after the header)" if not cut
               else "cut short")
        if result_files:  # Ray's own results are whole: rebuild both tables from them
            warnings.warn(f"{path}: {names} {how}; the tables were rebuilt from Ray's result.json "
                          f"files ({len(result_files)} trials)", UserWarning, stacklevel=2)
            if have_trials and trials_file not in empty:
                known = read_table(trials_file, required=["trial_id"], drop_partial_line=trials_file in cut)
            have_trials = have_epochs = False
        else:
            warnings.warn(f"{path}: {names} cut short mid-line and no Ray result.json files to rebuild from; "
                          "its last, partial row is left out", UserWarning, stacklevel=2)
    if not (have_trials and have_epochs):
        if result_files:
            ray_trials, ray_epochs = _rebuild_from_ray(result_files, meta, known)
        elif meta is None:
            raise UserError(
                f"{path}: not an experiment directory (no experiment.json, trials.csv or Ray "
                "result.json files); pass the directory tune_main.py printed, e.g. results/demo-..."
            )

    if meta is None:
        meta = {"name": path.name, "format": FORMAT, "version": VERSION,
                "note": "experiment.json missing; rebuilt from Ray Tune's result.json files"}
    sources = []
    if have_trials:
        trials = read_table(trials_file, required=["trial_id"], drop_partial_line=trials_file in cut)
        sources.append("csv")
    elif ray_trials is not None:
        trials = ray_trials
        sources.append("ray")
    else:
        raise UserError(f"{path}: experiment has no trials yet (no trials.csv and no Ray result.json files)")
    if have_epochs:
        epochs = read_table(epochs_file, required=["trial_id"], drop_partial_line=epochs_file in cut)
        if "csv" not in sources:
            sources.append("csv")
    elif ray_epochs is not None:
        epochs = ray_epochs
        if "ray" not in sources:
            sources.append("ray")
    else:
        epochs = pd.DataFrame(columns=EPOCH_COLUMNS)

    if "epochs" not in meta or meta.get("epochs") in (None, 0):
        guess = _guess_epoch_budget(trials, epochs)
        if guess:
            meta = {**meta, "epochs": guess, "epochs_inferred": True}
    trials = _normalize_trials(trials, meta, epochs, trials_file if have_trials else path)
    epochs = _normalize_epochs(epochs)
    if trials.empty:
        raise UserError(f"{trials_file if have_trials else path}: experiment has no trials yet")
    return Experiment(meta=meta, trials=trials, epochs=epochs, path=path, source="+".join(sources),
                      confirm=read_confirm(path / CONFIRM_CSV))


def read_confirm(path: Path) -> pd.DataFrame | None:
    """confirm.csv's run rows (``kind == "run"``), ``trial_id`` as text; None when there is no
    file. A file without the columns a run needs is a UserError naming it."""
    if not path.is_file():
        return None
    df = read_table(path, required=CONFIRM_REQUIRED)
    runs = df[df["kind"].astype(str) == "run"].copy()
    runs["trial_id"] = runs["trial_id"].astype(str)
    for c in ("seed", "val_accuracy", "compute_saved_frac", "time_saved_frac", "test_accuracy"):
        if c in runs.columns:
            runs[c] = pd.to_numeric(runs[c], errors="coerce")
    if runs["seed"].isna().any():
        raise UserError(f"{path}: column 'seed' is empty in a row of kind 'run'")
    return runs.reset_index(drop=True)


def experiment_from_tables(meta: dict, trials: pd.DataFrame, epochs: pd.DataFrame, path: Path) -> Experiment:
    """An Experiment from tables already in memory (a search that just ended, on remote storage)."""
    return Experiment(meta=meta, trials=_normalize_trials(trials, meta, epochs, path),
                      epochs=_normalize_epochs(epochs), path=path, source="memory")




def _guess_epoch_budget(trials: pd.DataFrame, epochs: pd.DataFrame) -> int | None:
    for col in ("config/epochs", "config/train/epochs"):
        if col in trials.columns:
            v = pd.to_numeric(trials[col], errors="coerce").dropna()
            if len(v):
                return int(v.max())
    for df, col in ((trials, "epochs_done"), (trials, "epoch"), (epochs, "epoch")):
        if col in df.columns:
            v = pd.to_numeric(df[col], errors="coerce").dropna()
            if len(v):
                return int(v.max())
    return None


def _to_bool(x: Any) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return False
    if isinstance(x, (int, float, np.integer, np.floating)):
        return bool(x)
    return str(x).strip().lower() in ("true", "1", "yes", "y", "t")


def _family_of(policy: Any) -> str:
    try:
        d = json.loads(policy) if isinstance(policy, str) else policy
    except (TypeError, ValueError):
        return ""
    return str(d.get("kind", "")) if isinstance(d, dict) else ""


def _normalize_trials(trials: pd.DataFrame, meta: dict, epochs: pd.DataFrame, where: Path) -> pd.DataFrame:
    t = _with_numeric_metrics(trials)
    if "status" not in t.columns:
        t["status"] = "TERMINATED"
    t["status"] = t["status"].fillna("").astype(str).str.upper()
    t["stopped_early"] = t["stopped_early"].map(_to_bool) if "stopped_early" in t.columns else False
    for col in ("paper_config", "reference", "family", "policy"):
        if col not in t.columns:
            t[col] = ""
        t[col] = t[col].fillna("").astype(str)
    missing_family = t["family"] == ""
    if missing_family.any():
        t.loc[missing_family, "family"] = t.loc[missing_family, "policy"].map(_family_of)
    if "epochs_done" not in t.columns:
        t["epochs_done"] = np.nan
    t["epochs_done"] = pd.to_numeric(t["epochs_done"], errors="coerce")
    no_done = t["epochs_done"].isna()
    if no_done.any():
        t.loc[no_done, "epochs_done"] = t.loc[no_done, "epoch"]
        if "epoch" in epochs.columns and len(epochs):
            last = pd.to_numeric(epochs["epoch"], errors="coerce").groupby(epochs["trial_id"].astype(str)).max()
            still = t["epochs_done"].isna()
            t.loc[still, "epochs_done"] = t.loc[still, "trial_id"].map(last)
    return t.reset_index(drop=True)


def _normalize_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    return _with_numeric_metrics(epochs).reset_index(drop=True)


def _with_numeric_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with string trial ids and every metric column numeric (missing ones NaN)."""
    out = df.copy()
    out["trial_id"] = out["trial_id"].astype(str)
    for col in METRICS:
        if col not in out.columns:
            out[col] = np.nan
        out[col] = pd.to_numeric(out[col], errors="coerce")
    return out


# --------------------------------------------------------------------------------------------
# Ray Tune fallback


def _find_ray_results(path: Path) -> list[Path]:
    out = []
    for f in sorted(path.rglob(RESULT_JSON)):
        rel = f.relative_to(path).parts
        if any(p in _RAY_SKIP_DIRS or p.startswith(".") for p in rel[:-1]):
            continue
        out.append(f)
    return out


def _any_epoch(files: list[Path]) -> bool:
    """Whether any of Ray's result.json files holds an epoch's result (not only a user error)."""
    for f in files:
        try:
            rows, _ = parse_result_lines(f.read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if any(not r.get(USER_ERROR) for r in rows):
            return True
    return False


def _ray_record(file: Path) -> TrialRecord:
    """One trial as Ray Tune left it: result.json lines, params.json, error.txt."""
    tdir = file.parent
    try:
        rows, bad = parse_result_lines(file.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot read ({exc})") from None
    if bad:
        warnings.warn(f"{file}: skipped {bad} line(s) that are not JSON objects (a trial killed mid-write?)",
                      UserWarning, stacklevel=3)
    config: dict = {}
    if rows and isinstance(rows[-1].get("config"), dict):
        config = rows[-1]["config"]
    elif (tdir / "params.json").exists():
        try:
            loaded = json.loads((tdir / "params.json").read_text())
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            config = {}
    # no result line (it failed before its first report): the id in its folder's name (tuning.trainable.trial_dirname)
    trial_id = str(rows[-1].get("trial_id")) if rows and rows[-1].get("trial_id") else tdir.name.removeprefix("trial_")
    error = None
    for name in ("error.txt", "error.pkl"):
        if (tdir / name).exists():
            error = (tdir / "error.txt").read_text(errors="replace") if name == "error.txt" else "error"
            break
    # Ray marks a result done=True only in older versions; otherwise build_tables infers it: a trial
    # that trained its budget is TERMINATED, one that did not is still RUNNING
    status = "ERROR" if error else "TERMINATED" if rows and rows[-1].get("done") else None
    return TrialRecord(trial_id=trial_id, status=status, config=config, rows=rows, error=error)


def _rebuild_from_ray(files: list[Path], meta: dict | None,
                      known: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials/epochs tables from Ray Tune's per-trial result.json files, with the column types
    trials.csv and epochs.csv have (``as_stored``). A trial short of its budget ended (stopped
    early) when the search finished (experiment.json ``finished``); else its status is the one a
    surviving row of the cut trials.csv (``known``) gives, or RUNNING."""
    records = [_ray_record(f) for f in files]
    status = {} if known is None or "status" not in known else dict(
        zip(known["trial_id"].astype(str), known["status"].fillna("").astype(str).str.upper()))
    finished = bool(meta and meta.get("finished"))
    for r in records:
        if r.status is None:
            r.status = status.get(str(r.trial_id)) or ("TERMINATED" if finished else None)
    budget = meta.get("epochs") if meta else None
    if not (isinstance(budget, int) and not isinstance(budget, bool) and budget > 0):
        budgets = [r.config.get("train", {}).get("epochs") for r in records if isinstance(r.config.get("train"), dict)]
        budget = max((b for b in budgets if isinstance(b, int)), default=0)
    trials, epochs = build_tables(records, budget)
    return as_stored(trials), as_stored(epochs)


# --------------------------------------------------------------------------------------------
# which trials count


def trial_epochs(trials: pd.DataFrame, budget: int | None) -> pd.Series:
    """The epochs each trial was asked to train: its recipe's ``train.epochs`` (fewer than the
    search's budget for a shorter-training reference point or a ``budget_frac`` trial), else
    ``budget`` (NaN where neither is known)."""
    col = trials["config/train/epochs"] if "config/train/epochs" in trials.columns else pd.Series(np.nan, trials.index)
    out = pd.to_numeric(col, errors="coerce")
    return out.fillna(float(budget)) if budget else out


def own_budget(exp: Experiment) -> pd.Series | None:
    """``trial_epochs`` of the experiment's trials; None when no trial's is known."""
    own = trial_epochs(exp.trials, exp.epoch_budget)
    return None if own.isna().all() else own


def finished_mask(exp: Experiment) -> pd.Series:
    """Trials that trained their whole budget (their own, ``own_budget``), or ended TERMINATED and
    not stopped early."""
    t = exp.trials
    budget = own_budget(exp)
    full = pd.Series(False, index=t.index)
    if budget is not None:
        full = t["epochs_done"].fillna(-1) >= budget
    natural = (t["status"] == "TERMINATED") & ~t["stopped_early"].astype(bool)
    if budget is not None:
        # TERMINATED without a flag but short of its budget was stopped by the scheduler
        natural &= ~(t["epochs_done"].fillna(budget) < budget.fillna(0))
    return full | natural


def stopped_mask(exp: Experiment) -> pd.Series:
    """Trials the scheduler (MOASHA or ASHA) stopped before their budget."""
    t = exp.trials
    flagged = t["stopped_early"].astype(bool)
    budget = own_budget(exp)
    if budget is not None:
        flagged |= (t["status"] == "TERMINATED") & (t["epochs_done"].fillna(budget) < budget.fillna(0))
    return flagged & ~finished_mask(exp)


def select_trials(exp: Experiment, include_stopped: bool = False) -> pd.DataFrame:
    """Trials that may enter the front, with a ``stopped`` column (True = stopped early by the scheduler, included).

    By default only finished trials (full epoch budget); ``include_stopped`` adds the ones the
    scheduler stopped early. Raises ``UserError`` if none qualifies.
    """
    fin = finished_mask(exp)
    stop = stopped_mask(exp)
    keep = fin | (stop if include_stopped else False)
    out = exp.trials[keep].copy()
    out["stopped"] = stop[keep].astype(bool)
    if out.empty:
        counts = exp.trials["status"].replace("", "UNKNOWN").value_counts().to_dict()
        desc = ", ".join(f"{n} {s}" for s, n in counts.items())
        hint = ""
        if stop.any() and not include_stopped:
            hint = f"; {int(stop.sum())} were stopped early by the scheduler: add --include-stopped to use them"
        budget = exp.epoch_budget
        raise UserError(
            f"{exp.path}: no finished trial (none reached the {budget}-epoch budget; trials: {desc}){hint}"
            if budget else f"{exp.path}: no finished trial (trials: {desc}){hint}"
        )
    return out


def baseline_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The unfrozen baseline trials of the whole budget (paper config or reference ``baseline``,
    or family ``none`` not trained shorter)."""
    fam = trials["family"].astype(str).str.lower()
    pc = trials["paper_config"].astype(str).str.lower()
    ref = trials["reference"].astype(str) if "reference" in trials.columns else pd.Series("", index=trials.index)
    shorter = (pd.to_numeric(trials["config/train/budget_epochs"], errors="coerce").notna()
               if "config/train/budget_epochs" in trials.columns else pd.Series(False, index=trials.index))
    return trials[(pc == "baseline") | (ref == "baseline") | ((fam == UNFROZEN) & ~shorter)]
