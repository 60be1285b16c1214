"""Searching ``freezeout`` schedules: t0, the scale of t_i over the units, lr scaling, warm-up.

Unset keys take the authors' values (``scale_lr: true``); a space may still search them
(``scale_lr: [false, true]``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerout.schedules.freezeout import SCALES
from search_spaces.checks import Checker
from search_spaces.families.base import FamilySpace, SpaceContext, r4, register_family


@register_family
@dataclass
class FreezeOutSpace(FamilySpace):
    kind = "freezeout"
    keys = ("t0", "scale", "scale_lr", "warmup_epochs")

    t0: tuple[float, float] = (0.5, 1.0)
    scale: list[str] = field(default_factory=lambda: list(SCALES))
    scale_lr: list[bool] = field(default_factory=lambda: [True])
    warmup_epochs: tuple[int, int] = (0, 0)

    @classmethod
    def parse(cls, check: Checker, fld: str, raw: dict, ctx: SpaceContext) -> "FreezeOutSpace":
        return cls(t0=check.num_range(f"{fld}.t0", raw.get("t0", [0.5, 1.0]), 0.0, 1.0, low_open=True),
                   scale=check.choices(f"{fld}.scale", raw.get("scale", list(SCALES)), SCALES),
                   scale_lr=check.choices(f"{fld}.scale_lr", raw.get("scale_lr", True), (False, True)),
                   warmup_epochs=ctx.epoch_range(check, f"{fld}.warmup_epochs", raw.get("warmup_epochs", 0)))

    def suggest(self, trial: Any, ctx: SpaceContext) -> dict[str, Any]:
        p = self.param
        return {p("t0"): trial.suggest_float(p("t0"), *self.t0),
                p("scale"): trial.suggest_categorical(p("scale"), self.scale),
                p("scale_lr"): trial.suggest_categorical(p("scale_lr"), self.scale_lr),
                p("warmup_epochs"): trial.suggest_int(p("warmup_epochs"), *self.warmup_epochs)}

    @classmethod
    def schedule(cls, params: dict[str, Any], ctx: SpaceContext, space: FamilySpace | None) -> dict[str, Any]:
        p = cls.param
        d: dict[str, Any] = {"kind": cls.kind, "t0": r4(params[p("t0")]), "scale": params[p("scale")]}
        if p("scale_lr") in params:
            d["scale_lr"] = bool(params[p("scale_lr")])
        if p("warmup_epochs") in params:
            d["warmup_epochs"] = int(params[p("warmup_epochs")])
        return d
