"""``adaptive`` (AutoFreeze, Liu et al. 2021; Learn & drop, Cruciata et al. 2024): freeze the longest
prefix of units whose gradient norm has stopped changing, checked every n epochs. Its decisions
are recorded (``freeze_epochs``) so an exported policy replays them without gradient statistics.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from layerout.checks import short
from layerout.schedules.base import FreezeState, Flag, Schedule, check_int, check_number, register_schedule, \
    schedule_error

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
    summary = "every n epochs, freeze the longest prefix of units whose gradient norm settled (AutoFreeze)"
    flags = (
        Flag("check_every", "epochs between checks (1)", type=int),
        Flag("threshold_mode", "percentile (of the units' changes) or absolute (a relative change)",
             choices=THRESHOLD_MODES),
        Flag("threshold", "percentile (0-100) or absolute relative change (50)", type=float),
        Flag("min_trainable_units", "units that always stay trainable (1)", type=int),
    )

    def __init__(self, check_every: int = 1, threshold_mode: str = "percentile",
                 threshold: float = 50.0, min_trainable_units: int = 1,
                 freeze_epochs: list[int | None] | None = None) -> None:
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise schedule_error("check_every", f"must be an integer >= 1, got {short(check_every)}")
        if threshold_mode not in THRESHOLD_MODES:
            raise schedule_error("threshold_mode", f"unknown mode {short(threshold_mode)}; "
                                         f"allowed: {', '.join(THRESHOLD_MODES)}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise schedule_error("threshold", f"must be a number, got {short(threshold)}")
        if threshold_mode == "percentile" and not 0.0 <= threshold <= 100.0:
            raise schedule_error("threshold", f"a percentile must be in [0, 100], got {short(threshold)}")
        if threshold_mode == "absolute" and threshold < 0.0:
            raise schedule_error("threshold", f"an absolute threshold must be >= 0, got {short(threshold)}")
        if (isinstance(min_trainable_units, bool) or not isinstance(min_trainable_units, int)
                or min_trainable_units < 1):
            raise schedule_error("min_trainable_units", f"must be an integer >= 1, got {short(min_trainable_units)}")
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
            raise schedule_error("min_trainable_units", f"{self.min_trainable_units} exceeds the model's {k} units")
        if self.replay:
            fe = self.freeze_epochs
            if len(fe) != k:
                raise schedule_error("freeze_epochs", f"has {len(fe)} entries but the model has {k} units")
            if all(e is not None for e in fe):
                raise schedule_error("freeze_epochs", "would freeze every unit; at least one entry must be null")
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
        defaults = cls()
        return cls(check_every=check_int(d, "check_every", defaults.check_every, low=1),
                   threshold_mode=d.get("threshold_mode", defaults.threshold_mode),
                   threshold=check_number(d, "threshold", defaults.threshold),
                   min_trainable_units=check_int(d, "min_trainable_units", defaults.min_trainable_units, low=1),
                   freeze_epochs=d.get("freeze_epochs"))

    def describe(self) -> str:
        n = sum(e is not None for e in self.freeze_epochs or []) if self.replay else "?"
        return f"adaptive {self.threshold_mode} {self.threshold}, {n} froze"

    def unit_heat(self, epochs: int | None) -> tuple[list[float], str]:
        if not self.replay or not epochs:  # decisions not recorded (a schedule that has not run)
            return [math.nan] * self.num_units, "freeze epochs not recorded"
        vals = [0.0 if e is None else max(0.0, min(1.0, (epochs - e) / epochs)) for e in self.freeze_epochs or []]
        return vals, "fraction of training frozen"

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
        raise schedule_error("freeze_epochs", f"must be a list with one epoch (integer >= 0) or null per unit, got {short(fe)}")
    out: list[int | None] = []
    for i, e in enumerate(fe):
        if e is not None and (isinstance(e, bool) or not isinstance(e, int) or e < 0):
            raise schedule_error(f"freeze_epochs[{i}]", f"must be an integer >= 0 or null, got {short(e)}")
        out.append(e)
    return out
