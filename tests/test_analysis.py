"""analysis/: Pareto fronts, hypervolume, knee, loading, plots, report and policy export.

Everything here runs on hand-made tables and a hand-made experiment directory (no Ray, no
training); the end-to-end test on a real tiny search lives with the search tests.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers
from analysis.export import build_policy
from analysis.front import compute_front
from analysis.pareto import hypervolume_2d, knee_point, pareto_front
from analysis.results import load_experiment, select_trials
from helpers import assert_one_line_error
from layerout.errors import UserError
from layerout.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
OBJ = (("val_accuracy", "max"), ("compute_saved_frac", "max"))


def table(rows):
    """rows: (trial_id, val_accuracy, compute_saved_frac)."""
    return pd.DataFrame(rows, columns=["trial_id", "val_accuracy", "compute_saved_frac"])


def front_ids(df):
    return list(pareto_front(df)["trial_id"])


# ------------------------------------------------------------------------------------------
# pareto_front


def test_front_all_dominated_but_one():
    df = table([("a", 0.95, 0.50), ("b", 0.90, 0.40), ("c", 0.80, 0.10), ("d", 0.95, 0.49)])
    assert front_ids(df) == ["a"]


def test_front_ties_in_one_objective_are_dominated():
    # b ties a in accuracy but saves less; c ties a in compute but is less accurate
    df = table([("a", 0.90, 0.30), ("b", 0.90, 0.20), ("c", 0.80, 0.30), ("d", 0.95, 0.05)])
    assert front_ids(df) == ["d", "a"]


def test_front_keeps_every_duplicate_of_a_front_point():
    df = table([("a", 0.90, 0.30), ("b", 0.95, 0.10), ("a2", 0.90, 0.30), ("x", 0.85, 0.25)])
    f = pareto_front(df)
    assert list(f["trial_id"]) == ["b", "a", "a2"]  # best accuracy first, duplicates in table order
    assert list(f.index) == [1, 0, 2]  # original index kept
    # the knee (2 distinct points) is the more accurate end; among duplicates the first row wins
    assert knee_point(f) == 1
    g = pareto_front(table([("a", 0.90, 0.30), ("a2", 0.90, 0.30)]))
    assert knee_point(g) == 0


def test_front_single_point_and_empty():
    df = table([("only", 0.5, 0.5)])
    f = pareto_front(df)
    assert front_ids(df) == ["only"] and knee_point(f) == 0
    assert pareto_front(table([])).empty


def test_front_sorted_and_complete_on_a_staircase():
    rows = [(f"t{i}", 0.99 - 0.01 * i, 0.1 * i) for i in range(6)] + [("in", 0.95, 0.2)]
    assert front_ids(table(rows)) == [f"t{i}" for i in range(6)]


def test_nan_rows_are_ignored_with_a_warning():
    df = table([("a", 0.9, 0.3), ("failed", float("nan"), float("nan")), ("half", 0.99, float("nan")),
                ("b", 0.8, 0.5)])
    with pytest.warns(UserWarning, match=r"ignored 2 row\(s\).*failed, half"):
        f = pareto_front(df)
    assert list(f["trial_id"]) == ["a", "b"]


def test_no_warning_without_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pareto_front(table([("a", 0.9, 0.3)]))


def test_front_with_a_minimized_objective():
    df = pd.DataFrame({"trial_id": ["a", "b", "c"], "val_accuracy": [0.9, 0.9, 0.95],
                       "compute_spent_gflop": [10.0, 12.0, 20.0]})
    f = pareto_front(df, (("val_accuracy", "max"), ("compute_spent_gflop", "min")))
    assert list(f["trial_id"]) == ["c", "a"]


# ------------------------------------------------------------------------------------------
# hypervolume_2d


def test_hypervolume_known_answers():
    stair = [(3, 1), (2, 2), (1, 3)]
    assert hypervolume_2d(stair, (0, 0)) == pytest.approx(6.0)  # 3*1 + 2*1 + 1*1
    assert hypervolume_2d(stair + [(1, 1), (2, 2)], (0, 0)) == pytest.approx(6.0)  # dominated, duplicate
    assert hypervolume_2d([(2, 3)], (0, 0)) == pytest.approx(6.0)  # single point: a rectangle
    assert hypervolume_2d(stair, (1, 0)) == pytest.approx(3.0)  # (1, 3) adds nothing beyond x = 1
    assert hypervolume_2d(stair, (5, 5)) == 0.0
    assert hypervolume_2d([], (0, 0)) == 0.0
    assert hypervolume_2d([(2, 2), (float("nan"), 9)], (0, 0)) == pytest.approx(4.0)
    # order does not matter
    assert hypervolume_2d(stair[::-1], (0, 0)) == pytest.approx(6.0)


def test_hypervolume_matches_a_grid_count():
    rng = np.random.default_rng(0)
    pts = rng.uniform(size=(15, 2))
    xs = (np.arange(400) + 0.5) / 400
    gx, gy = np.meshgrid(xs, xs)
    covered = np.zeros_like(gx, dtype=bool)
    for x, y in pts:
        covered |= (gx <= x) & (gy <= y)
    assert hypervolume_2d(pts, (0, 0)) == pytest.approx(covered.mean(), abs=5e-3)


# ------------------------------------------------------------------------------------------
# knee_point


def test_knee_on_a_convex_front():
    # accuracy (0.80..0.95) x compute saved (0..0.5); normalized: (1,0) (.933,.4) (.667,.9) (0,1)
    df = table([("base", 0.95, 0.0), ("mild", 0.94, 0.20), ("bend", 0.90, 0.45), ("far", 0.80, 0.50)])
    f = pareto_front(df)
    assert f.loc[knee_point(f), "trial_id"] == "bend"


def test_knee_of_a_straight_or_concave_front_is_the_most_accurate_end():
    straight = pareto_front(table([("a", 0.9, 0.0), ("b", 0.8, 0.1), ("c", 0.7, 0.2)]))
    assert straight.loc[knee_point(straight), "trial_id"] == "a"
    concave = pareto_front(table([("a", 0.9, 0.0), ("b", 0.6, 0.1), ("c", 0.5, 0.2)]))
    assert concave.loc[knee_point(concave), "trial_id"] == "a"


def test_knee_needs_a_point():
    with pytest.raises(ValueError):
        knee_point(table([]))


# ------------------------------------------------------------------------------------------
# a hand-made experiment directory (the files tune_main.py writes, docs/ARCHITECTURE.md)

UNITS = ["conv1", "conv2", "conv3", "fc"]
EPOCHS = 4
METRIC_COLS = ["epoch", "train_loss", "val_loss", "val_accuracy", "test_accuracy", "params_frozen_frac",
               "compute_saved_frac", "compute_spent_gflop", "time_saved_frac", "train_time_s"]

# trial_id, status, stopped_early, paper_config, family, epochs_done, schedule, val acc, saved, test acc
TRIALS = [
    ("t_base", "TERMINATED", False, "baseline", "none", 4, {"kind": "none"}, 0.95, 0.00, 0.94),
    ("t_efreeze", "TERMINATED", False, "efreeze", "layerout",
     4, {"kind": "layerout", "v": [0.9, 0.6, 0.4, 0.1], "v_mode": "manual", "warmup_epochs": 1,
         "keep_last_trainable": False, "seed": None}, 0.94, 0.20, 0.935),
    ("t_bend", "TERMINATED", False, "", "layerout",
     4, {"kind": "layerout", "v": [0.8, 0.8, 0.5, 0.2], "v_mode": "manual", "warmup_epochs": 0,
         "keep_last_trainable": False, "seed": 3}, 0.90, 0.45, 0.97),
    ("t_fo", "TERMINATED", False, "", "freezeout",
     4, {"kind": "freezeout", "t0": 0.5, "scale": "cubic", "scale_lr": True, "warmup_epochs": 0}, 0.93, 0.15, 0.92),
    ("t_prefix", "TERMINATED", False, "", "prefix", 4, {"kind": "prefix", "k": 3, "start_epoch": 1}, 0.80, 0.50, 0.79),
    ("t_adapt", "TERMINATED", False, "", "adaptive",
     4, {"kind": "adaptive", "check_every": 1, "threshold_mode": "percentile", "threshold": 50,
         "min_trainable_units": 1, "freeze_epochs": [1, 2, None, None]}, 0.85, 0.30, 0.84),
    ("t_stopped", "TERMINATED", True, "", "layerout",
     2, {"kind": "layerout", "v": None, "v_mode": "random_epoch", "warmup_epochs": 0,
         "keep_last_trainable": True, "seed": None}, 0.92, 0.40, float("nan")),
    ("t_failed", "ERROR", False, "dfreeze", "layerout",
     0, {"kind": "layerout", "v": [0.1, 0.4, 0.6, 0.9], "v_mode": "manual", "warmup_epochs": 1,
         "keep_last_trainable": False, "seed": None}, float("nan"), float("nan"), float("nan")),
]


def _mask(schedule: dict, epoch: int) -> str:
    rng = np.random.default_rng(epoch)
    kind = schedule["kind"]
    if kind == "layerout":
        v = schedule["v"] or [0.5] * 4
        bits = [int(rng.random() < p) for p in v]
    elif kind == "prefix":
        bits = [int(i < schedule["k"] and epoch > schedule["start_epoch"]) for i in range(4)]
    elif kind == "freezeout":
        bits = [int(epoch > 2 and i < 2) for i in range(4)]
    elif kind == "adaptive":
        bits = [int(e is not None and epoch > e) for e in schedule["freeze_epochs"]]
    else:
        bits = [0, 0, 0, 0]
    if all(bits):
        bits[-1] = 0
    return "".join(map(str, bits))


def write_experiment(root: Path, trials=TRIALS, epochs=EPOCHS, name="handmade") -> Path:
    d = root / name
    d.mkdir(parents=True)
    meta = {
        "format": "layerout-experiment", "version": 1, "name": name,
        "space": {"families": ["none", "layerout", "freezeout", "prefix", "adaptive"], "v": {"low": 0, "high": 1}},
        "space_file": "search_spaces/presets/demo.yaml",
        "options": {"num_samples": len(trials), "sampler": "tpe", "scheduler": "asha", "seed": 0},
        "versions": {"python": "3.11", "torch": "2.x", "ray": "2.60.0", "optuna": "5.0.0", "layerout_tune": "0.1.0"},
        "model": "digits_cnn", "dataset": "digits", "units": UNITS, "epochs": epochs,
        "objectives": [["val_accuracy", "max"], ["compute_saved_frac", "max"]],
        "created": "2026-11-22T15:30:00", "finished": "2026-11-22T15:35:00",
    }
    (d / "experiment.json").write_text(json.dumps(meta, indent=1))
    trows, erows = [], []
    for tid, status, stopped, paper, fam, done, sched, acc, saved, test in trials:
        final = {"epoch": done, "train_loss": 0.3, "val_loss": 0.35, "val_accuracy": acc, "test_accuracy": test,
                 "params_frozen_frac": saved * 1.3, "compute_saved_frac": saved,
                 "compute_spent_gflop": 10 * (1 - saved) if not math.isnan(saved) else float("nan"),
                 "time_saved_frac": saved * 0.6, "train_time_s": 12.0}
        if status == "ERROR":
            final = {k: float("nan") for k in final}
        trows.append({"trial_id": tid, "status": status, "stopped_early": stopped, "paper_config": paper,
                      "family": fam, "epochs_done": done, "config/lr": 0.05, "config/batch_size": 64,
                      "config/seed": 0, "policy": json.dumps(sched), **final})
        for ep in range(1, done + 1):
            frac = ep / epochs
            erows.append({"trial_id": tid, "epoch": ep, "train_loss": 1.5 - frac, "val_loss": 1.6 - frac,
                          "val_accuracy": acc - 0.4 * (1 - frac) ** 2, "test_accuracy": test if ep == done else "",
                          "params_frozen_frac": saved, "compute_saved_frac": saved, "compute_spent_gflop": ep,
                          "time_saved_frac": saved / 2, "train_time_s": 3.0 * ep, "lr": 0.05,
                          "frozen_units": _mask(sched, ep), "synthetic": False})
    pd.DataFrame(trows).to_csv(d / "trials.csv", index=False)
    pd.DataFrame(erows).to_csv(d / "epochs.csv", index=False)
    return d


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory):
    return write_experiment(tmp_path_factory.mktemp("analysis_exp"))


def run_module(module, *args, cwd=ROOT):
    return helpers.run_module(module, args, cwd=cwd)


def test_load_experiment_reads_the_tables(exp_dir):
    exp = load_experiment(exp_dir)
    assert exp.source == "csv" and exp.epoch_budget == 4 and exp.units == UNITS
    assert len(exp.trials) == len(TRIALS) and exp.trials["trial_id"].tolist()[0] == "t_base"
    assert exp.trials["stopped_early"].dtype == bool
    assert set(exp.epochs["trial_id"]) == {t[0] for t in TRIALS if t[5] > 0}
    fin = select_trials(exp)
    assert "t_stopped" not in set(fin["trial_id"]) and "t_failed" not in set(fin["trial_id"])
    both = select_trials(exp, include_stopped=True)
    assert both.loc[both["trial_id"] == "t_stopped", "stopped"].item()


def test_front_of_the_experiment(exp_dir):
    exp = load_experiment(exp_dir)
    fr = compute_front(exp)
    assert list(fr.front["trial_id"]) == ["t_base", "t_efreeze", "t_bend", "t_prefix"]
    assert fr.knee == "t_bend"
    assert fr.baseline_accuracy == pytest.approx(0.95)
    # staircase areas: 0.95*0 + 0.94*0.2 + 0.90*0.25 + 0.80*0.05
    assert fr.hypervolume["(0, 0)"] == pytest.approx(0.94 * 0.2 + 0.90 * 0.25 + 0.80 * 0.05)
    assert fr.hypervolume["(baseline, 0)"] == pytest.approx(0.0)  # nothing beats the baseline here
    wide = compute_front(exp, include_stopped=True)
    assert "t_stopped" in set(wide.front["trial_id"])


def test_cli_writes_every_file(exp_dir):
    proc = run_module("analysis", exp_dir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("val acc", "compute saved", "time saved", "test acc", "t_bend", "efreeze",
                   "hypervolume vs (0, 0)", "vs (baseline 95.00%, 0)", "knee: trial t_bend"):
        assert needle in out, out
    assert "t_fo" not in out.split("hypervolume")[0]  # dominated: not in the table
    for name in ("pareto.csv", "pareto.png", "front_policies.png", "curves.png", "report.html"):
        assert (exp_dir / name).exists(), name
    from PIL import Image

    for name in ("pareto.png", "front_policies.png", "curves.png"):
        p = exp_dir / name
        assert p.stat().st_size > 10_000, name
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 400
    front = pd.read_csv(exp_dir / "pareto.csv", dtype={"trial_id": str})
    assert list(front["trial_id"]) == ["t_base", "t_efreeze", "t_bend", "t_prefix"]
    assert front.loc[front["knee"], "trial_id"].tolist() == ["t_bend"]
    html = (exp_dir / "report.html").read_text()
    assert "id='front-table'" in html and html.count("data:image/png;base64,") >= 3
    assert "t_bend" in html and "not used to choose" in html
    assert "python -m layerout.train --model digits_cnn --dataset digits --policy policies/t_bend.json --epochs 4" in html
    assert "search_spaces/presets/demo.yaml" in html and "2.60.0" in html
    assert "src='http" not in html  # self-contained
    pol = json.loads((exp_dir / "policies" / "t_bend.json").read_text())
    assert pol["schedule"]["v"] == [0.8, 0.8, 0.5, 0.2] and pol["units"] == UNITS


def test_cli_include_stopped_and_compare(exp_dir, tmp_path):
    other = write_experiment(tmp_path, trials=TRIALS[:3] + TRIALS[4:5], name="other")
    out = tmp_path / "out"
    proc = run_module("analysis", exp_dir, "--include-stopped", "--compare", other, "--out", out, "--no-policies")
    assert proc.returncode == 0, proc.stderr
    assert "t_stopped" in proc.stdout and "~" in proc.stdout
    assert (out / "compare.png").stat().st_size > 10_000
    assert "t_stopped" in pd.read_csv(out / "pareto.csv")["trial_id"].tolist()
    assert not (out / "policies").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "t_bend"),
        (["--pick", "knee"], "t_bend"),
        (["--pick", "max-accuracy"], "t_base"),
        (["--pick", "min-compute"], "t_prefix"),
        (["--min-accuracy", "0.9"], "t_bend"),
        (["--min-accuracy", "90"], "t_bend"),
        (["--min-accuracy", "93%"], "t_efreeze"),
    ],
)
def test_export_picks(exp_dir, tmp_path, capsys, args, expected):
    from analysis.export import main as export_main

    out = tmp_path / "p.json"
    # --ignore-curve: among every front policy (nothing here beats the baseline held flat; see
    # test_verdict.py for the default, among the policies above the shorter-training curve)
    assert export_main([str(exp_dir), *args, "--ignore-curve", "-o", str(out)]) == 0  # in-process: the CLI below
    stdout = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["format"] == "layerout-policy" and doc["version"] == 1
    assert doc["provenance"]["trial_id"] == expected
    assert doc["model"] == "digits_cnn" and doc["units"] == UNITS
    row = next(t for t in TRIALS if t[0] == expected)
    assert doc["schedule"] == row[6]
    assert doc["measured"]["val_accuracy"] == pytest.approx(row[7])
    assert doc["measured"]["compute_saved_frac"] == pytest.approx(row[8])
    assert doc["provenance"]["space_file"] == "search_spaces/presets/demo.yaml"
    assert doc["provenance"]["versions"]["ray"] == "2.60.0"
    # what python -m layerout.train --policy replays: the run's length, batch size, seed and dataset
    prov = doc["provenance"]
    assert (prov["model"], prov["dataset"], prov["epochs"], prov["batch_size"], prov["seed"]) == (
        "digits_cnn", "digits", EPOCHS, 64, 0)
    assert prov["train"] == {"model": "digits_cnn", "dataset": "digits", "epochs": EPOCHS, "lr": 0.05,
                             "batch_size": 64, "seed": 0}
    pol = load_policy(out)  # written through layerout.policy: it loads and validates
    assert pol.schedule == row[6] and pol.units == UNITS
    assert str(out) in stdout and expected in stdout


def test_export_api_default_path_and_all_front(exp_dir, tmp_path):
    from analysis.export import export_policy

    p = export_policy(exp_dir, ignore_curve=True)
    assert p == exp_dir / "policies" / "knee.json"
    assert json.loads(p.read_text())["provenance"]["trial_id"] == "t_bend"
    proc = run_module("analysis.export", exp_dir, "--pick", "min-compute", "--ignore-curve", "-o", tmp_path / "m.json",
                      "--all-front", tmp_path / "front")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "front").iterdir()) == sorted(
        f"{t}.json" for t in ["t_base", "t_efreeze", "t_bend", "t_prefix"])
    # --all-front alone writes into its folder only: the experiment's own policies are left as they were
    before = {p.name: p.stat().st_mtime_ns for p in (exp_dir / "policies").iterdir()}
    proc = run_module("analysis.export", exp_dir, "--all-front", tmp_path / "front2")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "front2").iterdir())) == 4 and "policy:" not in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (exp_dir / "policies").iterdir()} == before


def test_min_accuracy_parsing():
    from analysis.export import parse_accuracy

    assert parse_accuracy("0.95") == pytest.approx(0.95)
    assert parse_accuracy("95") == pytest.approx(0.95)
    assert parse_accuracy("95%") == pytest.approx(0.95)
    assert parse_accuracy("0.5%") == pytest.approx(0.005)
    assert parse_accuracy(1) == 1.0
    for bad in ("abc", "-3", "250"):
        with pytest.raises(UserError, match="--min-accuracy"):
            parse_accuracy(bad)


# ------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit 2


def test_not_an_experiment_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(run_module("analysis", tmp_path), "not an experiment directory", str(tmp_path))
    assert_one_line_error(run_module("analysis.export", tmp_path), "not an experiment directory")
    assert_one_line_error(run_module("analysis", tmp_path / "missing"), "no such directory")


def test_no_finished_trial(tmp_path):
    unfinished = [t for t in TRIALS if t[0] in ("t_stopped", "t_failed")]
    d = write_experiment(tmp_path, trials=unfinished)
    proc = run_module("analysis", d)
    assert_one_line_error(proc, "no finished trial", "--include-stopped")
    assert_one_line_error(run_module("analysis.export", d), "no finished trial")
    with pytest.raises(UserError, match="no finished trial"):
        compute_front(load_experiment(d))
    # only the stopped trial: allowed when asked for
    assert run_module("analysis", d, "--include-stopped", "--no-policies").returncode == 0


def test_min_accuracy_nobody_reaches(exp_dir, tmp_path):
    out = tmp_path / "never.json"
    assert_one_line_error(run_module("analysis.export", exp_dir, "--min-accuracy", "99", "--ignore-curve", "-o", out),
                          "--min-accuracy 99%", "95.00%")
    assert not out.exists()


def test_bad_options_and_files(exp_dir, tmp_path):
    assert_one_line_error(run_module("analysis.export", exp_dir, "--pick", "best"), "--pick", "knee")
    assert_one_line_error(run_module("analysis.export", exp_dir, "--min-accuracy", "lots"), "--min-accuracy")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "experiment.json").write_text("{not json")
    assert_one_line_error(run_module("analysis", bad), "experiment.json", "not valid JSON")
    (bad / "experiment.json").write_text(json.dumps({"format": "something-else"}))
    assert_one_line_error(run_module("analysis", bad), "format", "layerout-experiment")


# ------------------------------------------------------------------------------------------
# fallback: Ray Tune's own result.json files


def write_ray_trial(exp: Path, tid: str, config: dict, accs: list[float], saved: float, done=True, error=False,
                    policy: dict | None = None):
    """A trial directory as Ray Tune 2.x leaves it (trial_<id>/result.json, params.json, error.txt)."""
    d = exp / f"trial_{tid}"
    d.mkdir(parents=True)
    lines = []
    for i, a in enumerate(accs, 1):
        line = {"epoch": i, "val_accuracy": a, "compute_saved_frac": saved, "test_accuracy": float("nan"),
                "time_saved_frac": saved / 2, "train_loss": 1.0, "training_iteration": i, "trial_id": tid,
                "config": config, "done": done and i == len(accs), "frozen_units": "0100", "steps_per_epoch": 21}
        if policy is not None:
            line["policy"] = json.dumps(policy, sort_keys=True)
        lines.append(line)
    if lines:
        lines[-1]["test_accuracy"] = accs[-1] - 0.01
        if done:  # a restarted trial / Ray's duplicate final report: the later one wins
            lines.append({**lines[-1]})
    (d / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (d / "params.json").write_text(json.dumps(config))
    if error:
        (d / "error.txt").write_text("RuntimeError: boom")


def ray_config(family: str, schedule: dict, paper_config: str = "") -> dict:
    """A trial config as search_spaces builds it: family, paper_config, train kwargs, schedule."""
    return {"family": family, "paper_config": paper_config, "schedule": schedule,
            "train": {"model": "digits_cnn", "dataset": "digits", "epochs": 3, "lr": 0.05, "seed": 1}}


@pytest.mark.parametrize("with_meta", [True, False])
def test_rebuild_from_ray_results(tmp_path, with_meta):
    exp = tmp_path / "rayonly"
    exp.mkdir()
    if with_meta:
        (exp / "experiment.json").write_text(json.dumps({"format": "layerout-experiment", "version": 1,
                                                         "name": "rayonly", "epochs": 3, "units": UNITS,
                                                         "model": "digits_cnn", "dataset": "digits"}))
    sched = {"kind": "layerout", "v": [0.5, 0.5, 0.5, 0.0], "v_mode": "manual", "warmup_epochs": 0}
    adaptive = {"kind": "adaptive", "check_every": 1, "threshold_mode": "percentile", "threshold": 50,
                "min_trainable_units": 1, "freeze_epochs": None}
    ran = {**adaptive, "freeze_epochs": [1, None, None, None]}
    write_ray_trial(exp, "aaa", ray_config("none", {"kind": "none"}, "baseline"), [0.5, 0.7, 0.9], 0.0)
    write_ray_trial(exp, "bbb", ray_config("layerout", sched), [0.5, 0.6, 0.85], 0.3, policy=sched)
    write_ray_trial(exp, "ccc", ray_config("layerout", sched), [0.4], 0.3)  # stopped by ASHA (done=True)
    write_ray_trial(exp, "ddd", ray_config("layerout", sched), [0.3], 0.3, done=False, error=True)
    write_ray_trial(exp, "eee", ray_config("adaptive", adaptive), [0.5, 0.55, 0.6], 0.5, policy=ran)
    e = load_experiment(exp)
    assert e.source == "ray" and e.epoch_budget == 3
    assert e.model == "digits_cnn" and e.dataset == "digits"
    t = e.trials.set_index("trial_id")
    assert t.loc["aaa", "status"] == "TERMINATED" and t.loc["aaa", "family"] == "none"
    assert t.loc["aaa", "paper_config"] == "baseline"
    assert t.loc["bbb", "family"] == "layerout" and json.loads(t.loc["bbb", "policy"]) == sched
    assert json.loads(t.loc["eee", "policy"]) == ran  # the schedule as it ran, not as configured
    assert bool(t.loc["ccc", "stopped_early"]) and t.loc["ddd", "status"] == "ERROR"
    assert t.loc["bbb", "test_accuracy"] == pytest.approx(0.84)
    assert len(e.epochs) == 3 + 3 + 1 + 1 + 3
    fr = compute_front(e)
    assert list(fr.front["trial_id"]) == ["aaa", "bbb", "eee"]
    assert set(select_trials(e, include_stopped=True)["trial_id"]) == {"aaa", "bbb", "ccc", "eee"}
    if with_meta:
        proc = run_module("analysis", exp)
        assert proc.returncode == 0, proc.stderr
        assert (exp / "report.html").exists()
        # the trial's recipe where it differs from the trainer's defaults (lr 0.05 is the default)
        assert "--policy policies/bbb.json --epochs 3 --seed 1 --out runs/bbb" in (exp / "report.html").read_text()
        pol = load_policy(exp / "policies" / "bbb.json")
        assert pol.provenance["steps_per_epoch"] == 21 and pol.provenance["seed"] == 1
        assert pol.provenance["train"] == {"model": "digits_cnn", "dataset": "digits", "epochs": 3, "lr": 0.05,
                                           "seed": 1}
    else:  # no unit names: no policy files, but the analysis still runs and says why
        proc = run_module("analysis", exp)
        assert proc.returncode == 0, proc.stderr
        assert "warning:" in proc.stderr and "'units'" in proc.stderr


def test_trials_csv_preferred_and_epochs_rebuilt(tmp_path, exp_dir):
    """trials.csv present but epochs.csv missing: epochs come from Ray's files."""
    import shutil

    d = tmp_path / "partial"
    shutil.copytree(exp_dir, d)
    (d / "epochs.csv").unlink()
    write_ray_trial(d, "t_bend", ray_config("layerout", {"kind": "none"}), [0.5, 0.6, 0.8, 0.9], 0.45)
    e = load_experiment(d)
    assert e.source == "csv+ray" and set(e.epochs["trial_id"]) == {"t_bend"}
    assert len(e.trials) == len(TRIALS)


def test_unknown_objective_in_experiment_json(tmp_path):
    d = write_experiment(tmp_path)
    meta = json.loads((d / "experiment.json").read_text())
    meta["objectives"] = [["val_accuracy", "max"], ["speedup", "max"]]
    (d / "experiment.json").write_text(json.dumps(meta))
    assert_one_line_error(run_module("analysis", d), "objectives", "speedup", "compute_saved_frac")


def test_synthetic_experiments_are_marked_in_table_plot_titles_and_report(exp_dir, tmp_path):
    import shutil

    from analysis.plots import _title
    from analysis.results import SYNTHETIC_NOTE
    from analysis.run import run_analysis

    d = tmp_path / "synth"
    shutil.copytree(exp_dir, d)
    meta = json.loads((d / "experiment.json").read_text())
    assert not load_experiment(d).synthetic
    meta["dataset"] = "synthetic"
    (d / "experiment.json").write_text(json.dumps(meta))
    exp = load_experiment(d)
    assert exp.synthetic and _title(exp).startswith("SYNTHETIC DATA")
    res = run_analysis(d, quiet=True, write_policies=False)
    assert res.table.splitlines()[0] == SYNTHETIC_NOTE
    assert SYNTHETIC_NOTE in (d / "report.html").read_text()
def test_exported_policy_records_the_batchnorm_mode_the_trial_ran_with(tmp_path):
    """A search's recipe says bn_frozen: auto; the trial ran with its family's choice, and the
    exported policy says which (FreezeOut: eval, as its authors run it; the others: train)."""
    d = write_experiment(tmp_path)
    t = pd.read_csv(d / "trials.csv")
    t["config/train/bn_frozen"] = "auto"
    t.to_csv(d / "trials.csv", index=False)
    e = load_experiment(d)
    rows = e.trials.set_index("trial_id", drop=False)
    got = {tid: build_policy(e, rows.loc[tid], "test")["provenance"]["train"]["bn_frozen"]
           for tid in ("t_fo", "t_prefix", "t_efreeze")}
    assert got == {"t_fo": "eval", "t_prefix": "train", "t_efreeze": "train"}


def test_an_experiment_that_selects_on_the_test_split_is_refused(tmp_path):
    d = write_experiment(tmp_path)
    meta = json.loads((d / "experiment.json").read_text())
    meta["objectives"] = [["test_accuracy", "max"], ["compute_saved_frac", "max"]]
    (d / "experiment.json").write_text(json.dumps(meta))
    before = sorted(p.name for p in d.iterdir())
    for module, args in (("analysis", [d]), ("analysis.export", [d, "-o", tmp_path / "p.json"])):
        proc = helpers.run_module(module, args)
        assert_one_line_error(proc, f"{d / 'experiment.json'}: field 'objectives' names test_accuracy, which is "
                                    "only reported, never used to select; allowed: epoch, train_loss, val_loss, "
                                    "val_accuracy, params_frozen_frac")
    assert sorted(p.name for p in d.iterdir()) == before and not (tmp_path / "p.json").exists()


def test_read_only_experiment_is_one_line_that_suggests_out(tmp_path):
    """An experiment on read-only storage: the analysis and the export say what they cannot write
    and how to write elsewhere; nothing in the experiment changes."""
    d = write_experiment(tmp_path)
    before = helpers.tree(d)
    proc = helpers.run_module("analysis", [d], read_only=[d])
    assert_one_line_error(proc, f"error: {d / 'pareto.csv'}: cannot write (permission denied); write the analysis "
                                "elsewhere with --out DIR")
    proc = helpers.run_module("analysis.export", [d, "--pick", "knee", "--ignore-curve"], read_only=[d])
    assert_one_line_error(proc, f"error: {d / 'policies' / 'knee.json'}: cannot write (cannot create its folder "
                                f"{d / 'policies'}: permission denied); write the policy elsewhere with -o FILE")
    assert helpers.tree(d) == before
    # elsewhere works
    out = tmp_path / "elsewhere"
    proc = helpers.run_module("analysis", [d, "--out", out], read_only=[d])
    assert proc.returncode == 0, proc.stderr
    assert (out / "pareto.csv").is_file() and (out / "report.html").is_file() and (out / "policies").is_dir()
    proc = helpers.run_module("analysis.export", [d, "--pick", "knee", "--ignore-curve", "-o", tmp_path / "knee.json"],
                              read_only=[d])
    assert proc.returncode == 0, proc.stderr
    assert load_policy(tmp_path / "knee.json").provenance["trial_id"]
    assert helpers.tree(d) == before
    # --out itself unwritable: the plain line, no hint
    proc = helpers.run_module("analysis", [d, "--out", d / "sub"], read_only=[d])
    assert_one_line_error(proc, f"error: {d / 'sub'}: cannot write (permission denied)")
    assert helpers.tree(d) == before


def test_export_to_a_folder_is_one_line_and_leaves_nothing(tmp_path):
    d = write_experiment(tmp_path)
    target = tmp_path / "some_folder"
    target.mkdir()
    before = helpers.tree(tmp_path)
    proc = helpers.run_module("analysis.export", [d, "--ignore-curve", "-o", target])
    assert_one_line_error(proc, f"error: {target}: cannot write (it is a folder; give a file name)")
    assert helpers.tree(tmp_path) == before


def test_trials_csv_cut_mid_line_is_rebuilt_from_ray_results(tmp_path):
    exp = tmp_path / "cut"
    exp.mkdir()
    (exp / "experiment.json").write_text(json.dumps({"format": "layerout-experiment", "version": 1, "name": "cut",
                                                     "epochs": 3, "units": UNITS, "model": "digits_cnn",
                                                     "dataset": "digits"}))
    sched = {"kind": "layerout", "v": [0.5, 0.5, 0.5, 0.0], "v_mode": "manual", "warmup_epochs": 0}
    accs = {"aaa": 0.9, "bbb": 0.85, "ccc": 0.8, "ddd": 0.95}
    for tid, acc in accs.items():
        write_ray_trial(exp, tid, ray_config("layerout", sched), [0.5, 0.6, acc], 0.3, policy=sched)
    whole = load_experiment(exp)
    whole.trials.to_csv(exp / "trials.csv", index=False)
    whole.epochs.to_csv(exp / "epochs.csv", index=False)
    text = (exp / "trials.csv").read_text()
    (exp / "trials.csv").write_text(text[: len(text) - 25])  # a copy cut off in the last row
    with pytest.warns(UserWarning, match=r"trials.csv cut short mid-line; the tables were rebuilt from Ray's "
                                         r"result.json files \(4 trials\)"):
        e = load_experiment(exp)
    assert e.source == "ray"
    assert dict(zip(e.trials["trial_id"], e.trials["val_accuracy"])) == pytest.approx(accs)
    proc = run_module("analysis", exp)
    assert proc.returncode == 0, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if "cut short" in ln] == [
        f"warning: {exp}: trials.csv cut short mid-line; the tables were rebuilt from Ray's result.json files "
        "(4 trials)"]
    assert "Pareto front of cut: 1 of 4 finished trials" in proc.stdout  # all 4 trials considered


def test_tables_cut_mid_line_without_ray_results_drop_the_partial_row(tmp_path):
    d = write_experiment(tmp_path)
    text = (d / "trials.csv").read_text()
    (d / "trials.csv").write_text(text[: len(text) - 10])
    with pytest.warns(UserWarning, match=r"trials.csv cut short mid-line and no Ray result.json files to rebuild "
                                         r"from; its last, partial row is left out"):
        e = load_experiment(d)
    assert list(e.trials["trial_id"]) == [t[0] for t in TRIALS[:-1]]
