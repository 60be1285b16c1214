"""MOASHA's rank rule on hand-made rung tables (a pure function, no Ray run), and the scheduler's
decisions, protected configurations and saved state. Values are (val_accuracy,
planned_compute_saved_frac), both maximized."""
from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports Ray: loopback only

import pickle  # noqa: E402

import pytest  # noqa: E402

from tuning.schedulers import (MOASHA, PaperASHA, SchedulerState, pareto_order, protected, rung_rank,  # noqa: E402
                              spread_order)

FRONT = [(0.90, 0.10), (0.80, 0.30), (0.70, 0.50), (0.60, 0.60), (0.50, 0.70), (0.40, 0.80)]


@pytest.mark.parametrize("eta", [2, 3, 4])
def test_a_result_that_dominates_every_recorded_point_continues(eta):
    # a whole recorded front, plus dominated points: the sorted order of the recorded points says
    # nothing about a newcomer that beats them all
    recorded = FRONT + [(0.3, 0.1), (0.2, 0.2), (0.85, 0.05)]
    rank, of, keep = rung_rank((0.95, 0.85), recorded, eta)
    assert (rank, of, keep) == (0, len(recorded) + 1, True)
    # even when it only just dominates the best point of each objective
    rank, _, keep = rung_rank((0.90, 0.80), FRONT, eta)
    assert rank == 0 and keep


def test_a_result_dominated_by_more_than_1_over_eta_of_them_stops():
    recorded = [(0.9, 0.5), (0.8, 0.6), (0.7, 0.7), (0.1, 0.1)]
    new = (0.6, 0.4)  # dominated by 3 of the 4 recorded: more than a half
    rank, of, keep = rung_rank(new, recorded, 2)
    assert (rank, of, keep) == (3, 5, False)
    # dominated by 2 of 6 with eta = 3 (more than a third): stops
    recorded = [(0.9, 0.9), (0.8, 0.8), (0.1, 0.95), (0.95, 0.1), (0.2, 0.3), (0.3, 0.2)]
    rank, of, keep = rung_rank((0.7, 0.7), recorded, 3)
    assert not keep and rank >= 2 and of == 7
    # the first result at a rung continues; one that loses to the only recorded result stops (eta 2)
    assert rung_rank((0.1, 0.1), [], 2) == (0, 1, True)
    assert rung_rank((0.1, 0.1), [(0.2, 0.2)], 2) == (1, 2, False)
    # on the same front as the only recorded result, and best in one objective: first there
    assert rung_rank((0.3, 0.1), [(0.2, 0.2)], 2) == (0, 2, True)
    assert rung_rank((0.1, 0.3), [(0.2, 0.2)], 2) == (0, 2, True)
    assert rung_rank((0.2, 0.2), [(0.2, 0.2)], 2) == (1, 2, False)  # an exact duplicate comes after its twin


def test_ties_within_a_front_are_broken_by_spread():
    cluster = [(0.90, 0.10), (0.89, 0.11), (0.88, 0.12)]  # one front, close together
    # far from the cluster, on the same front, the best in planned compute: first -> top half of 4
    assert rung_rank((0.50, 0.60), cluster, 2) == (0, 4, True)
    # on the same front but inside the cluster: it adds no spread -> last of 4, stops
    assert rung_rank((0.885, 0.115), cluster, 2) == (3, 4, False)
    # with both ends of the front taken, a point in the middle of the gap comes third of 5 and
    # continues, one inside the cluster comes last and stops
    front = cluster + [(0.30, 0.90)]
    assert rung_rank((0.60, 0.50), front, 2) == (2, 5, True)
    assert rung_rank((0.885, 0.115), front, 2) == (4, 5, False)
    # non-dominated sorting alone could not tell these apart: all four points are one front; the
    # net from either end puts the middle point last
    assert pareto_order([[0.9, 0.1], [0.89, 0.11], [0.88, 0.12], [0.885, 0.115]]) == [0, 2, 1, 3]
    assert pareto_order([[0.9, 0.1], [0.89, 0.11], [0.88, 0.12], [0.885, 0.115]], start=1) == [2, 0, 1, 3]
    # a new extreme of the front is first when the net starts from its objective
    assert rung_rank((0.87, 0.13), cluster, 2) == (0, 4, True)


def test_spread_order_and_fronts():
    import numpy as np

    # first the best in the first objective, then the farthest from those chosen; ties to the lower index
    assert spread_order(np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])) == [1, 0, 2, 3]
    assert spread_order(np.array([[1.0, 0.0], [1.0, 0.0]])) == [0, 1]
    # fronts come whole, in order: (0.5, 0.5) is dominated only by (0.6, 0.6)
    assert pareto_order([[0.5, 0.5], [0.6, 0.6], [0.1, 0.9], [0.05, 0.05]]) == [1, 2, 0, 3]


def test_protected_configurations_are_never_stopped_but_count_at_the_rung():
    s = MOASHA(objectives=[("val_accuracy", "max"), ("planned_compute_saved_frac", "max")], max_t=8,
               grace_period=2, reduction_factor=2)
    assert s.milestones == [2, 4]
    good = {"epoch": 2, "val_accuracy": 0.9, "planned_compute_saved_frac": 0.5}
    bad = {"epoch": 2, "val_accuracy": 0.5, "planned_compute_saved_frac": 0.1}
    assert s.decide("a", {}, good) == "CONTINUE"
    assert s.decide("b", {"paper_config": "efreeze"}, bad) == "CONTINUE"
    assert s.decide("c", {"reference": "fixed-2"}, bad) == "CONTINUE"
    assert s.decide("d", {"paper_config": ""}, bad) == "STOP"
    assert s.rungs[2].keys() == {"a", "b", "c", "d"}  # protected results count
    assert [d["decision"] for d in s.decision_rows()] == ["continue", "kept: paper_config=efreeze",
                                                         "kept: reference=fixed-2", "stop"]
    assert protected({"paper_config": "baseline"}) == "paper_config=baseline" and protected(None) == ""
    # a first result past a rung (a restarted trial re-reporting) is ranked at the highest rung passed;
    # one at the budget is not ranked (the trial ends by itself), nor one without every objective
    assert s.decide("e", {}, {**bad, "epoch": 3}) == "STOP" and "e" in s.rungs[2]
    assert s.decide("f", {}, {**bad, "epoch": 8}) == "CONTINUE" and "f" not in s.rungs[4]
    assert s.decide("g", {}, {"epoch": 2, "val_accuracy": float("nan"), "planned_compute_saved_frac": 0.9}) == "CONTINUE"
    assert "g" not in s.rungs[2]


def test_minimized_objectives_are_negated():
    s = MOASHA(objectives=[("val_accuracy", "max"), ("train_time_s", "min")], max_t=4, grace_period=1)
    assert s.decide("a", {}, {"epoch": 1, "val_accuracy": 0.5, "train_time_s": 2.0}) == "CONTINUE"
    assert s.decide("b", {}, {"epoch": 1, "val_accuracy": 0.6, "train_time_s": 1.0}) == "CONTINUE"  # dominates
    assert s.decide("c", {}, {"epoch": 1, "val_accuracy": 0.4, "train_time_s": 3.0}) == "STOP"


def test_a_reported_again_result_gets_the_same_decision_and_the_state_round_trips():
    def new():
        return MOASHA(objectives=[("val_accuracy", "max"), ("planned_compute_saved_frac", "max")], max_t=8,
                      grace_period=2, reduction_factor=2)

    s = new()
    s.decide("a", {}, {"epoch": 2, "val_accuracy": 0.9, "planned_compute_saved_frac": 0.5})
    assert s.decide("b", {}, {"epoch": 2, "val_accuracy": 0.1, "planned_compute_saved_frac": 0.1}) == "STOP"
    assert s.decide("a", {}, {"epoch": 4, "val_accuracy": 0.9, "planned_compute_saved_frac": 0.5}) == "CONTINUE"
    # what Ray saves with each snapshot (the callback's state), pickled, into a fresh scheduler
    cb = SchedulerState(s)
    state = pickle.loads(pickle.dumps(cb.get_state()))
    restored = new()
    SchedulerState(restored).set_state(state)
    assert restored.rungs == s.rungs and restored.decision_rows() == s.decision_rows()
    # a restarted trial reporting rung 2 again gets its recorded decision, without a new row
    assert restored.decide("b", {}, {"epoch": 2, "val_accuracy": 0.99, "planned_compute_saved_frac": 0.9}) == "STOP"
    assert restored.decide("a", {}, {"epoch": 2, "val_accuracy": 0.0, "planned_compute_saved_frac": 0.0}) == "CONTINUE"
    assert len(restored.decision_rows()) == 3
    # a newcomer is ranked against the restored records
    assert restored.decide("c", {}, {"epoch": 2, "val_accuracy": 0.05, "planned_compute_saved_frac": 0.05}) == "STOP"
    assert restored.decision_rows()[-1] == {"rung": 2, "trial_id": "c", "val_accuracy": 0.05,
                                            "planned_compute_saved_frac": 0.05, "rank": 3, "of": 3,
                                            "decision": "stop"}


def test_paper_asha_protects_reference_configurations_too():
    class T:
        def __init__(self, tid, config):
            self.trial_id, self.config = tid, config

    s = PaperASHA(time_attr="epoch", metric="val_accuracy", mode="max", max_t=8, grace_period=1)
    for tid in ("a", "b"):
        s.on_trial_add(None, T(tid, {}))
    s.on_trial_add(None, T("r", {"reference": "x"}))
    assert s.on_trial_result(None, T("a", {}), {"epoch": 1, "val_accuracy": 0.9}) == "CONTINUE"
    assert s.on_trial_result(None, T("b", {}), {"epoch": 1, "val_accuracy": 0.1}) == "STOP"
    assert s.on_trial_result(None, T("r", {"reference": "x"}), {"epoch": 1, "val_accuracy": 0.1}) == "CONTINUE"
