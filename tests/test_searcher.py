"""The searcher without a Ray run: what Optuna is told when a trial ends (COMPLETE, PRUNED, FAIL,
attributes set first), and repeated configurations (not trained again, told the first run's
result now or when it ends; the search ends when the samplers find nothing new). The space has
three configurations: none, prefix k=1 from epoch 0, prefix k=1 from epoch 1."""
from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports Ray: loopback only

import json  # noqa: E402

import optuna  # noqa: E402
import pytest  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from search_spaces.space import space_from_dict  # noqa: E402
from search_spaces.trials import define_by_run  # noqa: E402
from tuning import internals  # noqa: E402
from tuning import searcher as searcher_mod  # noqa: E402
from tuning.searcher import TruthfulOptunaSearch, config_key  # noqa: E402

EPOCHS = 3


def _space():
    return space_from_dict({"model": "digits_cnn", "dataset": "digits", "train": {"epochs": EPOCHS},
                            "families": {"none": {}, "prefix": {"k": 1, "start_epoch": [0, 1]}}}, where="x.yaml")


def _searcher(sampler=None) -> TruthfulOptunaSearch:
    space = _space()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return TruthfulOptunaSearch(space=define_by_run(space), metric=["val_accuracy", "compute_saved_frac"],
                                mode=["max", "max"], sampler=sampler or optuna.samplers.RandomSampler(seed=0),
                                study_name="s", storage=optuna.storages.InMemoryStorage(), epochs=EPOCHS,
                                seed=0, quiet=True)


def _result(config, epoch, acc=0.9, saved=0.3):
    return {"epoch": epoch, "val_accuracy": acc, "compute_saved_frac": saved, "test_accuracy": 0.88 if epoch == EPOCHS
            else None, "time_saved_frac": 0.2, "policy": json.dumps(config["schedule"], sort_keys=True)}


def _by_attr(study, key, value):
    return [t for t in study.get_trials() if t.user_attrs.get(key) == value]


def test_complete_pruned_and_fail_with_attributes_set_first():
    s = _searcher()
    configs = {}
    for tid in ("a", "b", "c"):
        configs[tid] = s.suggest(tid)
    assert len({config_key(c) for c in configs.values()}) == 3  # three distinct configurations
    s.on_trial_complete("a", _result(configs["a"], EPOCHS, 0.91, 0.4))
    s.on_trial_complete("b", _result(configs["b"], 1, 0.5, 0.6))  # ended short of its budget: stopped early
    s.on_trial_complete("c", error=True)
    study = s.study
    (a,), (b,), (c,) = (_by_attr(study, "ray_trial_id", t) for t in "abc")
    assert a.state == TrialState.COMPLETE and a.values == [0.91, 0.4]
    assert a.user_attrs == {"ray_trial_id": "a", "epochs_done": EPOCHS, "stopped_early": False, "test_accuracy": 0.88,
                            "time_saved_frac": 0.2, "schedule": configs["a"]["schedule"]}
    assert b.state == TrialState.PRUNED and b.values is None
    assert b.user_attrs["stopped_early"] is True and b.user_attrs["epochs_done"] == 1
    assert b.user_attrs["test_accuracy"] is None
    assert c.state == TrialState.FAIL and c.user_attrs == {"ray_trial_id": "c"}
    assert [t.number for t in study.best_trials] == [a.number]  # only the full-budget trial is on Optuna's front
    # told once: a second completion changes nothing
    s.on_trial_complete("a", _result(configs["a"], EPOCHS, 0.1, 0.1))
    assert _by_attr(s.study, "ray_trial_id", "a")[0].values == [0.91, 0.4]


def test_a_repeated_configuration_is_not_trained_twice(capsys):
    s = _searcher()
    s._quiet = False
    first = {tid: s.suggest(tid) for tid in ("a", "b")}
    # "a" ends; "b" is still running
    s.on_trial_complete("a", _result(first["a"], EPOCHS, 0.93, 0.25))
    c = s.suggest("c")  # the only configuration left
    keys = [config_key(x) for x in (first["a"], first["b"], c)]
    assert len(set(keys)) == 3
    # every configuration is taken now: the next proposals all repeat, and the search ends
    out = s.suggest("d")
    assert out == "FINISHED" and s.exhausted and s.repeats >= searcher_mod.MAX_REPEATS
    lines = capsys.readouterr().out.splitlines()
    assert any("not trained again, its result is reused" in line and "trial a" in line for line in lines)
    assert any("gets trial b's result when that ends" in line for line in lines)
    assert "the search ends after 3 distinct configurations" in lines[-1]
    study = s.study
    rep_a = _by_attr(study, "repeat_of", "a")
    rep_b = _by_attr(study, "repeat_of", "b")
    assert rep_a and all(t.state == TrialState.COMPLETE and t.values == [0.93, 0.25] for t in rep_a)
    assert rep_a[0].user_attrs["schedule"] == first["a"]["schedule"] and "ray_trial_id" not in rep_a[0].user_attrs
    assert rep_b and all(t.state == TrialState.RUNNING for t in rep_b)  # waiting for b
    s.on_trial_complete("b", _result(first["b"], 2, 0.4, 0.7))  # b stopped early: its repeats are pruned
    assert all(t.state == TrialState.PRUNED for t in _by_attr(s.study, "repeat_of", "b"))
    # Ray trials that train: a, b and c only
    assert set(s._key_of) == {"a", "b", "c"}


def test_a_failed_configuration_may_run_again():
    s = _searcher()
    a = s.suggest("a")
    s.on_trial_complete("a", error=True)
    for i in range(60):  # the random sampler comes back to it
        c = s.suggest(f"t{i}")
        if c != "FINISHED" and config_key(c) == config_key(a):
            break
    else:
        pytest.fail("the failed configuration was never proposed again")


def test_the_searcher_pickles_with_its_bookkeeping(tmp_path):
    s = _searcher()
    cfg = s.suggest("a")
    s.save(str(tmp_path / "state.pkl"))
    restored = _searcher()
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored._first_run == {config_key(cfg): "a"}
    restored.on_trial_complete("a", _result(cfg, EPOCHS))
    assert _by_attr(restored.study, "ray_trial_id", "a")[0].state == TrialState.COMPLETE


def test_every_configuration_is_found_before_the_search_ends():
    """TPE keeps proposing its favourites; the random proposals after a few repeats find the rest
    (their stream differs from the random start the samplers draw from the same seed)."""
    space = space_from_dict({"model": "digits_cnn", "dataset": "digits", "train": {"epochs": 8},
                             "families": {"none": {}, "prefix": {"k": [1, 2], "start_epoch": [0, 5]}}},
                            where="x.yaml")
    for sampler in (optuna.samplers.TPESampler(seed=0), optuna.samplers.RandomSampler(seed=0)):
        s = TruthfulOptunaSearch(space=define_by_run(space), metric=["val_accuracy", "compute_saved_frac"],
                                 mode=["max", "max"], sampler=sampler, study_name="s",
                                 storage=optuna.storages.InMemoryStorage(), epochs=EPOCHS, seed=0, quiet=True)
        seen = []
        for i in range(100):
            cfg = s.suggest(f"t{i}")
            if cfg == "FINISHED":
                break
            seen.append(config_key(cfg))
            s.on_trial_complete(f"t{i}", _result(cfg, EPOCHS, 0.9 + 0.001 * i, 0.01 * i))
        assert cfg == "FINISHED" and len(seen) == len(set(seen)) == 13  # none + 2 x 6 prefixes, each once


def test_random_proposals_do_not_replay_the_samplers_own_start():
    """Only ``none`` can repeat in a space of none + a continuous LayerOut vector: a repeated LayerOut
    configuration would mean the random proposals replay what the sampler drew first from the seed."""
    space = space_from_dict({"model": "digits_cnn", "dataset": "digits", "train": {"epochs": 4},
                             "families": {"none": {}, "layerout": {"v": [0.0, 0.9]}}}, where="x.yaml")
    for sampler in (optuna.samplers.TPESampler(seed=0), optuna.samplers.RandomSampler(seed=0)):
        s = TruthfulOptunaSearch(space=define_by_run(space), metric=["val_accuracy", "compute_saved_frac"],
                                 mode=["max", "max"], sampler=sampler, study_name="s",
                                 storage=optuna.storages.InMemoryStorage(), epochs=EPOCHS, seed=0, quiet=True)
        for i in range(40):
            cfg = s.suggest(f"t{i}")
            s.on_trial_complete(f"t{i}", _result(cfg, EPOCHS))
        repeated = [t.params["family"] for t in s.study.trials if "repeat_of" in t.user_attrs]
        assert s.repeats >= searcher_mod.RANDOM_AFTER and set(repeated) == {"none"}


def test_nsga2_population_is_sized_to_the_run():
    from tuning.study import make_sampler, nsga2_population

    assert [nsga2_population(n) for n in (4, 16, 24, 100, 400)] == [4, 4, 6, 25, 50]
    lines: list[str] = []
    sampler = make_sampler("nsga2", 0, 24, lines.append)
    assert isinstance(sampler, optuna.samplers.NSGAIISampler) and sampler.population_size == 6 and lines == []
    make_sampler("nsga2", 0, 7, lines.append)
    assert lines == ["warning: --sampler nsga2: 7 trials are fewer than two generations of its population (4): "
                     "it samples at random until 4 trials have finished their whole budget"]
    make_sampler("tpe", 0, 3, lines.append)
    assert len(lines) == 1


def test_nsga2_warns_that_it_evolves_only_the_shared_parameters_of_several_families():
    """Optuna's NSGA-II crosses over the intersection search space: with two families whose
    parameters differ, only ``family`` evolves (checked on Optuna itself), and the tool says so."""
    from tuning.study import make_sampler

    lines: list[str] = []
    sampler = make_sampler("nsga2", 0, 24, lines.append, ["layerout", "prefix"])
    assert lines == ["warning: --sampler nsga2: the 2 freezing families (layerout, prefix) have parameters of their "
                     "own, and NSGA-II evolves only those every trial has (the family); it draws the others at "
                     "random. tpe models each parameter; or search one family per space"]
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        if trial.suggest_categorical("family", ["layerout", "prefix"]) == "layerout":
            return trial.suggest_float("layerout.v", 0.0, 0.9), 0.5
        return float(trial.suggest_int("prefix.k", 1, 2)), 0.5

    study.optimize(objective, n_trials=8)
    study.ask()
    assert set(sampler.infer_relative_search_space(study, study.trials[-1])) == {"family"}
    make_sampler("nsga2", 0, 24, lines.append, ["prefix"])  # one family: nothing to say
    assert len(lines) == 1


def test_a_trial_the_storage_already_finished_is_left_alone():
    """A database study can be ahead of the searcher state restored after a killed driver."""
    s = _searcher()
    cfg = s.suggest("a")
    s.study.tell(internals.optuna_trials(s)["a"], [0.5, 0.5])  # told before the kill, after the last snapshot
    s.on_trial_complete("a", _result(cfg, EPOCHS, 0.9, 0.1))
    (a,) = _by_attr(s.study, "ray_trial_id", "a")
    assert a.state == TrialState.COMPLETE and a.values == [0.5, 0.5]
