"""The schedule families through the Trainer and the CLI: FreezeOut (per-unit lr in the optimizer,
freeze steps, weights, compute saved), prefix (weights, FLOPs), adaptive (decides, exports, replays).

CPU only: digits, a few epochs with capped batches, and a stack of Linear layers registered as a
model for the duration of a test.
"""
from __future__ import annotations

import csv
import json
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

from helpers import hand_saved_frac, run_cli, state_dicts_equal
from layerout.compute import step_flops
from layerout.models import MODELS, ModelSpec, build_model
from layerout.policy import load_policy
from layerout.schedules import schedule_from_dict
from layerout.trainer import TrainConfig, Trainer

WIDTHS = [64, 64, 64, 64, 64, 10]  # digits flattened (64) -> four 64-wide layers -> 10 classes: K = 5 units
K = len(WIDTHS) - 1


def linear_stack(num_classes=10, in_channels=1):
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(K):
        layers.append(nn.Linear(WIDTHS[i], WIDTHS[i + 1] if i < K - 1 else num_classes))
        if i < K - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def fwd_flops(i: int) -> int:
    """Per-sample forward FLOPs of unit i (one matmul; bias adds and ReLU are not counted)."""
    return 2 * WIDTHS[i] * WIDTHS[i + 1]


@pytest.fixture
def stack_model(monkeypatch):
    monkeypatch.setitem(MODELS, "_test_stack", ModelSpec("_test_stack", linear_stack, "test", 8, "digits", 1))
    return "_test_stack"


def unit_copies(trainer):
    return [[p.detach().clone() for p in ps] for ps in trainer.freezer.params]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def record_steps(trainer):
    """Wrap the trainer's optimizer.step: per step, each unit's lr in the optimizer's param groups,
    each unit's requires_grad, and each unit's weights after the step."""
    rec = []
    opt = trainer.optimizer
    orig = opt.step

    def step(*a, **k):
        lrs = {g["layerout_unit"]: g["lr"] for g in opt.param_groups if "layerout_unit" in g}
        trainable = [all(p.requires_grad for p in ps) for ps in trainer.freezer.params]
        out = orig(*a, **k)
        rec.append({"lr": [lrs[i] for i in range(len(trainable))], "trainable": trainable,
                    "weights": unit_copies(trainer)})
        return out

    opt.step = step
    return rec


# ------------------------------------------------------------------------------ FreezeOut
T0, EPOCHS, SPE, LR = 0.8, 4, 10, 0.05
T_STEPS = EPOCHS * SPE


def t_formula(i: int) -> float:
    return 1.0 if i == K - 1 else (T0 + (1 - T0) * i / (K - 1)) ** 3


@pytest.mark.parametrize("scale_lr", [False, True])
def test_freezeout_in_trainer_matches_formulas(digits, stack_model, scale_lr):
    cfg = TrainConfig(model=stack_model, dataset="digits", epochs=EPOCHS, max_train_batches=SPE, lr=LR,
                      weight_decay=5e-4, augment=False)
    sched = schedule_from_dict({"kind": "freezeout", "t0": T0, "scale": "cubic", "scale_lr": scale_lr})
    trainer = Trainer(cfg, sched, verbose=False, data=digits)
    assert len(trainer.units) == K
    start = unit_copies(trainer)
    rec = record_steps(trainer)
    final = trainer.fit()
    assert len(rec) == T_STEPS

    t = [t_formula(i) for i in range(K)]
    assert t[:2] == pytest.approx([0.512, 0.614125])
    # freeze step of every unit: the authors' code trains unit i at iteration j while j <= t_i * T
    first_frozen = [next((s for s, r in enumerate(rec) if not r["trainable"][i]), None) for i in range(K)]
    assert first_frozen[:-1] == [21, 25, 30, 35]  # t_i * T = 20.48, 24.565, 29.16, 34.295
    for i in range(K - 1):
        assert first_frozen[i] == math.floor(t[i] * T_STEPS) + 1, (i, first_frozen, t[i] * T_STEPS)
        assert all(not r["trainable"][i] for r in rec[first_frozen[i]:]), f"unit {i} thawed"
    assert first_frozen[-1] is None  # the last unit trains to the end
    assert first_frozen[:-1] == sorted(first_frozen[:-1])  # progressive: a growing prefix

    # unit 0's lr actually in the optimizer: 0.5 lr (1 + cos(pi t / (t_0 T))), / t_0 with scale_lr
    base = LR / t[0] if scale_lr else LR
    for s in (0, 3, 7, 11, 15, first_frozen[0] - 1):
        want = 0.5 * base * (1 + math.cos(math.pi * s / (t[0] * T_STEPS)))
        assert rec[s]["lr"][0] == pytest.approx(want, rel=1e-9, abs=1e-15), s
    for s in (0, 17, 33):  # the last unit anneals over the whole run
        want = 0.5 * LR * (1 + math.cos(math.pi * s / T_STEPS))
        assert rec[s]["lr"][-1] == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert rec[first_frozen[0]]["lr"][0] == 0.0

    # weights: a unit trains until its freeze step, and is bit-identical from then on
    for i in range(K - 1):
        s_i = first_frozen[i]
        last = rec[s_i - 1]["weights"][i]
        assert not same(last, rec[s_i - 2]["weights"][i]), f"unit {i} did not train just before freezing"
        assert all(same(r["weights"][i], last) for r in rec[s_i:]), f"unit {i} moved after freezing"
        assert same(unit_copies(trainer)[i], last)
    assert not same(start[-1], unit_copies(trainer)[-1])

    # compute saved vs FreezeOut's cost model. FreezeOut's own model (docs/FREEZING.md): C = 2 sum c_i, C_f = sum c_i + sum c_i t_i
    # assumes each unit's backward costs one forward. What autograd runs (and what the trainer counts):
    # unit i's weight gradient costs f_i while unit i trains (until t_i), and its input gradient costs
    # f_i while anything before it trains. FreezeOut's frozen units always form a prefix (t_i grows
    # with i), so that lasts until t_{i-1}; unit 0's input (the data) never needs a gradient. So
    #   C = sum f_i (fwd) + sum f_i (weight grads) + sum_{i>=1} f_i (input grads)
    #   C_f = sum f_i + sum f_i t_i + sum_{i>=1} f_i t_{i-1}
    f = [fwd_flops(i) for i in range(K)]
    c_full = sum(f) + sum(f) + sum(f[1:])
    c_f = sum(f) + sum(fi * ti for fi, ti in zip(f, t)) + sum(f[i] * t[i - 1] for i in range(1, K))
    saved = final["compute_saved_frac"]
    assert saved > 0.1
    assert saved == pytest.approx(1 - c_f / c_full, rel=0.05)
    # and exactly, with the steps each unit really trained (s_i; T for the last unit)
    s = [x if x is not None else T_STEPS for x in first_frozen]
    c_f_steps = (T_STEPS * sum(f) + sum(fi * si for fi, si in zip(f, s))
                 + sum(f[i] * s[i - 1] for i in range(1, K)))
    assert saved == pytest.approx(1 - c_f_steps / (T_STEPS * c_full), rel=1e-9)


@pytest.mark.parametrize("bn_frozen, want", [("auto", "eval"), ("eval", "eval"), ("train", "train")])
def test_freezeout_batchnorm_of_frozen_units_is_eval_by_default(tmp_path, digits, bn_frozen, want):
    """FreezeOut's authors put a frozen layer in eval mode: bn_frozen auto (the default) resolves to
    eval for freezeout, and the run records the resolved value (summary config and policy)."""
    epochs, spe = 3, 4  # T = 12; t = 0.5, 0.75 (linear, K = 3): unit 0 trains while j <= 6, unit 1 while j <= 9
    cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=epochs, max_train_batches=spe, augment=False,
                      bn_frozen=bn_frozen)
    sched = schedule_from_dict({"kind": "freezeout", "t0": 0.5, "scale": "linear"})
    trainer = Trainer(cfg, sched, out_dir=tmp_path, verbose=False, data=digits)
    assert trainer.cfg.bn_frozen == want and trainer.freezer.bn_frozen == want
    bns = [trainer.model.conv1[1], trainer.model.conv2[1]]
    seen = []  # per step: (each BN's mode during the step, its running mean after it)
    opt, orig = trainer.optimizer, trainer.optimizer.step

    def step(*a, **k):
        out = orig(*a, **k)
        seen.append([(bn.training, bn.running_mean.clone()) for bn in bns])
        return out

    opt.step = step
    trainer.fit()
    assert len(seen) == epochs * spe
    for i, first in enumerate((7, 10)):
        modes = [s[i][0] for s in seen]
        moved = [not torch.equal(seen[j][i][1], seen[j - 1][i][1]) for j in range(1, len(seen))]
        assert modes[:first] == [True] * first and all(moved[:first - 1]), i
        if want == "eval":
            assert modes[first:] == [False] * (len(seen) - first), (i, modes)
            assert not any(moved[first - 1:]), f"unit {i}'s BatchNorm statistics moved after it froze"
        else:
            assert all(modes) and all(moved), i
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["bn_frozen"] == want
    assert summary["policy"]["provenance"]["train"]["bn_frozen"] == want
    # a user's loop with the policy gets the recorded mode
    model = build_model("digits_cnn", in_channels=1)
    freezer = load_policy(tmp_path / "summary.json").attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert freezer.bn_frozen == want


def test_freezeout_resume_is_bit_identical(tmp_path, stack_model):
    """Per-unit lrs must reach the optimizer after a resume too (its param groups are reloaded)."""
    def cfg():
        return TrainConfig(model=stack_model, dataset="digits", epochs=4, max_train_batches=3, augment=False)

    def sched():
        return schedule_from_dict({"kind": "freezeout", "t0": 0.5, "scale": "linear"})

    a = Trainer(cfg(), sched(), out_dir=tmp_path / "a", verbose=False)
    a.fit()
    b = Trainer(cfg(), sched(), out_dir=tmp_path / "b", verbose=False,
                callbacks=[lambda m, tr: m["epoch"] >= 2])
    b.fit()
    r = Trainer.resume(tmp_path / "b", verbose=False)
    rec = record_steps(r)
    r.fit()
    want = [a.schedule.state(2, 0).lr_factor[i] * 0.05 for i in range(K)]
    assert rec[0]["lr"] == pytest.approx(want)
    assert state_dicts_equal(a.model.state_dict(), r.model.state_dict())
    assert [h["frozen_units"] for h in a.history] == [h["frozen_units"] for h in r.history]


# ------------------------------------------------------------------------------ prefix
def test_prefix_in_trainer_weights_and_flops(digits, stack_model):
    k, start, epochs, batches, bs = 2, 1, 3, 3, 32
    cfg = TrainConfig(model=stack_model, dataset="digits", epochs=epochs, max_train_batches=batches, batch_size=bs,
                      weight_decay=0.01)
    trainer = Trainer(cfg, schedule_from_dict({"kind": "prefix", "k": k, "start_epoch": start}), verbose=False,
                      data=digits)
    snaps = [unit_copies(trainer)]
    trainer.callbacks.append(lambda m, tr: snaps.append(unit_copies(tr)))
    final = trainer.fit()
    assert [h["frozen_units"] for h in trainer.history] == ["00000", "11000", "11000"]
    for e in range(epochs):
        for i in range(K):
            if e >= start and i < k:
                assert same(snaps[e][i], snaps[e + 1][i]), (e, i)
            else:
                assert not same(snaps[e][i], snaps[e + 1][i]), (e, i)
    assert all(same(snaps[start][i], snaps[-1][i]) for i in range(k))

    # FLOPs of one step: forward of every unit + backward of units >= k only. Unit k's input comes
    # from a frozen unit, so it does only its weight gradient; units after it do weight + input grads.
    f = [fwd_flops(i) for i in range(K)]
    per_sample = sum(f) + sum(f[k:]) + sum(f[k + 1:])
    unfrozen = sum(f) + sum(f) + sum(f[1:])
    mask = tuple(i < k for i in range(K))
    n = 16
    x, y = digits.train_x[:n], digits.train_y[:n]
    assert step_flops(trainer.model, trainer.freezer.params, mask, x, y) == n * per_sample
    assert trainer.flops.per_sample[mask] == per_sample
    assert trainer.flops.per_sample[(False,) * K] == unfrozen
    want = 1 - (unfrozen + (epochs - 1) * per_sample) / (epochs * unfrozen)
    assert final["compute_saved_frac"] == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------------------ adaptive
def test_adaptive_freezes_and_its_policy_replays(tmp_path, digits):
    def cfg():
        return TrainConfig(model="digits_cnn", dataset="digits", epochs=5, max_train_batches=4, seed=0)

    # absolute threshold 1e6: every measured change counts as settled (permissive)
    sched = schedule_from_dict({"kind": "adaptive", "check_every": 1, "threshold_mode": "absolute",
                                "threshold": 1e6, "min_trainable_units": 1})
    run = Trainer(cfg(), sched, out_dir=tmp_path / "run", verbose=False, data=digits)
    run.fit()
    masks = [h["frozen_units"] for h in run.history]
    assert any("1" in m for m in masks), masks
    assert all(m.endswith("0") for m in masks)  # min_trainable_units=1: the head keeps training
    fe = sched.freeze_epochs
    assert any(e is not None for e in fe)
    # the masks are what the recorded decisions say, and frozen units really stood still
    assert masks == ["".join("1" if e is not None and ep >= e else "0" for e in fe) for ep in range(5)]

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    pol = summary["policy"]
    assert pol["schedule"]["kind"] == "adaptive" and pol["schedule"]["freeze_epochs"] == fe
    assert load_policy(tmp_path / "run" / "summary.json").schedule == pol["schedule"]
    replay_sched = schedule_from_dict(pol["schedule"])
    assert not replay_sched.needs_grad_stats
    replay = Trainer(cfg(), replay_sched, out_dir=tmp_path / "replay", verbose=False, data=digits)
    replay.fit()
    assert [h["frozen_units"] for h in replay.history] == masks
    assert state_dicts_equal(run.model.state_dict(), replay.model.state_dict())
    assert replay.history[-1]["compute_saved_frac"] == pytest.approx(run.history[-1]["compute_saved_frac"])


def test_adaptive_resume_decides_the_same(tmp_path):
    """The gradient-norm history is checkpointed: a resumed adaptive run makes the same decisions."""
    def cfg():
        return TrainConfig(model="digits_cnn", dataset="digits", epochs=5, max_train_batches=3, seed=1)

    def sched():  # the check after epoch 1 compares with the norms recorded after epoch 0
        return schedule_from_dict({"kind": "adaptive", "check_every": 1, "threshold_mode": "absolute",
                                   "threshold": 1e6, "min_trainable_units": 2})

    a = Trainer(cfg(), sched(), out_dir=tmp_path / "a", verbose=False)
    a.fit()
    b = Trainer(cfg(), sched(), out_dir=tmp_path / "b", verbose=False,
                callbacks=[lambda m, tr: m["epoch"] >= 1])  # stop after epoch 0: norms recorded, nothing decided
    b.fit()
    r = Trainer.resume(tmp_path / "b", verbose=False)
    r.fit()
    assert a.schedule.freeze_epochs == r.schedule.freeze_epochs == [2, None, None]
    assert [h["frozen_units"] for h in a.history] == [h["frozen_units"] for h in r.history]
    assert state_dicts_equal(a.model.state_dict(), r.model.state_dict())


# ------------------------------------------------------------------------------ CLI, every family
@pytest.fixture(scope="module")
def family_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    common = ["--model", "digits_cnn", "--dataset", "digits", "--epochs", "3", "--max-train-batches", "3",
              "--quiet"]
    cases = {
        "freezeout": [*common, "--schedule", "freezeout", "--t0", "0.8", "--scale", "cubic", "--out", root / "fo"],
        "prefix": [*common, "--schedule", "prefix", "--k", "2", "--start-epoch", "1", "--out", root / "pf"],
        "adaptive": [*common, "--schedule", "adaptive", "--threshold-mode", "absolute", "--threshold", "1e6",
                     "--check-every", "1", "--out", root / "ad"],
        "stray_k": [*common, "--schedule", "layerout", "--freeze-prob", "0.5,0.5,0.5", "--k", "2",
                    "--out", root / "bad1"],
        "stray_t0": [*common, "--schedule", "prefix", "--k", "1", "--t0", "0.5", "--out", root / "bad2"],
        "stray_freeze_prob": [*common, "--schedule", "freezeout", "--freeze-prob", "0.5,0.5,0.5",
                              "--out", root / "bad3"],
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futs = {k: pool.submit(run_cli, a) for k, a in cases.items()}
        procs = {k: f.result() for k, f in futs.items()}
    return root, procs


FAMILY_EXPECT = {
    # name: (out dir, schedule in the policy, frozen_units per epoch, the mask of each of the 9 steps)
    "freezeout": ("fo", {"kind": "freezeout", "t0": 0.8, "scale": "cubic", "scale_lr": True, "warmup_epochs": 0},
                  # K=3, T=9: t_i * T = 4.608, 6.561 -> first frozen steps 5, 7; the mask reported is the epoch's last
                  ["000", "100", "110"], ["000"] * 5 + ["100"] * 2 + ["110"] * 2),
    "prefix": ("pf", {"kind": "prefix", "k": 2, "start_epoch": 1}, ["000", "110", "110"],
               ["000"] * 3 + ["110"] * 6),
    "adaptive": ("ad", {"kind": "adaptive", "check_every": 1, "threshold_mode": "absolute", "threshold": 1e6,
                        "min_trainable_units": 1, "freeze_epochs": [2, 2, None]}, ["000", "000", "110"],
                 ["000"] * 6 + ["110"] * 3),
}


@pytest.mark.parametrize("family", list(FAMILY_EXPECT))
def test_cli_family_writes_files_and_policy(family_runs, family):
    root, procs = family_runs
    proc = procs[family]
    assert proc.returncode == 0, proc.stderr[-3000:]
    sub, schedule, masks, step_masks = FAMILY_EXPECT[family]
    out = root / sub
    for name in ("epochs.csv", "summary.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    with open(out / "epochs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["frozen_units"] for r in rows] == masks
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"]["schedule"] == schedule
    assert load_policy(out / "summary.json").schedule == schedule
    # digits_cnn, 3 x 3 steps of 64 samples: 1 - FLOPs of the steps' masks / 9 unfrozen steps (by hand)
    want = {"freezeout": 1 - (5 * 1904640 + 2 * 1277952 + 2 * 667648) / (9 * 1904640),
            "prefix": 1 - (3 * 1904640 + 6 * 667648) / (9 * 1904640),
            "adaptive": 1 - (6 * 1904640 + 3 * 667648) / (9 * 1904640)}[family]
    assert hand_saved_frac(step_masks) == pytest.approx(want, rel=1e-15)
    assert summary["metrics"]["compute_saved_frac"] == pytest.approx(want, rel=1e-12)
    assert summary["config"]["bn_frozen"] == ("eval" if family == "freezeout" else "train")
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 3 and ck["schedule"]["kind"] == family


@pytest.mark.parametrize("case, flag", [("stray_k", "--k"), ("stray_t0", "--t0"),
                                        ("stray_freeze_prob", "--freeze-prob")])
def test_cli_flag_of_another_family_is_exit_2(family_runs, case, flag):
    root, procs = family_runs
    proc = procs[case]
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], lines
    assert not any(root.glob("bad*"))
