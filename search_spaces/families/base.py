"""What every search-space family is: how one schedule family is searched.

A family's search space knows four things, all about one schedule kind:

- ``keys``: the keys its ``families.<kind>:`` block in a space YAML may have;
- ``parse``: that block -> its ranges (a dataclass instance), with one-line errors;
- ``suggest``: asks Optuna for one trial's values, named ``<kind>.<name>``;
- ``schedule``: a trial's values -> the schedule dict (``layerout.schedules``' policy-file form).

Defaults of the *schedule's* parameters are the schedule class's own: ``schedule`` returns only
what the trial chose, and the search fills in the rest through ``Schedule.from_dict``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from layerout.registry import Registry
from search_spaces.checks import Checker


@dataclass(frozen=True)
class SpaceContext:
    """What a family's ranges depend on: the model's units, the epoch budget and the search seed."""

    units: tuple[str, ...]
    epochs: int
    seed: int = 0

    @property
    def num_units(self) -> int:
        return len(self.units)

    def epoch_range(self, check: Checker, fld: str, val: Any) -> tuple[int, int]:
        """A range of epochs a schedule may start something at: 0 .. epochs-1."""
        e = self.epochs
        return check.int_range(fld, val, 0, e - 1, f" (0 .. epochs-1, epochs = {e})")

    def unit_count_range(self, check: Checker, fld: str, val: Any) -> tuple[int, int]:
        """A range of unit counts that leaves one unit training: 1 .. K-1."""
        k = self.num_units
        return check.int_range(fld, val, 1, k - 1, f" (1 .. K-1, the model has K = {k} units)")

    def need_two_units(self, check: Checker, fld: str) -> None:
        if self.num_units < 2:
            raise check.err(fld, f"needs a model with at least 2 units, {self.num_units} has 1")


class FamilySpace:
    """Base class of the family search spaces (each a dataclass of ranges)."""

    kind: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls, check: Checker, fld: str, raw: dict, ctx: SpaceContext) -> "FamilySpace":
        """The ranges of ``raw`` (the YAML block, keys already checked against ``keys``)."""
        raise NotImplementedError

    def suggest(self, trial: Any, ctx: SpaceContext) -> dict[str, Any]:
        """This family's values for one Optuna trial, named ``<kind>.<name>``."""
        raise NotImplementedError

    @classmethod
    def schedule(cls, params: dict[str, Any], ctx: SpaceContext, space: "FamilySpace | None") -> dict[str, Any]:
        """The schedule dict for a trial's values (``space``: this family's ranges in the search,
        or None when the values come from elsewhere, e.g. the paper's configurations)."""
        raise NotImplementedError

    @classmethod
    def param(cls, name: str) -> str:
        return f"{cls.kind}.{name}"


FAMILY_SPACES: Registry = Registry("family kind")  # kind -> FamilySpace subclass
# Class decorator: the search space of the schedule kind ``cls.kind``.
register_family: Callable[[type[FamilySpace]], type[FamilySpace]] = FAMILY_SPACES.by("kind")


def r4(x: float) -> float:
    """Sampled numbers are stored rounded to 4 decimals: trial configs stay readable and two
    trials that differ only in the 7th digit count as the same configuration."""
    return round(float(x), 4)
