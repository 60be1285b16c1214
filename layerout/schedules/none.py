"""``none``: the unfrozen baseline."""
from __future__ import annotations

from typing import Any

from layerout.schedules.base import FreezeState, Schedule, register_schedule

UNFROZEN = "none"  # the unfrozen model's family: the baseline and the shorter-training reference points


@register_schedule
class NoFreezeSchedule(Schedule):
    """The unfrozen baseline: every unit trains every step."""

    kind = UNFROZEN
    summary = "the unfrozen baseline"

    def state(self, epoch: int, step: int = 0) -> FreezeState:
        return FreezeState.unfrozen(self.num_units)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": UNFROZEN}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoFreezeSchedule":
        return cls()

    def describe(self) -> str:
        return "none (baseline)"

    def unit_heat(self, epochs: int | None) -> tuple[list[float], str]:
        return [0.0] * self.num_units, "unfrozen"
