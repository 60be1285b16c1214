"""``prefix``: the first k units frozen from an epoch on, to the end (the transfer-learning habit)."""
from __future__ import annotations

from typing import Any

from layerout.checks import short
from layerout.schedules.base import FreezeState, Flag, Schedule, check_int, register_schedule, schedule_error


@register_schedule
class PrefixSchedule(Schedule):
    """The first ``k`` units frozen from ``start_epoch`` to the end."""

    kind = "prefix"
    summary = "the first k units frozen from start_epoch to the end"
    epoch_keys = ("start_epoch",)
    flags = (
        Flag("k", "number of leading units frozen (1)", type=int),
        Flag("start_epoch", "epoch the prefix freezes (0)", type=int),
    )

    def __init__(self, k: int = 1, start_epoch: int = 0) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise schedule_error("k", f"must be an integer >= 1, got {short(k)}")
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise schedule_error("start_epoch", f"must be an integer >= 0, got {short(start_epoch)}")
        self.k = k
        self.start_epoch = start_epoch

    def validate(self) -> None:
        if self.k >= self.num_units:
            raise schedule_error("k", f"{self.k} would freeze every unit: the model has {self.num_units} units, "
                                      f"so k must be in 1..{self.num_units - 1}")
        if self.epochs and self.start_epoch >= self.epochs:
            raise schedule_error("start_epoch", f"{self.start_epoch} is not before the end of training "
                                                f"({self.epochs} epochs)")

    def state(self, epoch: int, step: int = 0) -> FreezeState:
        n = self.k if epoch >= self.start_epoch else 0
        return FreezeState(frozen=tuple(i < n for i in range(self.num_units)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "prefix", "k": self.k, "start_epoch": self.start_epoch}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PrefixSchedule":
        defaults = cls()
        return cls(k=check_int(d, "k", defaults.k, low=1), start_epoch=check_int(d, "start_epoch", defaults.start_epoch))

    def describe(self) -> str:
        return f"prefix k={self.k} from epoch {self.start_epoch}"

    def unit_heat(self, epochs: int | None) -> tuple[list[float], str]:
        return [1.0 if i < self.k else 0.0 for i in range(self.num_units)], f"first {self.k} frozen"
