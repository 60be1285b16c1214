"""``layerout`` (Goutam et al., "LayerOut: Freezing Layers in Deep Neural Networks"): each epoch
after a warm-up, unit i is frozen with probability v_i, independently of the other units.

The paper draws v anew every epoch ("random v") or fixes it by hand: ``efreeze`` freezes early
units more often (0.9 ... 0.1), ``dfreeze`` is its reverse. The vector helpers here build those
and the forms a search samples (a linear ramp, one value per stage).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from layerout.checks import MAX_SEED, short
from layerout.errors import UserError
from layerout.schedules.base import FreezeState, Flag, Schedule, check_bool, check_int, register_schedule, \
    schedule_error

V_MODES = ("manual", "random_epoch", "random_once")
# The paper's manual vectors for its 7-unit MNIST net and its 16-unit VGG-16.
PAPER_EFREEZE = {
    7: [0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.1],
    16: [0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, 0.5, 0.5, 0.4, 0.4, 0.3, 0.3, 0.2, 0.2, 0.1],
}


def ramp_vector(num_units: int, v_first: float, v_last: float) -> list[float]:
    """A linear ramp of freeze probabilities from the first unit to the last."""
    if num_units == 1:
        return [round(float(v_first), 6)]
    return [round(v_first + (v_last - v_first) * i / (num_units - 1), 6) for i in range(num_units)]


def stage_vector(unit_stages: list[int], stage_values: list[float]) -> list[float]:
    """One probability per stage, expanded to its units (``unit_stages[i]`` = stage of unit i)."""
    return [float(stage_values[s]) for s in unit_stages]


def paper_vectors(num_units: int) -> dict[str, list[float]]:
    """The paper's efreeze/dfreeze vectors; a ramp 0.9 -> 0.1 where K is not the paper's 7 or 16."""
    e = PAPER_EFREEZE.get(num_units) or ramp_vector(num_units, 0.9, 0.1)
    return {"efreeze": list(e), "dfreeze": list(reversed(e))}


def _check_vector(v: Any) -> list[float]:
    if not isinstance(v, (list, tuple)) or not v:
        raise schedule_error("v", f"must be a non-empty list of numbers in [0, 1], got {short(v)}")
    out = []
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not (0.0 <= float(x) <= 1.0):
            raise schedule_error(f"v[{i}]", f"{short(x)} is outside [0, 1]")
        out.append(float(x))
    return out


def _parse_floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated numbers like 0.9,0.5,0.1, got {short(text)}") from None


@register_schedule
class LayerOutSchedule(Schedule):
    """Each epoch after warm-up, unit i is frozen with probability v_i.

    ``v_mode``: ``manual`` (v given), ``random_epoch`` (v ~ U(0,1)^K drawn anew every epoch, the
    paper's "random v"), ``random_once`` (v drawn once from the seed and then fixed). A draw that
    would freeze every unit is redrawn; ``keep_last_trainable`` keeps the classifier unit training.
    """

    kind = "layerout"
    summary = "each epoch after warm-up, unit i is frozen with probability v_i (LayerOut)"
    epoch_keys = ("warmup_epochs",)
    flags = (
        Flag("freeze_prob", "freeze probability per unit, comma-separated, or efreeze/dfreeze",
             metavar="V"),
        Flag("v_mode", "manual (default with --freeze-prob), random_epoch (the paper's random v), random_once",
             choices=V_MODES),
        Flag("keep_last_trainable", "never freeze the classifier unit", switch=True),
        Flag("warmup_epochs", "epochs before freezing starts", type=int),
    )

    def __init__(self, v: list[float] | None = None, v_mode: str = "manual", warmup_epochs: int = 0,
                 keep_last_trainable: bool = False, seed: int | None = None) -> None:
        if v_mode not in V_MODES:
            raise schedule_error("v_mode", f"unknown mode {short(v_mode)}; allowed: {', '.join(V_MODES)}")
        if v_mode == "manual" and v is None:
            raise schedule_error("v", "a manual LayerOut schedule needs a freeze vector v")
        if v is not None:
            v = _check_vector(v)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise schedule_error("warmup_epochs", f"must be an integer >= 0, got {short(warmup_epochs)}")
        self.v = v
        self.v_mode = v_mode
        self.warmup_epochs = warmup_epochs
        self.keep_last_trainable = keep_last_trainable
        self._seed = seed

    def validate(self) -> None:
        self._check_warmup(self.warmup_epochs)
        if self.v_mode == "random_once" and self.v is None:
            rng = np.random.default_rng([self.seed, 0x0C0E])
            self.v = [round(float(x), 6) for x in rng.uniform(size=self.num_units)]
        if self.v is not None and len(self.v) != self.num_units:
            raise schedule_error("v", f"has {len(self.v)} values but the model has {self.num_units} units")

    def vector(self, epoch: int) -> np.ndarray:
        """The freeze probabilities in force at ``epoch`` (after warm-up)."""
        if self.v_mode == "random_epoch":
            return np.random.default_rng([self.seed, epoch, 0x5EED]).uniform(size=self.num_units)
        return np.asarray(self.v, dtype=float)

    def state(self, epoch: int, step: int = 0) -> FreezeState:
        k = self.num_units
        if epoch < self.warmup_epochs:
            return FreezeState.unfrozen(k)
        v = self.vector(epoch)
        rng = np.random.default_rng([self.seed, epoch, 0xF2EE])
        for _ in range(100):
            s = rng.random(k) < v
            if self.keep_last_trainable:
                s[-1] = False
            if not s.all():
                break
        else:  # v is (nearly) all ones: train the unit least likely to be frozen
            s[int(np.argmin(v))] = False
        return FreezeState(frozen=tuple(bool(x) for x in s))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "layerout",
            "v": None if self.v_mode == "random_epoch" else list(self.v) if self.v is not None else None,
            "v_mode": self.v_mode,
            "warmup_epochs": self.warmup_epochs,
            "keep_last_trainable": self.keep_last_trainable,
            "seed": self._seed if self._seed is not None else (self.seed if self.num_units else None),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerOutSchedule":
        seed = d.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
            raise schedule_error("seed", f"must be an integer within [0, {MAX_SEED}] or null, got {short(seed)}")
        return cls(v=d.get("v"), v_mode=d.get("v_mode", "manual"), warmup_epochs=check_int(d, "warmup_epochs", 0),
                   keep_last_trainable=check_bool(d, "keep_last_trainable", False), seed=seed)

    @classmethod
    def dict_from_flags(cls, given: dict[str, Any], num_units: int) -> dict[str, Any]:
        prob = given.get("freeze_prob")
        mode = given.get("v_mode") or ("manual" if prob else "random_epoch")
        d: dict[str, Any] = {"kind": cls.kind, "v_mode": mode}
        if prob in ("efreeze", "dfreeze"):
            d["v"] = paper_vectors(num_units)[prob]
        elif prob:
            d["v"] = _parse_floats(prob, "--freeze-prob")
        elif mode == "manual":
            raise UserError(f"--freeze-prob: a manual layerout schedule needs {num_units} probabilities "
                            f"(one per unit), or efreeze/dfreeze")
        if "v" in d and len(d["v"]) != num_units:
            raise UserError(f"--freeze-prob: {len(d['v'])} values given but the model has {num_units} units")
        d["warmup_epochs"] = given.get("warmup_epochs", 0)
        d["keep_last_trainable"] = bool(given.get("keep_last_trainable", False))
        return d

    def describe(self) -> str:
        s = "layerout random v" if self.v_mode == "random_epoch" else f"layerout {self.v_mode} v"
        if self.warmup_epochs:
            s += f", warm-up {self.warmup_epochs}"
        if self.v_mode != "random_epoch" and self.v:
            s += f", mean v {np.mean(self.v):.2f}"
        return s

    def unit_heat(self, epochs: int | None) -> tuple[list[float], str]:
        if self.v_mode == "random_epoch" or self.v is None:
            vals, note = [0.5] * self.num_units, "random v (mean 0.5)"
        else:
            vals, note = list(self.v), "v"
        if self.keep_last_trainable:
            vals[-1] = 0.0
        return vals, note
