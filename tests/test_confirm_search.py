"""The shorter-training reference points and the confirmation on fresh seeds in a real search:
tune_main.py --confirm-seeds on a tiny search (digits, 4 epochs of at most 3 batches), with its
own local Ray on loopback (started and shut down twice: the search, then the confirmation)."""
from __future__ import annotations

import json
import os

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything starts Ray: loopback only

import pandas as pd  # noqa: E402

import tune_main  # noqa: E402

EPOCHS = 4
SEEDS = 2


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("confirm_search")
    space = tmp / "tiny.yaml"
    space.write_text(f"""
name: tiny
model: digits_cnn
dataset: digits
train: {{epochs: {EPOCHS}, batch_size: 64, lr: 0.05, lr_milestones: [2], augment: false, device: cpu,
         max_train_batches: 3}}
families:
  prefix: {{k: [1, 2], start_epoch: [0, 1]}}
reference_budgets: [0.5]
early_stopping: {{scheduler: none}}
num_samples: 4
max_concurrent: 2
seed: 0
""")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = tune_main.main(["--space", str(space), "--storage", str(tmp / "res"), "--name", "tiny",
                             "--confirm-seeds", str(SEEDS), "--confirm-top", "1"])
    return rc, out.getvalue(), tmp / "res" / "tiny"


def test_reference_points_run_first_and_save_one_minus_f(searched):
    rc, out, exp = searched
    assert rc == 0, out
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str, "reference": str})
    assert trials["reference"].fillna("").tolist() == ["baseline", "shorter-50%", "", ""]
    assert trials["family"].tolist()[:2] == ["none", "none"]
    ref = trials.iloc[1]
    assert (ref["epochs_done"], ref["config/train/epochs"], ref["config/train/budget_epochs"]) == (2, 2, EPOCHS)
    assert json.loads(ref["config/train/lr_milestones"]) == [1]
    assert not ref["stopped_early"] and ref["status"] == "TERMINATED"
    assert ref["compute_saved_frac"] == pytest.approx(0.5, abs=1e-6)  # 3 full batches an epoch: counts divide
    assert trials.iloc[0]["compute_saved_frac"] == 0.0 and (trials["val_images"] == 144).all()
    assert "none (shorter-50%)" in out and "2/2 epochs" in out


def test_confirm_writes_n_runs_per_policy_on_seeds_the_search_never_used(searched):
    rc, out, exp = searched
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    table = pd.read_csv(exp / "confirm.csv", dtype={"trial_id": str})
    runs = table[table["kind"] == "run"]
    used = set(trials["config/train/seed"]) | {json.loads(p).get("seed") for p in trials["policy"]}
    assert set(runs["seed"]) == {1, 2} and not used & set(runs["seed"])  # the search trained with seed 0
    per = runs.groupby("trial_id").size()
    assert len(per) == 3 and (per == SEEDS).all()  # the baseline, shorter-50% and the best front policy
    assert set(table.loc[table["role"] == "curve", "name"]) == {"baseline", "shorter-50%"}
    assert runs["error"].isna().all() and runs["val_accuracy"].between(0, 1).all()
    half = runs[runs["name"] == "shorter-50%"]
    assert half["compute_saved_frac"].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    # said before the search started: what the confirmation adds (the best front policy, the
    # baseline and shorter-50% on 2 seeds: 6 runs of 4, 4 and 2 epochs)
    assert ("then the confirmation on 2 fresh seeds: the best front policy, the baseline and 1 shorter-training "
            "point: up to 6 more runs, 20 more epochs (the search: up to 16; --confirm-seeds 0 skips it)") in out
    assert json.loads((exp / "experiment.json").read_text())["options"]["confirm_seeds"] == SEEDS
    # the confirmation's last status line (stdout is not a terminal): every run planned its own epochs
    assert "[confirm] 6/6 runs finished, 0 running, 0 queued; epochs 20/20 planned" in out, out[-2000:]
    # Ray's runs of the confirmation stay out of the search's tables
    assert (exp / "confirm").is_dir() and len(trials) == 4
    assert len(list((exp / "confirm").glob("trial_*/result.json"))) == 6
    assert list((exp / "confirm").glob("trial_*/checkpoint_*")) == []  # removed once the runs ended
    # the analysis that followed: confirmed means, the verdict with its interval, last in the output
    pareto = pd.read_csv(exp / "pareto.csv", dtype={"trial_id": str})
    assert "margin" in pareto.columns and pareto["confirmed_runs"].max() == SEEDS
    last = out.strip().splitlines()[-1]
    assert last.startswith("verdict: ") and "training for fewer epochs" in last
    assert f"over {SEEDS} fresh seeds" in last, last
    html = (exp / "report.html").read_text()
    assert "id='verdict'" in html and "id='confirm-table'" in html and "Confirmation on fresh seeds" in html
    assert (exp / "pareto.png").stat().st_size > 10_000
