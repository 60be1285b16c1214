"""The library core through its real outcomes: Freezer, FLOP accounting, LayerOut draws, the
Trainer (freezing, resume, baseline accuracy), policy files and the ``layerout.train`` CLI.

Everything runs on CPU: digits / digits_cnn with few epochs and capped batches, or tiny
nn.Sequential models. Command-line cases run ``python -m layerout.train`` in subprocesses
(started side by side to keep the file fast).
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from layerout.compute import FlopCache, step_flops
from layerout.data import load_data
from layerout.errors import UserError
from layerout.freezer import Freezer
from layerout.models import MODELS, ModelSpec, build_model
from layerout.policy import Policy, load_policy, save_policy
from layerout.schedules import FreezeState, LayerOutSchedule, NoFreezeSchedule, Schedule, schedule_from_dict
from layerout.trainer import TrainConfig, Trainer
from layerout.units import unit_parameters, units_of

REPO = Path(__file__).resolve().parents[1]
# DESIGN.md "What a trial reports", spelled out here so a renamed column fails the test
DESIGN_METRICS = ["epoch", "train_loss", "val_loss", "val_accuracy", "test_accuracy", "params_frozen_frac",
                  "compute_saved_frac", "compute_spent_gflop", "time_saved_frac", "train_time_s"]
TIMING = {"train_time_s", "time_saved_frac"}
DIGITS_UNITS = ["conv1", "conv2", "head"]


# ------------------------------------------------------------------------------ helpers
class MaskList(Schedule):
    """A test schedule: epoch e gets masks[e] (not registered: never leaves this file)."""

    kind = "_test_masks"

    def __init__(self, masks):
        self.masks = [tuple(bool(f) for f in m) for m in masks]

    def state(self, epoch, step=0):
        return FreezeState(frozen=self.masks[epoch])

    def to_dict(self):
        return {"kind": self.kind}


def snapshot(params_per_unit, optimizer):
    """Per unit: (parameter copies, momentum-buffer copies or None)."""
    out = []
    for ps in params_per_unit:
        bufs = []
        for p in ps:
            st = optimizer.state.get(p, {})
            b = st.get("momentum_buffer")
            bufs.append(None if b is None else b.detach().clone())
        out.append(([p.detach().clone() for p in ps], bufs))
    return out


def same_tensors(a, b):
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y)) for x, y in zip(a, b))


def check_epoch(before, after, mask, where=""):
    """Frozen units: parameters and momentum buffers bit-identical; trainable units: parameters changed."""
    for i, frozen in enumerate(mask):
        (p0, b0), (p1, b1) = before[i], after[i]
        if frozen:
            assert same_tensors(p0, p1), f"{where}: frozen unit {i} changed its parameters"
            assert same_tensors(b0, b1), f"{where}: frozen unit {i} changed its momentum buffer"
        else:
            assert not all(torch.equal(x, y) for x, y in zip(p0, p1)), f"{where}: trainable unit {i} did not train"


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cli_env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # subprocesses run side by side on 2 cores
    env.pop("PYTHONWARNINGS", None)
    return env


def run_cli(args, timeout=240):
    return subprocess.run([sys.executable, "-m", "layerout.train", *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_cli_many(cases: dict, workers=3):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futs = {k: pool.submit(run_cli, a) for k, a in cases.items()}
        return {k: f.result() for k, f in futs.items()}


def assert_one_line_error(proc, *needles):
    """Exit 2, one stderr line 'error: ...' naming what it should, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:"), lines[0]
    for n in needles:
        assert str(n) in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


# ------------------------------------------------------------------------------ Freezer, hand loop
def _hand_loop(model, freezer, optimizer, epochs, steps, seed=0, check=None, set_to_none=True):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(epochs * steps, 8, 6, generator=g)
    ys = torch.randint(0, 4, (epochs * steps, 8), generator=g)
    for epoch in range(epochs):
        before = snapshot(freezer.params, optimizer)
        model.train()
        state = freezer.on_epoch_start(epoch)
        for step in range(steps):
            freezer.on_step(step)
            x, y = xs[epoch * steps + step], ys[epoch * steps + step]
            optimizer.zero_grad(set_to_none=set_to_none)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        after = snapshot(freezer.params, optimizer)
        if check:
            check(epoch, state, before, after)


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))


@pytest.mark.parametrize("set_to_none", [True, False])
def test_freezer_hand_loop_frozen_unit_untouched_momentum_kept_no_decay(set_to_none):
    """Also with zero_grad(set_to_none=False): a frozen unit must not keep a zero gradient, or SGD
    would still apply weight decay and momentum to it."""
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    units = units_of(model)
    assert [u.name for u in units] == ["0", "2", "4"]
    masks = [(0, 0, 0), (1, 0, 0), (0, 1, 1), (1, 1, 0), (0, 0, 0)]
    freezer = Freezer(model, opt, units, MaskList(masks).bind(3, len(masks), 4))
    seen = []

    def check(epoch, state, before, after):
        assert state.frozen == tuple(bool(f) for f in masks[epoch])
        for i, f in enumerate(state.frozen):
            assert all(p.requires_grad != f for p in freezer.params[i])
        check_epoch(before, after, state.frozen, f"epoch {epoch}")
        seen.append(state.mask_str)

    _hand_loop(model, freezer, opt, len(masks), 4, check=check, set_to_none=set_to_none)
    assert seen == ["000", "100", "011", "110", "000"]


def test_freezer_thawed_unit_resumes_its_momentum():
    """A unit frozen for an epoch keeps its momentum buffer and uses it on its first step after thawing."""
    model = _tiny()
    lr, mom, wd = 0.1, 0.9, 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=mom, weight_decay=wd)
    freezer = Freezer(model, opt, units_of(model), MaskList([(0, 0, 0), (1, 0, 0), (0, 0, 0)]).bind(3, 3, 3))
    _hand_loop(model, freezer, opt, 2, 3)  # epoch 0 trains everything, epoch 1 freezes unit 0
    w = freezer.params[0][0]
    buf_old = opt.state[w]["momentum_buffer"].clone()
    p_old = w.detach().clone()
    model.train()
    freezer.on_epoch_start(2)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    g = w.grad.clone()
    opt.step()
    want_buf = mom * buf_old + (g + wd * p_old)
    assert torch.allclose(opt.state[w]["momentum_buffer"], want_buf, rtol=1e-5, atol=1e-7)
    assert torch.allclose(w.detach(), p_old - lr * want_buf, rtol=1e-5, atol=1e-7)
    # a momentum restarted from zero would give a different step
    assert not torch.allclose(want_buf, g + wd * p_old, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("bn_frozen, stats_move", [("eval", False), ("train", True)])
def test_freezer_batchnorm_mode_of_frozen_units(bn_frozen, stats_move):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8)), nn.ReLU(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    freezer = Freezer(model, opt, units_of(model), MaskList([(1, 0), (0, 0)]).bind(2, 2, 3), bn_frozen=bn_frozen)
    bn = model[0][1]
    stats = []

    def check(epoch, state, before, after):
        stats.append((bn.running_mean.clone(), bn.training))

    start = bn.running_mean.clone()
    _hand_loop(model, freezer, opt, 1, 3, check=check)
    assert (not torch.equal(start, stats[0][0])) == stats_move
    assert bn.training == (bn_frozen == "train")
    model.train()
    freezer.on_epoch_start(1)
    assert bn.training  # a thawed unit's BatchNorm trains again


# ------------------------------------------------------------------------------ Freezer through the Trainer
def test_trainer_layerout_frozen_units_bit_identical(digits):
    cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=5, max_train_batches=3, weight_decay=0.01,
                      augment=False, seed=0)
    sched = LayerOutSchedule(v=[0.5, 0.5, 0.5])
    trainer = Trainer(cfg, sched, verbose=False, data=digits)
    snaps = [snapshot(trainer.freezer.params, trainer.optimizer)]
    masks = []

    def cb(metrics, tr):
        snaps.append(snapshot(tr.freezer.params, tr.optimizer))
        masks.append(tuple(c == "1" for c in metrics["frozen_units"]))

    trainer.callbacks.append(cb)
    trainer.fit()
    assert masks == [sched.state(e).frozen for e in range(5)]
    assert sum(any(m) for m in masks) >= 2, masks  # the test means something: units were frozen
    for e, m in enumerate(masks):
        check_epoch(snaps[e], snaps[e + 1], m, f"epoch {e} mask {m}")


def test_trainer_prefix_frozen_units_bit_identical(digits):
    cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=3, max_train_batches=3, weight_decay=0.01)
    trainer = Trainer(cfg, schedule_from_dict({"kind": "prefix", "k": 2, "start_epoch": 1}), verbose=False,
                      data=digits)
    snaps = [snapshot(trainer.freezer.params, trainer.optimizer)]
    trainer.callbacks.append(lambda m, tr: snaps.append(snapshot(tr.freezer.params, tr.optimizer)))
    rows = [trainer.fit()]
    assert [h["frozen_units"] for h in trainer.history] == ["000", "110", "110"]
    for e, m in enumerate([(0, 0, 0), (1, 1, 0), (1, 1, 0)]):
        check_epoch(snaps[e], snaps[e + 1], m, f"epoch {e}")
    # the paper's figure: mean over epochs of frozen parameters / all parameters
    counts = [sum(p.numel() for p in ps) for ps in trainer.freezer.params]
    want = (0 + 2 * (counts[0] + counts[1]) / sum(counts)) / 3
    assert rows[0]["params_frozen_frac"] == pytest.approx(want, rel=1e-12)
    assert rows[0]["compute_saved_frac"] > 0


# ------------------------------------------------------------------------------ FLOP accounting
A, B, C, N = 5, 7, 3, 4


def _two_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(A, B), nn.ReLU(), nn.Linear(B, C))
    return model, unit_parameters(model, units_of(model))


def _hand_two_layer(mask, n=N, a=A, b=B, c=C):
    fwd = 2 * n * a * b + 2 * n * b * c
    return {
        (False, False): fwd + 2 * n * b * c + 2 * n * b * c + 2 * n * a * b,  # grad W2, grad h, grad W1
        (True, False): fwd + 2 * n * b * c,  # grad W2 only: nothing before unit 1 needs a gradient
        (False, True): fwd + 2 * n * b * c + 2 * n * a * b,  # grad h (to reach unit 0) + grad W1
    }[tuple(mask)]


@pytest.mark.parametrize("mask", [(False, False), (True, False), (False, True)])
def test_step_flops_two_layer_hand_count(mask):
    model, params = _two_layer()
    x, y = torch.randn(N, A), torch.randint(0, C, (N,))
    rg = [p.requires_grad for p in model.parameters()]
    assert step_flops(model, params, mask, x, y) == _hand_two_layer(mask)
    assert [p.requires_grad for p in model.parameters()] == rg and all(p.grad is None for p in model.parameters())
    assert model.training
    cache = FlopCache(model, params, x, y)
    assert cache(mask) == _hand_two_layer(mask) / N


def test_step_flops_refuses_all_frozen():
    model, params = _two_layer()
    with pytest.raises(ValueError, match="every unit"):
        step_flops(model, params, (True, True), torch.randn(N, A), torch.randint(0, C, (N,)))
    with pytest.raises(ValueError, match="every unit"):
        FreezeState(frozen=(True, True))


def _mlp2(num_classes=10, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(64 * in_channels, 12), nn.ReLU(), nn.Linear(12, num_classes))


@pytest.fixture
def mlp2_model(monkeypatch):
    monkeypatch.setitem(MODELS, "_test_mlp2", ModelSpec("_test_mlp2", _mlp2, "test", 8, "digits", 1))
    return "_test_mlp2"


def test_trainer_compute_saved_frac_matches_hand_count(digits, mlp2_model):
    epochs, batches, bs = 6, 3, 64
    cfg = TrainConfig(model=mlp2_model, dataset="digits", epochs=epochs, max_train_batches=batches, batch_size=bs,
                      seed=1)
    sched = LayerOutSchedule(v=[0.5, 0.5])
    trainer = Trainer(cfg, sched, verbose=False, data=digits)
    assert [u.name for u in trainer.units] == ["1", "3"]
    hist = []
    trainer.callbacks.append(lambda m, tr: hist.append(m))
    trainer.fit()
    masks = [tuple(c == "1" for c in m["frozen_units"]) for m in hist]
    assert masks == [sched.state(e).frozen for e in range(epochs)]
    assert len({m for m in masks if any(m)}) == 2, masks  # both one-unit masks occur
    n = batches * bs  # samples per epoch (full batches)
    per = {m: _hand_two_layer(m, n=1, a=64, b=12, c=10) for m in masks + [(False, False)]}
    spent = unfrozen = 0.0
    for e, m in enumerate(masks):
        spent += n * per[m]
        unfrozen += n * per[(False, False)]
        assert hist[e]["compute_saved_frac"] == pytest.approx(1 - spent / unfrozen, rel=1e-12, abs=1e-12)
        assert hist[e]["compute_spent_gflop"] == pytest.approx(spent / 1e9, rel=1e-12)
    assert hist[-1]["compute_saved_frac"] > 0


# ------------------------------------------------------------------------------ LayerOut draws
def test_layerout_freeze_frequency_matches_v():
    v = [0.1, 0.5, 0.8, 0.3, 0.05]  # P(all frozen) = 6e-5: redraws do not bias the frequencies
    epochs = 4000
    s = LayerOutSchedule(v=v, seed=7).bind(len(v), epochs, 10)
    m = np.array([s.state(e).frozen for e in range(epochs)], dtype=float)
    freq = m.mean(0)
    for i, p in enumerate(v):
        sigma = math.sqrt(p * (1 - p) / epochs)
        assert abs(freq[i] - p) < 4.5 * sigma, (i, freq[i], p)
    # independent draws: the pair (0.5, 0.8) is frozen together about 0.4 of the time
    both = (m[:, 1] * m[:, 2]).mean()
    assert abs(both - 0.4) < 4.5 * math.sqrt(0.4 * 0.6 / epochs)
    assert not m.all(1).any()


def test_layerout_warmup_never_all_and_keep_last():
    s = LayerOutSchedule(v=[0.9, 0.9, 0.9], warmup_epochs=5, seed=1).bind(3, 60, 4)
    assert all(not s.state(e, st).any_frozen for e in range(5) for st in (0, 3))
    assert sum(s.state(e).any_frozen for e in range(5, 60)) > 40
    ones = LayerOutSchedule(v=[1.0, 1.0, 1.0, 1.0], seed=2).bind(4, 300, 4)
    for e in range(300):
        f = ones.state(e).frozen
        assert not all(f) and sum(f) == 3, (e, f)  # redrawn: never everything, still as much as allowed
    keep = LayerOutSchedule(v=[0.9] * 4, keep_last_trainable=True, seed=3).bind(4, 500, 4)
    masks = [keep.state(e).frozen for e in range(500)]
    assert not any(m[-1] for m in masks)
    assert sum(m[0] for m in masks) > 400  # the others still freeze with their probabilities
    keep1 = LayerOutSchedule(v=[1.0] * 4, keep_last_trainable=True, seed=3).bind(4, 50, 4)
    assert all(keep1.state(e).frozen == (True, True, True, False) for e in range(50))


def test_layerout_random_epoch_differs_by_epoch_reproducible_by_seed():
    a = LayerOutSchedule(v_mode="random_epoch", seed=11).bind(6, 40, 4)
    b = LayerOutSchedule(v_mode="random_epoch", seed=11).bind(6, 40, 4)
    c = LayerOutSchedule(v_mode="random_epoch", seed=12).bind(6, 40, 4)
    vs = [tuple(a.vector(e)) for e in range(40)]
    assert len(set(vs)) == 40 and all(0 <= x <= 1 for v in vs for x in v)
    assert vs == [tuple(b.vector(e)) for e in range(40)]
    assert vs != [tuple(c.vector(e)) for e in range(40)]
    ma = [a.state(e).frozen for e in range(40)]
    assert ma == [b.state(e).frozen for e in range(40)]
    assert ma != [c.state(e).frozen for e in range(40)]
    assert len(set(ma)) > 10
    # the run's seed is used when the schedule has none; an explicit one wins
    assert [LayerOutSchedule(v_mode="random_epoch").bind(6, 40, 4, seed=11).state(e).frozen
            for e in range(40)] == ma
    assert [LayerOutSchedule(v_mode="random_epoch", seed=11).bind(6, 40, 4, seed=99).state(e).frozen
            for e in range(40)] == ma


# ------------------------------------------------------------------------------ resume
def test_resume_is_bit_identical_to_straight_run(tmp_path):
    def cfg():
        return TrainConfig(model="digits_cnn", dataset="digits", epochs=5, max_train_batches=4, seed=0)

    def sched():
        return LayerOutSchedule(v=[0.5, 0.5, 0.5])

    straight = Trainer(cfg(), sched(), out_dir=tmp_path / "a", verbose=False)
    straight.fit()
    cut = Trainer(cfg(), sched(), out_dir=tmp_path / "b", verbose=False,
                  callbacks=[lambda m, tr: m["epoch"] >= 2])
    cut.fit()
    assert cut.epoch == 2 and len(read_csv(tmp_path / "b" / "epochs.csv")) == 2
    assert not json.loads((tmp_path / "b" / "summary.json").read_text())["finished"]
    resumed = Trainer.resume(tmp_path / "b", verbose=False)
    assert resumed.epoch == 2
    resumed.fit()
    masks = [h["frozen_units"] for h in resumed.history]
    assert any("1" in m for m in masks[2:]), masks  # freezing happens after the interruption
    assert state_dicts_equal(straight.model.state_dict(), resumed.model.state_dict())
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(state_dicts_equal(sa[k], sb[k]) for k in sa)
    ra, rb = read_csv(tmp_path / "a" / "epochs.csv"), read_csv(tmp_path / "b" / "epochs.csv")
    assert len(ra) == len(rb) == 5
    assert list(ra[0]) == list(rb[0]) and list(ra[0])[:len(DESIGN_METRICS)] == DESIGN_METRICS
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k not in TIMING} == {k: v for k, v in y.items() if k not in TIMING}


# ------------------------------------------------------------------------------ baseline accuracy
def test_unfrozen_baseline_learns_digits(digits):
    cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=8, lr=0.05, batch_size=64, augment=False)
    final = Trainer(cfg, NoFreezeSchedule(), verbose=False, data=digits).fit()
    assert final["val_accuracy"] > 0.9 and final["test_accuracy"] > 0.9
    assert final["compute_saved_frac"] == 0.0 and final["params_frozen_frac"] == 0.0
    assert final["compute_spent_gflop"] > 0


# ------------------------------------------------------------------------------ policies
def _good_policy(**schedule):
    sched = {"kind": "layerout", "v": [0.9, 0.5, 0.1], "v_mode": "manual", "warmup_epochs": 1,
             "keep_last_trainable": False, "seed": 3, **schedule}
    return {"format": "layerout-policy", "version": 1, "model": "digits_cnn", "units": list(DIGITS_UNITS),
            "schedule": sched, "measured": {"val_accuracy": 0.97, "compute_saved_frac": 0.2},
            "provenance": {"dataset": "digits", "epochs": 4, "seed": 0}}


@pytest.mark.parametrize("schedule", [
    {}, {"kind": "none"}, {"kind": "freezeout", "t0": 0.7, "scale": "squared", "scale_lr": True, "warmup_epochs": 1},
    {"kind": "prefix", "k": 2, "start_epoch": 1},
    {"kind": "adaptive", "check_every": 2, "threshold_mode": "absolute", "threshold": 0.1,
     "min_trainable_units": 1, "freeze_epochs": [2, None, None]},
], ids=["layerout", "none", "freezeout", "prefix", "adaptive"])
def test_policy_round_trip(tmp_path, schedule):
    d = _good_policy()
    if schedule:
        d["schedule"] = schedule
    path = save_policy(Policy.from_dict(d), tmp_path / "sub" / "p.json")
    assert json.loads(path.read_text()) == d  # plain JSON on disk
    assert load_policy(path).to_dict() == d
    save_policy(d, tmp_path / "q.json")
    assert load_policy(tmp_path / "q.json").to_dict() == d
    assert schedule_from_dict(d["schedule"]).to_dict() == d["schedule"]


def _bad_policies():
    """name -> (policy text, words the one-line error must contain)."""
    def doc(f):
        d = _good_policy()
        f(d)
        return json.dumps(d)

    return {
        "wrong_length": (doc(lambda d: d["schedule"].update(v=[0.5, 0.5])), ["schedule.v", "2 values", "3 units"]),
        "outside_01": (doc(lambda d: d["schedule"].update(v=[0.5, 1.5, 0.1])), ["schedule.v[1]", "1.5", "[0, 1]"]),
        "warmup_ge_epochs": (doc(lambda d: d["schedule"].update(warmup_epochs=4)), ["warmup_epochs", "4 epochs"]),
        "other_units": (doc(lambda d: d.update(units=["conv1", "convB", "head"])),
                        ["units", "'convB' in the policy but 'conv2' in the model"]),
        "malformed_json": ('{"format": "layerout-policy", "version": 1,', ["not valid JSON", "line"]),
        "wrong_format": (doc(lambda d: d.update(format="layerout-polcy")), ["format", "'layerout-polcy'"]),
        "wrong_version": (doc(lambda d: d.update(version=2)), ["version", "2"]),
        "unknown_kind": (doc(lambda d: d.update(schedule={"kind": "freezeall"})),
                         ["schedule.kind", "'freezeall'", "allowed", "layerout"]),
    }


BAD = _bad_policies()


@pytest.mark.parametrize("name", [n for n in BAD if n != "other_units"])
def test_load_policy_bad_input(tmp_path, name):
    text, needles = BAD[name]
    p = tmp_path / f"{name}.json"
    p.write_text(text)
    with pytest.raises(UserError) as exc:
        load_policy(p)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(p))
    for n in needles:
        assert n in msg, (n, msg)
    assert p.read_text() == text  # loading never touches the file


def test_save_policy_refuses_bad_and_keeps_old_file(tmp_path):
    p = save_policy(_good_policy(), tmp_path / "p.json")
    before = p.read_text()
    bad = _good_policy(v=[0.5, 2.0, 0.1])
    with pytest.raises(UserError, match=r"schedule.v\[1\]"):
        save_policy(bad, p)
    assert p.read_text() == before


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
    d = _good_policy(warmup_epochs=3)
    d["provenance"] = {}
    p = root / "warmup_cli.json"
    p.write_text(json.dumps(d))
    cases["warmup_vs_cli_epochs"] = ["--policy", p, "--dataset", "digits", "--epochs", "3", "--quiet",
                                     "--out", root / "out_w"]
    meta["warmup_vs_cli_epochs"] = (root / "out_w", [str(p), "warmup_epochs", "3"])
    # a policy for another model, applied with --model
    d = _good_policy()
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
    # a resume of a folder that holds no run
    cases["resume_not_a_run"] = ["--resume", empty, "--quiet"]
    meta["resume_not_a_run"] = (root / "never_created", [str(empty), "checkpoint.pt"])
    procs = run_cli_many(cases, workers=4)
    return {k: (procs[k], *meta[k]) for k in cases}, empty


CLI_CASES = list(BAD) + ["warmup_vs_cli_epochs", "other_model", "flag_wrong_length", "flag_outside_01",
                         "flag_warmup", "flag_bad_choice", "missing_dataset", "resume_not_a_run"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_bad_input_is_one_line_exit_2(cli_errors, name):
    results, _ = cli_errors
    proc, out, needles = results[name]
    assert_one_line_error(proc, *needles)
    assert not out.exists(), "a failed run must not create its output folder"


def test_cli_missing_dataset_leaves_data_dir_alone(cli_errors):
    results, empty = cli_errors
    assert results["missing_dataset"][0].returncode == 2
    assert list(empty.iterdir()) == []


# ------------------------------------------------------------------------------ Policy.attach in a plain loop
class UserNet(nn.Module):
    """A user's model with no declared units: its units are the top-level children with parameters."""

    def __init__(self, names=("body", "mid", "head")):
        super().__init__()
        torch.manual_seed(0)
        setattr(self, names[0], nn.Sequential(nn.Linear(6, 12), nn.ReLU()))
        self.act = nn.Tanh()  # no parameters: not a unit
        self._names = names
        if len(names) == 3:
            setattr(self, names[1], nn.Linear(12, 12))
        setattr(self, names[-1], nn.Linear(12, 4))

    def forward(self, x):
        for n in self._names[:-1]:
            x = self.act(getattr(self, n)(x))
        return getattr(self, self._names[-1])(x)


@pytest.mark.parametrize("schedule", [
    {"kind": "layerout", "v": [0.6, 0.6, 0.3], "v_mode": "manual", "warmup_epochs": 1, "keep_last_trainable": False,
     "seed": 5},
    {"kind": "prefix", "k": 2, "start_epoch": 2},
], ids=["layerout", "prefix"])
def test_policy_attach_in_plain_loop(tmp_path, schedule):
    epochs = 8
    pol = Policy(model="user-net", units=["body", "mid", "head"], schedule=schedule, provenance={"epochs": epochs})
    path = save_policy(pol, tmp_path / "user.json")
    model = UserNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    freezer = load_policy(path).attach(model, opt)
    assert [u.name for u in freezer.units] == ["body", "mid", "head"]
    # what the schedule says, computed independently of the attached freezer
    want = schedule_from_dict(schedule).bind(3, epochs, 0, seed=0)
    seen = []

    def check(epoch, state, before, after):
        assert state.frozen == want.state(epoch).frozen
        check_epoch(before, after, state.frozen, f"epoch {epoch}")
        seen.append(state.mask_str)

    _hand_loop(model, freezer, opt, epochs, 3, check=check)
    assert seen[0] == "000" and any("1" in m for m in seen), seen


def test_policy_attach_to_model_with_other_units(tmp_path):
    path = save_policy(Policy(model="user-net", units=["body", "mid", "head"], schedule={"kind": "none"}),
                       tmp_path / "p.json")
    pol = load_policy(path)
    model = UserNet(names=("body", "middle", "head"))
    with pytest.raises(UserError) as exc:
        pol.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert "units: unit 1 is 'mid' in the policy but 'middle' in the model" in str(exc.value)
    small = UserNet(names=("body", "head"))
    with pytest.raises(UserError) as exc:
        pol.attach(small, torch.optim.SGD(small.parameters(), lr=0.1))
    assert "has 3 units but the model has 2" in str(exc.value) and "body, head" in str(exc.value)


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
    assert all(c in rows[0] for c in DESIGN_METRICS)
    summary = json.loads((out / "summary.json").read_text())
    assert {"metrics", "config", "policy"} <= set(summary)
    m = summary["metrics"]
    assert all(k in m for k in DESIGN_METRICS) and m["epoch"] == 3
    assert m["compute_saved_frac"] > 0
    assert float(rows[-1]["compute_saved_frac"]) == pytest.approx(m["compute_saved_frac"])
    assert summary["config"]["model"] == "digits_cnn" and summary["config"]["epochs"] == 3
    pol = Policy.from_dict(summary["policy"])  # valid per the policy format
    assert pol.model == "digits_cnn" and pol.units == DIGITS_UNITS
    assert pol.schedule["kind"] == "layerout" and pol.schedule["v"] == [0.5, 0.5, 0.5]
    assert load_policy(out / "summary.json").to_dict() == pol.to_dict()
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 3 and set(ck["model"]) == set(build_model("digits_cnn", in_channels=1).state_dict())
    assert "Traceback" not in proc.stderr


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
