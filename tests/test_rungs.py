"""MOASHA's fast rank rule (``tuning.rungs``) on thousands of seeded random rungs: the same fronts
as ``layerout.dominance``, the same decisions as the plain epsilon-net rule wherever the net does
not decide and nearly always where it does, and monotone (raising an objective never turns
CONTINUE into STOP). No Ray run: pure functions and the scheduler's bookkeeping."""
from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports Ray: loopback only

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from layerout.dominance import pareto_mask  # noqa: E402
from tuning.rungs import RungTable, cut_off, front_levels, peel_fronts, rank_at_rung  # noqa: E402
from tuning.schedulers import MOASHA, pareto_order, rung_rank  # noqa: E402

# the issue's counterexample to the plain rule (reduction factor 3)
ISSUE_RECORDED = [[0.822, 0.774], [0.242, 0.209], [0.628, 0.424], [0.495, 0.862], [0.909, 0.382],
                  [0.428, 0.572], [0.065, 0.702], [0.197, 0.158], [0.901, 0.803], [0.233, 0.938]]


def plain_rule(new, recorded, rf):
    """The rule before ``tuning.rungs``: every result sorted into fronts, the epsilon net over the
    new result's front for each starting objective, the best place taken (``pareto_order``)."""
    rows = np.asarray(list(recorded) + [list(new)], dtype=float).reshape(-1, len(new))
    rank = min(pareto_order(rows, s).index(len(rows) - 1) for s in range(rows.shape[1]))
    return rank, len(rows), rank * rf < len(rows)


def random_rung(rng, max_n=25, dims=2):
    """A rung of random results; a third of them on a 0.1 grid, so that ties and duplicates occur."""
    n = int(rng.integers(0, max_n))
    rec, new = rng.random((n, dims)), rng.random(dims)
    if rng.random() < 1 / 3:
        rec, new = np.round(rec, 1), np.round(new, 1)
    return new, rec, float(rng.choice([2, 3, 4]))


def peeled_levels(values):
    left, k, level = np.arange(len(values)), 0, np.zeros(len(values), dtype=int)
    while len(left):
        on = pareto_mask(values[left])
        level[left[on]] = k
        left, k = left[~on], k + 1
    return level


@pytest.mark.parametrize("dims", [2, 3])
def test_front_levels_are_layerouts_fronts(dims):
    rng = np.random.default_rng(1)
    for _ in range(400):
        n = int(rng.integers(1, 60))
        v = rng.random((n, dims))
        if rng.random() < 0.5:
            v = np.round(v, 1)  # ties in one objective and exact duplicates
        assert (front_levels(v) == peeled_levels(v)).all()
    assert [list(f) for f in peel_fronts(np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.4, 0.4]]))] == [[0, 1, 2], [3]]


def test_cut_off_counts_the_continuing_ranks():
    for n in range(1, 200):
        for rf in (2, 3, 4, 2.5):
            assert cut_off(n, rf) == sum(1 for r in range(n) if r * rf < n)


def test_same_decisions_as_the_plain_rule_where_the_net_does_not_decide_and_nearly_everywhere():
    rng = np.random.default_rng(0)
    same = contested = 0
    rungs = 4000
    for _ in range(rungs):
        new, rec, rf = random_rung(rng)
        fast, plain = rung_rank(new, rec.tolist(), rf), plain_rule(new, rec, rf)
        assert fast[1] == plain[1]
        # whether the new result's front straddles the cut-off: only then does the net decide
        rows = np.vstack([rec, new]) if len(rec) else new[None, :]
        level = front_levels(rows)
        better = int(np.count_nonzero(level < level[-1]))
        on_front = int(np.count_nonzero(level == level[-1]))
        keep = cut_off(len(rows), rf)
        if better >= keep or better + on_front <= keep:
            assert fast[2] == plain[2], (new, rec, rf, fast, plain)
            if fast[2]:
                assert fast[0] >= better and plain[0] >= better
        else:
            contested += 1
        same += fast[2] == plain[2]
    assert contested > rungs // 20  # the loop did exercise the net
    # measured 99.1 % on these seeds; differences are results the monotone entry stops
    assert same >= 0.98 * rungs


def test_raising_an_objective_never_turns_continue_into_stop():
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(6000):
        new, rec, rf = random_rung(rng)
        up = new.copy()
        up[int(rng.integers(0, 2))] += float(rng.choice([0.001, 0.01, 0.05, 0.1, 0.3]))
        if rung_rank(new, rec.tolist(), rf)[2]:
            checked += 1
            assert rung_rank(up, rec.tolist(), rf)[2], (new, up, rec, rf)
    assert checked > 1000
    # the issue's counterexample: the plain rule continues (0.618, 0.832) and stops (0.668, 0.832)
    assert plain_rule([0.618, 0.832], ISSUE_RECORDED, 3)[2] and not plain_rule([0.668, 0.832], ISSUE_RECORDED, 3)[2]
    low, high = rung_rank([0.618, 0.832], ISSUE_RECORDED, 3), rung_rank([0.668, 0.832], ISSUE_RECORDED, 3)
    assert low[2] <= high[2] and low[0] >= high[0]
    # raised far enough it continues
    assert rung_rank([0.95, 0.832], ISSUE_RECORDED, 3)[2]


def test_three_objectives_are_monotone_too():
    rng = np.random.default_rng(3)
    for _ in range(1500):
        new, rec, rf = random_rung(rng, max_n=15, dims=3)
        up = new.copy()
        up[int(rng.integers(0, 3))] += 0.05
        if rung_rank(new, rec.tolist(), rf)[2]:
            assert rung_rank(up, rec.tolist(), rf)[2]


def test_the_rung_table_keeps_the_levels_and_decides_like_the_pure_function():
    rng = np.random.default_rng(4)
    for _ in range(150):
        rf, table, rec = float(rng.choice([2, 3])), RungTable(2), []
        grid = rng.random() < 0.5
        for _ in range(int(rng.integers(1, 80))):
            new = np.round(rng.random(2), 1) if grid else rng.random(2)
            assert table.rank(new, rf) == rank_at_rung(new, np.array(rec).reshape(-1, 2), rf)
            table.add(new)
            rec.append(new)
            assert (table.levels[:len(table)] == front_levels(np.array(rec))).all()


def test_moasha_decides_from_its_tables_and_rebuilds_them_after_a_restore():
    def new():
        return MOASHA(objectives=[("val_accuracy", "max"), ("train_time_s", "min")], max_t=9,
                      grace_period=1, reduction_factor=3)

    rng = np.random.default_rng(5)
    s, rows = new(), []
    for i in range(120):
        acc, t = float(rng.random()), float(rng.random())
        expected = rung_rank((acc, -t), [(a, -b) for a, b in rows], 3)[2]
        got = s.decide(f"t{i}", {}, {"epoch": 1, "val_accuracy": acc, "train_time_s": t})
        assert got == ("CONTINUE" if expected else "STOP")
        rows.append((acc, t))
        if i == 60:  # what --resume does: the state into a fresh scheduler, whose tables are rebuilt
            restored = new()
            restored.load_state_dict(s.state_dict())
            s = restored
    assert len(s.decision_rows()) == 120


def test_an_adaptive_trial_is_ranked_on_its_familys_finished_savings_not_on_zero():
    def new():
        return MOASHA(objectives=[("val_accuracy", "max"), ("planned_compute_saved_frac", "max")], max_t=8,
                      grace_period=2, reduction_factor=2)

    adaptive = {"family": "adaptive", "schedule": {"kind": "adaptive", "check_every": 1, "threshold_mode": "percentile",
                                                   "threshold": 50.0, "min_trainable_units": 1, "freeze_epochs": None}}
    replay = {"family": "adaptive", "schedule": {**adaptive["schedule"], "freeze_epochs": [3, None]}}
    prefix = {"family": "prefix", "schedule": {"kind": "prefix", "k": 1, "start_epoch": 0}}
    at_rung = {"epoch": 2, "val_accuracy": 0.80, "planned_compute_saved_frac": 0.0}  # nothing frozen yet

    def rung_with(s):
        # one recorded result, more accurate and saving 0.2: an adaptive trial that has not frozen yet
        # is dominated by it (planned 0) unless its family's record says it will save more
        s.decide("a", {}, {"epoch": 2, "val_accuracy": 0.85, "planned_compute_saved_frac": 0.2})
        return s

    assert rung_with(new()).decide("x", adaptive, at_rung) == "STOP"  # no prior yet: its own plan, as before
    s = new()
    s.finished(adaptive, {"epoch": 8, "planned_compute_saved_frac": 0.4, "compute_saved_frac": 0.4})
    s.finished(adaptive, {"epoch": 3, "planned_compute_saved_frac": 0.9})  # stopped early: not a final saving
    s.finished(prefix, {"epoch": 8, "planned_compute_saved_frac": 0.9})  # its plan is exact: no prior needed
    assert s.prior.estimate("adaptive", 8) == 0.4 and s.prior.estimate("prefix", 8) is None
    rung_with(s)
    assert s.decide("x", adaptive, at_rung) == "CONTINUE"
    assert s.decision_rows()[-1]["planned_compute_saved_frac"] == 0.4  # the value it was ranked on
    # a trial whose own plan already promises more keeps its own; a replayed policy's plan is exact
    assert s.decide("y", adaptive, {**at_rung, "planned_compute_saved_frac": 0.6}) == "CONTINUE"
    assert s.decision_rows()[-1]["planned_compute_saved_frac"] == 0.6
    assert s.decide("z", replay, {**at_rung, "val_accuracy": 0.5}) == "STOP"
    assert s.decision_rows()[-1]["planned_compute_saved_frac"] == 0.0
    # the prior survives --resume with the rest of the state; a state saved before priors loads
    restored = new()
    restored.load_state_dict(s.state_dict())
    assert restored.prior.estimate("adaptive", 8) == 0.4
    older = {k: v for k, v in s.state_dict().items() if k != "prior"}
    restored.load_state_dict(older)
    assert restored.prior.estimate("adaptive", 8) is None
