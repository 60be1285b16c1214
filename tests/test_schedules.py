"""The schedule families: LayerOut draw statistics, FreezeOut formulas, prefix and adaptive rules,
validation, round trips, replay; the registry of kinds."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from layerout.errors import UserError
from layerout.schedules import (
    AdaptiveSchedule,
    FreezeOutSchedule,
    LayerOutSchedule,
    SCHEDULES,
    PrefixSchedule,
    schedule_from_dict,
)


# ------------------------------------------------------------------------------------ layerout
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


# ------------------------------------------------------------------------------------ freezeout
def _t_i(i: int, k: int, t0: float, power: int) -> float:
    """FreezeOut's t_i computed from the paper's formula, independently of the library."""
    return 1.0 if i == k - 1 else (t0 + (1 - t0) * i / (k - 1)) ** power


def _first_frozen(s, k, epochs, spe, warmup):
    """Per unit, the first post-warm-up iteration at which the schedule freezes it (None: never);
    checks on the way that a frozen unit never thaws and that some unit always trains."""
    first_frozen = [None] * k
    for epoch in range(epochs):
        for step in range(spe):
            st = s.state(epoch, step)
            assert not all(st.frozen)
            t = (epoch - warmup) * spe + step
            for i, f in enumerate(st.frozen):
                if f and first_frozen[i] is None:
                    first_frozen[i] = t
                if first_frozen[i] is not None:
                    assert f, f"unit {i} thawed at iteration {t}"
    return first_frozen


# Worked by hand from the authors' rule (a unit trains at iteration j while j <= t_i * T):
#   cubic, t0 = 0.8, K = 5: t = 0.512, 0.614125, 0.729, 0.857375 (, 1)
#     T = 84 (12 epochs x 7 steps): t_i * T = 43.008, 51.5865, 61.236, 72.0195 -> first frozen 44, 52, 62, 73
#     T = 70 (warm-up 2 of 12 epochs): 35.84, 42.98875, 51.03, 60.01625     -> first frozen 36, 43, 52, 61
#   linear, t0 = 0.5, K = 4, T = 70: t_i * T = 35 (exactly), 46.67, 58.33  -> first frozen 36, 47, 59
# (rounding t_i * T to the nearest step instead freezes 43, 61, 72 / 60 / 35, 58: one step early)
@pytest.mark.parametrize("k, t0, scale, warmup, expected", [
    (5, 0.8, "cubic", 0, [44, 52, 62, 73]),
    (5, 0.8, "cubic", 2, [36, 43, 52, 61]),
    (4, 0.5, "linear", 0, [36, 47, 59]),
])
def test_freezeout_freeze_steps_worked_by_hand(k, t0, scale, warmup, expected):
    epochs, spe = (12, 7) if k == 5 else (10, 7)
    s = FreezeOutSchedule(t0=t0, scale=scale, warmup_epochs=warmup).bind(k, epochs, spe)
    assert _first_frozen(s, k, epochs, spe, warmup) == [*expected, None]  # the last unit trains to the end
    assert [s.freeze_step(i) for i in range(k - 1)] == expected


def _reference_run(k, t0, how, total, scale_lr):
    """The authors' iteration loop, transcribed from github.com/ajbrock/FreezeOut (densenet.py: the
    layer's lr_ratio and max_j, then update_lr before every training step; base lr 0.1). Returns,
    per iteration j, each layer's (active, lr) as the step at j runs."""
    scale_fn = {"linear": lambda x: x, "squared": lambda x: x ** 2, "cubic": lambda x: x ** 3}[how]
    layers = []
    for index in range(k):  # layer_index / self.layer_index, with the last layer at index k - 1
        lr_ratio = scale_fn(t0 + (1 - t0) * float(index) / (k - 1))
        layers.append({"active": True, "lr_ratio": lr_ratio, "max_j": total * lr_ratio, "lr": None})
    out = []
    for j in range(total):
        for m in layers:
            if m["active"]:
                if j > m["max_j"]:
                    m["active"] = False
                else:
                    m["lr"] = ((0.05 / m["lr_ratio"]) * (1 + np.cos(np.pi * j / m["max_j"])) if scale_lr
                               else 0.05 * (1 + np.cos(np.pi * j / m["max_j"])))
        out.append([(m["active"], m["lr"] if m["active"] else 0.0) for m in layers])
    return out


@pytest.mark.parametrize("k, t0, scale, epochs, spe, scale_lr", [
    (5, 0.8, "cubic", 12, 7, True), (4, 0.5, "linear", 10, 7, False), (7, 0.3, "squared", 9, 13, True),
    (29, 0.8, "cubic", 20, 19, True), (3, 1.0, "linear", 4, 5, True),
])
def test_freezeout_matches_the_authors_loop(k, t0, scale, epochs, spe, scale_lr):
    s = FreezeOutSchedule(t0=t0, scale=scale, scale_lr=scale_lr).bind(k, epochs, spe)
    ref = _reference_run(k, t0, scale, epochs * spe, scale_lr)
    for j, layers in enumerate(ref):
        st = s.state(j // spe, j % spe)
        assert st.frozen == tuple(not active for active, _ in layers), j
        for i, (active, lr) in enumerate(layers):
            assert 0.1 * st.lr_factor[i] == pytest.approx(lr, rel=1e-12, abs=1e-15), (j, i)


def test_freezeout_defaults_are_the_authors():
    s = FreezeOutSchedule()
    assert (s.t0, s.scale, s.scale_lr, s.warmup_epochs) == (0.8, "cubic", True, 0)
    assert FreezeOutSchedule.bn_frozen == "eval"
    assert schedule_from_dict({"kind": "freezeout"}).to_dict() == {
        "kind": "freezeout", "t0": 0.8, "scale": "cubic", "scale_lr": True, "warmup_epochs": 0}
    # every other family keeps frozen units' BatchNorm statistics updating (LayerOut's choice)
    assert {kind: cls.bn_frozen for kind, cls in SCHEDULES.items()} == {
        "none": "train", "layerout": "train", "freezeout": "eval", "prefix": "train", "adaptive": "train"}


@pytest.mark.parametrize("scale_lr", [False, True])
def test_freezeout_unit0_lr_factor_matches_cosine(scale_lr):
    k, epochs, spe, warmup = 5, 10, 10, 1
    s = FreezeOutSchedule(t0=0.8, scale="cubic", scale_lr=scale_lr, warmup_epochs=warmup).bind(k, epochs, spe)
    total = (epochs - warmup) * spe
    t0_cubed = 0.8 ** 3
    for epoch, step in [(1, 0), (1, 5), (2, 3), (4, 9), (5, 5)]:
        t = (epoch - warmup) * spe + step
        want = 0.5 * (1 + math.cos(math.pi * t / (t0_cubed * total)))
        if scale_lr:
            want /= t0_cubed
        st = s.state(epoch, step)
        assert not st.frozen[0]
        assert st.lr_factor[0] == pytest.approx(want, rel=1e-12)
    # the last unit anneals over the whole post-warm-up run
    st = s.state(5, 5)
    assert st.lr_factor[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / total)))
    # frozen units get factor 0; warm-up epochs follow the global schedule
    assert s.state(9, 9).lr_factor[0] == 0.0
    assert s.state(0, 3).lr_factor is None and not any(s.state(0, 3).frozen)


def test_freezeout_scales_and_flags():
    assert FreezeOutSchedule.stepwise and FreezeOutSchedule.uses_lr_factor
    for scale, p in [("linear", 1), ("squared", 2), ("cubic", 3)]:
        s = FreezeOutSchedule(t0=0.5, scale=scale).bind(3, 4, 5)
        assert s.t == pytest.approx([0.5 ** p, 0.75 ** p, 1.0])
    one = FreezeOutSchedule().bind(1, 3, 4)
    assert all(not one.state(e, st).frozen[0] for e in range(3) for st in range(4))


@pytest.mark.parametrize("kwargs, msg", [
    ({"t0": 0}, "schedule.t0: must be a number in (0, 1], got 0"),
    ({"t0": 1.5}, "schedule.t0: must be a number in (0, 1], got 1.5"),
    ({"scale": "quartic"}, "schedule.scale: unknown scale 'quartic'; allowed: linear, squared, cubic"),
    ({"warmup_epochs": -1}, "schedule.warmup_epochs: must be an integer >= 0, got -1"),
])
def test_freezeout_validation(kwargs, msg):
    with pytest.raises(UserError) as exc:
        schedule_from_dict({"kind": "freezeout", **kwargs})
    assert str(exc.value) == msg


def test_freezeout_warmup_not_shorter_than_training():
    with pytest.raises(UserError) as exc:
        FreezeOutSchedule(warmup_epochs=5).bind(4, 5, 10)
    assert str(exc.value) == "schedule.warmup_epochs: 5 is not shorter than training (5 epochs)"


# ------------------------------------------------------------------------------------ prefix
def test_prefix_states():
    s = PrefixSchedule(k=2, start_epoch=3).bind(4, 6, 10)
    assert not s.stepwise and not s.needs_grad_stats
    for e in range(6):
        want = (e >= 3, e >= 3, False, False)
        assert s.state(e, 0).frozen == want and s.state(e, 0).lr_factor is None


@pytest.mark.parametrize("d, k, msg", [
    ({"k": 4}, 4, "schedule.k: 4 would freeze every unit: the model has 4 units, so k must be in 1..3"),
    ({"k": 7}, 4, "schedule.k: 7 would freeze every unit: the model has 4 units, so k must be in 1..3"),
    ({"k": 0}, 4, "schedule.k: must be an integer >= 1, got 0"),
    ({"k": 1, "start_epoch": 6}, 4, "schedule.start_epoch: 6 is not before the end of training (6 epochs)"),
])
def test_prefix_validation(d, k, msg):
    with pytest.raises(UserError) as exc:
        schedule_from_dict({"kind": "prefix", **d}).bind(k, 6, 10)
    assert str(exc.value) == msg


# ------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("s", [
    FreezeOutSchedule(t0=0.6, scale="squared", scale_lr=True, warmup_epochs=2),
    PrefixSchedule(k=3, start_epoch=1),
    AdaptiveSchedule(check_every=2, threshold_mode="absolute", threshold=0.05, min_trainable_units=2),
    AdaptiveSchedule(freeze_epochs=[3, 5, None, None]),
])
def test_round_trip(s):
    d = s.to_dict()
    d2 = json.loads(json.dumps(d))
    s2 = schedule_from_dict(d2)
    assert type(s2) is type(s) and s2.to_dict() == d
    s.bind(4, 8, 5)
    s2.bind(4, 8, 5)
    assert s2.to_dict() == s.to_dict()
    assert [s.state(e, st) for e in range(8) for st in range(5)] == \
           [s2.state(e, st) for e in range(8) for st in range(5)]


def test_unknown_kind_lists_families():
    with pytest.raises(UserError) as exc:
        schedule_from_dict({"kind": "freezeit"})
    assert str(exc.value) == ("schedule.kind: unknown kind 'freezeit'; "
                              "allowed: adaptive, freezeout, layerout, none, prefix")


# ------------------------------------------------------------------------------------ adaptive
def test_adaptive_absolute_prefix_only_and_min_trainable():
    s = AdaptiveSchedule(check_every=1, threshold_mode="absolute", threshold=0.1).bind(4, 10, 3)
    assert s.needs_grad_stats
    s.observe_epoch(0, [1.0, 1.0, 1.0, 1.0])           # first check: records only
    assert s.freeze_epochs == [None] * 4
    s.observe_epoch(1, [1.05, 2.0, 1.01, 1.0])         # changes .05, 1, .01, 0: only unit 0 is a prefix
    assert s.freeze_epochs == [2, None, None, None]
    s.observe_epoch(2, [None, 2.1, 1.0, 1.0])          # units 1..3 settled; keep one trainable
    assert s.freeze_epochs == [2, 3, 3, None]
    s.observe_epoch(3, [None, None, None, 1.0])
    assert s.freeze_epochs == [2, 3, 3, None]
    assert s.state(1).frozen == (False,) * 4
    assert s.state(2).frozen == (True, False, False, False)
    assert s.state(9).frozen == (True, True, True, False)


def test_adaptive_percentile_and_check_every():
    s = AdaptiveSchedule(check_every=2, threshold_mode="percentile", threshold=50).bind(5, 10, 3)
    s.observe_epoch(0, [9.0, 9.0, 9.0, 9.0, 9.0])       # not a check epoch: ignored
    s.observe_epoch(1, [1.0, 1.0, 1.0, 1.0, 1.0])       # first check
    s.observe_epoch(2, [1.0, 1.0, 1.0, 1.0, 1.0])       # ignored
    assert s.freeze_epochs == [None] * 5
    # changes .01 .02 .5 .03 1.0 -> median .03: units 0, 1 strictly below (unit 3 is not, and not a prefix)
    s.observe_epoch(3, [1.01, 1.02, 1.5, 1.03, 2.0])
    assert s.freeze_epochs == [4, 4, None, None, None]
    assert s.history[-1]["threshold"] == pytest.approx(0.03)


def test_adaptive_min_trainable_units_and_last_epoch():
    s = AdaptiveSchedule(threshold_mode="absolute", threshold=1.0, min_trainable_units=3).bind(4, 3, 2)
    s.observe_epoch(0, [1.0] * 4)
    s.observe_epoch(1, [1.0] * 4)                     # every unit settled, 3 must stay trainable
    assert s.freeze_epochs == [2, None, None, None]
    s.observe_epoch(2, [None, 1.0, 1.0, 1.0])         # after the last epoch: no decision
    assert s.freeze_epochs == [2, None, None, None]
    with pytest.raises(UserError) as exc:
        AdaptiveSchedule(min_trainable_units=5).bind(4, 3, 2)
    assert str(exc.value) == "schedule.min_trainable_units: 5 exceeds the model's 4 units"


def test_adaptive_replay_is_exact_and_needs_no_stats():
    norms = [[1.0, 1.0, 1.0, 1.0], [1.02, 1.3, 1.0, 1.0], [1.0, 1.31, 1.2, 1.0],
             [None, 1.31, 1.21, 1.5], [None, 1.31, 1.21, 1.5], [None, None, 1.21, 1.5]]
    s = AdaptiveSchedule(threshold_mode="absolute", threshold=0.05).bind(4, 8, 3)
    for e, g in enumerate(norms):
        s.observe_epoch(e, g)
    assert s.freeze_epochs[0] is not None and s.freeze_epochs[-1] is None
    policy = json.loads(json.dumps(s.to_dict()))
    assert policy["freeze_epochs"] == s.freeze_epochs
    r = schedule_from_dict(policy).bind(4, 8, 3)
    assert not r.needs_grad_stats and s.needs_grad_stats
    r.observe_epoch(6, [5.0, 5.0, 5.0, 5.0])          # replay ignores statistics
    assert [r.state(e) for e in range(8)] == [s.state(e) for e in range(8)]


def test_adaptive_resume_decides_the_same():
    norms = [[1.0, 2.0, 3.0], [1.01, 2.5, 3.0], [1.0, 2.6, 3.3], [None, 2.61, 3.31], [None, 2.61, 3.31]]
    d = {"kind": "adaptive", "threshold_mode": "absolute", "threshold": 0.02}
    full = schedule_from_dict(d).bind(3, 6, 2)
    for e, g in enumerate(norms):
        full.observe_epoch(e, g)
    first = schedule_from_dict(d).bind(3, 6, 2)
    for e, g in enumerate(norms[:2]):
        first.observe_epoch(e, g)
    saved = json.loads(json.dumps(first.state_dict()))
    for bind_first in (True, False):  # either order of bind / load_state_dict
        resumed = schedule_from_dict(d)
        if bind_first:
            resumed.bind(3, 6, 2)
            resumed.load_state_dict(saved)
        else:
            resumed.load_state_dict(saved)
            resumed.bind(3, 6, 2)
        for e, g in enumerate(norms[2:], start=2):
            resumed.observe_epoch(e, g)
        assert resumed.freeze_epochs == full.freeze_epochs == [2, 4, None]


@pytest.mark.parametrize("d, msg", [
    ({"freeze_epochs": [1, 2, 3]}, "schedule.freeze_epochs: would freeze every unit; at least one entry must be null"),
    ({"freeze_epochs": [1, None]}, "schedule.freeze_epochs: has 2 entries but the model has 3 units"),
    ({"freeze_epochs": [1, -1, None]}, "schedule.freeze_epochs[1]: must be an integer >= 0 or null, got -1"),
    ({"threshold_mode": "relative"}, "schedule.threshold_mode: unknown mode 'relative'; allowed: percentile, absolute"),
    ({"threshold": 150}, "schedule.threshold: a percentile must be in [0, 100], got 150.0"),
    ({"threshold_mode": "absolute", "threshold": -0.1},
     "schedule.threshold: an absolute threshold must be >= 0, got -0.1"),
    ({"check_every": 0}, "schedule.check_every: must be an integer >= 1, got 0"),
])
def test_adaptive_validation(d, msg):
    with pytest.raises(UserError) as exc:
        schedule_from_dict({"kind": "adaptive", **d}).bind(3, 6, 2)
    assert str(exc.value) == msg
