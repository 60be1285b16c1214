"""Search spaces (search_spaces/space.py): validation errors, presets, define-by-run, trial configs. No Ray."""
from __future__ import annotations

import copy
import pickle

import optuna
import pytest
import yaml

from layerout.errors import UserError
from layerout.schedules import paper_vectors, schedule_from_dict
from search_spaces.space import PRESET_DIR, list_presets, load_space, space_from_dict
from search_spaces.trials import PAPER_CONFIGS, define_by_run, paper_enqueue, paper_points, trial_to_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = {
    "model": "digits_cnn",
    "dataset": "digits",
    "train": {"epochs": 8, "batch_size": 64},
    "families": {"layerout": {"vector": "per_unit", "v": [0.0, 0.9], "warmup_epochs": [0, 3]}},
}
WHERE = "search_spaces/x.yaml"


def _space(**changes):
    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = d
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return d


def _error(d) -> str:
    with pytest.raises(UserError) as info:
        space_from_dict(d, where=WHERE)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("changes, expected", [
    ({"families__layerout__warmup_epochs": [0, 9]},
     "search_spaces/x.yaml: families.layerout.warmup_epochs: must be a [low, high] pair of integers within "
     "[0, 7] (0 .. epochs-1, epochs = 8), got [0, 9]"),
    ({"families__layerout__warmup_epochs": [3, 1]},
     "search_spaces/x.yaml: families.layerout.warmup_epochs: must be a [low, high] pair of integers within "
     "[0, 7] (0 .. epochs-1, epochs = 8), got [3, 1]"),
    ({"families__layerout__v": [0.0, 1.5]},
     "search_spaces/x.yaml: families.layerout.v: must be a [low, high] pair of numbers within [0, 1], got [0.0, 1.5]"),
    ({"families__layerout__v": [[0, 1], [0, 1]]},
     "search_spaces/x.yaml: families.layerout.v: a list of ranges needs one [low, high] pair per unit (3), got 2"),
    ({"families__layerout__vector": "diagonal"},
     "search_spaces/x.yaml: families.layerout.vector: must be one of per_unit, ramp, per_stage, got 'diagonal'"),
    ({"families__layerout__v_mode": ["manual", "sometimes"]},
     "search_spaces/x.yaml: families.layerout.v_mode: must be one of manual, random_epoch, random_once or a list "
     "of them, got ['manual', 'sometimes']"),
    ({"families__layerout__v_first": [0, 1]},
     "search_spaces/x.yaml: families.layerout.v_first: only applies to vector: ramp (vector is per_unit)"),
    ({"families__layerout__stages": [1, 1]},
     "search_spaces/x.yaml: families.layerout.stages: only applies to vector: per_stage (vector is per_unit)"),
    ({"families__layerout__color": 1},
     "search_spaces/x.yaml: families.layerout.color: unknown key; allowed: vector, v, v_first, v_last, stages, "
     "warmup_epochs, v_mode, keep_last_trainable"),
    ({"families__dropout": {}},
     "search_spaces/x.yaml: families.dropout: unknown family; allowed: none, layerout, freezeout, prefix, adaptive"),
    ({"families__prefix": {"k": [1, 3]}},
     "search_spaces/x.yaml: families.prefix.k: must be a [low, high] pair of integers within [1, 2] "
     "(1 .. K-1, the model has K = 3 units), got [1, 3]"),
    ({"families__prefix": {"start_epoch": 8}},
     "search_spaces/x.yaml: families.prefix.start_epoch: must be a [low, high] pair of integers within [0, 7] "
     "(0 .. epochs-1, epochs = 8), got 8"),
    ({"families__freezeout": {"t0": [0.0, 0.5]}},
     "search_spaces/x.yaml: families.freezeout.t0: must be a [low, high] pair of numbers within (0, 1], got [0.0, 0.5]"),
    ({"families__freezeout": {"scale": "quartic"}},
     "search_spaces/x.yaml: families.freezeout.scale: must be one of linear, squared, cubic or a list of them, "
     "got 'quartic'"),
    ({"families__freezeout": {"scale_lr": "yes"}},
     "search_spaces/x.yaml: families.freezeout.scale_lr: must be one of false, true or a list of them, got 'yes'"),
    ({"families__adaptive": {"threshold": [10, 120]}},
     "search_spaces/x.yaml: families.adaptive.threshold: must be a [low, high] pair of numbers within [0, 100] "
     "(a percentile of the units' gradient-norm changes), got [10, 120]"),
    ({"families__adaptive": {"check_every": [0, 2]}},
     "search_spaces/x.yaml: families.adaptive.check_every: must be a [low, high] pair of integers within [1, 8] "
     "(1 .. epochs, epochs = 8), got [0, 2]"),
    ({"families__adaptive": {"threshold_mode": "relative"}},
     "search_spaces/x.yaml: families.adaptive.threshold_mode: must be one of percentile, absolute or a list of "
     "them, got 'relative'"),
    ({"families": {}},
     "search_spaces/x.yaml: families: must be a mapping of one or more of none, layerout, freezeout, prefix, "
     "adaptive to their ranges, got {}"),
    ({"model": "resnet9000"}, None),
    ({"dataset": "imagenet"},
     "search_spaces/x.yaml: dataset: unknown dataset 'imagenet'; allowed: digits, mnist, cifar10, cifar100, synthetic, "
     "imagefolder:PATH, or an import path to your own data function like my_pkg.data:load"),
    ({"train__epochs": 0}, "search_spaces/x.yaml: train.epochs: must be an integer >= 1, got 0"),
    ({"train__lr_milestones": [9]},
     "search_spaces/x.yaml: train.lr_milestones: must be an increasing list of integer epochs within [1, 7] "
     "(epochs = 8), got [9]"),
    ({"train__optimizer": "adam"}, None),
    ({"train__val_frac": 0.9}, "search_spaces/x.yaml: train.val_frac: must be a number within (0, 0.5], got 0.9"),
    ({"train__augment": "no"}, "search_spaces/x.yaml: train.augment: must be true or false, got 'no'"),
    ({"train__fast_path": "graphs"},
     "search_spaces/x.yaml: train.fast_path: must be one of auto, off, cudagraph, got 'graphs'"),
    ({"objectives": [["val_accuracy", "up"]]},
     "search_spaces/x.yaml: objectives: must be a list of [metric, max|min] pairs with metrics from epoch, "
     "train_loss, val_loss, val_accuracy, params_frozen_frac, compute_saved_frac, planned_compute_saved_frac, "
     "compute_spent_gflop, time_saved_frac, train_time_s, got [['val_accuracy', 'up']]"),
    # the test split only reports: it never selects
    ({"objectives": [["test_accuracy", "max"], ["compute_saved_frac", "max"]]},
     "search_spaces/x.yaml: objectives: test_accuracy is only reported, never used to select (the test split must "
     "not choose a policy); allowed metrics: epoch, train_loss, val_loss, val_accuracy, params_frozen_frac, "
     "compute_saved_frac, planned_compute_saved_frac, compute_spent_gflop, time_saved_frac, train_time_s"),
    ({"early_stopping": {"scheduler": "hyperband"}},
     "search_spaces/x.yaml: early_stopping.scheduler: must be one of moasha, asha, none, got 'hyperband'"),
    ({"early_stopping": {"grace_period": 9}},
     "search_spaces/x.yaml: early_stopping.grace_period: must be an integer within [1, 8] (1 .. epochs, "
     "epochs = 8), got 9"),
    ({"early_stopping": {"reduction_factor": 1}},
     "search_spaces/x.yaml: early_stopping.reduction_factor: must be an integer within [2, 100], got 1"),
    ({"paper_configs": "yes"}, "search_spaces/x.yaml: paper_configs: must be true or false, got 'yes'"),
    ({"paper_warmup_epochs": 8},
     "search_spaces/x.yaml: paper_warmup_epochs: must be an integer within [0, 7] (0 .. epochs-1, epochs = 8), got 8"),
    ({"num_samples": 0}, "search_spaces/x.yaml: num_samples: must be an integer >= 1, got 0"),
    ({"max_concurrent": -1}, "search_spaces/x.yaml: max_concurrent: must be an integer >= 0, got -1"),
    ({"sedd": 1}, None),
])
def test_validation_errors(changes, expected):
    msg = _error(_space(**changes))
    if expected is not None:
        assert msg == expected
    else:
        assert msg.startswith(WHERE + ": ")
        key = next(iter(changes)).split("__")
        assert ".".join(key) in msg or key[-1] in msg


def test_quoted_values_are_cut_short():
    """An error quotes at most 80 characters of the offending value, however large it is."""
    huge = ["x" * 5000] * 2000  # 10 MB as text
    msg = _error(_space(train__lr_milestones=huge))
    assert msg.startswith("search_spaces/x.yaml: train.lr_milestones: must be an increasing list of integer epochs "
                          ">= 1, got ['xxxx")
    assert msg.endswith("...") and len(msg) < 200, len(msg)
    nested = [[[[[[1] * 1000] * 1000] * 1000]]]  # 10^9 values when expanded; quoted without expanding
    msg = _error(_space(families={"layerout": {"vector": nested}}))
    assert msg.startswith("search_spaces/x.yaml: families.layerout.vector: must be one of per_unit, ramp, per_stage, "
                          "got [[[[...]]]]") and len(msg) < 250, msg
    msg = _error(_space(**{"train__" + "k" * 3000: 1}))
    assert msg.startswith("search_spaces/x.yaml: train.kkkk") and "unknown key" in msg and len(msg) < 600
    big_int = -10 ** 5000  # more digits than Python prints
    assert _error(_space(train__epochs=big_int)) == ("search_spaces/x.yaml: train.epochs: must be an integer >= 1, "
                                                     "got <an integer of 16610 bits>")


def _alias_bomb(depth: int = 9) -> str:
    """train.lr_milestones as nested anchors: 10 aliases per level, 10^depth values when expanded,
    about 70 bytes per level as text."""
    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, depth)]
    return ("model: digits_cnn\ndataset: digits\ntrain:\n  epochs: 3\n  lr_milestones: [\n"
            + "".join(f"    {lv},\n" for lv in levels) + "  ]\n")


def test_space_file_limits(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    assert bomb.stat().st_size < 1700
    with pytest.raises(UserError) as info:
        load_space(str(bomb))
    assert str(info.value) == (f"{bomb}: expands to more than 100,000 values (YAML anchors and aliases repeat what "
                               "they name); a search space needs far fewer: write its values out")
    ok = tmp_path / "few_aliases.yaml"  # aliases themselves are fine
    ok.write_text("model: digits_cnn\ndataset: digits\ntrain: {epochs: 4}\n"
                  "families: {prefix: {start_epoch: &w [0, 2]}, layerout: {warmup_epochs: *w}}\n")
    assert load_space(str(ok)).families["layerout"].warmup_epochs == (0, 2)
    big = tmp_path / "big.yaml"
    big.write_text("model: digits_cnn\ndataset: digits\n" + "# padding\n" * 200_000)
    with pytest.raises(UserError, match=r"big.yaml: 2,000,0\d\d bytes; a search space may be at most 1,048,576 "
                                        r"bytes \(1 MiB\)$"):
        load_space(str(big))
    deep = tmp_path / "deep.yaml"
    deep.write_text("model: digits_cnn\ndataset: digits\ntrain: {lr: " + "[" * 20000 + "]" * 20000 + "}\n")
    with pytest.raises(UserError, match=r"deep.yaml: nested too deeply to read"):
        load_space(str(deep))


def test_unknown_model_lists_models():
    msg = _error(_space(model="resnet9000"))
    assert msg.startswith("search_spaces/x.yaml: model: unknown model 'resnet9000'; allowed: ")
    assert "digits_cnn" in msg and "vgg16" in msg


def test_per_stage_validation():
    fam = {"vector": "per_stage", "stages": [2, 2]}
    msg = _error(_space(families={"layerout": fam}))
    assert msg == ("search_spaces/x.yaml: families.layerout.stages: must be auto, a number of stages within "
                   "[1, 3], or a list of stage sizes (integers >= 1) summing to the model's 3 units, got [2, 2]")
    s = space_from_dict(_space(families={"layerout": {"vector": "per_stage", "stages": [1, 2], "v": [0.1, 0.5]}}))
    assert s.families["layerout"].stages == [0, 1, 1]
    assert s.families["layerout"].v == [(0.1, 0.5), (0.1, 0.5)]


def test_load_space_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: digits_cnn\ntrain: [epochs: 3\n")
    with pytest.raises(UserError) as info:
        load_space(str(bad))
    msg = str(info.value)
    assert msg.startswith(f"{bad}: not valid YAML: ") and "line" in msg and "\n" not in msg
    with pytest.raises(UserError, match=r"no such search-space file"):
        load_space(str(tmp_path / "missing.yaml"))
    with pytest.raises(UserError, match=r"^unknown preset 'nope'; available: demo, "):
        load_space("nope")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match=r"must be a YAML mapping"):
        load_space(str(lst))


def test_unknown_schedule_kind_is_a_clear_error(monkeypatch):
    import layerout.schedules as sch

    monkeypatch.delitem(sch.SCHEDULES, "adaptive")
    msg = _error(_space(families={"adaptive": {}}))
    assert msg == ("search_spaces/x.yaml: families.adaptive: this version of layerout has no 'adaptive' schedule "
                   "(layerout.schedules knows: freezeout, layerout, none, prefix); remove it from the space")


# ------------------------------------------------------------------------------ presets
EXPECTED_PRESETS = {"demo", "paper-mnist", "paper-cifar10-vgg16", "paper-cifar10-resnet110",
                    "paper-cifar100-vgg16", "paper-cifar100-resnet110"}


def test_presets_load_with_the_papers_recipes():
    names = {n for n, _ in list_presets()}
    assert EXPECTED_PRESETS <= names
    spaces = {n: load_space(n) for n in EXPECTED_PRESETS}
    for n, s in spaces.items():
        assert s.paper_configs, n
        assert s.objectives == [("val_accuracy", "max"), ("compute_saved_frac", "max")]
        assert s.train["momentum"] == 0.9 and s.train["weight_decay"] == 5e-4
    demo = spaces["demo"]
    assert (demo.model, demo.dataset, demo.num_units, demo.train["batch_size"]) == ("digits_cnn", "digits", 3, 64)
    assert demo.num_samples >= 24 and demo.early_stopping.scheduler == "moasha" and demo.train["device"] == "cpu"
    assert all(s.early_stopping.scheduler == "moasha" for s in spaces.values())
    assert set(demo.families) == {"layerout", "freezeout", "prefix", "adaptive"}
    m = spaces["paper-mnist"]
    assert (m.model, m.num_units, m.epochs, m.train["lr"]) == ("mnist_shallow", 7, 100, 0.01)
    for ds in ("cifar10", "cifar100"):
        v = spaces[f"paper-{ds}-vgg16"]
        assert (v.dataset, v.num_units, v.epochs, v.train["lr"], v.train["lr_milestones"], v.train["batch_size"]) == (
            ds, 16, 300, 0.1, [150, 225], 128)
        r = spaces[f"paper-{ds}-resnet110"]
        assert (r.num_units, r.epochs, r.train["lr"], r.train["lr_milestones"], r.train["batch_size"]) == (
            56, 164, 0.1, [82, 123], 32)
        assert (r.train["lr_warmup_epochs"], r.train["lr_warmup_value"]) == (4, 0.01)
        assert r.families["layerout"].vector == "per_stage"
        assert max(r.families["layerout"].stages) + 1 == 5  # stem, layer1, layer2, layer3, fc


def test_paper_points_use_the_papers_vectors():
    s = load_space("paper-cifar10-vgg16")
    pts = dict(paper_points(s))
    assert list(pts) == list(PAPER_CONFIGS)
    e = trial_to_config(s, pts["efreeze"])["schedule"]
    d = trial_to_config(s, pts["dfreeze"])["schedule"]
    assert e["v"] == paper_vectors(16)["efreeze"] and d["v"] == list(reversed(e["v"]))
    assert e["warmup_epochs"] == d["warmup_epochs"] == 20 and e["v_mode"] == "manual"
    assert trial_to_config(s, pts["baseline"])["schedule"] == {"kind": "none"}
    ss = trial_to_config(s, pts["since_start"])["schedule"]
    wr = trial_to_config(s, pts["warmup_random"])["schedule"]
    assert (ss["v_mode"], ss["warmup_epochs"], wr["v_mode"], wr["warmup_epochs"]) == (
        "random_epoch", 0, "random_epoch", 20)
    # a unit count other than 7 / 16: the paper's ramp
    r = load_space("paper-cifar10-resnet110")
    e = trial_to_config(r, dict(paper_points(r))["efreeze"])["schedule"]["v"]
    assert len(e) == 56 and e[0] == 0.9 and e[-1] == 0.1


# ------------------------------------------------------------------------------ define-by-run
def _run_study(space, n, seed=0):
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    for fixed, attrs in paper_enqueue(space):
        study.enqueue_trial(fixed, user_attrs=attrs)
    fn = define_by_run(space, space.num_units)
    configs = []
    for i in range(n):
        t = study.ask()
        cfg = fn(t)
        configs.append((t, cfg))
        study.tell(t, [0.5 + 0.01 * i, 0.1])
    return study, configs


def test_define_by_run_samples_every_family_with_valid_schedules():
    space = load_space("demo")
    _, configs = _run_study(space, 45)
    papers = [c["paper_config"] for _, c in configs[:5]]
    assert papers == list(PAPER_CONFIGS)
    assert all(c["paper_config"] == "" for _, c in configs[5:])
    kinds = {c["schedule"]["kind"] for _, c in configs[5:]}
    assert kinds == {"layerout", "freezeout", "prefix", "adaptive"}
    for t, c in configs:
        sch = schedule_from_dict(c["schedule"]).bind(num_units=3, epochs=8, steps_per_epoch=10, seed=0)
        assert sch.kind == c["family"]
        assert c["train"]["model"] == "digits_cnn" and c["train"]["epochs"] == 8
        if c["schedule"]["kind"] == "layerout" and c["schedule"]["v_mode"] == "manual" and not c["paper_config"]:
            assert len(c["schedule"]["v"]) == 3
            assert all(0.0 <= x <= 0.9 for x in c["schedule"]["v"])
            assert {f"layerout.v{i}" for i in range(3)} <= set(t.params)
        if c["schedule"]["kind"] == "prefix":
            assert c["schedule"]["k"] == t.params["prefix.k"] and t.params["prefix.k"] in (1, 2)  # demo: k [1, 2]
            assert "layerout.v0" not in t.params  # conditional params


@pytest.mark.parametrize("family", [
    {"vector": "ramp", "v_first": [0.5, 0.9], "v_last": [0.0, 0.2], "v_mode": "manual"},
    {"vector": "per_stage", "stages": 2, "v": [0.2, 0.4], "v_mode": "manual"},
])
def test_ramp_and_stage_vectors(family):
    s = space_from_dict(_space(families={"layerout": family}))
    _, configs = _run_study(s, 5)
    for _, c in configs:
        v = c["schedule"]["v"]
        assert len(v) == 3
        if family["vector"] == "ramp":
            assert 0.5 <= v[0] <= 0.9 and 0.0 <= v[2] <= 0.2 and abs(v[1] - (v[0] + v[2]) / 2) < 1e-3
        else:
            assert v[0] == v[1] and all(0.2 <= x <= 0.4 for x in v)  # stages [0, 0, 1]


def test_define_by_run_is_picklable_and_checks_units():
    s = load_space("demo")
    fn = pickle.loads(pickle.dumps(define_by_run(s, 3)))
    assert fn.space.units == s.units
    with pytest.raises(UserError, match="has 3 units, not 7"):
        define_by_run(s, 7)


def test_trial_to_config_rejects_what_the_schedule_rejects():
    s = space_from_dict(_space(families={"prefix": {"k": [1, 2]}}))
    with pytest.raises(UserError, match=r"schedule\.k"):
        trial_to_config(s, {"family": "prefix", "prefix.k": 3, "prefix.start_epoch": 0})


def test_yaml_round_trip_of_the_demo_file():
    data = yaml.safe_load((PRESET_DIR / "demo.yaml").read_text())
    s = space_from_dict(data, where="demo.yaml")
    assert s.to_dict()["units"] == ["conv1", "conv2", "head"]


def test_the_default_scheduler_is_moasha_with_two_objectives_and_asha_with_one():
    base = {"model": "digits_cnn", "dataset": "digits", "train": {"epochs": 4}}
    assert space_from_dict(base, where="x.yaml").early_stopping.scheduler == "moasha"
    one = space_from_dict({**base, "objectives": [["val_accuracy", "max"]]}, where="x.yaml")
    assert one.early_stopping.scheduler == "asha"
    chosen = space_from_dict({**base, "early_stopping": {"scheduler": "asha"}}, where="x.yaml")
    assert chosen.early_stopping.scheduler == "asha"
