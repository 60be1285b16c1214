"""The experiment directory: the one place its format is written down in code (no Ray here).

``<storage>/<name>/`` holds Ray Tune's own files plus ours:

- ``experiment.json``: ``{"format": "layerout-experiment", "version": 1, "name", "space", "space_file",
  "options", "versions", "model", "dataset", "units", "epochs", "objectives", "created", "finished"}``;
- ``trials.csv``: one row per trial (``TRIAL_FIRST_COLUMNS``, flattened ``config/...`` columns, the
  schedule as it ran under ``policy``, ``steps_per_epoch``, then every metric of its last epoch);
- ``epochs.csv``: one row per trial-epoch (``trial_id`` + every metric);
- ``rungs.csv``: MOASHA's decisions, one row per result it ranked at a rung (``RUNGS_COLUMNS``);
- ``pareto.csv``, ``pareto.png``, ``report.html``, ``policies/*.json``: the analysis.
- ``confirm.csv`` and ``confirm/`` (Ray Tune's runs): ``python -m analysis.confirm``.

Each trial's directory (``trial_<id>/``) holds Ray's ``result.json``: one JSON object per reported
epoch. ``build_tables`` turns those into trials.csv and epochs.csv; the search writes them at its
end, and the analysis rebuilds them from ``result.json`` when they are missing. docs/FORMATS.md
describes every field.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from layerout.checks import short
from layerout.errors import UserError
from layerout.metrics import EXTRA_METRICS, METRICS, OBJECTIVE_METRICS, REPORT_ONLY, TRIAL_METRICS

FORMAT = "layerout-experiment"
VERSION = 1
EXPERIMENT_JSON = "experiment.json"
TRIALS_CSV = "trials.csv"
EPOCHS_CSV = "epochs.csv"
PARETO_CSV = "pareto.csv"
RUNGS_CSV = "rungs.csv"
POLICIES_DIR = "policies"
CONFIRM_CSV = "confirm.csv"  # python -m analysis.confirm: the front re-trained on fresh seeds
CONFIRM_DIR = "confirm"  # its Ray Tune experiment (one trial per policy and seed)
CONFIRM_RUNNING = ".confirm-running"  # a confirmation's runs until all have ended (then renamed confirm)
RESULT_JSON = "result.json"  # Ray Tune's per-trial results: one JSON object per reported epoch
USER_ERROR = "user_error"  # a result line with this key: the trial ended on a mistake in the user's code or data

TRIAL_STATUSES = ("TERMINATED", "ERROR", "RUNNING")  # RUNNING: not finished (--resume continues it)
# last_report_time: Ray's timestamp (unix seconds) of the trial's last report: the order trials ended in
# reference: a shorter-training reference point of the search ("baseline", "shorter-50%"), else empty
TRIAL_FIRST_COLUMNS = ["trial_id", "status", "stopped_early", "paper_config", "reference", "family", "epochs_done",
                       "last_report_time"]
# rungs.csv: rung (epoch), trial, the value of each objective the scheduler ranks on (between
# trial_id and rank), rank (1 = best) among how many results, decision (continue | stop | kept: <why>)
RUNGS_COLUMNS = ["rung", "trial_id", "rank", "of", "decision"]
# where an epoch ran: the Ray node's id (reported by the trial) and its address (Ray's own ``node_ip``);
# in trials.csv, the node of the trial's last epoch (a trial restarted after a node died moved)
NODE_COLUMNS = ["node_id", "node_ip"]
EPOCH_COLUMNS = ["trial_id", *METRICS, *EXTRA_METRICS, *NODE_COLUMNS]
# read as text: trial ids like "00001" and masks like "0110" must not become numbers
STR_COLUMNS = ["trial_id", "status", "paper_config", "reference", "family", "policy", "frozen_units", "error",
               *NODE_COLUMNS]


# ------------------------------------------------------------------------------ experiment.json
def check_meta(doc: Any, where: str) -> dict[str, Any]:
    """experiment.json's content, checked: a JSON object of our format and version."""
    if not isinstance(doc, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format", FORMAT) != FORMAT:
        raise UserError(f"{where}: field 'format' is {short(doc.get('format'))}; allowed: {short(FORMAT)}")
    if doc.get("version", VERSION) != VERSION:
        raise UserError(f"{where}: field 'version' is {short(doc.get('version'))}; this tool reads version {VERSION}")
    objectives = doc.get("objectives")
    if isinstance(objectives, list):
        named = [o[0] for o in objectives if isinstance(o, (list, tuple)) and o and isinstance(o[0], str)]
        never = [n for n in named if n in REPORT_ONLY]
        if never:
            raise UserError(f"{where}: field 'objectives' names {never[0]}, which is only reported, never used to "
                            f"select; allowed: {', '.join(OBJECTIVE_METRICS)}")
    return doc


def parse_meta(text: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return check_meta(doc, where)


def read_meta(exp_dir: str | Path) -> dict[str, Any]:
    """experiment.json of a local experiment directory (UserError naming the file if bad)."""
    path = Path(exp_dir) / EXPERIMENT_JSON
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{exp_dir}: not an experiment directory (no {EXPERIMENT_JSON} written by "
                        "tune_main.py)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    return parse_meta(text, str(path))


def meta_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=2, default=str) + "\n"


# ------------------------------------------------------------------------------ result.json
def parse_result_lines(text: str | None) -> tuple[list[dict[str, Any]], int]:
    """Ray's result.json: (one dict per reported epoch, number of lines that were not a JSON
    object). A killed trial or driver can leave a torn last line; such lines are skipped, and
    the caller decides whether to say so."""
    rows, bad = [], 0
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad += 1
    return rows, bad


def epochs_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch; where a restarted trial reported an epoch twice, the later report wins."""
    by_epoch: dict[Any, dict[str, Any]] = {}
    for i, r in enumerate(rows):
        by_epoch[r.get("epoch", r.get("training_iteration", i + 1))] = r
    return [by_epoch[e] for e in sorted(by_epoch, key=lambda e: (e is None, e if e is not None else 0))]


# ------------------------------------------------------------------------------ tables
def flatten_config(d: dict, prefix: str) -> dict[str, Any]:
    """A nested config as trials.csv columns: ``{"train": {"epochs": 8}}`` -> ``prefix/train/epochs``;
    lists as JSON."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            out.update(flatten_config(v, key))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(list(v))
        else:
            out[key] = v
    return out


@dataclass
class TrialRecord:
    """What is known of one trial: its id, status (``TRIAL_STATUSES``, or None to infer it from
    the epochs reported), config, reported result rows, and error text if it failed."""

    trial_id: str
    status: str | None
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _trial_sort_key(trial_id: str) -> tuple:
    tail = trial_id.rsplit("_", 1)[-1]
    return (0, int(tail), trial_id) if tail.isdigit() else (1, 0, trial_id)


def _ordered(records: list[TrialRecord]) -> list[TrialRecord]:
    """In the order the searcher suggested them (Optuna trial numbers), else by trial id number,
    else as given (Ray's creation order)."""
    numbers = [r.config.get("optuna_trial") for r in records]
    if records and all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        return [r for _, r in sorted(zip(numbers, records), key=lambda p: p[0])]
    if all(str(r.trial_id).rsplit("_", 1)[-1].isdigit() for r in records):
        return sorted(records, key=lambda r: _trial_sort_key(str(r.trial_id)))
    return list(records)


def _is_value(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _nan_if_none(x: Any) -> Any:
    return math.nan if x is None else x


def build_tables(records: Iterable[TrialRecord], epochs_budget: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials table, epochs table) in the trials.csv / epochs.csv format.

    A trial's final metrics are its last epoch's (test accuracy: the latest one reported); it is
    ``stopped_early`` when it ended TERMINATED short of its own budget: its recipe's
    ``train.epochs`` (a shorter-training reference point, or a ``budget_frac`` trial, trains fewer
    epochs than ``epochs_budget`` and is finished when it has trained them), else ``epochs_budget``.
    """
    trial_rows, epoch_rows = [], []
    for t in _ordered(list(records)):
        user_error = next((str(r[USER_ERROR]) for r in reversed(t.rows) if r.get(USER_ERROR)), None)
        t = TrialRecord(t.trial_id, t.status, t.config, [r for r in t.rows if not r.get(USER_ERROR)],
                        t.error or user_error)  # a user error: the trial failed, with that message
        per_epoch = epochs_of(t.rows)
        config = t.config or (per_epoch[-1].get("config") if per_epoch else None) or {}
        last = per_epoch[-1] if per_epoch else {}
        done = int(last.get("epoch") or 0) if last else 0
        own = trial_budget(config, epochs_budget)
        status = t.status or ("TERMINATED" if done >= own else "RUNNING")
        if t.error:
            status = "ERROR"
        schedule = config.get("schedule") or {}
        row: dict[str, Any] = {
            "trial_id": str(t.trial_id), "status": status,
            "stopped_early": bool(status == "TERMINATED" and done < own),
            "paper_config": config.get("paper_config", "") or "",
            "reference": config.get("reference", "") or "",
            "family": config.get("family", "") or schedule.get("kind", ""),
            "epochs_done": done,
            "last_report_time": last.get("timestamp", math.nan) if last else math.nan,
        }
        row.update(flatten_config({k: v for k, v in config.items() if k not in ("paper_config", "reference")},
                                  "config"))
        # the schedule as it ran (drawn vectors, adaptive freeze epochs), else the one asked for
        row["policy"] = last.get("policy") or json.dumps(schedule, sort_keys=True)
        for c in (*TRIAL_METRICS, *METRICS, *EXTRA_METRICS, *NODE_COLUMNS):
            row[c] = _nan_if_none(last.get(c)) if last else math.nan
        tests = [r["test_accuracy"] for r in per_epoch if _is_value(r.get("test_accuracy"))]
        if tests:
            row["test_accuracy"] = tests[-1]
        if t.error:
            lines = str(t.error).strip().splitlines()
            row["error"] = lines[-1][:300] if lines else "error"
        trial_rows.append(row)
        for r in per_epoch:
            epoch_rows.append({"trial_id": str(t.trial_id), **{m: r.get(m, math.nan) for m in EPOCH_COLUMNS[1:]}})
    known = [*TRIAL_METRICS, *METRICS, *EXTRA_METRICS, *NODE_COLUMNS]
    trials = pd.DataFrame(trial_rows)
    if trials.empty:
        trials = pd.DataFrame(columns=[*TRIAL_FIRST_COLUMNS, "policy", *known])
    else:
        cfg_cols = sorted(c for c in trials.columns if c.startswith("config/"))
        rest = [c for c in trials.columns
                if c not in TRIAL_FIRST_COLUMNS and c not in cfg_cols and c not in known and c not in ("policy", "error")]
        tail = ["error"] if "error" in trials.columns else []
        trials = trials[[*TRIAL_FIRST_COLUMNS, *cfg_cols, *rest, "policy", *known, *tail]]
    epochs = pd.DataFrame(epoch_rows, columns=EPOCH_COLUMNS)
    return _tidy(trials), _tidy(epochs)


def trial_budget(config: dict[str, Any] | None, epochs_budget: int) -> int:
    """The epochs a trial was asked to train: its recipe's ``train.epochs`` (fewer than the
    search's budget for a shorter-training reference point or a ``budget_frac`` trial), else
    ``epochs_budget``."""
    train = (config or {}).get("train")
    e = train.get("epochs") if isinstance(train, dict) else None
    return int(e) if isinstance(e, int) and not isinstance(e, bool) and e > 0 else int(epochs_budget)


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Integer columns stay integers where some rows are empty (1, not 1.0)."""
    out = df.copy()
    for c in out.columns:
        s = out[c]
        if s.dtype == float and s.notna().any():
            vals = s.dropna()
            if ((vals == vals.round()).all() and (vals.abs() < 2**53).all()
                    and not c.endswith(("_frac", "accuracy", "loss", "_s", "gflop", "lr"))):
                out[c] = s.astype("Int64")
        elif s.dtype == object:
            vals = s.dropna()
            if len(vals) and all(isinstance(x, bool) for x in vals) and len(vals) < len(s):
                out[c] = s.astype("boolean")
    return out


def rungs_csv(rows: list[dict[str, Any]], objectives: list[str]) -> str:
    """The text of rungs.csv from the scheduler's decision rows (``RUNGS_COLUMNS``, with the
    objectives it ranks on after ``trial_id``)."""
    cols = [*RUNGS_COLUMNS[:2], *objectives, *RUNGS_COLUMNS[2:]]
    return pd.DataFrame(rows, columns=cols).to_csv(index=False)


def tables_csv(trials: pd.DataFrame, epochs: pd.DataFrame) -> tuple[str, str]:
    """The text of trials.csv and epochs.csv."""
    return trials.to_csv(index=False), epochs.to_csv(index=False)


def is_cut_short(path: Path) -> bool:
    """True when a table file does not end with a complete line (a copy or write cut off mid-row:
    ``tables_csv`` always ends with a newline, and pandas would silently read the partial row)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return False
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except OSError:
        return False


def has_no_rows(path: Path) -> bool:
    """True when a table file holds its header line at most (cut short before its first row)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return False
    return len(head) < (1 << 20) and head.rstrip(b"\n").count(b"\n") == 0


def as_stored(table: pd.DataFrame) -> pd.DataFrame:
    """A table built in memory (``build_tables``) as it reads back from its CSV file: the same
    column types as trials.csv / epochs.csv read by ``read_table`` (numbers, text columns as text,
    empty cells as NaN), whichever way the analysis got it."""
    text = table.to_csv(index=False)
    if not text.strip():
        return table
    return pd.read_csv(io.StringIO(text), dtype={c: str for c in STR_COLUMNS if c in table.columns},
                       keep_default_na=True)


def read_table(path: Path, required: list[str], drop_partial_line: bool = False) -> pd.DataFrame:
    """trials.csv or epochs.csv, with the text columns read as text (``drop_partial_line``: without
    a last line cut off mid-row)."""
    try:
        if drop_partial_line:
            text = path.read_text()
            source: Any = io.StringIO(text[: text.rfind("\n") + 1])
        else:
            source = path
        df = pd.read_csv(source, dtype={c: str for c in STR_COLUMNS}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=required)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: cannot read as CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    return df
