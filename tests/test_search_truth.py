"""Searches end to end (tune_main on digits, 3 epochs, CPU): the Optuna study agrees with the tool's
Pareto front and knows which trials were stopped early; a repeated configuration is not trained
twice; MOASHA's decisions survive a killed driver and --resume."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything starts Ray: loopback only

import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

import tune_main  # noqa: E402
from analysis.front import compute_front, hypervolume_history  # noqa: E402
from analysis.results import load_experiment  # noqa: E402
from helpers import digits_space, kill_driver_when  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
MIXED = """  layerout: {vector: per_unit, v: [0.0, 0.9], warmup_epochs: [0, 1], v_mode: [manual, random_epoch]}
  prefix: {k: [1, 2], start_epoch: [0, 1]}
  freezeout: {t0: [0.5, 1.0]}"""


def _space(tmp_path: Path, name: str, families: str, scheduler: str = "moasha", paper: bool = True) -> Path:
    return digits_space(tmp_path, name, families, EPOCHS, scheduler=scheduler, paper=paper)


def _tables(exp: Path) -> tuple[pd.DataFrame, dict]:
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str, "paper_config": str})
    return trials, json.loads((exp / "experiment.json").read_text())


def _ray_id(t: optuna.trial.FrozenTrial) -> str:
    return t.user_attrs.get("ray_trial_id") or t.user_attrs["repeat_of"]


def test_the_study_front_is_the_tools_front_and_stopped_trials_are_pruned(tmp_path, capsys):
    db = tmp_path / "study.db"
    space = _space(tmp_path, "truth", MIXED)
    rc = tune_main.main(["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "truth",
                         "--num-samples", "10", "--max-concurrent", "1", "--optuna-storage", f"sqlite:///{db}"])
    assert rc == 0
    out = capsys.readouterr().out
    exp = tmp_path / "res" / "truth"
    trials, meta = _tables(exp)
    assert meta["options"]["scheduler"] == "moasha" and len(trials) == 10
    stopped = trials[trials["stopped_early"]]
    assert len(stopped) >= 1, trials[["trial_id", "paper_config", "epochs_done", "val_accuracy"]]
    assert "(moasha stopped it)" in out and "hypervolume vs (0, 0)" in out

    study = optuna.load_study(study_name="truth", storage=f"sqlite:///{db}")
    assert study.user_attrs == {"model": "digits_cnn", "dataset": "digits", "epochs": EPOCHS,
                                "experiment_dir": str(exp)}
    ran = {t.user_attrs["ray_trial_id"]: t for t in study.trials if "ray_trial_id" in t.user_attrs}
    assert set(ran) == set(trials["trial_id"])
    for _, row in trials.iterrows():
        t = ran[row["trial_id"]]
        assert t.user_attrs["epochs_done"] == row["epochs_done"]
        assert t.user_attrs["stopped_early"] == bool(row["stopped_early"])
        assert t.user_attrs["schedule"] == json.loads(row["policy"])
        if row["stopped_early"]:
            assert t.state == TrialState.PRUNED and t.values is None and t.user_attrs["test_accuracy"] is None
        else:
            assert t.state == TrialState.COMPLETE
            assert t.values == [row["val_accuracy"], row["compute_saved_frac"]]
            assert t.user_attrs["test_accuracy"] == row["test_accuracy"]
    # Optuna's Pareto front (best_trials) is the tool's front, trial for trial
    front = compute_front(load_experiment(exp))
    assert {_ray_id(t) for t in study.best_trials} == set(front.front["trial_id"])
    assert not set(stopped["trial_id"]) & {_ray_id(t) for t in study.best_trials}

    # MOASHA's decisions are written down; every stopped trial stopped at a rung it lost
    rungs = pd.read_csv(exp / "rungs.csv", dtype={"trial_id": str})
    assert list(rungs.columns) == ["rung", "trial_id", "val_accuracy", "planned_compute_saved_frac", "rank", "of",
                                   "decision"]
    stops = rungs[rungs["decision"] == "stop"]
    assert dict(zip(stops["trial_id"], stops["rung"])) == dict(zip(stopped["trial_id"], stopped["epochs_done"]))
    assert rungs[rungs["decision"].str.startswith("kept")]["trial_id"].isin(
        trials.loc[trials["paper_config"].fillna("") != "", "trial_id"]).all()
    # the report's hypervolume history ends at the front's hypervolume
    hist = hypervolume_history(load_experiment(exp))
    assert len(hist) == 10 and hist["epochs_trained"].iloc[-1] == trials["epochs_done"].sum()
    assert hist["hypervolume"].iloc[-1] == front.hypervolume["(0, 0)"]
    assert hist["hypervolume"].is_monotonic_increasing and (exp / "hypervolume.png").stat().st_size > 10_000

    # a driver killed after proposing trials Ray had not saved yet leaves them RUNNING in the
    # database: --resume tells them FAIL (one proposed for a Ray trial, one killed before it had one)
    lost = [study.ask(), study.ask()]
    lost[0].set_user_attr("ray_trial_id", "deadbeef")
    before = {t.number: (t.state, t.values) for t in study.trials}
    assert tune_main.main(["--resume", str(exp), "--no-analysis"]) == 0
    assert "Optuna trials 10, 11 of the study ran in no trial Ray Tune saved" in capsys.readouterr().out
    after = {t.number: (t.state, t.values) for t in optuna.load_study(study_name="truth", storage=f"sqlite:///{db}").trials}
    assert after == before | {t.number: (TrialState.FAIL, None) for t in lost}


def test_a_repeated_configuration_is_not_trained_twice_in_a_search(tmp_path, capsys):
    # five configurations in all: none, and prefix k in {1, 2} from epoch 0 or 1
    space = _space(tmp_path, "rep", "  none: {}\n  prefix: {k: [1, 2], start_epoch: [0, 1]}", scheduler="none",
                   paper=False)
    db = tmp_path / "rep.db"
    rc = tune_main.main(["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "rep",
                         "--num-samples", "9", "--sampler", "random", "--optuna-storage", f"sqlite:///{db}",
                         "--no-analysis"])
    assert rc == 0  # not "interrupted": the search ran out of configurations
    out = capsys.readouterr().out
    exp = tmp_path / "res" / "rep"
    trials, meta = _tables(exp)
    policies = trials["policy"].map(lambda p: json.dumps(json.loads(p), sort_keys=True))
    assert len(trials) == 5 and policies.is_unique  # each configuration trained once
    assert (trials["epochs_done"] == EPOCHS).all()
    for tid in trials["trial_id"]:  # and each only once: one report per epoch
        lines = (exp / f"trial_{tid}" / "result.json").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == list(range(1, EPOCHS + 1))
    assert meta["exhausted"] is True and meta["repeats"] >= 1 and meta["finished"]
    assert "[repeat] Optuna trial" in out and "not trained again" in out
    assert "the search ended after 5 distinct configurations" in out
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{db}")
    by_ray = {t.user_attrs["ray_trial_id"]: t for t in study.trials if "ray_trial_id" in t.user_attrs}
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert len(repeats) == meta["repeats"]
    for t in repeats:  # told the result of the trial that trained it
        first = by_ray[t.user_attrs["repeat_of"]]
        assert t.state == first.state == TrialState.COMPLETE and t.values == first.values
        assert t.params == first.params


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "1"  # Ray's experiment snapshots every second (default: 10 s or more)
    return env


def _saved_moasha(exp: Path) -> dict | None:
    """MOASHA's state in Ray's newest saved callback states (what --resume starts from)."""
    files = sorted(exp.glob("callback-states-*.pkl"))
    if not files:
        return None
    try:
        states = pickle.loads(files[-1].read_bytes())
    except Exception:  # noqa: BLE001 - being rewritten
        return None
    found = [s["moasha"] for s in (states.values() if isinstance(states, dict) else states)
             if isinstance(s, dict) and "moasha" in s]
    return found[0] if found else None


def _epochs_reported(exp: Path) -> dict[str, int]:
    out = {}
    for d in exp.glob("trial_*"):
        f = d / "result.json"
        epochs = []
        for line in (f.read_text().splitlines() if f.exists() else []):
            try:
                epochs.append(json.loads(line)["epoch"])
            except (ValueError, KeyError):
                pass
        out[d.name.removeprefix("trial_")] = max(epochs, default=0)
    return out


def test_moasha_resume_after_the_driver_is_killed_keeps_its_decisions(tmp_path):
    n = 16
    space = _space(tmp_path, "kill", MIXED)
    exp = tmp_path / "res" / "killed"
    cmd = [sys.executable, str(ROOT / "tune_main.py"), "--space", str(space), "--storage", str(tmp_path / "res"),
           "--name", "killed", "--num-samples", str(n), "--max-concurrent", "1", "--no-analysis"]

    def stopped_some() -> bool:
        saved = _saved_moasha(exp)
        return bool(saved and any(d["decision"] == "stop" for d in saved["decisions"])
                    and len({d["trial_id"] for d in saved["decisions"]}) >= 7)

    kill_driver_when(cmd, tmp_path, _env(), stopped_some, timeout=200)
    saved = _saved_moasha(exp)  # the snapshot the resume starts from
    assert saved and any(d["decision"] == "stop" for d in saved["decisions"]), saved
    assert not (exp / "trials.csv").exists()
    before = _epochs_reported(exp)

    out = subprocess.run([sys.executable, str(ROOT / "tune_main.py"), "--resume", str(exp), "--no-analysis"],
                         cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trials, meta = _tables(exp)
    assert len(trials) == n and (trials["status"] == "TERMINATED").all() and meta["finished"]
    rungs = pd.read_csv(exp / "rungs.csv", dtype={"trial_id": str})
    final = {(r.rung, r.trial_id): (r.rank, r.of, r.decision) for r in rungs.itertuples()}
    # every decision of the saved state is in the final record, unchanged
    for d in saved["decisions"]:
        assert final[(d["rung"], d["trial_id"])] == (d["rank"], d["of"], d["decision"]), d
    # one result per trial at each rung it reached, trials that finished before the kill included
    # (they never report again: a scheduler whose rungs were lost would have no row for them)
    assert len(final) == len(rungs)
    done = dict(zip(trials["trial_id"], trials["epochs_done"]))
    for rung in (1, 2):
        assert set(rungs.loc[rungs["rung"] == rung, "trial_id"]) == {t for t, e in done.items() if e >= rung}
    # a trial stopped before the kill stayed stopped where it was stopped
    stopped = trials.set_index("trial_id")
    for d in saved["decisions"]:
        if d["decision"] == "stop":
            assert stopped.loc[d["trial_id"], "stopped_early"] and stopped.loc[d["trial_id"], "epochs_done"] == d["rung"]
            assert before[d["trial_id"]] == d["rung"]
    # the stopped trials are exactly the ones MOASHA stopped
    assert set(trials.loc[trials["stopped_early"], "trial_id"]) == set(rungs.loc[rungs["decision"] == "stop",
                                                                              "trial_id"])
