"""planned_compute_saved_frac: what a schedule will save over the whole budget, known before it has
saved anything. For none, prefix and FreezeOut it equals the final measured compute_saved_frac to
the FLOP from the first epoch on; LayerOut's draws are a function of (seed, epoch), so its plan is
its realized masks (equal per seed, and so in expectation over seeds); adaptive plans its current
mask held to the end. digits has 1294 training images: 21 batches of 64, the last one of 14."""
from __future__ import annotations

import statistics

import pytest

from layerout.schedules import schedule_from_dict
from layerout.trainer import TrainConfig, Trainer

EPOCHS = 4


def _fit(digits, schedule: dict, seed: int = 0) -> tuple[float, Trainer]:
    cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=EPOCHS, augment=False, seed=seed)
    tr = Trainer(cfg, schedule_from_dict(schedule), verbose=False, data=digits)
    before = tr.planned_compute_saved_frac()  # before any epoch: the whole plan
    tr.fit()
    return before, tr


@pytest.mark.parametrize("schedule", [
    {"kind": "none"},
    {"kind": "prefix", "k": 2, "start_epoch": 1},
    {"kind": "freezeout", "t0": 0.5, "scale": "linear", "warmup_epochs": 1},  # masks change mid-epoch
    {"kind": "freezeout", "t0": 0.3, "scale": "cubic", "scale_lr": True},
])
def test_planned_at_epoch_0_is_the_final_measured_figure(digits, schedule):
    before, tr = _fit(digits, schedule)
    assert tr.steps_per_epoch == 21 and len(digits.train_x) == 1294  # a smaller last batch is in play
    final = tr.history[-1]["compute_saved_frac"]
    # to the FLOP: the plan's FLOP totals are the ledger's (sums of exact per-sample counts)
    plan = [tr._planned_epoch_flops(e) for e in range(EPOCHS)]
    assert sum(f for f, _ in plan) == tr.ledger.flops_spent and sum(u for _, u in plan) == tr.ledger.flops_unfrozen
    assert before == final
    assert [h["planned_compute_saved_frac"] for h in tr.history] == [final] * EPOCHS
    if schedule["kind"] != "none":
        assert final > 0.05
        assert tr.history[0]["compute_saved_frac"] != final  # the figure so far differs: the plan does not


def test_freezeout_masks_change_within_an_epoch(digits):
    _, tr = _fit(digits, {"kind": "freezeout", "t0": 0.5, "scale": "linear", "warmup_epochs": 1})
    runs = [tr.schedule.mask_runs(e) for e in range(EPOCHS)]
    assert any(len(r) > 1 for r in runs), runs
    for r in runs:  # the runs cover the epoch's steps, in order
        assert r[0][0] == 0 and r[-1][1] == 21 and all(a[1] == b[0] for a, b in zip(r, r[1:]))


def test_layerout_plan_is_its_draws(digits):
    """Per seed the plan is exact; over seeds, the mean planned figure at epoch 0 is the mean measured one."""
    planned, measured = [], []
    for seed in range(8):
        before, tr = _fit(digits, {"kind": "layerout", "v_mode": "random_epoch", "warmup_epochs": 1}, seed=seed)
        planned.append(before)
        measured.append(tr.history[-1]["compute_saved_frac"])
        assert before == measured[-1]
    assert len(set(measured)) > 1  # the draws really differ between seeds
    spread = statistics.stdev(measured) / len(measured) ** 0.5
    assert abs(statistics.mean(planned) - statistics.mean(measured)) <= 2 * spread + 1e-12


def test_adaptive_plans_its_current_mask_to_the_end(digits):
    cfg = TrainConfig(model="digits_cnn", dataset="digits", epochs=5, max_train_batches=4, seed=0)
    sched = schedule_from_dict({"kind": "adaptive", "check_every": 1, "threshold_mode": "absolute",
                                "threshold": 1e6, "min_trainable_units": 1})
    tr = Trainer(cfg, sched, verbose=False, data=digits)
    assert tr.planned_compute_saved_frac() == 0.0  # nothing decided yet: the unfrozen mask held
    seen = []
    tr.callbacks.append(lambda m, t: seen.append((dict(m), t.ledger.flops_spent, t.ledger.flops_unfrozen,
                                                  t.schedule.frozen_at(t.epoch))))
    tr.fit()
    assert any(e is not None for e in sched.freeze_epochs)
    n = 4 * 64  # capped: 4 full batches per epoch
    full = tr.flops((False, False, False))
    for m, spent, unfrozen, mask_next in seen:
        left = 5 - m["epoch"]
        expect = 1 - (spent + left * n * tr.flops(mask_next)) / (unfrozen + left * n * full)
        assert m["planned_compute_saved_frac"] == pytest.approx(expect, rel=1e-12)
    assert seen[-1][0]["planned_compute_saved_frac"] == seen[-1][0]["compute_saved_frac"]
    plans = [m["planned_compute_saved_frac"] for m, *_ in seen]
    assert plans[-1] > plans[0]  # each new decision raises the plan
