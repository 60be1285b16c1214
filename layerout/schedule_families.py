"""The freezing families beyond LayerOut: ``freezeout``, ``prefix`` and ``adaptive``.

They live here to keep ``schedules.py`` readable; ``schedules.py`` imports this module at its
bottom, so ``schedule_from_dict`` knows every kind and ``from layerout.schedules import
FreezeOutSchedule`` works.

- ``freezeout`` (Brock et al. 2017, "FreezeOut", github ajbrock/FreezeOut): progressive
  freezing, unit i annealed to lr 0 on its own cosine and frozen at fraction t_i of training.
- ``prefix``: the first k units frozen from an epoch on (the transfer-learning habit).
- ``adaptive`` (AutoFreeze, Liu et al. 2021; Learn & drop): freeze the longest prefix of units
  whose gradient norm has stopped changing, checked every n epochs; its decisions are
  recorded (``freeze_epochs``) so an exported policy replays them without gradient statistics.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from layerout.schedules import FreezeState, Schedule, _bool, _err, _int, cosine_factor, register_schedule

SCALES = ("linear", "squared", "cubic")
_SCALE_POWER = {"linear": 1, "squared": 2, "cubic": 3}


def _number(d: dict, key: str, default: float) -> float:
    val = d.get(key, default)
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
        raise _err(key, f"must be a number, got {val!r}")
    return float(val)


def freezeout_fractions(num_units: int, t0: float, scale: str) -> list[float]:
    """FreezeOut's t_i = scale(t0 + (1 - t0) * i / (K - 1)); the last unit gets 1 (trains to the end)."""
    p = _SCALE_POWER[scale]
    if num_units == 1:
        return [1.0]
    out = [(t0 + (1.0 - t0) * i / (num_units - 1)) ** p for i in range(num_units - 1)]
    return out + [1.0]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


# ------------------------------------------------------------------------------------ freezeout
@register_schedule
class FreezeOutSchedule(Schedule):
    """FreezeOut (Brock et al. 2017): unit i trains until fraction t_i of training, then freezes.

    Iterations are counted after ``warmup_epochs``: ``t = (epoch - warmup) * steps_per_epoch +
    step`` out of ``T = (epochs - warmup) * steps_per_epoch``. Unit i is frozen from iteration
    ``freeze_step(i) = round_half_up(t_i * T)`` on (for good); the last unit never freezes.
    While not frozen, its lr factor is ``0.5 * (1 + cos(pi * t / (t_i * T)))`` (times ``1/t_i``
    with ``scale_lr``): a factor of the *initial* lr that REPLACES the global lr schedule
    (milestones, warm start) once the schedule is active. During warm-up the state carries no
    lr factor, so the global schedule applies.
    """

    kind = "freezeout"
    stepwise = True
    uses_lr_factor = True

    def __init__(self, t0: float = 0.8, scale: str = "cubic", scale_lr: bool = False,
                 warmup_epochs: int = 0) -> None:
        if isinstance(t0, bool) or not isinstance(t0, (int, float)) or not (0.0 < float(t0) <= 1.0):
            raise _err("t0", f"must be a number in (0, 1], got {t0!r}")
        if scale not in SCALES:
            raise _err("scale", f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
        if not isinstance(scale_lr, bool):
            raise _err("scale_lr", f"must be true or false, got {scale_lr!r}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise _err("warmup_epochs", f"must be an integer >= 0, got {warmup_epochs!r}")
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
        self._freeze_steps = [_round_half_up(ti * total) for ti in self.t]

    @property
    def total_steps(self) -> int:
        """T: training iterations after warm-up."""
        return max(self.epochs - self.warmup_epochs, 0) * self.steps_per_epoch

    def freeze_step(self, unit: int) -> int:
        """The first post-warm-up iteration at which ``unit`` is frozen (T for the last unit)."""
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
            is_frozen = i < k - 1 and t >= self._freeze_steps[i]  # the last unit always trains
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
        return cls(t0=d.get("t0", 0.8), scale=d.get("scale", "cubic"), scale_lr=_bool(d, "scale_lr", False),
                   warmup_epochs=_int(d, "warmup_epochs", 0))


# ------------------------------------------------------------------------------------ prefix
@register_schedule
class PrefixSchedule(Schedule):
    """The first ``k`` units frozen from ``start_epoch`` to the end (the transfer-learning habit)."""

    kind = "prefix"

    def __init__(self, k: int = 1, start_epoch: int = 0) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise _err("k", f"must be an integer >= 1, got {k!r}")
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise _err("start_epoch", f"must be an integer >= 0, got {start_epoch!r}")
        self.k = k
        self.start_epoch = start_epoch

    def validate(self) -> None:
        if self.k >= self.num_units:
            raise _err("k", f"{self.k} would freeze every unit: the model has {self.num_units} units, "
                            f"so k must be in 1..{self.num_units - 1}")
        if self.epochs and self.start_epoch >= self.epochs:
            raise _err("start_epoch", f"{self.start_epoch} is not before the end of training "
                                      f"({self.epochs} epochs)")

    def state(self, epoch: int, step: int = 0) -> FreezeState:
        n = self.k if epoch >= self.start_epoch else 0
        return FreezeState(frozen=tuple(i < n for i in range(self.num_units)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "prefix", "k": self.k, "start_epoch": self.start_epoch}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PrefixSchedule":
        return cls(k=_int(d, "k", 1, low=1), start_epoch=_int(d, "start_epoch", 0))


# ------------------------------------------------------------------------------------ adaptive
THRESHOLD_MODES = ("percentile", "absolute")


def relative_change(g_now: float | None, g_prev: float | None) -> float:
    """|g_now - g_prev| / g_prev; inf where it is undefined (no measurement, or g_prev = 0 < g_now)."""
    if g_now is None or g_prev is None or not math.isfinite(g_now) or not math.isfinite(g_prev):
        return math.inf
    if g_prev <= 0.0:
        return 0.0 if g_now == g_prev else math.inf
    return abs(g_now - g_prev) / g_prev


@register_schedule
class AdaptiveSchedule(Schedule):
    """Freeze the longest prefix of units whose gradient norm has settled (AutoFreeze-style).

    After epoch e with ``(e + 1) % check_every == 0`` the trainer's per-unit gradient norms of
    that epoch (``observe_epoch``) are compared with each unit's norm at the previous check:
    change_i = |g_now - g_prev| / g_prev. A unit is *settled* when change_i is strictly below
    the threshold: the ``threshold``-th percentile (numpy's linear interpolation) of the current
    changes of all still-trainable units (``percentile``), or ``threshold`` itself
    (``absolute``). The longest run of settled units starting right after the already frozen
    prefix is frozen from epoch e + 1 on, never leaving fewer than ``min_trainable_units``
    trainable; frozen units stay frozen. The first check only records norms; a check after the
    last epoch decides nothing. Units without a measurement (None) are never settled.

    ``freeze_epochs[i]`` is the first epoch in which unit i is frozen (None: never). ``state``
    is a pure function of it, so a schedule built with ``freeze_epochs`` (an exported policy)
    replays the decisions exactly and needs no gradient statistics (``needs_grad_stats`` False).
    """

    kind = "adaptive"

    def __init__(self, check_every: int = 1, threshold_mode: str = "percentile",
                 threshold: float = 50.0, min_trainable_units: int = 1,
                 freeze_epochs: list[int | None] | None = None) -> None:
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise _err("check_every", f"must be an integer >= 1, got {check_every!r}")
        if threshold_mode not in THRESHOLD_MODES:
            raise _err("threshold_mode", f"unknown mode {threshold_mode!r}; "
                                         f"allowed: {', '.join(THRESHOLD_MODES)}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise _err("threshold", f"must be a number, got {threshold!r}")
        if threshold_mode == "percentile" and not 0.0 <= threshold <= 100.0:
            raise _err("threshold", f"a percentile must be in [0, 100], got {threshold!r}")
        if threshold_mode == "absolute" and threshold < 0.0:
            raise _err("threshold", f"an absolute threshold must be >= 0, got {threshold!r}")
        if (isinstance(min_trainable_units, bool) or not isinstance(min_trainable_units, int)
                or min_trainable_units < 1):
            raise _err("min_trainable_units", f"must be an integer >= 1, got {min_trainable_units!r}")
        self.check_every = check_every
        self.threshold_mode = threshold_mode
        self.threshold = float(threshold)
        self.min_trainable_units = min_trainable_units
        self.replay = freeze_epochs is not None
        self.freeze_epochs: list[int | None] | None = (
            _check_freeze_epochs(freeze_epochs) if freeze_epochs is not None else None)
        self.prev_norms: list[float | None] = []
        self.history: list[dict[str, Any]] = []  # one entry per check (for logs and debugging)

    @property
    def needs_grad_stats(self) -> bool:  # type: ignore[override]
        return not self.replay

    def validate(self) -> None:
        k = self.num_units
        if self.min_trainable_units > k:
            raise _err("min_trainable_units", f"{self.min_trainable_units} exceeds the model's {k} units")
        if self.replay:
            fe = self.freeze_epochs
            if len(fe) != k:
                raise _err("freeze_epochs", f"has {len(fe)} entries but the model has {k} units")
            if all(e is not None for e in fe):
                raise _err("freeze_epochs", "would freeze every unit; at least one entry must be null")
        elif self.freeze_epochs is None or len(self.freeze_epochs) != k:
            # Fresh decisions; kept when bind() follows load_state_dict() (a resumed run).
            self.freeze_epochs = [None] * k
            self.prev_norms = [None] * k
            self.history = []

    def frozen_at(self, epoch: int) -> tuple[bool, ...]:
        return tuple(e is not None and epoch >= e for e in (self.freeze_epochs or [None] * self.num_units))

    def state(self, epoch: int, step: int = 0) -> FreezeState:
        return FreezeState(frozen=self.frozen_at(epoch))

    def threshold_value(self, changes: list[float]) -> float:
        """The cut-off for this check: a percentile of the finite changes, or the absolute value."""
        if self.threshold_mode == "absolute":
            return self.threshold
        finite = [c for c in changes if math.isfinite(c)]
        if not finite:
            return -math.inf
        return float(np.percentile(np.asarray(finite, dtype=float), self.threshold))

    def observe_epoch(self, epoch: int, grad_norms: list[float | None]) -> None:
        if self.replay or (epoch + 1) % self.check_every != 0:
            return
        k = self.num_units
        if len(grad_norms) != k:
            raise ValueError(f"observe_epoch got {len(grad_norms)} gradient norms for {k} units")
        frozen = self.frozen_at(epoch)
        now = [None if (frozen[i] or g is None) else float(g) for i, g in enumerate(grad_norms)]
        trainable = [i for i in range(k) if not frozen[i]]
        changes = {i: relative_change(now[i], self.prev_norms[i]) for i in trainable}
        cut = self.threshold_value(list(changes.values()))
        settled = {i: changes[i] < cut for i in trainable}
        limit = k - self.min_trainable_units  # at most this many units frozen
        new: list[int] = []
        i = trainable[0] if trainable else k  # decisions only ever freeze a prefix: extend it
        while i < limit and not frozen[i] and settled.get(i, False):
            new.append(i)
            i += 1
        if self.epochs and epoch + 1 >= self.epochs:
            new = []  # after the last epoch: nothing left to freeze
        for i in new:
            self.freeze_epochs[i] = epoch + 1
        for i in trainable:
            if now[i] is not None:
                self.prev_norms[i] = now[i]
        finite = [changes[i] if i in changes and math.isfinite(changes[i]) else None for i in range(k)]
        self.history.append({"epoch": epoch, "changes": finite,
                             "threshold": cut if math.isfinite(cut) else None, "froze": new})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "adaptive", "check_every": self.check_every,
                             "threshold_mode": self.threshold_mode, "threshold": self.threshold,
                             "min_trainable_units": self.min_trainable_units}
        d["freeze_epochs"] = list(self.freeze_epochs) if self.freeze_epochs is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdaptiveSchedule":
        fe = d.get("freeze_epochs")
        return cls(check_every=_int(d, "check_every", 1, low=1),
                   threshold_mode=d.get("threshold_mode", "percentile"),
                   threshold=_number(d, "threshold", 50.0),
                   min_trainable_units=_int(d, "min_trainable_units", 1, low=1),
                   freeze_epochs=fe)

    def state_dict(self) -> dict[str, Any]:
        return {"replay": self.replay,
                "freeze_epochs": list(self.freeze_epochs) if self.freeze_epochs is not None else None,
                "prev_norms": list(self.prev_norms), "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.replay = bool(state.get("replay", self.replay))
        fe = state.get("freeze_epochs")
        self.freeze_epochs = list(fe) if fe is not None else None
        self.prev_norms = list(state.get("prev_norms") or [None] * self.num_units)
        self.history = list(state.get("history") or [])


def _check_freeze_epochs(fe: Any) -> list[int | None]:
    if not isinstance(fe, (list, tuple)):
        raise _err("freeze_epochs", f"must be a list with one epoch (integer >= 0) or null per unit, got {fe!r}")
    out: list[int | None] = []
    for i, e in enumerate(fe):
        if e is not None and (isinstance(e, bool) or not isinstance(e, int) or e < 0):
            raise _err(f"freeze_epochs[{i}]", f"must be an integer >= 0 or null, got {e!r}")
        out.append(e)
    return out
