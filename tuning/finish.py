"""The end of a search: Ray Tune's ResultGrid as the experiment's tables (``trials.csv``,
``epochs.csv``, MOASHA's ``rungs.csv``), experiment.json brought up to date, and the
``SearchResult`` a caller gets."""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from layerout.experiment import (EPOCHS_CSV, EXPERIMENT_JSON, RESULT_JSON, RUNGS_CSV, TRIALS_CSV, TrialRecord,
                                 build_tables, meta_json, parse_result_lines, rungs_csv, tables_csv)
from layerout.files import WriteError
from tuning import internals, storage
from tuning.diskfull import NoSpace, is_no_space
from tuning.schedulers import MOASHA
from tuning.searcher import TruthfulOptunaSearch


@dataclass
class SearchResult:
    """What a search (or a resumed one) left: the experiment directory, its experiment.json and
    tables, and how it ended."""

    exp_dir: str
    meta: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    wall_s: float
    planned: int
    errors: int = 0
    unfinished: int = 0
    skipped_lines: int = 0  # result.json lines that were not JSON (torn by a kill)
    notes: list[str] = field(default_factory=list)
    exhausted: bool = False  # the searcher found no new configuration: fewer trials than planned, by design
    repeats: int = 0  # proposals that repeated a configuration already run (not trained again)
    user_error: str | None = None  # the search stopped: its first trials failed with this error (tuning.usercode)

    @property
    def interrupted(self) -> bool:
        return bool(not self.user_error and (self.unfinished or (len(self.trials) < self.planned
                                                                  and not self.exhausted)))

    @property
    def full_budget(self) -> int:
        t = self.trials
        return int(((t["status"] == "TERMINATED") & ~t["stopped_early"].astype(bool)).sum()) if len(t) else 0

    @property
    def stopped_early(self) -> int:
        return int(self.trials["stopped_early"].astype(bool).sum()) if len(self.trials) else 0


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _records(exp_dir: str, results: tune.ResultGrid) -> tuple[list[TrialRecord], int]:
    """One record per trial of the ResultGrid, with its stored result.json lines; trials that the
    saved Ray state still has unfinished are RUNNING (``--resume`` continues them)."""
    unfinished = {t.trial_id for t in internals.saved_trial_states(exp_dir)
                  if t.status in ("RUNNING", "PENDING", "PAUSED")}
    records, skipped = [], 0
    for r in results:
        path = str(r.path)
        rows, bad = parse_result_lines(storage.read_text(f"{path}/{RESULT_JSON}"))
        skipped += bad
        trial_id = Path(path).name.removeprefix("trial_")
        if r.error is not None:  # failed for good (Ray's saved state may still say RUNNING when its worker died)
            status, error = "ERROR", storage.read_text(f"{path}/error.txt") or str(r.error)
        elif trial_id in unfinished:
            status, error = "RUNNING", None
        else:
            status, error = "TERMINATED", None
        records.append(TrialRecord(trial_id=trial_id, status=status, config=dict(r.config or {}), rows=rows,
                                   error=error))
    return records, skipped


def _stopped_on_user_error(records: list[TrialRecord], searcher: Any) -> list[TrialRecord]:
    """A search stopped because its first trials failed with the same user error (``tuning.usercode``):
    the searcher hears how the trials stopped with it ended (Ray tells it nothing of those: Optuna
    would show them running), and those that never reported leave the tables (they trained nothing)."""
    if isinstance(searcher, TruthfulOptunaSearch):
        for r in records:
            searcher.on_trial_complete(r.trial_id, result=r.rows[-1] if r.rows else None)
    return [r for r in records if r.rows or r.error]


def finish(exp_dir: str, meta: dict[str, Any], results: tune.ResultGrid, wall_s: float,
            tuner: tune.Tuner) -> SearchResult:
    """Write trials.csv, epochs.csv, rungs.csv (MOASHA's decisions) and experiment.json."""
    try:
        return _write_end(exp_dir, meta, results, wall_s, tuner)
    except WriteError as exc:
        if is_no_space(exc):
            raise NoSpace(str(exc.path), f"the search's runs are saved: free some space, then python tune_main.py "
                                         f"--resume {exp_dir} writes its tables") from None
        raise


def _write_end(exp_dir: str, meta: dict[str, Any], results: tune.ResultGrid, wall_s: float,
               tuner: tune.Tuner) -> SearchResult:
    records, skipped = _records(exp_dir, results)
    searcher, scheduler = internals.tuner_searcher(tuner), internals.tuner_scheduler(tuner)
    user_error = getattr(internals.tuner_stopper(tuner), "reason", None)
    if user_error:
        records = _stopped_on_user_error(records, searcher)
    trials, epochs = build_tables(records, int(meta.get("epochs") or 0))
    trials_text, epochs_text = tables_csv(trials, epochs)
    storage.write_text(f"{exp_dir}/{TRIALS_CSV}", trials_text)
    storage.write_text(f"{exp_dir}/{EPOCHS_CSV}", epochs_text)
    if isinstance(scheduler, MOASHA):
        storage.write_text(f"{exp_dir}/{RUNGS_CSV}", rungs_csv(scheduler.decision_rows(),
                                                               [m for m, _ in scheduler.objectives]))
    exhausted = bool(getattr(searcher, "exhausted", False))
    repeats = int(getattr(searcher, "repeats", 0))
    n = len(trials)
    planned = int((meta.get("options") or {}).get("num_samples") or n)
    unfinished = int((~trials["status"].isin(["TERMINATED", "ERROR"])).sum()) if n else 0
    errors = int((trials["status"] == "ERROR").sum()) if n else 0
    result = SearchResult(exp_dir=exp_dir, meta=meta, trials=trials, epochs=epochs, wall_s=wall_s, planned=planned,
                          errors=errors, unfinished=unfinished, skipped_lines=skipped, exhausted=exhausted,
                          repeats=repeats, user_error=user_error)
    meta["repeats"] = repeats
    if user_error:
        meta["stopped_on_user_error"] = user_error
    if exhausted:
        meta["exhausted"] = True
    meta["finished"] = None if result.interrupted else now()
    if result.interrupted:
        meta["interrupted"] = now()
    else:
        meta.pop("interrupted", None)
    meta["wall_clock_s"] = round(float(meta.get("wall_clock_s") or 0) + wall_s, 1)
    meta["trials"] = n
    storage.write_text(f"{exp_dir}/{EXPERIMENT_JSON}", meta_json(meta))
    return result
