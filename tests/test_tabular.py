"""The tabulated benchmark (benchmarks/tabular/, benchmarks/tabular_search.py): the grid space holds
exactly the configurations counted by hand and the samplers propose only those, the area above
the shorter-training curve matches hand-computed areas, a replayed search follows its scheduler's
decisions and the table's curves, the build resumes, and the --quick run never finds more than the
table's own front."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from analysis.curve import area_above_curve
from analysis.pareto import hypervolume_2d

from helpers import cli_env

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from tabular.measures import oracle  # noqa: E402
from tabular.replay import ProjectMethod, replay  # noqa: E402
from tabular.table import all_configs, define_by_run, grid_space, load_table, table_key  # noqa: E402


@pytest.fixture(scope="module")
def space():
    return grid_space()


@pytest.fixture(scope="module")
def table(space):
    return load_table(space=space)


def curve(*points):
    return pd.DataFrame(points, columns=["compute_saved_frac", "val_accuracy"])


# ------------------------------------------------------------------------------ the measure
def test_area_above_curve_by_hand():
    c = curve((0.0, 0.9), (0.5, 0.8))  # the baseline and one shorter run: 0.9 - 0.2 s between them
    # (0.85, 0.5) is above the line from s = 0.25 on: a triangle 0.25 wide and 0.05 high
    assert area_above_curve([[0.85, 0.5]], c) == pytest.approx(0.00625, abs=1e-12)
    # (0.95, 0.1): 0.05 + 0.2 s over [0, 0.1]
    assert area_above_curve([[0.95, 0.1]], c) == pytest.approx(0.006, abs=1e-12)
    # both: the union, not the sum (the second adds the strip from 0.1 to 0.25 where 0.85 is below the line)
    assert area_above_curve([[0.85, 0.5], [0.95, 0.1]], c) == pytest.approx(0.006 + 0.00625, abs=1e-12)
    assert area_above_curve([[0.8, 0.5], [0.9, 0.0], [0.7, 0.9]], c) == 0.0  # on or under the curve
    assert np.isnan(area_above_curve([[0.9, 0.5]], curve()))


def test_area_above_curve_counts_what_a_cheaper_run_beats_as_nothing():
    # a non-monotone curve: the run at 0.5 saved is more accurate than the one at 0.25
    c = curve((0.0, 0.9), (0.25, 0.7), (0.5, 0.8))
    # (0.75, 0.2) is above the interpolated curve (0.74 there) but the 0.5-saved run beats it
    assert area_above_curve([[0.75, 0.2]], c) == 0.0
    # what training less reaches at s: 0.9 - 0.8 s up to s = 0.125, then 0.8 (the 0.5-saved run, held
    # flat beyond it). (0.85, 0.9) is above it on [0.0625, 0.125] by 0.8 s - 0.05 (0.0015625) and on
    # [0.125, 0.9] by 0.05 (0.03875)
    assert area_above_curve([[0.85, 0.9]], c) == pytest.approx(0.0015625 + 0.03875, abs=1e-12)


# ------------------------------------------------------------------------------ the space
def test_the_grid_space_holds_the_configurations_counted_by_hand(space):
    configs = all_configs(space)
    keys = [table_key(c, space.epochs) for c in configs]
    assert len(set(keys)) == len(keys)
    # none: the baseline and 7 shorter runs; layerout: 4^3 vectors x 3 warm-ups + random v x 3 warm-ups;
    # freezeout: 8 t0 x 3 scales x 2; prefix: k 1..2 x start 0..7; adaptive: check 1..2 x 5 thresholds
    assert Counter(c["family"] for c in configs) == {"none": 8, "layerout": 4 ** 3 * 3 + 3, "freezeout": 8 * 3 * 2,
                                                     "prefix": 2 * 8, "adaptive": 2 * 5}
    assert sorted({c["schedule"]["t0"] for c in configs if c["family"] == "freezeout"}) == \
        [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert sorted(c["train"]["epochs"] for c in configs if c["family"] == "none") == list(range(1, 9))


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_samplers_propose_only_configurations_of_the_grid(space, sampler):
    known = {table_key(c, space.epochs) for c in all_configs(space)}
    fn = define_by_run(space)
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=optuna.samplers.TPESampler(seed=3) if sampler == "tpe"
                                else optuna.samplers.RandomSampler(seed=3))
    for _ in range(30):
        trial = study.ask()
        assert table_key(fn(trial), space.epochs) in known
        study.tell(trial, [float(np.random.default_rng(trial.number).uniform()), 0.5])


# ------------------------------------------------------------------------------ the table and the replay
def test_the_committed_table_has_every_configuration_on_three_seeds(space, table):
    assert table.seeds == [0, 1, 2]
    assert set(table.ids) == {table_key(c, space.epochs) for c in all_configs(space)}
    rows = table.rows
    per_run = rows.groupby(["config_id", "seed"])["epoch"].agg(["count", "max"])
    runs = table.configs.set_index("config_id")["run_epochs"]
    assert (per_run["count"] == per_run.index.get_level_values(0).map(runs)).all()  # every epoch stored
    assert (per_run["max"] == per_run["count"]).all()
    assert rows[["val_accuracy", "test_accuracy", "compute_saved_frac", "planned_compute_saved_frac"]].notna().all().all()


def test_the_oracle_is_the_front_of_the_table(table):
    for seed in table.seeds:
        final = table.final(seed)
        hv = hypervolume_2d(final[["val_accuracy", "compute_saved_frac"]].to_numpy(), (0.0, 0.0))
        assert oracle(table, seed).hypervolume == pytest.approx(hv, abs=1e-12)


def test_a_replayed_moasha_search_follows_its_decisions_and_the_table(space, table):
    seed, n = 5, 24
    method = ProjectMethod(grid_space(table.space, seed=seed), "moasha", "random", n, "t")
    rep = replay(table, method, "moasha+random", seed, n, concurrency=3)
    assert rep.table_seed == table.seeds[seed % 3] and len(rep.trials) == n
    decisions = {(d["trial_id"], d["rung"]): d["decision"] for d in method.scheduler.decision_rows()}
    for t in rep.trials:
        assert [r["val_accuracy"] for r in t.rows] == [r["val_accuracy"] for r in t.curve[:len(t.rows)]]
        stopped = len(t.rows) < t.end
        if t.config["reference"]:
            assert not stopped  # protected: never stopped
        if stopped:  # stopped exactly at a rung where MOASHA said so
            assert decisions[t.trial_id, len(t.rows)] == "stop"
    assert sum(d == "stop" for d in decisions.values()) == sum(len(t.rows) < t.end for t in rep.trials) > 0
    # the study heard COMPLETE for every run that trained its budget, PRUNED for the stopped ones
    states = Counter(tr.state.name for tr in method.searcher.study.get_trials()
                     if "repeat_of" not in tr.user_attrs)
    assert states["PRUNED"] == sum(len(t.rows) < t.end for t in rep.trials)
    assert states["COMPLETE"] == sum(len(t.rows) == t.end for t in rep.trials)


# ------------------------------------------------------------------------------ the scripts
def test_the_build_resumes(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "tabular" / "build.py"), "--work", str(tmp_path),
           "--out", str(tmp_path / "t.csv.gz")]
    first = subprocess.run([*cmd, "--only", "1"], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*cmd, "--only", "2"], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "1 already in" in again.stdout and "1 to train" in again.stdout
    t = pd.read_csv(tmp_path / "t.csv.gz")
    # the first two configurations: the baseline (8 epochs) and shorter-12% (1 epoch)
    assert t.groupby("config_id")["epoch"].max().to_dict() == {0: 8, 1: 1} and len(t) == 9
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "t.json").read_text())["runs"] == 2


def test_the_quick_benchmark_never_beats_the_oracle(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tabular_search.py"), "--quick",
                           "--json", str(tmp_path / "q.json"), "--plot", str(tmp_path / "q.png")],
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "q.json").read_text())
    methods = out["settings"]["methods"]
    # Syne Tune is the bench extra, not the test install: without it the benchmark says so and runs the rest
    with_syne_tune = importlib.util.find_spec("syne_tune") is not None
    assert len(methods) == (14 if with_syne_tune else 12) and "optuna:nsga2" in methods
    assert ("synetune:moasha-ranked" in methods) == with_syne_tune
    assert (out["synetune_error"] is None) == with_syne_tune
    if not with_syne_tune:
        assert "Syne Tune's MOASHA left out" in proc.stderr and "pip install -e .[bench]" in proc.stderr
    runs = out["runs"]
    assert sorted(Counter(r["method"] for r in runs).values()) == [2] * len(methods)
    for r in runs:
        assert r["hv_frac"] <= 1 + 1e-9 and (r["gain_frac"] is None or r["gain_frac"] <= 1 + 1e-9), r["method"]
        assert r["trials"] <= 24 and r["epochs_trained"] <= 24 * 8
        if r["method"].startswith(("none+", "optuna:")):
            assert r["stopped_early"] == 0
    by = {(r["method"], r["seed"]): r for r in runs}
    for seed in (0, 1):  # early stopping trains fewer epochs than none for the same number of trials
        assert by["moasha+random", seed]["epochs_trained"] < by["none+random", seed]["epochs_trained"]
    assert (tmp_path / "q.png").stat().st_size > 10_000
    assert "verdict = oracle's" in proc.stdout
