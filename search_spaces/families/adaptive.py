"""Searching ``adaptive`` schedules: how often to check, and the threshold under which a unit's
gradient-norm change counts as settled (a percentile of the units' changes, or an absolute one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerout.schedules.adaptive import THRESHOLD_MODES
from search_spaces.checks import Checker
from search_spaces.families.base import FamilySpace, SpaceContext, r4, register_family


@register_family
@dataclass
class AdaptiveSpace(FamilySpace):
    """``threshold`` is the percentile range, ``absolute_threshold`` the range of an absolute
    relative change; a trial samples the one its ``threshold_mode`` needs (Optuna names
    ``adaptive.threshold`` / ``adaptive.absolute_threshold``), and its schedule's ``threshold``
    is that value."""

    kind = "adaptive"
    keys = ("check_every", "threshold_mode", "threshold", "absolute_threshold", "min_trainable_units")

    check_every: tuple[int, int] = (1, 1)
    threshold_mode: list[str] = field(default_factory=lambda: ["percentile"])
    threshold: tuple[float, float] = (25.0, 75.0)
    absolute_threshold: tuple[float, float] = (0.01, 0.5)
    min_trainable_units: tuple[int, int] = (1, 1)

    @classmethod
    def parse(cls, check: Checker, fld: str, raw: dict, ctx: SpaceContext) -> "AdaptiveSpace":
        ctx.need_two_units(check, fld)
        e = ctx.epochs
        return cls(
            check_every=check.int_range(f"{fld}.check_every", raw.get("check_every", 1), 1, e,
                                        f" (1 .. epochs, epochs = {e})"),
            threshold_mode=check.choices(f"{fld}.threshold_mode", raw.get("threshold_mode", "percentile"),
                                         THRESHOLD_MODES),
            threshold=check.num_range(f"{fld}.threshold", raw.get("threshold", [25.0, 75.0]), 0.0, 100.0,
                                      what=" (a percentile of the units' gradient-norm changes)"),
            absolute_threshold=check.num_range(f"{fld}.absolute_threshold", raw.get("absolute_threshold", [0.01, 0.5]),
                                               0.0, 1e6, what=" (a relative gradient-norm change)"),
            min_trainable_units=ctx.unit_count_range(check, f"{fld}.min_trainable_units",
                                                     raw.get("min_trainable_units", 1)),
        )

    def suggest(self, trial: Any, ctx: SpaceContext) -> dict[str, Any]:
        p = self.param
        out = {p("check_every"): trial.suggest_int(p("check_every"), *self.check_every)}
        mode = out[p("threshold_mode")] = trial.suggest_categorical(p("threshold_mode"), self.threshold_mode)
        if mode == "percentile":
            out[p("threshold")] = trial.suggest_float(p("threshold"), *self.threshold)
        else:
            out[p("absolute_threshold")] = trial.suggest_float(p("absolute_threshold"), *self.absolute_threshold)
        out[p("min_trainable_units")] = trial.suggest_int(p("min_trainable_units"), *self.min_trainable_units)
        return out

    @classmethod
    def schedule(cls, params: dict[str, Any], ctx: SpaceContext, space: FamilySpace | None) -> dict[str, Any]:
        p = cls.param
        mode = params[p("threshold_mode")]
        # a percentile is stored to 4 decimals, an absolute change (often tiny) to 4 significant digits
        thr = r4(params[p("threshold")]) if mode == "percentile" else float(f"{params[p('absolute_threshold')]:.4g}")
        d: dict[str, Any] = {"kind": cls.kind, "threshold_mode": mode, "threshold": thr}
        for name in ("check_every", "min_trainable_units"):
            if p(name) in params:
                d[name] = int(params[p(name)])
        return d
