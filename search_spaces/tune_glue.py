"""Glue between Ray Tune and the LayerOut trainer: the trial function, and the result tables.

``train_trial`` is the function trainable every trial runs: it builds the trainer from the trial
config (``search_spaces.space.trial_to_config``), reports DESIGN.md's metrics once per epoch
with a checkpoint, and resumes from Ray's checkpoint when the trial is restarted (a worker died,
or ``--resume`` after the driver was killed). It lives in an importable module (not in
``tune_main``'s ``__main__``) so Ray pickles it by reference.

``write_tables`` turns the stored per-trial results (Ray's ``result.json`` files, which keep an
ASHA-stopped trial's last metrics) into ``trials.csv`` and ``epochs.csv``. Ray is imported only
inside ``train_trial``; the table code needs pandas and pyarrow's file systems.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from analysis.results import flatten_config

# DESIGN.md "What a trial reports", plus the per-epoch extras of docs/ARCHITECTURE.md.
METRICS = ["epoch", "train_loss", "val_loss", "val_accuracy", "test_accuracy", "params_frozen_frac",
           "compute_saved_frac", "compute_spent_gflop", "time_saved_frac", "train_time_s"]
EXTRA_COLUMNS = ["lr", "frozen_units", "synthetic"]
RAY_SEEN_MARKER = "ray_seen_epoch.json"  # in a repaired checkpoint: the last epoch Ray's state recorded
TRIAL_EXTRA_COLUMNS = ["steps_per_epoch"]  # per trial (trials.csv only): what replaying its policy needs
TRIAL_FIRST_COLUMNS = ["trial_id", "status", "stopped_early", "paper_config", "family", "epochs_done"]


# ------------------------------------------------------------------------------ the trainable
def _reportable(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or v is None or isinstance(v, (int, float, str)):
            out[k] = v
        elif hasattr(v, "item"):  # numpy / torch scalars
            try:
                out[k] = v.item()
            except (TypeError, ValueError):
                out[k] = str(v)
        else:
            out[k] = str(v)
    return out


def train_trial(config: dict[str, Any], opts: dict[str, Any] | None = None) -> None:
    """Ray Tune function trainable: one LayerOut training run, reported every epoch."""
    import torch
    from ray import tune

    from layerout.schedules import schedule_from_dict
    from layerout.trainer import TrainConfig, Trainer

    opts = opts or {}
    threads = opts.get("threads")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    overrides: dict[str, Any] = {}
    if opts.get("data_dir"):
        overrides["data_dir"] = opts["data_dir"]
    if "download" in opts:
        overrides["download"] = bool(opts["download"])
    dev = config["train"].get("device", "auto")
    if dev == "auto":  # the GPU Ray assigned (CUDA_VISIBLE_DEVICES), else CPU
        import ray

        overrides["device"] = "cuda" if (ray.get_gpu_ids() and torch.cuda.is_available()) else "cpu"

    root = Path(tempfile.gettempdir()) / "layerout-tune-trials"
    root.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix=f"{tune.get_context().get_trial_id()}-", dir=root))

    def report(metrics: dict[str, Any], trainer: Any) -> None:
        m = _reportable(metrics)
        # What a policy file needs besides the experiment's units and the config's training
        # recipe: the schedule as it ran (drawn v, adaptive freeze epochs filled in) and the
        # steps per epoch it was bound to (FreezeOut's step-wise masks depend on it).
        m["policy"] = json.dumps(trainer.schedule.to_dict(), sort_keys=True)
        m["steps_per_epoch"] = int(trainer.steps_per_epoch)
        # report() copies out_dir (checkpoint.pt of this epoch) to the trial's storage before
        # returning, so the trainer may overwrite it next epoch.
        tune.report(m, checkpoint=tune.Checkpoint.from_directory(str(out_dir)))

    try:
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                shutil.copytree(d, out_dir, dirs_exist_ok=True)
            marker = out_dir / RAY_SEEN_MARKER  # left by repair_checkpoint_refs
            seen = None
            if marker.is_file():
                seen = json.loads(marker.read_text()).get("epoch")
                marker.unlink()
            trainer = Trainer.resume(str(out_dir), callbacks=[report], verbose=False, **overrides)
            if isinstance(seen, int):  # epochs the checkpoint holds but Ray never recorded: report them
                for m in trainer.history:
                    if int(m.get("epoch") or 0) > seen:
                        report(m, trainer)
        else:
            cfg = TrainConfig(**{**config["train"], **overrides})
            schedule = schedule_from_dict(config["schedule"])
            # quiet: the driver prints one line per finished trial (search_spaces.tune_ray)
            trainer = Trainer(cfg, schedule, out_dir=str(out_dir), callbacks=[report], verbose=False)
        trainer.fit()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def trial_dirname(trial: Any) -> str:
    """Short trial directory names: ``trial_<id>``."""
    return f"trial_{trial.trial_id}"


# ------------------------------------------------------------------------------ storage
def storage_fs(path: str):
    """(pyarrow FileSystem, path inside it) for a local path or a URI (s3://, gs://, ...)."""
    import pyarrow.fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def read_text(fs: Any, path: str) -> str | None:
    import pyarrow.fs as pafs

    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def write_text(fs: Any, path: str, text: str) -> None:
    """Write a file so that readers never see a half-written one (temp file + move)."""
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = path + ".tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode("utf-8"))
    try:
        fs.move(tmp, path)
    except OSError:  # some object stores: no rename; write in place
        with fs.open_output_stream(path) as f:
            f.write(text.encode("utf-8"))
        fs.delete_file(tmp)


def saved_trial_statuses(fs: Any, exp_dir: str) -> dict[str, str]:
    """trial id -> status in Ray Tune's newest ``experiment_state-*.json`` (what ``--resume`` will
    continue from). After an interrupted ``fit()`` the in-memory trials all read TERMINATED, but
    the saved state still says RUNNING / PENDING / PAUSED for the ones that did not finish.
    Empty when the file is missing or unreadable."""
    doc = _newest_state(fs, exp_dir)
    if doc is None:
        return {}
    out: dict[str, str] = {}
    for entry in doc.get("trial_data") or []:
        state = entry[0] if isinstance(entry, (list, tuple)) and entry else entry
        if isinstance(state, str):
            try:
                state = json.loads(state)
            except json.JSONDecodeError:
                continue
        if isinstance(state, dict) and state.get("trial_id") and state.get("status"):
            out[str(state["trial_id"])] = str(state["status"])
    return out


def _newest_state(fs: Any, exp_dir: str) -> dict[str, Any] | None:
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(exp_dir, recursive=False))
    except OSError:
        return None
    states = sorted(i.path for i in infos if i.base_name.startswith("experiment_state-")
                    and i.base_name.endswith(".json"))
    if not states:
        return None
    try:
        doc = json.loads(read_text(fs, states[-1]) or "{}")
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def repair_checkpoint_refs(exp_dir: str) -> list[str]:
    """Before ``--resume`` of a local experiment: give every unfinished trial the checkpoint that
    Ray Tune's saved state names for it.

    Ray saves the experiment state at most every ~10 s, but a trial deletes its previous
    checkpoint (``num_to_keep=1``) as soon as it reports a new one; a driver killed in between
    leaves a state naming a checkpoint that is gone, and Ray then fails that trial ("does not
    exist on storage anymore"). The newer checkpoint is there and is what the trial should
    continue from, so it is moved to the name the state expects, with a note of the last epoch
    the state recorded: ``train_trial`` reports the epochs after it again (their results were
    lost with the driver) before it trains on. Returns one line per repaired trial; does
    nothing for remote storage or a state it cannot read.
    """
    import re
    import shutil

    if not is_local(exp_dir):
        return []
    base = Path(exp_dir.replace("file://", ""))
    fs, p = storage_fs(str(base))
    doc = _newest_state(fs, p)
    out: list[str] = []
    for entry in (doc or {}).get("trial_data") or []:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
            continue
        try:
            state = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            meta = json.loads(entry[1]) if isinstance(entry[1], str) else entry[1]
            if state.get("status") == "TERMINATED":
                continue
            blob = (meta.get("checkpoint_manager") or {}).get("value") or ""
            names = sorted(set(re.findall(r"checkpoint_\d{6}", bytes.fromhex(blob).decode("latin-1"))))
        except (ValueError, TypeError, AttributeError):
            continue
        tdir = base / f"trial_{state.get('trial_id')}"
        if not names or not tdir.is_dir() or (tdir / names[-1]).exists():
            continue
        present = sorted(d.name for d in tdir.glob("checkpoint_*") if re.fullmatch(r"checkpoint_\d{6}", d.name))
        newer = [n for n in present if n > names[-1]]
        if newer:
            shutil.move(str(tdir / newer[-1]), str(tdir / names[-1]))
            seen = (meta.get("last_result") or {}).get("epoch")
            (tdir / names[-1] / RAY_SEEN_MARKER).write_text(json.dumps({"epoch": seen}))
            out.append(f"trial {state.get('trial_id')}: continues from {newer[-1]} (the saved state named "
                       f"{names[-1]}, deleted after it)")
    return out


# ------------------------------------------------------------------------------ result tables
def _trial_sort_key(trial_id: str) -> tuple:
    tail = trial_id.rsplit("_", 1)[-1]
    return (0, int(tail), trial_id) if tail.isdigit() else (1, 0, trial_id)


def read_result_lines(text: str | None) -> list[dict[str, Any]]:
    """Ray's result.json: one JSON object per reported epoch (bad trailing lines skipped)."""
    rows = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed driver
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def epochs_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch; where a restarted trial reported an epoch twice, the later report wins."""
    by_epoch: dict[Any, dict[str, Any]] = {}
    for r in rows:
        by_epoch[r.get("epoch", r.get("training_iteration"))] = r
    return [by_epoch[e] for e in sorted(by_epoch, key=lambda e: (e is None, e if e is not None else 0))]


def build_tables(trials: Iterable[dict[str, Any]], epochs_budget: int):
    """``trials``: dicts with trial_id, status, config, rows (result.json lines), error.

    Returns (trials DataFrame, epochs DataFrame) in the format of docs/ARCHITECTURE.md.
    """
    import pandas as pd

    trial_rows, epoch_rows = [], []
    trials = list(trials)
    numbers = [(t.get("config") or {}).get("optuna_trial") for t in trials]
    if all(isinstance(n, int) for n in numbers):  # the order the searcher suggested them in
        trials = [t for _, t in sorted(zip(numbers, trials), key=lambda p: p[0])]
    elif all(str(t["trial_id"]).rsplit("_", 1)[-1].isdigit() for t in trials):
        trials.sort(key=lambda t: _trial_sort_key(str(t["trial_id"])))
    for t in trials:  # otherwise in the order given (Ray's: creation order)
        per_epoch = epochs_of(t.get("rows") or [])
        config = t.get("config") or (per_epoch[-1].get("config") if per_epoch else {}) or {}
        last = per_epoch[-1] if per_epoch else {}
        done = int(last.get("epoch") or 0) if last else 0
        status = t.get("status") or ("TERMINATED" if done >= epochs_budget else "RUNNING")
        if t.get("error"):
            status = "ERROR"
        stopped = bool(status == "TERMINATED" and done < epochs_budget)
        row: dict[str, Any] = {
            "trial_id": str(t["trial_id"]), "status": status, "stopped_early": stopped,
            "paper_config": config.get("paper_config", "") or "", "family": config.get("family", ""),
            "epochs_done": done,
        }
        row.update(flatten_config({k: v for k, v in config.items() if k not in ("paper_config",)}, "config"))
        policy = last.get("policy") if last else None
        row["policy"] = policy if policy else json.dumps(config.get("schedule", {}), sort_keys=True)
        for c in TRIAL_EXTRA_COLUMNS:
            row[c] = last.get(c, math.nan) if last else math.nan
        for m in METRICS + EXTRA_COLUMNS:
            row[m] = last.get(m, math.nan) if last else math.nan
        if t.get("error"):
            row["error"] = str(t["error"]).strip().splitlines()[-1][:300] if str(t["error"]).strip() else "error"
        trial_rows.append(row)
        for r in per_epoch:
            epoch_rows.append({"trial_id": str(t["trial_id"]),
                               **{m: r.get(m, math.nan) for m in METRICS + EXTRA_COLUMNS}})
    trials_df = pd.DataFrame(trial_rows)
    if trials_df.empty:
        trials_df = pd.DataFrame(columns=TRIAL_FIRST_COLUMNS + ["policy"] + TRIAL_EXTRA_COLUMNS + METRICS
                                 + EXTRA_COLUMNS)
    else:
        cfg_cols = sorted(c for c in trials_df.columns if c.startswith("config/"))
        known = METRICS + EXTRA_COLUMNS + TRIAL_EXTRA_COLUMNS + ["policy", "error"]
        rest = [c for c in trials_df.columns if c not in TRIAL_FIRST_COLUMNS and c not in cfg_cols and c not in known]
        tail = ["error"] if "error" in trials_df.columns else []
        trials_df = trials_df[TRIAL_FIRST_COLUMNS + cfg_cols + rest + ["policy"] + TRIAL_EXTRA_COLUMNS + METRICS
                              + EXTRA_COLUMNS + tail]
    epochs_df = pd.DataFrame(epoch_rows, columns=["trial_id"] + METRICS + EXTRA_COLUMNS)
    return _tidy(trials_df), _tidy(epochs_df)


def _tidy(df):
    """Integer columns stay integers where some rows are empty (1, not 1.0)."""
    out = df.copy()
    for c in out.columns:
        s = out[c]
        if s.dtype == float and s.notna().any():
            vals = s.dropna()
            if (vals == vals.round()).all() and (vals.abs() < 2**53).all() and not c.endswith(("_frac", "accuracy",
                                                                                                "loss", "_s", "gflop", "lr")):
                out[c] = s.astype("Int64")
        elif s.dtype == object:
            vals = s.dropna()
            if len(vals) and all(isinstance(x, bool) for x in vals) and len(vals) < len(s):
                out[c] = s.astype("boolean")
    return out


def pareto_rows(trials_df, objectives: list[tuple[str, str]]):
    """Non-dominated trials among those that trained the full budget (TERMINATED, not stopped
    early), sorted by compute saved (the fallback table when ``analysis`` is not available)."""
    import pandas as pd

    names = [n for n, _ in objectives]
    df = trials_df[(trials_df["status"] == "TERMINATED") & (~trials_df["stopped_early"].astype(bool))]
    df = df.dropna(subset=[n for n in names if n in df.columns])
    if df.empty:
        return df
    sign = [1.0 if m == "max" else -1.0 for _, m in objectives]
    vals = [[s * float(r[n]) for n, s in zip(names, sign)] for _, r in df.iterrows()]
    keep = []
    for i, a in enumerate(vals):
        dominated = any(all(b[j] >= a[j] for j in range(len(a))) and any(b[j] > a[j] for j in range(len(a)))
                        for k, b in enumerate(vals) if k != i)
        keep.append(not dominated)
    front = df[pd.Series(keep, index=df.index)]
    sort_by = "compute_saved_frac" if "compute_saved_frac" in front.columns else names[-1]
    return front.sort_values(sort_by)


def pareto_text(front) -> str:
    def pct(x: Any) -> str:
        try:
            v = float(x)
        except (TypeError, ValueError):
            return "-"
        return "-" if math.isnan(v) else f"{100 * v:.2f}%"

    head = ["trial id", "family", "paper config", "val acc", "compute saved", "params frozen", "time saved"]
    rows = [[str(r["trial_id"]), str(r["family"]), str(r["paper_config"] or "-"), pct(r["val_accuracy"]),
             pct(r["compute_saved_frac"]), pct(r["params_frozen_frac"]), pct(r["time_saved_frac"])]
            for _, r in front.iterrows()]
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
             for cells in [head, ["-" * w for w in widths]] + rows]
    return "\n".join(lines)
