"""``python -m layerout.train`` end to end: files written, resume, policy replay, and one-line errors
(exit 2) for bad input. Subprocesses run side by side to keep the file fast."""
from __future__ import annotations

import json
import re

import pytest
import torch

from helpers import (BAD, DIGITS_UNITS, METRIC_COLUMNS, assert_one_line_error, good_policy, hand_step_flops, read_csv,
                     run_cli, run_cli_many, state_dicts_equal)
from layerout.models import build_model
from layerout.policy import Policy, load_policy


@pytest.fixture(scope="module")
def cli_errors(tmp_path_factory):
    """Every bad-input case of the CLI, run side by side; name -> (CompletedProcess, out dir, needles)."""
    root = tmp_path_factory.mktemp("cli_errors")
    cases, meta = {}, {}
    common = ["--dataset", "digits", "--epochs", "2", "--max-train-batches", "1", "--quiet"]
    for name, (text, needles) in BAD.items():
        p = root / f"{name}.json"
        p.write_text(text)
        out = root / f"out_{name}"
        cases[name] = ["--policy", p, *common, "--out", out]
        meta[name] = (out, [str(p), *needles])
    # warm-up >= epochs where the policy has no run length of its own: the CLI's --epochs decides
    d = good_policy(warmup_epochs=3)
    d["provenance"] = {}
    p = root / "warmup_cli.json"
    p.write_text(json.dumps(d))
    cases["warmup_vs_cli_epochs"] = ["--policy", p, "--dataset", "digits", "--epochs", "3", "--quiet",
                                     "--out", root / "out_w"]
    meta["warmup_vs_cli_epochs"] = (root / "out_w", [str(p), "warmup_epochs", "3"])
    # a policy for another model, applied with --model
    d = good_policy()
    d.update(model="mnist_shallow", units=[f"u{i}" for i in range(7)], schedule={"kind": "none"})
    p = root / "mnist_policy.json"
    p.write_text(json.dumps(d))
    cases["other_model"] = ["--policy", p, "--model", "digits_cnn", *common, "--out", root / "out_m"]
    meta["other_model"] = (root / "out_m", [str(p), "model", "'mnist_shallow'", "'digits_cnn'"])
    # the same mistakes made with flags
    flag = ["--model", "digits_cnn", "--dataset", "digits", "--epochs", "3", "--quiet"]
    cases["flag_wrong_length"] = [*flag, "--freeze-prob", "0.5,0.5", "--out", root / "out_f1"]
    meta["flag_wrong_length"] = (root / "out_f1", ["--freeze-prob", "2 values", "3 units"])
    cases["flag_outside_01"] = [*flag, "--freeze-prob", "0.5,1.5,0.5", "--out", root / "out_f2"]
    meta["flag_outside_01"] = (root / "out_f2", ["v[1]", "1.5", "[0, 1]"])
    cases["flag_warmup"] = [*flag, "--freeze-prob", "0.5,0.5,0.5", "--warmup-epochs", "3", "--out", root / "out_f3"]
    meta["flag_warmup"] = (root / "out_f3", ["warmup_epochs", "3"])
    # a usage error caught by argparse is one line too, not usage + error
    cases["flag_bad_choice"] = [*flag, "--fast-path", "fast", "--out", root / "out_f4"]
    meta["flag_bad_choice"] = (root / "out_f4", ["--fast-path", "'fast'", "'auto', 'off', 'cudagraph'",
                                                 "python -m layerout.train --help"])
    # a dataset that is not there, offline
    empty = root / "empty_data"
    empty.mkdir()
    cases["missing_dataset"] = ["--dataset", "mnist", "--data-dir", empty, "--no-download", "--quiet",
                                "--out", root / "out_mnist"]
    meta["missing_dataset"] = (root / "out_mnist", ["mnist", str(empty.resolve()), "MNIST/raw",
                                                    "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
    # an unknown dataset is named as such (not as a missing model)
    cases["unknown_dataset"] = ["--dataset", "nope", "--quiet", "--out", root / "out_nope"]
    meta["unknown_dataset"] = (root / "out_nope", ["error: --dataset: unknown dataset 'nope'; allowed: digits, mnist, "
                                                   "cifar10, cifar100, synthetic"])
    # a resume of a folder that holds no run
    cases["resume_not_a_run"] = ["--resume", empty, "--quiet"]
    meta["resume_not_a_run"] = (root / "never_created", [str(empty), "checkpoint.pt"])
    procs = run_cli_many(cases, workers=4)
    return {k: (procs[k], *meta[k]) for k in cases}, empty


CLI_CASES = list(BAD) + ["warmup_vs_cli_epochs", "other_model", "flag_wrong_length", "flag_outside_01",
                         "flag_warmup", "flag_bad_choice", "missing_dataset", "unknown_dataset", "resume_not_a_run"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_bad_input_is_one_line_exit_2(cli_errors, name):
    results, _ = cli_errors
    proc, out, needles = results[name]
    assert_one_line_error(proc, *needles)
    assert not out.exists(), "a failed run must not create its output folder"


def test_cli_data_dir_with_a_bundled_dataset_is_a_note(tmp_path):
    data = tmp_path / "data"
    proc = run_cli(["--dataset", "digits", "--data-dir", data, "--epochs", "1", "--max-train-batches", "1", "--quiet",
                    "--out", tmp_path / "run"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"note: --data-dir {data} is not used: the digits dataset is bundled with "
                                        "scikit-learn, no files are read"]
    assert not data.exists()


def test_cli_missing_dataset_leaves_data_dir_alone(cli_errors):
    results, empty = cli_errors
    assert results["missing_dataset"][0].returncode == 2
    assert list(empty.iterdir()) == []




# ------------------------------------------------------------------------------ CLI end to end
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_run")
    out = root / "run"
    proc = run_cli(["--model", "digits_cnn", "--dataset", "digits", "--schedule", "layerout", "--freeze-prob",
                    "0.5,0.5,0.5", "--epochs", "3", "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, out, proc


def test_cli_writes_epochs_summary_checkpoint(cli_run):
    _, out, proc = cli_run
    rows = read_csv(out / "epochs.csv")
    assert len(rows) == 3 and [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert all(c in rows[0] for c in METRIC_COLUMNS)
    summary = json.loads((out / "summary.json").read_text())
    assert {"metrics", "config", "policy"} <= set(summary)
    m = summary["metrics"]
    assert all(k in m for k in METRIC_COLUMNS) and m["epoch"] == 3
    # exactly what the epochs' masks cost, counted by hand (every epoch: 21 steps, the last one short, so
    # weigh by samples: 1294 training images, batch 64)
    masks = [r["frozen_units"] for r in rows]
    assert any("1" in mk for mk in masks), masks
    unfrozen = hand_step_flops((False, False, False))
    spent = sum(1294 * hand_step_flops(tuple(c == "1" for c in mk)) for mk in masks)
    assert m["compute_saved_frac"] == pytest.approx(1 - spent / (3 * 1294 * unfrozen), rel=1e-12)
    for e in range(3):  # and per epoch, cumulatively
        spent_e = sum(1294 * hand_step_flops(tuple(c == "1" for c in mk)) for mk in masks[:e + 1])
        assert float(rows[e]["compute_saved_frac"]) == pytest.approx(1 - spent_e / ((e + 1) * 1294 * unfrozen),
                                                                     rel=1e-9)
    assert summary["config"]["model"] == "digits_cnn" and summary["config"]["epochs"] == 3
    pol = Policy.from_dict(summary["policy"])  # valid per the policy format
    assert pol.model == "digits_cnn" and pol.units == DIGITS_UNITS
    assert pol.schedule["kind"] == "layerout" and pol.schedule["v"] == [0.5, 0.5, 0.5]
    assert load_policy(out / "summary.json").to_dict() == pol.to_dict()
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 3 and set(ck["model"]) == set(build_model("digits_cnn", in_channels=1).state_dict())
    assert "Traceback" not in proc.stderr
    # one line per epoch: its cumulative training time labelled, then the estimated time left (not after the last)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3, proc.stdout
    for row, line in zip(rows, lines):
        last = row["epoch"] == "3"
        m = re.search(r"  train_time (\d+\.\d)s(  left ~(\d+s|\d+m\d\ds))?$", line)
        assert m and m.group(1) == f"{float(row['train_time_s']):.1f}" and (m.group(2) is None) == last, line


@pytest.fixture(scope="module")
def cli_followups(cli_run):
    root, out, _ = cli_run
    before = {"csv": (out / "epochs.csv").read_text(),
              "model": torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]}
    procs = run_cli_many({"resume": ["--resume", out, "--quiet"],
                          "replay": ["--policy", out / "summary.json", "--out", root / "replay", "--quiet"]})
    return root, out, before, procs


def test_cli_resume_of_finished_run(cli_followups):
    _, out, before, procs = cli_followups
    proc = procs["resume"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "after epoch 3/3" in proc.stdout
    assert (out / "epochs.csv").read_text() == before["csv"]
    after = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state_dicts_equal(before["model"], after["model"])
    assert json.loads((out / "summary.json").read_text())["finished"] is True


def test_cli_policy_replays_the_run(cli_followups):
    root, out, before, procs = cli_followups
    proc = procs["replay"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_csv(out / "epochs.csv"), read_csv(root / "replay" / "epochs.csv")
    assert [r["frozen_units"] for r in a] == [r["frozen_units"] for r in b]
    assert any("1" in r["frozen_units"] for r in b)
    sa = json.loads((out / "summary.json").read_text())
    sb = json.loads((root / "replay" / "summary.json").read_text())
    assert sb["policy"]["schedule"] == sa["policy"]["schedule"]
    assert sb["config"] == sa["config"]
    ck = torch.load(root / "replay" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state_dicts_equal(before["model"], ck["model"])  # same recipe, seed and masks: same weights


@pytest.mark.parametrize("argv, want", [
    (["--schedule", "freezeout"], {"kind": "freezeout"}),  # the schedule's defaults: scale_lr on
    (["--t0", "0.7", "--no-scale-lr"], {"kind": "freezeout", "t0": 0.7, "scale_lr": False}),
    (["--t0", "0.7", "--scale-lr"], {"kind": "freezeout", "t0": 0.7, "scale_lr": True}),
    (["--freeze-prob", "0.5,0.5,0.5", "--no-keep-last-trainable"],
     {"kind": "layerout", "v_mode": "manual", "v": [0.5, 0.5, 0.5], "warmup_epochs": 0, "keep_last_trainable": False}),
])
def test_on_off_schedule_flags(argv, want):
    from layerout.schedules import schedule_from_dict
    from layerout.train import build_parser, schedule_dict_from_args

    d = schedule_dict_from_args(build_parser().parse_args(argv), 3)
    assert d == want
    if d["kind"] == "freezeout":
        assert schedule_from_dict(d).scale_lr is want.get("scale_lr", True)
