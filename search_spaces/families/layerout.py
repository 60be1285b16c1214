"""Searching ``layerout`` schedules: the freeze-probability vector v, its mode and the warm-up.

The vector can be searched in three forms (``vector:``):

- ``per_unit``: one probability per unit (Optuna parameters ``layerout.v0`` .. ``layerout.v{K-1}``);
- ``ramp``: a line from the first unit's probability to the last one's (``layerout.v_first``,
  ``layerout.v_last``); it covers the paper's efreeze (high to low) and dfreeze (low to high);
- ``per_stage``: one probability per stage of units (``layerout.stage0`` ..), for deep models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerout.checks import short
from layerout.errors import UserError
from layerout.schedules.layerout import V_MODES, ramp_vector, stage_vector
from search_spaces.checks import Checker
from search_spaces.families.base import FamilySpace, SpaceContext, r4, register_family

VECTOR_FORMS = ("per_unit", "ramp", "per_stage")


def auto_stages(units: list[str] | tuple[str, ...]) -> list[int]:
    """Stage of each unit: by the unit name's prefix before the first '.' (ResNet: stem, layer1,
    layer2, layer3, fc); where that groups nothing (every name distinct), 3 contiguous groups."""
    prefixes = [u.split(".")[0] for u in units]
    if len(set(prefixes)) < len(units):
        order: dict[str, int] = {}
        for p in prefixes:
            order.setdefault(p, len(order))
        return [order[p] for p in prefixes]
    return even_stages(len(units), min(3, len(units)))


def even_stages(k: int, n: int) -> list[int]:
    return [min(n - 1, i * n // k) for i in range(k)]


@register_family
@dataclass
class LayerOutSpace(FamilySpace):
    kind = "layerout"
    keys = ("vector", "v", "v_first", "v_last", "stages", "warmup_epochs", "v_mode", "keep_last_trainable")

    vector: str = "per_unit"
    v: list[tuple[float, float]] = field(default_factory=list)  # per unit (per_unit) / per stage
    v_first: tuple[float, float] = (0.0, 0.9)
    v_last: tuple[float, float] = (0.0, 0.9)
    stages: list[int] = field(default_factory=list)  # stage of each unit (per_stage)
    warmup_epochs: tuple[int, int] = (0, 0)
    v_mode: list[str] = field(default_factory=lambda: ["manual"])
    keep_last_trainable: list[bool] = field(default_factory=lambda: [False])

    @classmethod
    def parse(cls, check: Checker, fld: str, raw: dict, ctx: SpaceContext) -> "LayerOutSpace":
        k = ctx.num_units
        vec = raw.get("vector", "per_unit")
        if vec not in VECTOR_FORMS:
            raise check.err(f"{fld}.vector", f"must be one of {', '.join(VECTOR_FORMS)}, got {short(vec)}")
        out = cls(vector=vec)
        if vec == "per_stage":
            out.stages = _parse_stages(check, f"{fld}.stages", raw.get("stages", "auto"), ctx.units)
        elif "stages" in raw:
            raise check.err(f"{fld}.stages", f"only applies to vector: per_stage (vector is {vec})")
        if vec == "ramp":
            if "v" in raw:
                raise check.err(f"{fld}.v", "vector: ramp takes v_first and v_last ranges, not v")
            out.v_first = check.num_range(f"{fld}.v_first", raw.get("v_first", [0.0, 0.9]), 0.0, 1.0)
            out.v_last = check.num_range(f"{fld}.v_last", raw.get("v_last", [0.0, 0.9]), 0.0, 1.0)
        else:
            for key in ("v_first", "v_last"):
                if key in raw:
                    raise check.err(f"{fld}.{key}", f"only applies to vector: ramp (vector is {vec})")
            n_vec = k if vec == "per_unit" else max(out.stages) + 1
            what = "unit" if vec == "per_unit" else "stage"
            given = raw.get("v", [0.0, 0.9])
            if isinstance(given, list) and given and all(isinstance(x, list) for x in given):
                if len(given) != n_vec:
                    raise check.err(f"{fld}.v", f"a list of ranges needs one [low, high] pair per {what} ({n_vec}), "
                                                f"got {len(given)}")
                out.v = [check.num_range(f"{fld}.v[{i}]", r, 0.0, 1.0) for i, r in enumerate(given)]
            else:
                out.v = [check.num_range(f"{fld}.v", given, 0.0, 1.0)] * n_vec
        out.warmup_epochs = ctx.epoch_range(check, f"{fld}.warmup_epochs", raw.get("warmup_epochs", 0))
        out.v_mode = check.choices(f"{fld}.v_mode", raw.get("v_mode", ["manual"]), V_MODES)
        out.keep_last_trainable = check.choices(f"{fld}.keep_last_trainable", raw.get("keep_last_trainable", False),
                                                (False, True))
        return out

    def suggest(self, trial: Any, ctx: SpaceContext) -> dict[str, Any]:
        p = self.param
        out: dict[str, Any] = {}
        mode = out[p("v_mode")] = trial.suggest_categorical(p("v_mode"), self.v_mode)
        out[p("warmup_epochs")] = trial.suggest_int(p("warmup_epochs"), *self.warmup_epochs)
        if len(self.keep_last_trainable) > 1:
            out[p("keep_last_trainable")] = trial.suggest_categorical(p("keep_last_trainable"), self.keep_last_trainable)
        else:
            out[p("keep_last_trainable")] = self.keep_last_trainable[0]
        if mode == "manual":
            if self.vector == "ramp":
                out[p("v_first")] = trial.suggest_float(p("v_first"), *self.v_first)
                out[p("v_last")] = trial.suggest_float(p("v_last"), *self.v_last)
            else:
                name = "v" if self.vector == "per_unit" else "stage"
                for i, (lo, hi) in enumerate(self.v):
                    out[p(f"{name}{i}")] = trial.suggest_float(p(f"{name}{i}"), lo, hi)
        elif mode == "random_once":
            out[p("seed")] = trial.suggest_int(p("seed"), 0, 2**31 - 1)
        return out

    @classmethod
    def schedule(cls, params: dict[str, Any], ctx: SpaceContext, space: FamilySpace | None) -> dict[str, Any]:
        """Any vector form is accepted, whatever the space's form (the paper's configurations give
        per-unit values)."""
        p = cls.param
        mode = params.get(p("v_mode"), "manual")
        d: dict[str, Any] = {"kind": cls.kind, "v_mode": mode}
        if mode == "manual":
            d["v"] = [r4(x) for x in cls._vector(params, ctx, space)]
        for name, conv in (("warmup_epochs", int), ("keep_last_trainable", bool), ("seed", int)):
            if p(name) in params:
                d[name] = conv(params[p(name)])
        return d

    @classmethod
    def _vector(cls, params: dict[str, Any], ctx: SpaceContext, space: FamilySpace | None) -> list[float]:
        p = cls.param
        if p("v0") in params:
            return [params[p(f"v{i}")] for i in range(ctx.num_units)]
        if p("v_first") in params:
            return ramp_vector(ctx.num_units, params[p("v_first")], params[p("v_last")])
        if p("stage0") in params:
            stages = space.stages if isinstance(space, LayerOutSpace) and space.stages else auto_stages(ctx.units)
            return stage_vector(stages, [params[p(f"stage{j}")] for j in range(max(stages) + 1)])
        raise UserError("trial parameters: a manual LayerOut trial needs layerout.v0.. or "
                        "layerout.v_first/v_last or layerout.stage0..")

    @classmethod
    def manual_params(cls, vector: list[float], warmup_epochs: int) -> dict[str, Any]:
        """Trial parameters of a fixed per-unit vector (the paper's efreeze and dfreeze)."""
        out: dict[str, Any] = {"family": cls.kind, cls.param("v_mode"): "manual",
                               cls.param("warmup_epochs"): warmup_epochs}
        out.update({cls.param(f"v{i}"): float(x) for i, x in enumerate(vector)})
        return out


def _parse_stages(check: Checker, fld: str, val: Any, units: tuple[str, ...]) -> list[int]:
    k = len(units)
    if val == "auto":
        return auto_stages(units)
    if isinstance(val, int) and not isinstance(val, bool):
        return even_stages(k, check.int_(fld, val, 1, k, f" (1 .. number of units, K = {k})"))
    if (isinstance(val, list) and val and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in val)
            and sum(val) == k):
        return [i for i, n in enumerate(val) for _ in range(n)]
    raise check.err(fld, f"must be auto, a number of stages within [1, {k}], or a list of stage "
                         f"sizes (integers >= 1) summing to the model's {k} units, got {short(val)}")
