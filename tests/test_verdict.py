"""Is freezing worth it (analysis/curve.py, analysis/confirm.py, the export's default): the
shorter-training curve and the margins over it on hand-made tables, the verdict, the export that
refuses policies below the curve, and the confirmation's bookkeeping (fresh seeds, confirm.csv,
the knee on confirmed means) with a stand-in for the Ray runner. No Ray, no training: values are
multiples of 1/64 so that "on the curve" is exact."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import helpers
from analysis.confirm import confirm, fresh_seeds
from analysis.curve import add_margins, curve_at, shorter_curve
from analysis.export import export_policy
from analysis.front import compute_front
from analysis.results import load_experiment
from helpers import assert_one_line_error
from layerout.errors import UserError

UNITS = ["conv1", "conv2", "head"]
EPOCHS = 4
LO = {"kind": "layerout", "v": [0.5, 0.5, 0.1], "v_mode": "manual", "warmup_epochs": 0, "keep_last_trainable": False,
      "seed": 3}
# trial_id, family, reference, epochs trained (own budget), val accuracy, compute saved, schedule
CURVE = [("base", "none", "baseline", 4, 0.9375, 0.0, {"kind": "none"}),
         ("s75", "none", "shorter-75%", 3, 0.9375, 0.25, {"kind": "none"}),
         ("s50", "none", "shorter-50%", 2, 0.875, 0.5, {"kind": "none"}),
         ("s25", "none", "shorter-25%", 1, 0.75, 0.75, {"kind": "none"})]
POLICIES = [("above", "prefix", "", 4, 0.953125, 0.125, {"kind": "prefix", "k": 1, "start_epoch": 2}),
            ("on", "layerout", "", 4, 0.8125, 0.625, LO),
            ("below", "freezeout", "", 4, 0.859375, 0.5, {"kind": "freezeout", "t0": 0.5, "scale": "cubic",
                                                          "scale_lr": True, "warmup_epochs": 0}),
            ("beyond", "prefix", "", 4, 0.765625, 0.875, {"kind": "prefix", "k": 2, "start_epoch": 0})]


def write_experiment(root: Path, rows, name: str = "verdict") -> Path:
    d = root / name
    d.mkdir(parents=True)
    meta = {"format": "layerout-experiment", "version": 1, "name": name, "model": "digits_cnn", "dataset": "digits",
            "units": UNITS, "epochs": EPOCHS, "objectives": [["val_accuracy", "max"], ["compute_saved_frac", "max"]],
            "space": {"seed": 0, "train": {"epochs": EPOCHS, "batch_size": 64, "lr": 0.05, "device": "cpu"}},
            "options": {"cpus_per_trial": 1}}
    (d / "experiment.json").write_text(json.dumps(meta))
    trials, epochs = [], []
    for tid, fam, ref, e, acc, saved, sched in rows:
        trials.append({"trial_id": tid, "status": "TERMINATED", "stopped_early": False, "paper_config": "",
                       "reference": ref, "family": fam, "epochs_done": e, "config/train/epochs": e,
                       "config/train/budget_epochs": EPOCHS if e < EPOCHS else None, "config/train/seed": 0,
                       "config/train/batch_size": 64, "config/train/lr": 0.05, "policy": json.dumps(sched),
                       "steps_per_epoch": 21, "val_images": 64, "epoch": e, "val_accuracy": acc,
                       "compute_saved_frac": saved, "time_saved_frac": saved, "test_accuracy": acc,
                       "params_frozen_frac": 0.0})
        epochs += [{"trial_id": tid, "epoch": k, "val_accuracy": acc, "compute_saved_frac": saved,
                    "frozen_units": "000"} for k in range(1, e + 1)]
    pd.DataFrame(trials).to_csv(d / "trials.csv", index=False)
    pd.DataFrame(epochs).to_csv(d / "epochs.csv", index=False)
    return d


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory):
    return write_experiment(tmp_path_factory.mktemp("verdict"), CURVE + POLICIES)


def test_margins_above_on_below_and_beyond_the_curve():
    cands = pd.DataFrame([{"trial_id": t, "family": f, "reference": r, "config/train/epochs": e, "val_accuracy": a,
                           "compute_saved_frac": x, "stopped": False} for t, f, r, e, a, x, _ in CURVE + POLICIES])
    curve = shorter_curve(cands, EPOCHS)
    assert curve["name"].tolist() == ["baseline", "shorter-75%", "shorter-50%", "shorter-25%"]
    assert curve["epochs"].tolist() == [4, 3, 2, 1]
    assert curve_at(curve, 0.625) == (0.8125, False)  # halfway between shorter-50% and shorter-25%
    assert curve_at(curve, 0.875) == (0.75, True)  # beyond shorter-25%: held flat
    m = add_margins(cands, curve).set_index("trial_id")
    assert m.loc["above", "margin"] == 1 / 64 and m.loc["above", "curve_accuracy"] == 0.9375
    assert m.loc["on", "margin"] == 0.0
    assert m.loc["below", "margin"] == -1 / 64
    assert m.loc["beyond", "margin"] == 1 / 64 and bool(m.loc["beyond", "beyond_curve"])
    assert not m.loc[["above", "on", "below"], "beyond_curve"].any()
    assert m.loc[["base", "s50"], "margin"].isna().all()  # the curve's own points
    assert (m["confirmed_runs"] == 0).all() and m["margin_ci_low"].isna().all()


def test_front_pareto_csv_and_the_single_seed_verdict(exp_dir, capsys):
    fr = compute_front(load_experiment(exp_dir))
    assert fr.front["trial_id"].tolist() == ["above", "s75", "s50", "on", "beyond"]
    assert dict(zip(fr.front["trial_id"], fr.front["margin"]))["beyond"] == 1 / 64
    assert fr.val_images == 64
    assert fr.verdict.startswith(
        "On a single seed, freezing beat training for fewer epochs: trial above (prefix k=1 from epoch 2) saved 12.5% "
        "of the training compute at 95.31% validation accuracy, 1.56 points above the unfrozen model trained for "
        "fewer epochs at the same compute; one seed is an anecdote (one validation image is 1.56 points (64 images)): "
        f"confirm it on fresh seeds with python -m analysis.confirm {exp_dir}")
    from analysis.__main__ import main as analysis_main

    assert analysis_main([str(exp_dir), "--no-policies"]) == 0  # in-process (the command line: test_analysis.py)
    assert capsys.readouterr().out.splitlines()[0] == fr.verdict
    pareto = pd.read_csv(exp_dir / "pareto.csv", dtype={"trial_id": str})
    assert pareto.columns[:15].tolist() == [
        "rank", "knee", "trial_id", "family", "paper_config", "reference", "stopped", "val_accuracy",
        "compute_saved_frac", "curve_accuracy", "margin", "margin_ci_low", "margin_ci_high", "beyond_curve",
        "confirmed_runs"]
    assert pareto.set_index("trial_id").loc["on", "margin"] == 0.0
    html = (exp_dir / "report.html").read_text()
    assert "<p id='verdict' class='verdict'>On a single seed, freezing beat training" in html
    assert "one validation image is 1.56 points (64 images)" in html and "+1.56 (beyond the curve)" in html


def test_export_chooses_among_policies_above_the_curve(exp_dir, tmp_path):
    doc = json.loads(export_policy(exp_dir, pick="max-accuracy", out=tmp_path / "a.json").read_text())
    assert doc["provenance"]["trial_id"] == "above"
    assert doc["provenance"]["picked_by"] == "max-accuracy (among the front policies that beat training for fewer epochs)"
    doc = json.loads(export_policy(exp_dir, pick="min-compute", out=tmp_path / "b.json").read_text())
    assert doc["provenance"]["trial_id"] == "beyond"
    # --min-accuracy: the most compute saved at that accuracy, among the two above the curve ...
    doc = json.loads(export_policy(exp_dir, min_accuracy=0.9, out=tmp_path / "c.json").read_text())
    assert doc["provenance"]["trial_id"] == "above"
    with pytest.raises(UserError, match=r"no front policy reaches it .* among the front policies that beat"):
        export_policy(exp_dir, min_accuracy=0.96, out=tmp_path / "c.json")
    # ... or among every front policy (the old behaviour): the unfrozen model trained for 3 of 4 epochs
    doc = json.loads(export_policy(exp_dir, min_accuracy=0.9, ignore_curve=True, out=tmp_path / "c.json").read_text())
    assert doc["provenance"]["trial_id"] == "s75" and doc["provenance"]["reference"] == "shorter-75%"
    assert (doc["provenance"]["epochs"], doc["provenance"]["train"]["budget_epochs"]) == (3, 4)


def test_export_refuses_when_no_policy_beats_the_curve(tmp_path):
    d = write_experiment(tmp_path, CURVE + [p for p in POLICIES if p[0] in ("on", "below")], name="nothing")
    out = tmp_path / "knee.json"
    proc = helpers.run_module("analysis.export", [d, "--pick", "min-compute", "-o", out])
    assert_one_line_error(proc, "error: no front policy beats training for fewer epochs (the min-compute among the "
                                "freezing policies, trial on (layerout), is on it at 62.5% compute saved); train the unfrozen "
                                "model for 2 of 4 epochs instead (shorter-50%: val acc 87.50%, compute saved 50.0%), "
                                "or export it anyway with --ignore-curve")
    assert not out.exists()
    export_policy(d, pick="min-compute", ignore_curve=True, out=out)
    assert json.loads(out.read_text())["provenance"]["trial_id"] == "s25"  # the front's cheapest: training shorter
    fr = compute_front(load_experiment(d))
    assert fr.verdict == ("No freezing policy beat training for fewer epochs: the best on the front, trial on "
                          "(layerout manual v, mean v 0.37) saved 62.5% of the training compute at 81.25% validation "
                          "accuracy, was level with the unfrozen model trained for fewer epochs at the same compute "
                          "(a single seed; one validation image is 1.56 points (64 images)).")


def _fake_runner(values, calls):
    """A stand-in for tuning.confirm.run_confirm_jobs: each job's result from ``values``
    (trial id -> val accuracy by seed), its compute saved as in the search."""
    saved = {t: x for t, _, _, _, _, x, _ in CURVE + LUCKY}

    def run(exp_dir, jobs, log=print, **options):
        calls.append((exp_dir, jobs, options))
        return [{"trial_id": j["trial_id"], "seed": j["seed"], "confirm_trial": f"c{i}", "epochs": j["train"]["epochs"],
                 "val_accuracy": values[j["trial_id"]](j["seed"]), "test_accuracy": 0.9,
                 "compute_saved_frac": saved[j["trial_id"]], "time_saved_frac": 0.1 * j["seed"], "error": ""}
                for i, j in enumerate(jobs)]

    return run


# a planted lucky point: "lucky" is the knee on its one search run
LUCKY = [("lucky", "layerout", "", 4, 0.96875, 0.375, LO),
         ("steady", "prefix", "", 4, 0.9375, 0.4375, {"kind": "prefix", "k": 1, "start_epoch": 0}),
         ("cheap", "prefix", "", 4, 0.78125, 0.8125, {"kind": "prefix", "k": 2, "start_epoch": 1})]


def test_confirm_writes_fresh_seeds_and_the_knee_moves_off_a_lucky_point(tmp_path):
    d = write_experiment(tmp_path, CURVE + LUCKY, name="lucky")
    before = compute_front(load_experiment(d))
    assert before.knee == "lucky"
    # on fresh seeds "lucky" is 6 images worse than it looked; the others are as the search saw them
    search = {t: a for t, _, _, _, a, _, _ in CURVE + LUCKY}
    noise = {1: -1 / 128, 2: 0.0, 4: 1 / 128}
    values = {t: (lambda s, a=a: a + noise[s]) for t, a in search.items()}
    values["lucky"] = lambda s: 0.875 + noise[s]
    calls: list = []
    res = confirm(d, top=2, seeds=3, runner=_fake_runner(values, calls), quiet=True, log=lambda line: None)
    assert res.seeds == [1, 2, 4] and fresh_seeds(load_experiment(d), 3) == [1, 2, 4]  # 0: the search's, 3: LO's
    assert res.policies == ["lucky", "steady"] and res.curve == ["base", "s75", "s50", "s25"]
    jobs = calls[0][1]
    assert len(jobs) == 6 * 3 and {j["train"]["seed"] for j in jobs} == {1, 2, 4}
    assert {(j["trial_id"], j["train"]["epochs"], j["train"].get("budget_epochs")) for j in jobs if
            j["trial_id"] in ("s50", "lucky")} == {("s50", 2, 4), ("lucky", 4, None)}
    assert [j["schedule"] for j in jobs if j["trial_id"] == "lucky"][0] == LO  # the policy as exported
    table = pd.read_csv(d / "confirm.csv", dtype={"trial_id": str})
    runs = table[table["kind"] == "run"]
    assert runs.groupby("trial_id").size().to_dict() == {t: 3 for t in ("base", "s75", "s50", "s25", "lucky", "steady")}
    assert set(runs["seed"]) == {1, 2, 4}
    summary = table[table["kind"] == "summary"].set_index("trial_id")
    assert summary.loc["lucky", "val_accuracy"] == pytest.approx(0.875)
    assert summary.loc["lucky", "val_accuracy_std"] == pytest.approx(1 / 128)
    half = 4.302652729749464 * (1 / 128) / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(3)
    assert summary.loc["lucky", "val_accuracy_ci_low"] == pytest.approx(0.875 - half)
    assert summary.loc["lucky", "time_saved_frac"] == pytest.approx(0.7 / 3)
    assert summary.loc["s50", ["role", "name", "epochs"]].tolist() == ["curve", "shorter-50%", 2]

    after = compute_front(load_experiment(d))
    assert after.knee == "steady" and "lucky" not in set(after.front["trial_id"])
    row = after.candidates.set_index("trial_id").loc["lucky"]
    assert row["val_accuracy"] == pytest.approx(0.875) and row["search_val_accuracy"] == 0.96875
    steady = after.front.set_index("trial_id").loc["steady"]
    # paired by seed: the same seed's noise moves the policy and the curve alike, so the margin is exact
    assert steady["confirmed_runs"] == 3
    assert steady["margin"] == pytest.approx(0.9375 - (0.875 + 0.0625 * 0.25))
    assert steady["margin_ci_low"] == pytest.approx(steady["margin"]) == pytest.approx(steady["margin_ci_high"])
    assert after.verdict.startswith("Freezing beat training for fewer epochs: trial steady (prefix k=1 from epoch 0) "
                                    "saved 43.8% of the training compute at 93.75% validation accuracy, 4.69 points "
                                    "above the unfrozen model trained for fewer epochs at the same compute "
                                    "(95% interval +4.69 to +4.69 points over 3 fresh seeds)")
    knee = json.loads(export_policy(d, out=tmp_path / "knee.json").read_text())
    assert knee["provenance"]["trial_id"] == "steady" and knee["measured"]["confirmed_runs"] == 3
    assert "id='confirm-table'" in (d / "report.html").read_text()
    from analysis.run import run_analysis

    line = next(ln for ln in run_analysis(d, quiet=True).table.splitlines() if ln.startswith("knee: "))
    assert line.startswith("knee: trial steady (prefix): val acc 93.75%") and "single seed" not in line, line


def test_a_knee_the_confirmation_did_not_run_says_so_on_its_line(tmp_path):
    """Only the search's knee ("lucky") is confirmed, and it falls below the curve on its means:
    the knee moves to "steady", measured on the search's single seed, and its line says so."""
    from analysis.run import run_analysis

    d = write_experiment(tmp_path, CURVE + LUCKY, name="lucky1")
    values = {t: (lambda s, a=a: a) for t, _, _, _, a, _, _ in CURVE + LUCKY}
    values["lucky"] = lambda s: 0.875
    confirm(d, top=1, seeds=3, runner=_fake_runner(values, []), quiet=True, log=lambda line: None)
    fr = compute_front(load_experiment(d))
    assert fr.knee == "steady" and fr.front.set_index("trial_id").loc["steady", "confirmed_runs"] == 0
    assert ("knee: trial steady (prefix): val acc 93.75%, compute saved 43.8%, time saved 43.8% (the search's "
            "single seed: not one of the confirmed policies); the knee") in run_analysis(d, quiet=True).table


def test_a_confirm_csv_without_its_columns_is_one_line(tmp_path):
    d = write_experiment(tmp_path, CURVE + POLICIES, name="badconfirm")
    (d / "confirm.csv").write_text("kind,trial_id,val_accuracy\nrun,base,0.9\n")
    with pytest.raises(UserError) as e:
        load_experiment(d)
    assert str(e.value) == f"{d / 'confirm.csv'}: missing column(s) seed, compute_saved_frac"


@pytest.mark.parametrize("args, needles", [(["--progress-interval", "-1"], ["--progress-interval", "-1"]),
                                           (["--seeds", "0"], ["--seeds", "[1, 100]", "0"])])
def test_confirm_cli_bad_options_are_one_line_and_train_nothing(exp_dir, args, needles):
    import subprocess
    import sys

    before = sorted(p.name for p in exp_dir.iterdir())
    proc = subprocess.run([sys.executable, "-m", "analysis.confirm", str(exp_dir), *args], cwd=helpers.REPO,
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, *needles)
    assert sorted(p.name for p in exp_dir.iterdir()) == before  # no confirm.csv, no confirm/


def test_one_knee_in_every_output(tmp_path, capsys):
    """The whole front's knee (s75, an unfrozen run) and the knee of the policies above the curve
    (above) differ here: every output names the same one, the latter."""
    from analysis.pareto import knee_point
    from analysis.run import run_analysis
    from tune_main import _analysis
    from tuning import SearchResult

    d = write_experiment(tmp_path, CURVE + POLICIES, name="knees")
    fr = compute_front(load_experiment(d))
    assert fr.front.loc[knee_point(fr.front, fr.objectives), "trial_id"] == "s75"  # the rule not taken
    assert fr.knee == "above" and fr.knee_above_curve
    res = run_analysis(d, quiet=True)
    assert "knee: trial above (prefix): val acc 95.31%" in res.table
    assert "the knee of the 2 front policies above the shorter-training curve" in res.table
    pareto = pd.read_csv(d / "pareto.csv", dtype={"trial_id": str})
    assert pareto.loc[pareto["knee"], "trial_id"].tolist() == ["above"]
    html = (d / "report.html").read_text()
    assert html.count("★ knee") == 1 and "<td>above ★ knee</td>" in html
    assert "<tr><td>knee</td><td>above (prefix): val acc 95.31%" in html
    doc = json.loads((d / "policies" / "above.json").read_text())
    assert doc["provenance"]["picked_by"] == "front (knee)"
    for ignore in (False, True):
        doc = json.loads(export_policy(d, pick="knee", ignore_curve=ignore, out=tmp_path / "k.json").read_text())
        assert doc["provenance"]["trial_id"] == "above", ignore
    # the end of a search: the console's table and the knee policy it writes
    exp = load_experiment(d)
    capsys.readouterr()
    _analysis(SearchResult(exp_dir=str(d), meta=exp.meta, trials=exp.trials, epochs=exp.epochs, wall_s=1.0,
                           planned=len(exp.trials)))
    out = capsys.readouterr().out
    assert "knee: trial above" in out and f"knee policy: {d / 'policies' / 'knee.json'}  (trial above" in out
    assert json.loads((d / "policies" / "knee.json").read_text())["provenance"]["trial_id"] == "above"


def test_without_a_policy_above_the_curve_the_knee_is_the_fronts(tmp_path):
    d = write_experiment(tmp_path, CURVE + [p for p in POLICIES if p[0] in ("on", "below")], name="flat")
    fr = compute_front(load_experiment(d))
    assert not fr.knee_above_curve and fr.knee == "s50"
    from analysis.run import run_analysis

    res = run_analysis(d, quiet=True)
    assert ("knee: trial s50 (none): val acc 87.50%, compute saved 50.0%, time saved 50.0%; no freezing policy beats "
            "the shorter-training curve, so this is the knee of the whole front") in res.table
    with pytest.raises(UserError, match=r"^no front policy beats training for fewer epochs \(the knee is trial s50 "
                                        r"\(unfrozen\); the best freezing policy among the freezing policies, trial on"):
        export_policy(d, pick="knee", out=tmp_path / "k.json")
    doc = json.loads(export_policy(d, pick="knee", ignore_curve=True, out=tmp_path / "k.json").read_text())
    assert doc["provenance"]["trial_id"] == "s50"
