"""Training for a fraction of the budget (layerout/budget.py): the compressed recipe and schedule,
the trainer's savings measured against the whole budget, and how the search makes, names and
judges the shorter runs (reference points, budget_frac) without Ray."""
from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports Ray: loopback only

import json  # noqa: E402

import optuna  # noqa: E402
import pytest  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from helpers import hand_saved_frac  # noqa: E402
from layerout.budget import epochs_for, shorter_recipe, shorter_schedule  # noqa: E402
from layerout.errors import UserError  # noqa: E402
from layerout.experiment import TrialRecord, build_tables  # noqa: E402
from layerout.metrics import METRICS  # noqa: E402
from layerout.schedules import schedule_from_dict  # noqa: E402
from layerout.trainer import TrainConfig, Trainer  # noqa: E402
from search_spaces.space import space_from_dict  # noqa: E402
from search_spaces.trials import (BUDGET_PARAM, define_by_run, paper_enqueue, reference_enqueue,  # noqa: E402
                                  reference_points)
from tuning.schedulers import MOASHA  # noqa: E402
from tuning.searcher import TruthfulOptunaSearch  # noqa: E402

BUDGET = {"model": "digits_cnn", "dataset": "digits", "epochs": 8, "batch_size": 64, "lr": 0.05,
          "lr_milestones": [4, 6], "lr_gamma": 0.1, "lr_warmup_epochs": 2, "lr_warmup_value": 0.01,
          "augment": False, "device": "cpu", "max_train_batches": 2}


def _run(train: dict, schedule: dict, digits) -> Trainer:
    t = Trainer(TrainConfig(**train), schedule_from_dict(schedule), data=digits, verbose=False)
    t.fit()
    return t


def test_shorter_run_saves_one_minus_f_and_its_milestones_are_the_scaled_ones(digits):
    """The unfrozen model trained for half of an 8-epoch budget: milestones 4, 6 become 2, 3, the
    2-epoch lr warm-up 1 epoch, and its compute saved, measured against the whole budget's
    unfrozen FLOPs, is 1 - 4/8 at every epoch (every step a full batch: the counts divide evenly)."""
    half = shorter_recipe(BUDGET, epochs_for(0.5, 8))
    assert (half["epochs"], half["budget_epochs"], half["lr_milestones"], half["lr_warmup_epochs"]) == (4, 8, [2, 3], 1)
    t = _run(half, {"kind": "none"}, digits)
    assert [h["lr"] for h in t.history] == pytest.approx([0.01, 0.05, 0.005, 0.0005])
    for h in t.history:
        assert h["compute_saved_frac"] == pytest.approx(0.5, abs=1e-6)
        assert h["planned_compute_saved_frac"] == pytest.approx(0.5, abs=1e-6)
    assert t.ledger.flops_unfrozen == pytest.approx(t.ledger.flops_spent)  # counted, not assumed
    quarter = shorter_recipe(BUDGET, epochs_for(0.25, 8))
    assert (quarter["epochs"], quarter["lr_milestones"], quarter["lr_warmup_epochs"]) == (2, [1], 1)
    assert _run(quarter, {"kind": "none"}, digits).history[-1]["compute_saved_frac"] == pytest.approx(0.75, abs=1e-6)


def test_a_freezing_policy_trained_shorter_saves_both(digits):
    """prefix k=1 from epoch 0 for 4 of 8 epochs: 1 - (4/8) * (1 - what the prefix saves on its steps)."""
    t = _run(shorter_recipe(BUDGET, 4), {"kind": "prefix", "k": 1, "start_epoch": 0}, digits)
    within = hand_saved_frac(["100"] * (4 * 2))
    assert t.history[-1]["compute_saved_frac"] == pytest.approx(1 - 0.5 * (1 - within), abs=1e-9)
    # the whole budget: as before this change
    full = _run({**BUDGET, "epochs": 4, "lr_milestones": [2], "lr_warmup_epochs": 1},
                {"kind": "prefix", "k": 1, "start_epoch": 0}, digits)
    assert full.history[-1]["compute_saved_frac"] == pytest.approx(within, abs=1e-9)


def test_rounding_of_a_shorter_recipe_and_schedule():
    assert [epochs_for(f, 8) for f in (0.25, 0.5, 0.75, 0.01, 1.0)] == [2, 4, 6, 1, 8]
    assert [epochs_for(f, 3) for f in (0.25, 0.5, 0.75)] == [1, 2, 2]  # 0.75 and 1.5 round half up
    r = shorter_recipe({"epochs": 8, "lr_milestones": [6, 7], "lr_warmup_epochs": 3}, 3)
    assert r["lr_milestones"] == [2] and r["lr_warmup_epochs"] == 1  # 2.25 -> 2; 2.625 -> 3 == end: dropped
    r = shorter_recipe({"epochs": 10, "lr_milestones": [1, 2, 3], "lr_warmup_epochs": 0}, 5)
    assert r["lr_milestones"] == [1, 2, 3] and r["lr_warmup_epochs"] == 0  # 0.5->1, 1->1 moved to 2, 1.5->2 moved to 3
    assert shorter_recipe({"epochs": 8, "lr_milestones": [4]}, 8) == {"epochs": 8, "lr_milestones": [4]}
    assert shorter_recipe({"epochs": 8, "lr_milestones": [], "lr_warmup_epochs": 2}, 1)["lr_warmup_epochs"] == 0
    lo = {"kind": "layerout", "v": [0.5, 0.5, 0.5], "warmup_epochs": 3}
    assert shorter_schedule(lo, 4, 8)["warmup_epochs"] == 2  # 1.5 -> 2
    assert shorter_schedule(lo, 2, 8)["warmup_epochs"] == 1  # 0.75 -> 1
    assert shorter_schedule({"kind": "prefix", "k": 1, "start_epoch": 7}, 4, 8)["start_epoch"] == 3  # 3.5 -> 4, at most 3
    assert shorter_schedule({"kind": "freezeout", "t0": 0.5}, 4, 8) == {"kind": "freezeout", "t0": 0.5}
    with pytest.raises(UserError, match=r"train.budget_epochs: must be null or an integer >= epochs \(4\)"):
        TrainConfig(model="digits_cnn", dataset="digits", epochs=4, budget_epochs=3)


def _space(**extra):
    doc = {"model": "digits_cnn", "dataset": "digits", "train": {"epochs": 8, "lr_milestones": [6]},
           "families": {"layerout": {"warmup_epochs": [0, 3]}, "prefix": {}}, **extra}
    return space_from_dict(doc, where="x.yaml")


def test_reference_points_of_a_space():
    s = _space()
    assert s.reference_budgets == [0.25, 0.5, 0.75] and s.budget_frac is None
    assert (s.confirm_seeds, s.confirm_top) == (3, 2)  # every search confirms its front by default
    assert reference_points(s) == [("shorter-25%", 2), ("shorter-50%", 4), ("shorter-75%", 6)]
    # the baseline always, first; after the paper's five when they run (the paper's baseline is the baseline)
    assert [a["reference"] for _, a in reference_enqueue(s)] == ["baseline", "shorter-25%", "shorter-50%", "shorter-75%"]
    p = _space(paper_configs=True, reference_budgets=[0.5])
    assert [a for _, a in paper_enqueue(p) + reference_enqueue(p)][-2:] == [{"paper_config": "dfreeze"},
                                                                            {"reference": "shorter-50%"}]
    assert [a["reference"] for _, a in reference_enqueue(_space(reference_budgets=False))] == ["baseline"]
    assert reference_points(_space(reference_budgets=[])) == []
    three = space_from_dict({"model": "digits_cnn", "dataset": "digits", "train": {"epochs": 3}}, where="x.yaml")
    assert reference_points(three) == [("shorter-33%", 1), ("shorter-67%", 2)]  # 0.5 and 0.75 both train 2 epochs
    for bad, words in (({"reference_budgets": [0.5, 1.0]}, "reference_budgets: must be a list of fractions"),
                       ({"reference_budgets": "half"}, "reference_budgets: must be a list of fractions"),
                       ({"budget_frac": [0.0, 0.5]}, "budget_frac: must be a [low, high] pair of numbers within (0, 1]"),
                       ({"confirm": {"seeds": -1}}, "confirm.seeds: must be an integer within [0, 100]"),
                       ({"confirm": {"runs": 3}}, "confirm.runs: unknown key; allowed: seeds, top")):
        with pytest.raises(UserError) as e:
            _space(**bad)
        assert str(e.value).startswith("x.yaml: ") and words in str(e.value), str(e.value)


def test_define_by_run_makes_reference_and_budget_frac_trials():
    s = _space(paper_configs=True, budget_frac=[0.5, 1.0])
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for fixed, attrs in (paper_enqueue(s) + reference_enqueue(s)):
        study.enqueue_trial(fixed, user_attrs=attrs)
    fn = define_by_run(s)
    cfgs = [fn(study.ask()) for _ in range(5 + 3 + 12)]
    base = cfgs[0]
    assert (base["paper_config"], base["reference"], base["train"]["epochs"]) == ("baseline", "baseline", 8)
    assert "budget_epochs" not in base["train"]
    refs = {c["reference"]: c for c in cfgs[5:8]}
    half = refs["shorter-50%"]
    assert half["schedule"] == {"kind": "none"} and half["family"] == "none"
    assert (half["train"]["epochs"], half["train"]["budget_epochs"], half["train"]["lr_milestones"]) == (4, 8, [3])
    assert refs["shorter-25%"]["train"]["lr_milestones"] == []  # 1.5 -> 2 = its last epoch: never applies
    sampled = cfgs[8:]
    assert all(c["reference"] == "" for c in sampled)
    epochs = {c["train"]["epochs"] for c in sampled}
    assert epochs <= set(range(4, 9)) and len(epochs) > 1
    for c in sampled:
        e = c["train"]["epochs"]
        assert c["train"].get("budget_epochs") == (8 if e < 8 else None)
        if c["family"] == "layerout":
            assert c["schedule"]["warmup_epochs"] <= e - 1
    trial = study.trials[-1]
    assert BUDGET_PARAM in trial.params and 4 <= trial.params[BUDGET_PARAM] <= 8


def test_a_shorter_run_that_trained_its_epochs_is_finished_not_stopped():
    """The tables, the searcher (COMPLETE, not PRUNED) and MOASHA (its own end is not ranked)."""
    cfg = {"family": "none", "paper_config": "", "reference": "shorter-50%", "optuna_trial": 0,
           "train": {"epochs": 2, "budget_epochs": 4}, "schedule": {"kind": "none"}}
    rows = [{**{m: 0.5 for m in METRICS}, "epoch": e} for e in (1, 2)]
    t, _ = build_tables([TrialRecord("r", "TERMINATED", cfg, rows),
                         TrialRecord("s", "TERMINATED", {**cfg, "reference": "", "optuna_trial": 1,
                                                          "train": {"epochs": 4}}, rows)], epochs_budget=4)
    assert t["reference"].tolist() == ["shorter-50%", ""] and t["stopped_early"].tolist() == [False, True]
    assert "config/reference" not in t.columns and t["config/train/budget_epochs"].tolist()[0] == 4

    space = _space(reference_budgets=[0.5])
    s = TruthfulOptunaSearch(space=define_by_run(space), metric=["val_accuracy", "compute_saved_frac"],
                             mode=["max", "max"], sampler=optuna.samplers.RandomSampler(seed=0), study_name="s",
                             storage=optuna.storages.InMemoryStorage(), epochs=8, seed=0, quiet=True)
    for fixed, attrs in reference_enqueue(space):
        s.study.enqueue_trial(fixed, user_attrs=attrs)
    configs = {tid: s.suggest(tid) for tid in ("base", "half", "free")}
    assert configs["half"]["train"]["epochs"] == 4
    for tid, epoch in (("base", 8), ("half", 4), ("free", 4)):
        s.on_trial_complete(tid, {"epoch": epoch, "val_accuracy": 0.9, "compute_saved_frac": 0.5,
                                  "policy": json.dumps(configs[tid]["schedule"])})
    states = {t.user_attrs["ray_trial_id"]: t.state for t in s.study.get_trials()}
    assert states == {"base": TrialState.COMPLETE, "half": TrialState.COMPLETE, "free": TrialState.PRUNED}

    m = MOASHA([("val_accuracy", "max")], max_t=8, grace_period=2, reduction_factor=2)
    assert m.decide("a", {"train": {"epochs": 8}}, {"epoch": 2, "val_accuracy": 0.9}) == "CONTINUE"
    assert m.decide("b", {"train": {"epochs": 2}}, {"epoch": 2, "val_accuracy": 0.1}) == "CONTINUE"  # its end
    assert m.decide("c", {"train": {"epochs": 8}}, {"epoch": 2, "val_accuracy": 0.1}) == "STOP"
    assert [d["trial_id"] for d in m.decision_rows()] == ["a", "c"]
