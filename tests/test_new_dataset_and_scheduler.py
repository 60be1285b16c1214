"""The other two extension points: a built-in dataset and an early-stopping scheduler defined
outside the project's files, each one registration, work everywhere the project's own do. A
dataset: ``load_data`` (its classes, channels, normalization and augmentation), the fail-fast
check, ``python -m layerout.train`` (its default model), a search space, the trainer. A scheduler:
``--scheduler`` / ``early_stopping.scheduler`` accept it and a real search runs under it."""
from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from layerout.datasets import DATASETS, BuiltinDataset, LoadArgs, register_dataset
from layerout.errors import UserError
from search_spaces.schedulers import SCHEDULERS, register_scheduler
from search_spaces.space import space_from_dict

KEPT = (0, 1, 2)  # the digits this dataset keeps


def load_three_digits(args: LoadArgs) -> tuple[torch.Tensor, ...]:
    """The bundled digits 0, 1 and 2 only, on a 0..1 scale shifted by 2 (so that normalizing shows)."""
    from layerout.data import load_digits

    out = []
    x_tr, y_tr, x_te, y_te = load_digits(args)
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        keep = torch.isin(y, torch.tensor(KEPT))
        out += [x[keep] + 2.0, y[keep]]
    return tuple(out)


THREE = BuiltinDataset("threedigits", classes=3, shape=(1, 8, 8), loader=load_three_digits,
                       default_model="digits_tiny", crop_pad=1, flip=False)


@pytest.fixture
def three(monkeypatch):
    """What the dataset's one registration line does (``register_dataset`` writes this registry)."""
    monkeypatch.setitem(DATASETS, THREE.name, THREE)
    return THREE


def test_registration_refuses_a_second_entry_for_a_name():
    with pytest.raises(ValueError, match="dataset 'digits' is empty or registered twice"):
        register_dataset(BuiltinDataset("digits", classes=3, shape=(1, 8, 8), loader=load_three_digits,
                                         default_model="digits_tiny"))
    with pytest.raises(ValueError, match="scheduler 'asha' is empty or registered twice"):
        register_scheduler("asha", "somewhere:else")
    assert register_dataset(DATASETS["digits"]) is DATASETS["digits"]  # the same entry again: a no-op


def test_a_new_dataset_loads_checks_trains_and_is_searched(three, tmp_path, capsys):
    from layerout.data import load_data
    from layerout.preflight import check_model_and_data
    from layerout.schedules import schedule_from_dict
    from layerout.train import main
    from layerout.trainer import TrainConfig, Trainer

    data = load_data("threedigits", seed=0)
    assert (data.num_classes, data.in_channels, data.image_size, data.synthetic) == (3, 1, 8, False)
    assert set(data.train_y.tolist()) == set(KEPT) and set(data.test_y.tolist()) == set(KEPT)
    # normalized by its training split's mean and std (the +2 shift is gone)
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std()) - 1) < 1e-2
    assert (data.augment.crop_pad, data.augment.flip) == (1, False)
    assert len(data.mean) == 1 and data.mean[0] > 2
    # the fail-fast check knows its classes and channels without loading it
    checked = check_model_and_data("digits_cnn", "threedigits")
    assert (checked.num_classes, checked.in_channels) == (3, 1)
    # a search space names it
    space = space_from_dict({"model": "digits_cnn", "dataset": "threedigits", "train": {"epochs": 1}}, where="x.yaml")
    assert space.dataset == "threedigits"
    # the trainer trains on it
    tr = Trainer(TrainConfig(model="digits_tiny", dataset="threedigits", epochs=1, max_train_batches=2),
                 schedule_from_dict({"kind": "none"}), verbose=False)
    final = tr.fit()
    assert tr.data.num_classes == 3 and 0 <= final["val_accuracy"] <= 1
    # python -m layerout.train picks its default model
    out = tmp_path / "run"
    assert main(["--dataset", "threedigits", "--epochs", "1", "--schedule", "none", "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert json.dumps(summary).count("digits_tiny") >= 1 and "threedigits" in json.dumps(summary)


def test_an_unknown_dataset_names_the_registered_ones(three):
    with pytest.raises(UserError, match="allowed: digits, mnist, cifar10, cifar100, synthetic, threedigits, "):
        space_from_dict({"model": "digits_cnn", "dataset": "fourdigits"}, where="x.yaml")


def build_first_epoch(space: Any) -> Any:
    """An early-stopping scheduler of one's own: every trial but the first ends after its first epoch."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class FirstEpochOnly(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if trial.trial_id not in self.seen:
                self.seen.append(trial.trial_id)
            first = self.seen[0] == trial.trial_id
            return TrialScheduler.CONTINUE if first else TrialScheduler.STOP

    return FirstEpochOnly()


def test_a_new_scheduler_is_accepted_and_runs_a_search(monkeypatch, tmp_path):
    from helpers import digits_space
    from tuning import SearchOptions, run_search

    with pytest.raises(UserError, match="--scheduler: must be one of moasha, asha, none, got 'firstepoch'"):
        SearchOptions(scheduler="firstepoch").check()
    monkeypatch.setitem(SCHEDULERS, "firstepoch", build_first_epoch)  # what register_scheduler does
    SearchOptions(scheduler="firstepoch").check()
    space = digits_space(tmp_path, "sched", "  prefix: {}", epochs=3, scheduler="firstepoch", paper=False)
    result = run_search(str(space), SearchOptions(num_samples=3, max_concurrent=1, storage=str(tmp_path / "res"),
                                                  name="sched"), log=lambda line: None)
    trials = result.trials.sort_values("trial_id")
    assert json.loads((tmp_path / "res" / "sched" / "experiment.json").read_text())["options"]["scheduler"] == \
        "firstepoch"
    # with one trial at a time, the first reports first: it trains 3 epochs, the others 1
    assert sorted(trials["epochs_done"].tolist()) == [1, 1, 3], trials.to_dict("records")
    assert sorted(trials["stopped_early"].astype(bool).tolist()) == [False, True, True]
