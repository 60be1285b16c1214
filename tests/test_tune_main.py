"""tune_main.py end to end on CPU: real searches on digits through the command line's code path.

Every search here starts its own local Ray on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) and
shuts it down before returning (tune_main.main does both); a search on a cluster of two nodes is
tests/test_cluster.py. Small: 3 epochs of digits_cnn per trial.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything starts Ray: loopback only

import pandas as pd  # noqa: E402

import tune_main  # noqa: E402
from helpers import METRIC_COLUMNS, cli_env, digits_space, kill_driver_when, kill_group  # noqa: E402
from layerout.policy import load_policy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = METRIC_COLUMNS
EPOCHS = 3


def _space(tmp_path: Path, name: str, families: str, extra: str = "") -> Path:
    return digits_space(tmp_path, name, families, EPOCHS, scheduler="asha", extra=extra)


MIXED = """  layerout: {vector: per_unit, v: [0.0, 0.9], warmup_epochs: [0, 1], v_mode: [manual, random_epoch]}
  prefix: {k: [1, 2], start_epoch: [0, 1]}
  freezeout: {t0: [0.5, 1.0]}"""


def _read(exp: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str, "paper_config": str, "frozen_units": str})
    epochs = pd.read_csv(exp / "epochs.csv", dtype={"trial_id": str, "frozen_units": str})
    meta = json.loads((exp / "experiment.json").read_text())
    return trials, epochs, meta


def _result_lines(trial_dir: Path) -> list[dict]:
    f = trial_dir / "result.json"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def test_search_writes_experiment_trials_and_epochs(tmp_path, capsys):
    space = _space(tmp_path, "four", MIXED)
    rc = tune_main.main(["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "four",
                         "--num-samples", "4"])
    assert rc == 0
    out = capsys.readouterr().out
    exp = tmp_path / "res" / "four"
    trials, epochs, meta = _read(exp)
    assert len(trials) == 4 and trials["trial_id"].is_unique
    for col in ["trial_id", "status", "stopped_early", "paper_config", "family", "epochs_done", "policy",
                *METRICS, "lr", "frozen_units", "config/train/model", "config/schedule/kind"]:
        assert col in trials.columns, col
    for col in ["trial_id", *METRICS]:
        assert col in epochs.columns, col
    # where each trial and epoch ran: the local Ray's one node, on loopback
    assert (epochs["node_ip"] == "127.0.0.1").all() and epochs["node_id"].nunique() == 1
    assert trials["node_id"].tolist() == [epochs["node_id"].iloc[0]] * 4 and len(trials["node_id"].iloc[0]) == 56
    # the paper's configurations come first and are marked
    assert trials["paper_config"].fillna("").tolist() == ["baseline", "since_start", "warmup_random", "efreeze"]
    assert trials["family"].tolist() == ["none", "layerout", "layerout", "layerout"]
    assert (trials["status"] == "TERMINATED").all()
    full = trials[~trials["stopped_early"]]
    assert len(full) >= 1 and (full["epochs_done"] == EPOCHS).all()
    assert full[METRICS].notna().all().all()  # test_accuracy is filled at the last epoch
    assert trials[[m for m in METRICS if m != "test_accuracy"]].notna().all().all()
    assert trials.loc[trials["paper_config"] == "baseline", "compute_saved_frac"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    # one epochs.csv row per trial-epoch
    assert len(epochs) == int(trials["epochs_done"].sum())
    for tid, g in epochs.groupby("trial_id"):
        assert g["epoch"].tolist() == list(range(1, len(g) + 1))
    pol = json.loads(trials.loc[trials["paper_config"] == "efreeze", "policy"].iloc[0])
    assert pol["kind"] == "layerout" and pol["v"] == [0.9, 0.5, 0.1] and pol["warmup_epochs"] == 1
    assert meta["format"] == "layerout-experiment" and meta["version"] == 1 and meta["name"] == "four"
    assert meta["units"] == ["conv1", "conv2", "head"] and meta["epochs"] == EPOCHS
    assert meta["objectives"] == [["val_accuracy", "max"], ["compute_saved_frac", "max"]]
    assert meta["finished"] and meta["created"] and {"python", "torch", "ray", "optuna"} <= set(meta["versions"])
    assert meta["options"]["num_samples"] == 4 and meta["space"]["model"] == "digits_cnn"
    # one console line per finished trial, then the Pareto table and where the files are
    assert sum(line.startswith("[") and "/4] trial " in line for line in out.splitlines()) == 4, out
    assert "Pareto front of four" in out and "knee:" in out
    for name in ("pareto.png", "report.html"):
        assert (exp / name).is_file() and str(exp / name) in out, name
    assert (exp / "pareto.png").stat().st_size > 10_000
    assert (trials["steps_per_epoch"] == 21).all()  # ceil(1294 training images / 64): digits, 10% held out
    assert out.strip().splitlines()[-1].startswith("verdict: ")
    knee_file = exp / "policies" / "knee.json"  # the knee among the policies above the shorter-training curve
    if knee_file.is_file():
        assert str(knee_file) in out
    else:  # none is above it on this run: said so; the front's knee anyway
        assert "knee policy: none: no front policy beats training for fewer epochs" in out
        from analysis.export import export_policy

        knee_file = export_policy(exp, pick="knee", ignore_curve=True, out=tmp_path / "knee.json")

    # the knee's policy file loads, carries the recipe, and replays without Ray
    knee = load_policy(knee_file)
    assert knee.model == "digits_cnn" and knee.units == ["conv1", "conv2", "head"]
    prov = knee.provenance
    assert (prov["dataset"], prov["epochs"], prov["batch_size"], prov["seed"], prov["steps_per_epoch"]) == (
        "digits", EPOCHS, 64, 0, 21)
    assert prov["train"]["augment"] is False and prov["train"]["lr_milestones"] == []

    # efreeze's policy replayed by layerout.train in a fresh process that would compute with 2
    # threads: the recipe's recorded thread count (the trial's one) makes the replay exact
    from analysis.export import build_policy, write_policy_file
    from analysis.results import load_experiment

    e = load_experiment(exp)
    row = e.trials[e.trials["paper_config"] == "efreeze"].iloc[0]
    assert (trials["threads"] == 1).all() and (trials["time_clock"] == "process_cpu").all()
    pfile = write_policy_file(build_policy(e, row, "test"), tmp_path / "efreeze.json")
    assert load_policy(pfile).provenance["train"]["threads"] == 1
    proc = subprocess.run([sys.executable, "-m", "layerout.train", "--policy", str(pfile), "--out",
                           str(tmp_path / "replay"), "--quiet"], env={**cli_env(), "OMP_NUM_THREADS": "2"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "intra-op threads" not in proc.stdout  # the recorded count: nothing to say
    summary = json.loads((tmp_path / "replay" / "summary.json").read_text())
    assert summary["config"]["epochs"] == EPOCHS and summary["config"]["augment"] is False
    assert summary["config"]["threads"] == 1
    replay = pd.read_csv(tmp_path / "replay" / "epochs.csv", dtype={"frozen_units": str})
    ran = epochs[epochs["trial_id"] == row["trial_id"]]
    assert replay["frozen_units"].tolist() == ran["frozen_units"].tolist()
    for m in ("val_accuracy", "compute_saved_frac", "train_loss", "val_loss"):  # equal, not close
        assert replay[m].tolist() == ran[m].tolist(), m
    for m in ("val_accuracy", "test_accuracy", "compute_saved_frac"):
        assert summary["metrics"][m] == row[m], m


def test_asha_stops_a_clearly_worse_trial_and_keeps_its_row(tmp_path, capsys):
    # After the paper's configurations, every trial freezes (almost) every unit from epoch 0 on.
    high = "  layerout: {vector: per_unit, v: [0.97, 1.0], warmup_epochs: 0, v_mode: manual}"
    space = _space(tmp_path, "asha", high, extra="")
    rc = tune_main.main(["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "asha",
                         "--num-samples", "7", "--max-concurrent", "1", "--no-analysis", "--data-dir", "unused"])
    assert rc == 0
    # digits is bundled: --data-dir is said to be unused, once
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
    assert notes == ["note: --data-dir unused is not used: the digits dataset is bundled with scikit-learn, "
                     "no files are read"]
    trials, epochs, _ = _read(tmp_path / "res" / "asha")
    assert len(trials) == 7
    stopped = trials[trials["stopped_early"]]
    assert len(stopped) >= 1, trials[["trial_id", "paper_config", "epochs_done", "val_accuracy"]]
    assert (stopped["status"] == "TERMINATED").all() and (stopped["epochs_done"] < EPOCHS).all()
    assert stopped["val_accuracy"].notna().all() and stopped["compute_saved_frac"].notna().all()
    for tid, done in zip(stopped["trial_id"], stopped["epochs_done"]):
        assert (epochs["trial_id"] == tid).sum() == done
    # the paper's configurations are the reference points: ASHA never stops them
    paper = trials[trials["paper_config"].fillna("") != ""]
    assert len(paper) == 5 and not paper["stopped_early"].any() and (paper["epochs_done"] == EPOCHS).all()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _finished_trials(exp: Path) -> set[str]:
    done = set()
    for d in exp.glob("trial_*"):
        if any(r.get("epoch") == EPOCHS for r in _result_lines(d)):
            done.add(d.name.removeprefix("trial_"))
    return done


def _midway_trials(exp: Path) -> set[str]:
    out = set()
    for d in exp.glob("trial_*"):
        epochs = [r.get("epoch") or 0 for r in _result_lines(d)]
        if epochs and 1 <= max(epochs) < EPOCHS:
            out.add(d.name.removeprefix("trial_"))
    return out


@pytest.fixture
def private_tmp():
    """A temp folder of its own for the driver and its Ray (TMPDIR; short, for Ray's socket paths)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="lt13-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _scratch_in_temp(tmp: Path) -> list[str]:
    """Trial scratch folders left in a temp folder (where trials kept their checkpoints before)."""
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_dir() and p.name == "layerout-tune-trials"
                  and any(p.iterdir()))


def test_resume_after_the_driver_is_killed(tmp_path, private_tmp):
    n = 12  # warm digits trials take about a second: enough of them that the kill lands mid-search
    space = _space(tmp_path, "res", MIXED)
    exp = tmp_path / "res" / "killed"
    cmd = [sys.executable, str(ROOT / "tune_main.py"), "--space", str(space), "--storage", str(tmp_path / "res"),
           "--name", "killed", "--num-samples", str(n), "--max-concurrent", "1", "--scheduler", "none",
           "--no-analysis"]
    env = {**_env(), "TMPDIR": str(private_tmp)}
    finished: list = []

    def two_finished() -> bool:
        finished[:] = [_finished_trials(exp)]
        return len(finished[0]) >= 2

    kill_driver_when(cmd, tmp_path, env, two_finished, timeout=150, settle=0.3)  # the third has started
    finished_before = finished[0]
    assert len(finished_before) < n
    assert not (exp / "trials.csv").exists()
    # the killed trial's scratch (a checkpoint) is in its own folder, not in the system's temp folder
    assert _scratch_in_temp(private_tmp) == []

    out = subprocess.run([sys.executable, str(ROOT / "tune_main.py"), "--resume", str(exp), "--no-analysis"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _scratch_in_temp(private_tmp) == []
    assert sorted(exp.glob("trial_*/scratch")) == []  # every trial ended and cleared its scratch
    trials, epochs, meta = _read(exp)
    assert len(trials) == n and trials["trial_id"].is_unique
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == EPOCHS).all()
    assert finished_before <= set(trials["trial_id"])
    for tid in trials["trial_id"]:
        lines = _result_lines(exp / f"trial_{tid}")
        starts = [r for r in lines if r.get("epoch") == 1]
        assert len(starts) == 1, f"trial {tid} was trained from scratch again"
        if tid in finished_before:
            assert len(lines) == EPOCHS, f"finished trial {tid} ran again after --resume"
    assert len(epochs) == n * EPOCHS
    assert meta["finished"] and meta.get("resumed")
    assert trials["paper_config"].fillna("").tolist()[:5] == ["baseline", "since_start", "warmup_random",
                                                             "efreeze", "dfreeze"]


def test_sigterm_stops_gracefully_and_resume_finishes(tmp_path):
    """SIGTERM is Ctrl-C: running trials stop, the tables of what finished are written (the
    unfinished one marked RUNNING), exit 130; --resume then completes the search."""
    space = _space(tmp_path, "term", MIXED)
    exp = tmp_path / "res" / "term"
    cmd = [sys.executable, str(ROOT / "tune_main.py"), "--space", str(space), "--storage", str(tmp_path / "res"),
           "--name", "term", "--num-samples", "10", "--max-concurrent", "1", "--scheduler", "none",
           "--no-analysis", "--optuna-storage", f"sqlite:///{tmp_path / 'term.db'}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), start_new_session=True)
    try:
        deadline = time.time() + 150
        # interrupt when a trial has finished and, if we catch one, another is half-way
        while time.time() < deadline and proc.poll() is None and not (
                _finished_trials(exp) and (_midway_trials(exp) or len(_finished_trials(exp)) >= 3)):
            time.sleep(0.02)
        assert proc.poll() is None, "the search ended before it could be interrupted"
        finished_before = _finished_trials(exp)
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, out[-3000:]
    assert f"python tune_main.py --resume {exp}" in out and "Tuner.restore" not in out
    trials, _, meta = _read(exp)
    # what finished before the signal is in the tables with its whole budget; the search was cut short
    assert finished_before and finished_before <= set(trials["trial_id"]), (finished_before, trials)
    assert (trials.set_index("trial_id").loc[sorted(finished_before), "epochs_done"] == EPOCHS).all(), trials
    assert (trials["epochs_done"] == EPOCHS).sum() < 10, trials
    assert meta["finished"] is None and meta["interrupted"]
    assert not trials["stopped_early"].any()  # interrupted trials are not "stopped by ASHA"
    # nor are they told to Optuna: they stay RUNNING there until --resume finishes them
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="term", storage=f"sqlite:///{tmp_path / 'term.db'}")
    told = {t.user_attrs.get("ray_trial_id"): t.state for t in study.trials}
    unfinished = set(trials.loc[trials["status"] == "RUNNING", "trial_id"])
    assert all(told[tid] == TrialState.RUNNING for tid in unfinished), told
    assert {told[tid] for tid in finished_before} == {TrialState.COMPLETE}
    assert TrialState.PRUNED not in told.values()

    res = subprocess.run([sys.executable, str(ROOT / "tune_main.py"), "--resume", str(exp), "--no-analysis"],
                         cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials, epochs, meta = _read(exp)
    assert len(trials) == 10 and (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == EPOCHS).all()
    assert len(epochs) == 10 * EPOCHS and meta["finished"] and "interrupted" not in meta
    study = optuna.load_study(study_name="term", storage=f"sqlite:///{tmp_path / 'term.db'}")
    done = [t for t in study.trials if "ray_trial_id" in t.user_attrs]
    assert sorted(t.user_attrs["ray_trial_id"] for t in done) == sorted(trials["trial_id"])
    assert all(t.state == TrialState.COMPLETE for t in done)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tune_main.py"), *args], cwd=cwd, capture_output=True,
                          text=True, env=_env(), timeout=120)


def test_bad_input_exits_2_with_one_line(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: digits_cnn\nfamilies: {layerout: [\n")
    notexp = tmp_path / "notexp"
    notexp.mkdir()
    (notexp / "notes.txt").write_text("keep me")
    cases = {"yaml": ["--space", str(bad)], "preset": ["--preset", "no-such-preset"],
             "notexp": ["--resume", str(notexp)], "missing": ["--resume", str(tmp_path / "missing")],
             "gpus": ["--preset", "demo", "--gpus-per-trial", "-1"], "list": ["--list-presets"]}
    with ThreadPoolExecutor(max_workers=3) as pool:  # side by side: each is mostly interpreter start-up
        outs = dict(zip(cases, pool.map(lambda args: _cli(*args, cwd=tmp_path), cases.values())))
    for name, out in outs.items():
        if name != "list":
            assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, (name, out.stderr)
            assert "Traceback" not in out.stderr
    assert outs["yaml"].stderr.startswith(f"error: {bad}: not valid YAML")
    assert "unknown preset 'no-such-preset'; available: demo" in outs["preset"].stderr
    assert "not an experiment directory" in outs["notexp"].stderr
    assert sorted(p.name for p in notexp.iterdir()) == ["notes.txt"] and (notexp / "notes.txt").read_text() == "keep me"
    assert "--gpus-per-trial" in outs["gpus"].stderr

    out = outs["list"]
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.strip().splitlines()]
    assert {"demo", "paper-mnist", "paper-cifar10-vgg16", "paper-cifar10-resnet110", "paper-cifar100-vgg16",
            "paper-cifar100-resnet110"} <= set(names)


def test_existing_experiment_is_not_overwritten(tmp_path):
    exp = tmp_path / "res" / "taken"
    exp.mkdir(parents=True)
    (exp / "experiment.json").write_text("{}")
    out = _cli("--preset", "demo", "--storage", str(tmp_path / "res"), "--name", "taken", cwd=tmp_path)
    assert out.returncode == 2 and "already exists" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert (exp / "experiment.json").read_text() == "{}"


def test_unwritable_storage_is_one_line_and_starts_nothing(tmp_path):
    from helpers import assert_one_line_error, run_module, tree

    ro = tmp_path / "ro"
    ro.mkdir()
    proc = run_module("tune_main", ["--preset", "demo", "--storage", ro / "results", "--name", "x"], read_only=[ro],
                      cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, f"error: --storage {ro / 'results'}: cannot write there (permission denied); use a "
                                "folder you can write")
    assert tree(ro) == {}
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    from layerout.errors import UserError

    with pytest.raises(UserError, match=rf"^--storage {re.escape(str(a_file))}: cannot write there \("):
        tune_main.main(["--preset", "demo", "--storage", str(a_file), "--name", "x"])
    assert a_file.read_text() == "keep me"


def test_alias_bomb_space_is_one_short_line(tmp_path):
    from helpers import assert_one_line_error, run_module

    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("model: digits_cnn\ndataset: digits\ntrain:\n  epochs: 3\n  lr_milestones: [\n"
                    + "".join(f"    {lv},\n" for lv in levels) + "  ]\n")
    proc = run_module("tune_main", ["--space", bomb, "--storage", tmp_path / "res"], cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, f"error: {bomb}: expands to more than 100,000 values")
    assert len(proc.stderr) < 400 and not (tmp_path / "res").exists()


def test_resume_of_a_search_ray_never_saved_starts_it_afresh(tmp_path, monkeypatch, capsys):
    """The driver died after writing experiment.json, before Ray Tune saved anything: --resume starts
    the search afresh from experiment.json's settings (the same --name still refuses)."""
    import tuning.study

    space = _space(tmp_path, "fresh", MIXED)

    def driver_dies(*args, **kwargs):
        raise RuntimeError("the driver dies here")

    monkeypatch.setattr(tuning.study, "make_searcher", driver_dies)
    args = ["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "fresh", "--num-samples", "3",
            "--scheduler", "none", "--no-analysis"]
    with pytest.raises(RuntimeError, match="the driver dies here"):
        tune_main.main(args)
    monkeypatch.undo()
    exp = tmp_path / "res" / "fresh"
    assert (exp / "experiment.json").is_file() and not (exp / "tuner.pkl").exists()
    meta_before = json.loads((exp / "experiment.json").read_text())
    from layerout.errors import UserError

    with pytest.raises(UserError, match="already exists; continue it with --resume"):
        tune_main.main(args)
    space.write_text("this file changed since; the stored settings count\n")
    res = subprocess.run([sys.executable, str(ROOT / "tune_main.py"), "--resume", str(exp), "--no-analysis"],
                         cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Ray Tune saved no state before the search stopped: starting it afresh with the settings in " \
           "experiment.json" in res.stdout
    trials, epochs, meta = _read(exp)
    assert len(trials) == 3 and (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == EPOCHS).all()
    assert trials["paper_config"].fillna("").tolist() == ["baseline", "since_start", "warmup_random"]
    assert meta["finished"] and len(meta["restarted"]) == 1
    assert meta["created"] == meta_before["created"] and meta["space"] == meta_before["space"]


@pytest.fixture(scope="module")
def small_search(tmp_path_factory):
    """A finished 2-trial search, run with umask 002 (group-writable files by default)."""
    root = tmp_path_factory.mktemp("small")
    space = _space(root, "small", MIXED)
    old = os.umask(0o002)
    try:
        rc = tune_main.main(["--space", str(space), "--storage", str(root / "res"), "--name", "small",
                             "--num-samples", "2", "--scheduler", "none", "--no-analysis"])
    finally:
        os.umask(old)
    assert rc == 0
    return root / "res" / "small"


def test_search_files_are_not_writable_by_others_and_resume_trusts_them(small_search, tmp_path):
    exp = small_search
    for p in [exp, *exp.rglob("*")]:
        assert not p.stat().st_mode & 0o022, f"{p} is writable by group or others"
    res = subprocess.run([sys.executable, str(ROOT / "tune_main.py"), "--resume", str(exp), "--no-analysis"],
                         cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 of 2 trials" in res.stdout


@pytest.mark.parametrize("target, mode, who", [(".", 0o775, "its group"), ("tuner.pkl", 0o646, "others")])
def test_resume_refuses_what_other_users_can_write(small_search, tmp_path, target, mode, who):
    from helpers import assert_one_line_error, tree

    exp = small_search
    path = exp / target
    old = path.stat().st_mode
    before = tree(exp)
    os.chmod(path, mode)
    try:
        out = _cli("--resume", str(exp), cwd=tmp_path)
    finally:
        os.chmod(path, old)
    assert_one_line_error(out, f"error: --resume {exp}: {path.resolve() if target == '.' else path} can be written "
                               f"by {who} (mode ", "resuming runs code stored there",
                          f"(if you trust it: chmod -R go-w {exp})")
    assert tree(exp) == before


def test_resume_with_a_damaged_tuner_pkl_is_one_line(small_search, tmp_path):
    import shutil

    from helpers import assert_one_line_error, tree

    exp = tmp_path / "copy"
    shutil.copytree(small_search, exp)
    (exp / "tuner.pkl").write_bytes(b"\x80\x05 not a pickle at all")
    before = tree(exp)
    out = _cli("--resume", str(exp), cwd=tmp_path)
    assert_one_line_error(out, f"error: {exp}/tuner.pkl: cannot restore the search from it (",
                          "Ray Tune's saved state is damaged")
    assert tree(exp) == before


@pytest.mark.parametrize("pattern, damage", [("searcher-state-*.pkl", b"\x80\x05\x95 truncated"),
                                            ("experiment_state-*.json", b'{"trial_data": [')])
def test_resume_with_a_damaged_saved_state_refuses_before_anything_starts(small_search, tmp_path, pattern, damage):
    """Ray Tune would log the damage and start the search from scratch in the same folder,
    overwriting its tables: the newest saved states are read first, as Ray reads them."""
    import shutil

    from helpers import tree
    from layerout.errors import UserError

    exp = tmp_path / "copy"
    shutil.copytree(small_search, exp)
    target = max(exp.glob(pattern))
    target.write_bytes(damage)
    before = tree(exp)
    with pytest.raises(UserError, match=rf"^{re.escape(str(target))}: cannot restore the search from it \("
                                        r".*\); Ray Tune's saved state is damaged$"):
        tune_main.main(["--resume", str(exp), "--no-analysis"])
    assert tree(exp) == before


def test_a_restore_ray_gives_up_on_is_an_error_not_a_new_search(small_search, tmp_path, monkeypatch):
    """What check_restorable cannot foresee: Ray's own "Failed to restore the run state" stops the
    resume (internals.restore_failure_guard) before a trial runs; only ray.log changes."""
    import shutil

    import tuning.internals as internals
    from helpers import tree
    from layerout.errors import UserError

    exp = tmp_path / "copy"
    shutil.copytree(small_search, exp)
    max(exp.glob("searcher-state-*.pkl")).write_bytes(b"\x80\x05\x95 truncated")
    monkeypatch.setattr(internals, "check_restorable", lambda exp_dir: None)
    before = {k: v for k, v in tree(exp).items() if k != "ray.log"}
    with pytest.raises(UserError, match=r"Ray Tune could not restore the search from its saved state "
                                        r"\(\w+Error\b.*\); nothing was trained"):
        tune_main.main(["--resume", str(exp), "--no-analysis"])
    assert {k: v for k, v in tree(exp).items() if k != "ray.log"} == before
    assert "Failed to restore the run state" in (exp / "ray.log").read_text()


def test_address_where_no_cluster_answers_is_one_line(tmp_path):
    import socket

    from helpers import assert_one_line_error

    out = _cli("--preset", "demo", "--address", "127.0.0.1:1", "--storage", str(tmp_path / "res"), cwd=tmp_path)
    assert_one_line_error(out, "error: --address 127.0.0.1:1: cannot connect (connection refused); is a Ray head "
                               "node running there (ray start --head)?")
    # something listens but never answers as a Ray head: bounded by --connect-timeout
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        out = _cli("--preset", "demo", "--address", address, "--connect-timeout", "3",
                   "--storage", str(tmp_path / "res"), cwd=tmp_path)
    finally:
        listener.close()
    assert_one_line_error(out, f"error: --address {address}: something listens there but no Ray cluster answered "
                               "within 3 s (--connect-timeout)")
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").iterdir())
    from layerout.errors import UserError

    with pytest.raises(UserError,
                       match=r"^--connect-timeout: must be a number of seconds within \(0, 86400\], got 0.0$"):
        tune_main.main(["--preset", "demo", "--address", "127.0.0.1:1", "--connect-timeout", "0"])
    with pytest.raises(UserError, match=r"^--address nohost: expected auto, HOST:PORT or ray://HOST:PORT$"):
        tune_main.main(["--preset", "demo", "--address", "nohost", "--storage", str(tmp_path / "res")])


def test_only_the_packages_trials_import_are_shipped(monkeypatch):
    from tuning.cluster import runtime_env

    # what the cluster unpickles: the trial function, and (a ray:// driver runs the Tuner there) the
    # searcher and the scheduler: never the analysis (MOASHA sorts with layerout.dominance)
    code = ("import sys, tuning.trainable, tuning.searcher, tuning.schedulers\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'layerout', 'search_spaces', 'tuning', 'analysis', 'tune_main', 'benchmarks', 'tests'})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=_env(),
                          timeout=120)
    imported = proc.stdout.split()
    assert imported == ["layerout", "search_spaces", "tuning"], proc.stderr[-2000:]
    monkeypatch.delenv("LAYEROUT_TUNE_SHIP_CODE", raising=False)
    assert runtime_env() == {"py_modules": [str(ROOT / name) for name in imported]}
    monkeypatch.setenv("LAYEROUT_TUNE_SHIP_CODE", "0")
    assert runtime_env() is None


def test_the_end_summary_counts_only_what_trained(tmp_path, capsys):
    """The shorter-training reference points are counted as having trained their fewer epochs only when
    they did: not one that failed on a user error, not one that never ran."""
    from tuning import SearchResult

    rows = [("a", "TERMINATED", False, "baseline", 8), ("b", "TERMINATED", False, "shorter-25%", 2),
            ("c", "TERMINATED", False, "shorter-50%", 4), ("d", "ERROR", False, "shorter-75%", 0),
            ("e", "TERMINATED", True, "", 3)]
    trials = pd.DataFrame(rows, columns=["trial_id", "status", "stopped_early", "reference", "epochs_done"])
    result = SearchResult(exp_dir=str(tmp_path), meta={"epochs": 8, "options": {"scheduler": "moasha"}},
                          trials=trials, epochs=pd.DataFrame(), wall_s=10.0, planned=5, errors=1)
    assert tune_main.report(result, no_analysis=True) == 0
    out = capsys.readouterr().out
    assert ("5 of 5 trials in 10 s: 3 trained the full 8 epochs (the 2 shorter-training reference points their "
            "fewer epochs), 1 stopped early by moasha, 1 errored") in out
    assert "epochs trained: 17 of 40 (42%)" in out
