"""Searches on your own model and data, end to end on CPU: a module outside the package named by a
space and imported by the workers, its exported policy trained by layerout.train and by attach()
in a plain loop; bad user code stopped before any trial; a user error in a trial not retried; the
Python API with objects; the modules shipped to a cluster; each example searched at a tiny size.

Every search starts its own local Ray on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) and shuts it
down before returning; the cluster test starts and stops a head node with ray.cluster_utils.Cluster.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything starts Ray: loopback only

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import tune_main  # noqa: E402
from helpers import REPO, cli_env, read_csv  # noqa: E402
from layerout.data import UserData  # noqa: E402
from layerout.policy import load_policy  # noqa: E402
from usercode_fixture import write_module  # noqa: E402

EPOCHS = 2


def _space(folder: Path, module: str, name: str, model: str = "FixtureNet", dataset: str = "digits",
           extra: str = "") -> Path:
    p = folder / f"{name}.yaml"
    p.write_text(f"""
name: {name}
model: {module}:{model}
dataset: {module}:{dataset}
train: {{epochs: {EPOCHS}, batch_size: 64, lr: 0.05, augment: false, device: cpu}}
families:
  layerout: {{vector: per_unit, v: [0.6, 0.9], warmup_epochs: 0, v_mode: manual}}
early_stopping: {{scheduler: none}}
reference_budgets: false
confirm: {{seeds: 0}}
num_samples: 3
max_concurrent: 2
{extra}
""")
    return p


def _read(exp: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str, "frozen_units": str})
    epochs = pd.read_csv(exp / "epochs.csv", dtype={"trial_id": str, "frozen_units": str})
    return trials, epochs, json.loads((exp / "experiment.json").read_text())


def _python(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**cli_env(), "PYTHONPATH": str(REPO)}  # this checkout, run from a folder outside it
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_search_a_model_and_data_from_a_module_outside_the_package(tmp_path):
    code = write_module(tmp_path / "code", "us_e2e")  # not importable from the repository: only the space's folder
    space = _space(code, "us_e2e", "e2e")
    rc = tune_main.main(["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "e2e"])
    assert rc == 0
    exp = tmp_path / "res" / "e2e"
    trials, epochs, meta = _read(exp)
    assert len(trials) == 3 and (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == EPOCHS).all()
    assert meta["model"] == "us_e2e:FixtureNet" and meta["units"] == ["stem", "body", "head"]
    assert meta["space"]["units_from"] == "automatic"
    assert meta["space"]["unit_prefixes"] == [["stem", ["stem", "bn"]], ["body", ["body"]], ["head", ["head"]]]
    assert meta["code"]["paths"][0] == str(code.resolve()) and meta["code"]["ship"] == [str(code / "us_e2e.py")]
    assert json.loads(trials["config/train/units"].iloc[0]) == meta["space"]["unit_prefixes"]
    assert (trials["val_accuracy"] > 0.5).all()

    # a policy that freezes, exported from the search, trains the same model through layerout.train ...
    from analysis.export import build_policy, write_policy_file
    from analysis.results import load_experiment

    e = load_experiment(exp)
    row = e.trials[e.trials["family"] != "none"].iloc[0]  # the first trial is the baseline (the curve's first point)
    ran = epochs[epochs["trial_id"] == row["trial_id"]]
    assert any("1" in m for m in ran["frozen_units"])
    pfile = write_policy_file(build_policy(e, row, "test"), tmp_path / "p.json")
    assert load_policy(pfile).provenance["code_paths"][0] == str(code.resolve())
    p = _python(["-m", "layerout.train", "--policy", pfile, "--out", tmp_path / "replay", "--quiet"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    replay = read_csv(tmp_path / "replay" / "epochs.csv")
    assert [r["frozen_units"] for r in replay] == ran["frozen_units"].tolist()
    assert [float(r["compute_saved_frac"]) for r in replay] == pytest.approx(ran["compute_saved_frac"].tolist(),
                                                                             abs=1e-9)
    assert float(replay[-1]["val_accuracy"]) == pytest.approx(row["val_accuracy"], abs=1e-9)  # same seed, same run

    # ... and through attach() in a plain PyTorch loop over the same module's model and data
    mod = importlib.import_module("us_e2e")
    torch.manual_seed(0)
    model = mod.FixtureNet()
    data = mod.digits()
    x, y = torch.as_tensor(data.train[0]), torch.as_tensor(data.train[1])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    freezer = load_policy(pfile).attach(model, opt)
    assert [u.name for u in freezer.units] == ["stem", "body", "head"]
    masks = []
    for epoch in range(EPOCHS):
        model.train()
        state = freezer.on_epoch_start(epoch)
        masks.append("".join("1" if f else "0" for f in state.frozen))
        frozen_before = [[q.detach().clone() for q in ps] for ps, f in zip(freezer.params, state.frozen) if f]
        for step, i in enumerate(range(0, len(x), 64)):
            freezer.on_step(step)
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        frozen_after = [[q.detach() for q in ps] for ps, f in zip(freezer.params, state.frozen) if f]
        assert all(torch.equal(a, b) for pa, pb in zip(frozen_before, frozen_after) for a, b in zip(pa, pb))
    assert masks == ran["frozen_units"].tolist()


BAD_CODE = [  # (model, dataset, extra space keys, what the one line must say)
    ("Missing", "digits", "", ["model: us_bad:Missing: us_bad has no attribute 'Missing'"]),
    ("FixtureNet", "not_data", "", ["dataset: us_bad:not_data: returned str"]),
    ("not_a_model", "digits", "", ["model: us_bad:not_a_model: returned int, not a torch.nn.Module"]),
    ("WrongHead", "digits", "", ["model: us_bad:WrongHead: forward on a batch of us_bad:digits", "mat1 and mat2"]),
    ("FixtureNet", "digits", "units: [stem, head]", ["units: the given units: parameters in no unit: bn.weight"]),
]


@pytest.mark.parametrize("model,dataset,extra,needles", BAD_CODE, ids=["import", "data", "model", "forward", "units"])
def test_bad_user_code_stops_the_search_before_any_trial(tmp_path, capsys, model, dataset, extra, needles):
    code = write_module(tmp_path / "code", "us_bad")
    space = _space(code, "us_bad", "bad", model=model, dataset=dataset, extra=extra)
    with pytest.raises(SystemExit) as e:
        tune_main.cli(["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "bad"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {space}: ") and "Traceback" not in err[0], err
    assert all(n in err[0] for n in needles), err[0]
    assert not (tmp_path / "res").exists()  # no experiment directory: no trial started


def test_import_error_names_the_module(tmp_path, capsys):
    space = _space(tmp_path, "us_nowhere", "nowhere")
    with pytest.raises(SystemExit) as e:
        tune_main.cli(["--space", str(space), "--storage", str(tmp_path / "res")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {space}: model: us_nowhere:FixtureNet: cannot import us_nowhere (no module named "
                          f"'us_nowhere' in {tmp_path.resolve()}") and "\n" not in err


def test_a_user_error_inside_a_trial_is_not_retried(tmp_path, monkeypatch):
    import optuna

    code = write_module(tmp_path / "code", "us_fail")
    monkeypatch.setenv("UFIX_DRIVER_PID", str(os.getpid()))  # its data function works here, not in trials
    space = _space(code, "us_fail", "fail", dataset="only_in_the_driver", extra="num_samples: 2")
    journal = tmp_path / "study.log"
    rc = tune_main.main(["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "fail",
                         "--max-failures", "2", "--optuna-storage", str(journal)])
    assert rc == 2  # both trials failed with the same error in the user's code: the search stopped on it
    exp = tmp_path / "res" / "fail"
    trials, epochs, _ = _read(exp)
    assert len(trials) == 2 and (trials["status"] == "ERROR").all() and len(epochs) == 0
    assert trials["error"].str.contains("dataset: us_fail:only_in_the_driver\\(\\) failed \\(RuntimeError: this "
                                        "data exists only in the driver\\)").all()
    for tid in trials["trial_id"]:
        lines = (exp / f"trial_{tid}" / "result.json").read_text().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["user_error"]  # ran once: never retried
        assert not (exp / f"trial_{tid}" / "error.txt").exists()
    study = optuna.load_study(study_name="fail", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2


def test_the_stop_rule_the_first_trials_failing_with_the_same_user_error():
    from tuning.usercode import UserErrorStop, failures_to_stop

    # max_concurrent (None, 0: as resources allow), at most 3, at most num_samples
    assert [failures_to_stop(c, 20) for c in (None, 0, 1, 2, 3, 8)] == [3, 3, 1, 2, 3, 3]
    assert failures_to_stop(4, 2) == 2
    err = "dataset: d: train: batch 4/20 of epoch 1: item 700 has label 12, outside [0, 9] (num_classes = 10)"
    stop = UserErrorStop(2, quiet=True)
    assert stop("a", {"epoch": 0, "user_error": err}) is True  # that trial ends now, through Ray's own stop
    stop("a", {"epoch": 0, "user_error": err})  # Ray may pass a trial's last result twice: still one trial
    assert not stop.stop_all() and stop.reason is None
    stop("b", {"epoch": 0, "user_error": err.replace("4/20", "9/20")})  # the same error read in another batch
    assert stop.stop_all() and stop.reason == err
    other = UserErrorStop(2, quiet=True)  # two different errors first: the search goes on
    for tid, e in (("a", err), ("b", "model: m: training step 3/3 of epoch 1 failed (RuntimeError: x)"), ("c", err)):
        other(tid, {"epoch": 0, "user_error": e})
    assert not other.stop_all()
    trained = UserErrorStop(2, quiet=True)  # a trial trained an epoch: the code and data can train
    assert trained("x", {"epoch": 1, "val_accuracy": 0.5}) is False
    for tid in ("a", "b"):
        trained(tid, {"epoch": 0, "user_error": err})
    assert not trained.stop_all()


def test_a_bad_label_deep_in_a_dataset_ends_each_trial_once_and_stops_the_search(tmp_path, capsys):
    """A label out of range that the check before training does not read (item 2001 of 4200): each
    trial that reads it fails once (never retried), its trials.csv row names the item and the batch,
    and the search stops after its first trials (2: max_concurrent) with one error line, exit 2."""
    from layerout.preflight import LABEL_ITEMS, label_positions
    from usercode_fixture import LABEL_DEEP_AT

    assert LABEL_DEEP_AT not in label_positions(4200, LABEL_ITEMS)  # the premise: only training reads it
    code = write_module(tmp_path / "code", "us_label")
    space = _space(code, "us_label", "label", dataset="label_deep_in_the_data",
                   extra="num_samples: 6")  # max_concurrent 2: two trials fail, then it stops
    space.write_text(space.read_text().replace(f"epochs: {EPOCHS},", "epochs: 1,"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        tune_main.cli(["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "label",
                       "--max-failures", "2", "--progress-interval", "0"])
    out, err = capsys.readouterr()
    assert e.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the search stopped after 2 of 6 trials: "), err
    assert f"item {LABEL_DEEP_AT} has label 12, outside [0, 9] (num_classes = 10)" in lines[0]
    assert "attempt" not in out and "restarts" not in out and "reference points their" not in out, out
    assert "2 of 6 trials" in out and "2 errored" in out
    exp = tmp_path / "res" / "label"
    trials, epochs, meta = _read(exp)
    assert len(trials) == 2 and (trials["status"] == "ERROR").all() and len(epochs) == 0  # fewer than num_samples
    pattern = (rf"^dataset: us_label:label_deep_in_the_data: train[^:]*: batch \d+/\d+ of (epoch 1|the evaluation): "
               rf"item {LABEL_DEEP_AT} has label 12, outside \[0, 9\]")
    assert trials["error"].str.match(pattern).all(), trials["error"].tolist()
    assert meta["stopped_on_user_error"] == trials["error"].iloc[0] and meta["finished"]
    for tid in trials["trial_id"]:  # each ran once: one result line (the error), no retry's error.txt
        result = (exp / f"trial_{tid}" / "result.json").read_text().splitlines()
        assert len(result) == 1 and json.loads(result[0])["user_error"] == trials["error"].iloc[0]
        assert not (exp / f"trial_{tid}" / "error.txt").exists()
    assert "Trials did not complete" not in err


def test_python_api_with_a_factory_and_a_data_function(tmp_path, monkeypatch):
    from tuning import SearchOptions, resume_search, run_search

    code = write_module(tmp_path / "code", "us_api")
    monkeypatch.syspath_prepend(str(code))  # as a notebook would import its own module
    mod = importlib.import_module("us_api")

    def data_function(n_train=1200):  # a closure: not importable by name, sent by value
        d = mod.digits()
        return UserData(train=(d.train[0][:n_train], d.train[1][:n_train]), test=d.test, num_classes=10)

    space = {"name": "api", "train": {"epochs": EPOCHS, "augment": False, "device": "cpu"},
             "families": {"prefix": {"k": [1, 2]}}, "early_stopping": {"scheduler": "none"}, "reference_budgets": []}
    result = run_search(space, SearchOptions(num_samples=2, storage=str(tmp_path / "res"), name="api", seed=3),
                        model=mod.FixtureNet, dataset=data_function, log=lambda line: None)
    assert result.exp_dir == str(tmp_path / "res" / "api") and len(result.trials) == 2
    assert (result.trials["status"] == "TERMINATED").all() and (result.trials["epochs_done"] == EPOCHS).all()
    meta = result.meta
    assert meta["model"] == "us_api:FixtureNet"  # importable: recorded by its import path
    assert meta["dataset"].endswith("data_function") and meta["code"]["objects"] == {"dataset": meta["dataset"]}
    assert (result.trials["steps_per_epoch"] == 17).all()  # ceil(0.9 * 1200 / 64): the closure's 1200 rows
    assert (result.trials["config/train/seed"] == 3).all() and meta["options"]["seed"] == 3  # SearchOptions' seed
    with pytest.raises(Exception, match="resume it from Python with resume_search"):
        resume_search(result.exp_dir)


def test_cluster_search_ships_the_users_module(tmp_path):
    from ray.cluster_utils import Cluster

    code = write_module(tmp_path / "code", "us_ship")
    space = _space(code, "us_ship", "ship", extra="num_samples: 2")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        rc = tune_main.main(["--space", str(space), "--storage", str(tmp_path / "res"), "--name", "ship",
                             "--address", cluster.address, "--no-analysis"])
    finally:
        cluster.shutdown()
    assert rc == 0
    trials, _, meta = _read(tmp_path / "res" / "ship")
    # the trials had no path to the module's folder: they imported the shipped copy (py_modules)
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all()
    assert meta["code"]["ship"] == [str(code / "us_ship.py")]


@pytest.mark.parametrize("example", ["tabular_mlp", "custom_cnn"])
def test_examples_search_and_export_after_copying_the_folder(tmp_path, monkeypatch, example):
    """As a user would: copy the example folder elsewhere, then the README's two commands (run here,
    in a fresh folder), then train with the exported policy."""
    from search_spaces.space import load_space

    units = {"tabular_mlp": ["fc1", "fc2", "fc3", "head"], "custom_cnn": ["conv1", "conv2", "conv3", "head"]}[example]
    mine = shutil.copytree(REPO / "examples" / example, tmp_path / "mine")
    space = yaml.safe_load((mine / "space.yaml").read_text())
    space["train"].update(epochs=EPOCHS, lr_milestones=[])  # a tiny search: 2 trials of 2 epochs
    space["early_stopping"].update(grace_period=1)  # the example's scheduler: the default, moasha
    space.update(num_samples=2, paper_warmup_epochs=1, families={"layerout": {}}, reference_budgets=False)
    (mine / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    assert tune_main.main(["--space", str(mine / "space.yaml"), "--storage", str(tmp_path / "results"), "--name",
                           "ex", "--no-analysis"]) == 0
    trials, _, meta = _read(tmp_path / "results" / "ex")
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all()
    assert meta["units"] == units and meta["options"]["scheduler"] == "moasha"
    from analysis.export import main as export_main
    from layerout.train import main as train_main

    monkeypatch.chdir(tmp_path)  # no Ray from here on: export and train from the user's folder
    # the front's knee, whether or not it beats training for fewer epochs (2 trials: the paper's baseline is one)
    assert export_main(["results/ex", "--pick", "knee", "--ignore-curve", "-o", "knee.json"]) == 0
    assert train_main(["--policy", "knee.json", "--out", "runs/knee", "--quiet"]) == 0
    assert len(read_csv(tmp_path / "runs" / "knee" / "epochs.csv")) == EPOCHS
    # the space as shipped is valid too (after the copy: this process imported the copied module first)
    assert load_space(REPO / "examples" / example / "space.yaml").units == units
