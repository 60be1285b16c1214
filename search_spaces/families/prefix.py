"""Searching ``prefix`` schedules: how many leading units to freeze, and from which epoch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from search_spaces.checks import Checker
from search_spaces.families.base import FamilySpace, SpaceContext, register_family


@register_family
@dataclass
class PrefixSpace(FamilySpace):
    kind = "prefix"
    keys = ("k", "start_epoch")

    k: tuple[int, int] = (1, 1)
    start_epoch: tuple[int, int] = (0, 0)

    @classmethod
    def parse(cls, check: Checker, fld: str, raw: dict, ctx: SpaceContext) -> "PrefixSpace":
        ctx.need_two_units(check, fld)
        return cls(k=ctx.unit_count_range(check, f"{fld}.k", raw.get("k", [1, ctx.num_units - 1])),
                   start_epoch=ctx.epoch_range(check, f"{fld}.start_epoch", raw.get("start_epoch", 0)))

    def suggest(self, trial: Any, ctx: SpaceContext) -> dict[str, Any]:
        return {self.param("k"): trial.suggest_int(self.param("k"), *self.k),
                self.param("start_epoch"): trial.suggest_int(self.param("start_epoch"), *self.start_epoch)}

    @classmethod
    def schedule(cls, params: dict[str, Any], ctx: SpaceContext, space: FamilySpace | None) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": cls.kind, "k": int(params[cls.param("k")])}
        if cls.param("start_epoch") in params:
            d["start_epoch"] = int(params[cls.param("start_epoch")])
        return d
