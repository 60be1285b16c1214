"""``freezeout`` (Brock et al. 2017, "FreezeOut: Accelerate Training by Progressively Freezing
Layers"): progressive freezing. Unit i trains until fraction t_i of the iterations, its learning
rate annealed to zero on its own cosine by then, and is frozen for good after; the last unit
trains to the end. t_i = scale(t0 + (1 - t0) * i / (K - 1)) with scale linear, squared or cubic.

As the authors' public code runs it (github.com/ajbrock/FreezeOut, ``densenet.py`` ``update_lr``):
a unit trains at iteration j while ``j <= t_i * T``; ``scale_lr`` is on; frozen units' BatchNorm
is in eval mode (``bn_frozen = "eval"``, what ``bn_frozen: auto`` resolves to). docs/FREEZING.md.
"""
from __future__ import annotations

import math
from typing import Any

from layerout.checks import short
from layerout.schedules.base import FreezeState, Flag, Schedule, check_bool, check_int, register_schedule, \
    schedule_error

SCALES = ("linear", "squared", "cubic")
_SCALE_POWER = {"linear": 1, "squared": 2, "cubic": 3}


def freezeout_fractions(num_units: int, t0: float, scale: str) -> list[float]:
    """FreezeOut's t_i = scale(t0 + (1 - t0) * i / (K - 1)); the last unit gets 1 (trains to the end)."""
    p = _SCALE_POWER[scale]
    if num_units == 1:
        return [1.0]
    out = [(t0 + (1.0 - t0) * i / (num_units - 1)) ** p for i in range(num_units - 1)]
    return out + [1.0]


def cosine_factor(t: float, t_end: float) -> float:
    """0.5 * (1 + cos(pi * t / t_end)) until t_end, 0 after (FreezeOut's per-unit annealing)."""
    if t >= t_end:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * t / t_end))


def first_frozen_step(t_i: float, total: int) -> int:
    """The first iteration at which a unit with fraction ``t_i`` of ``total`` iterations is frozen:
    the authors' code trains it while ``j <= t_i * T`` (``if self.j > m.max_j: m.active = False``),
    so the first frozen iteration is ``floor(t_i * T) + 1``."""
    return math.floor(t_i * total) + 1


@register_schedule
class FreezeOutSchedule(Schedule):
    """Unit i trains until fraction t_i of training, then freezes.

    Iterations are counted after ``warmup_epochs``: ``t = (epoch - warmup) * steps_per_epoch +
    step`` out of ``T = (epochs - warmup) * steps_per_epoch``. Unit i trains while ``t <= t_i * T``
    and is frozen from iteration ``freeze_step(i) = floor(t_i * T) + 1`` on (for good); the last
    unit never freezes.
    While not frozen, its lr factor is ``0.5 * (1 + cos(pi * t / (t_i * T)))`` (times ``1/t_i``
    with ``scale_lr``): a factor of the *initial* lr that REPLACES the global lr schedule
    (milestones, warm start) once the schedule is active. During warm-up the state carries no
    lr factor, so the global schedule applies.
    """

    kind = "freezeout"
    summary = "unit i trains until fraction t_i of training on its own cosine lr, then freezes (FreezeOut)"
    epoch_keys = ("warmup_epochs",)
    stepwise = True
    uses_lr_factor = True
    bn_frozen = "eval"  # the authors' code puts a frozen layer in eval mode
    flags = (
        Flag("t0", "first unit's freeze fraction before scaling (0.8)", type=float),
        Flag("scale", "how t_i grows over the units (cubic)", choices=SCALES),
        Flag("scale_lr", "lr_i0 = lr / t_i (on by default, as the authors run it)", switch=True),
        Flag("warmup_epochs", "epochs before freezing starts", type=int),
    )

    def __init__(self, t0: float = 0.8, scale: str = "cubic", scale_lr: bool = True,
                 warmup_epochs: int = 0) -> None:
        if isinstance(t0, bool) or not isinstance(t0, (int, float)) or not (0.0 < float(t0) <= 1.0):
            raise schedule_error("t0", f"must be a number in (0, 1], got {short(t0)}")
        if scale not in SCALES:
            raise schedule_error("scale", f"unknown scale {short(scale)}; allowed: {', '.join(SCALES)}")
        if not isinstance(scale_lr, bool):
            raise schedule_error("scale_lr", f"must be true or false, got {short(scale_lr)}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise schedule_error("warmup_epochs", f"must be an integer >= 0, got {short(warmup_epochs)}")
        self.t0 = float(t0)
        self.scale = scale
        self.scale_lr = scale_lr
        self.warmup_epochs = warmup_epochs
        self.t: list[float] = []
        self._freeze_steps: list[int] = []

    def validate(self) -> None:
        self._check_warmup(self.warmup_epochs)
        self.t = freezeout_fractions(self.num_units, self.t0, self.scale)
        total = self.total_steps
        self._freeze_steps = [first_frozen_step(ti, total) for ti in self.t]

    @property
    def total_steps(self) -> int:
        """T: training iterations after warm-up."""
        return max(self.epochs - self.warmup_epochs, 0) * self.steps_per_epoch

    def freeze_step(self, unit: int) -> int:
        """The first post-warm-up iteration at which ``unit`` is frozen (past the end, T + 1, for the
        last unit)."""
        return self._freeze_steps[unit]

    def iteration(self, epoch: int, step: int = 0) -> int:
        return (epoch - self.warmup_epochs) * self.steps_per_epoch + step

    def state(self, epoch: int, step: int = 0) -> FreezeState:
        k = self.num_units
        if epoch < self.warmup_epochs:
            return FreezeState.unfrozen(k)
        t = self.iteration(epoch, step)
        total = self.total_steps
        frozen, factors = [], []
        for i in range(k):
            is_frozen = i < k - 1 and t >= self._freeze_steps[i]  # t > t_i * T; the last unit always trains
            frozen.append(is_frozen)
            if is_frozen:
                factors.append(0.0)
            else:
                f = cosine_factor(t, self.t[i] * total)
                factors.append(f / self.t[i] if self.scale_lr else f)
        return FreezeState(frozen=tuple(frozen), lr_factor=tuple(factors))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "freezeout", "t0": self.t0, "scale": self.scale, "scale_lr": self.scale_lr,
                "warmup_epochs": self.warmup_epochs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FreezeOutSchedule":
        defaults = cls()
        return cls(t0=d.get("t0", defaults.t0), scale=d.get("scale", defaults.scale),
                   scale_lr=check_bool(d, "scale_lr", defaults.scale_lr),
                   warmup_epochs=check_int(d, "warmup_epochs", defaults.warmup_epochs))

    def describe(self) -> str:
        return f"freezeout {self.scale} t0={self.t0:g}" + (", lr scaled" if self.scale_lr else "")

    def unit_heat(self, epochs: int | None) -> tuple[list[float], str]:
        t = freezeout_fractions(self.num_units, self.t0, self.scale)
        return [1.0 - x for x in t], "fraction of training frozen (1 - t_i)"
