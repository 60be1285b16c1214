"""The extension point: a freezing family defined outside the project's files (a schedule class and
its search-space class, each registered) works everywhere: policy files, ``python -m
layerout.train`` flags, a search space's YAML, Optuna's define-by-run, the trainer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import pytest

from layerout.errors import UserError
from layerout.schedules import SCHEDULES, Flag, FreezeState, Schedule, register_schedule, schedule_from_dict
from layerout.schedules.base import check_int
from layerout.train import build_parser, schedule_dict_from_args
from layerout.trainer import TrainConfig, Trainer
from search_spaces.families import FAMILY_SPACES, FamilySpace, SpaceContext, register_family
from search_spaces.space import space_from_dict
from search_spaces.trials import define_by_run, trial_to_config


class EveryOther(Schedule):
    """Freeze the units with an even index from ``start_epoch`` on (the last unit always trains)."""

    kind = "everyother"
    flags = (Flag("start_epoch", "epoch the even units freeze", type=int),)

    def __init__(self, start_epoch: int = 1) -> None:
        self.start_epoch = start_epoch

    def state(self, epoch: int, step: int = 0) -> FreezeState:
        on = epoch >= self.start_epoch
        return FreezeState(tuple(on and i % 2 == 0 and i < self.num_units - 1 for i in range(self.num_units)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_epoch": self.start_epoch}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EveryOther":
        return cls(start_epoch=check_int(d, "start_epoch", 1))


@dataclass
class EveryOtherSpace(FamilySpace):
    kind = "everyother"
    keys = ("start_epoch",)
    start_epoch: tuple[int, int] = (0, 0)

    @classmethod
    def parse(cls, check, fld, raw, ctx: SpaceContext) -> "EveryOtherSpace":
        return cls(start_epoch=ctx.epoch_range(check, f"{fld}.start_epoch", raw.get("start_epoch", 0)))

    def suggest(self, trial, ctx: SpaceContext) -> dict[str, Any]:
        return {self.param("start_epoch"): trial.suggest_int(self.param("start_epoch"), *self.start_epoch)}

    @classmethod
    def schedule(cls, params, ctx, space) -> dict[str, Any]:
        return {"kind": cls.kind, "start_epoch": int(params[cls.param("start_epoch")])}


@pytest.fixture
def registered(monkeypatch):
    """What the two registration lines do (the decorators write these registries)."""
    monkeypatch.setitem(SCHEDULES, "everyother", EveryOther)
    monkeypatch.setitem(FAMILY_SPACES, "everyother", EveryOtherSpace)


def test_registration_refuses_a_second_class_for_a_kind():
    class Impostor(Schedule):
        kind = "prefix"

    with pytest.raises(ValueError, match="registered twice"):
        register_schedule(Impostor)

    class ImpostorSpace(FamilySpace):
        kind = "prefix"

    with pytest.raises(ValueError, match="registered twice"):
        register_family(ImpostorSpace)


def test_a_new_family_works_from_flags_to_training(registered, digits):
    # policy-file form
    s = schedule_from_dict({"kind": "everyother", "start_epoch": 2})
    assert s.bind(3, 4, 10).state(2).frozen == (True, False, False) and s.state(1).frozen == (False,) * 3
    # python -m layerout.train: its flag exists and selects it
    args = build_parser().parse_args(["--start-epoch", "1"])
    with pytest.raises(UserError, match="used by the prefix and everyother schedules"):
        schedule_dict_from_args(args, 3)
    args = build_parser().parse_args(["--schedule", "everyother", "--start-epoch", "1"])
    assert schedule_dict_from_args(args, 3) == {"kind": "everyother", "start_epoch": 1}
    # a search space with it, and Optuna suggesting it
    space = space_from_dict({"model": "digits_cnn", "dataset": "digits", "train": {"epochs": 3},
                             "families": {"everyother": {"start_epoch": [1, 2]}}}, where="x.yaml")
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    cfg = define_by_run(space)(study.ask())
    assert cfg["family"] == "everyother" and cfg["schedule"]["start_epoch"] in (1, 2)
    assert trial_to_config(space, {"family": "everyother", "everyother.start_epoch": 2})["schedule"] == {
        "kind": "everyother", "start_epoch": 2}
    # and the trainer trains with it
    tr = Trainer(TrainConfig(**{**cfg["train"], "max_train_batches": 2}), schedule_from_dict(cfg["schedule"]),
                 verbose=False, data=digits)
    tr.fit()
    start = cfg["schedule"]["start_epoch"]
    assert [h["frozen_units"] for h in tr.history] == ["000" if e < start else "100" for e in range(3)]
    assert tr.history[-1]["compute_saved_frac"] > 0
