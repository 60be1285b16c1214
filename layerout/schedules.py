"""Freezing schedules: small pure objects mapping (epoch, step) to a FreezeState.

The trainer (and `Freezer` in a user's loop) only *applies* states; schedules decide them.
Randomness comes from ``numpy.random.default_rng([seed, epoch, ...])`` so that a state is a
pure function of its arguments: a resumed run draws exactly the masks an uninterrupted run
would, with no RNG state to save.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from layerout.errors import UserError

# The paper's manual vectors (seeds/001): efreeze freezes early units more often, dfreeze is its reverse.
PAPER_EFREEZE = {
    7: [0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.1],
    16: [0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, 0.5, 0.5, 0.4, 0.4, 0.3, 0.3, 0.2, 0.2, 0.1],
}


@dataclass(frozen=True)
class FreezeState:
    """Which units are frozen, and optionally each unit's lr as a factor of the initial lr.

    ``lr_factor=None`` means "follow the global learning-rate schedule"; a tuple replaces it
    (FreezeOut anneals each unit on its own cosine).
    """

    frozen: tuple[bool, ...]
    lr_factor: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.frozen and all(self.frozen):
            raise ValueError("a mask may not freeze every unit")
        if self.lr_factor is not None and len(self.lr_factor) != len(self.frozen):
            raise ValueError("lr_factor must have one entry per unit")

    @classmethod
    def unfrozen(cls, num_units: int) -> "FreezeState":
        return cls(frozen=(False,) * num_units)

    @property
    def mask_str(self) -> str:
        """'0110': 1 = frozen; the form epochs.csv stores."""
        return "".join("1" if f else "0" for f in self.frozen)

    @property
    def any_frozen(self) -> bool:
        return any(self.frozen)


def _err(field: str, msg: str) -> UserError:
    return UserError(f"schedule.{field}: {msg}")


def _int(d: dict, key: str, default: int | None = None, low: int = 0) -> int:
    val = d.get(key, default)
    if isinstance(val, bool) or not isinstance(val, int) or val < low:
        raise _err(key, f"must be an integer >= {low}, got {val!r}")
    return val


def _bool(d: dict, key: str, default: bool) -> bool:
    val = d.get(key, default)
    if not isinstance(val, bool):
        raise _err(key, f"must be true or false, got {val!r}")
    return val


class Schedule:
    """Base class. Subclasses set ``kind`` and implement ``state`` and ``to_dict``.

    Life cycle: construct from parameters (or ``from_dict``), ``bind`` to the run's shape,
    then ask ``state(epoch, step)`` as often as you like.
    """

    kind: ClassVar[str] = ""
    stepwise: ClassVar[bool] = False  # True: state may change within an epoch
    uses_lr_factor: ClassVar[bool] = False  # True: states carry per-unit lr factors
    needs_grad_stats: ClassVar[bool] = False  # True: wants observe_epoch(grad norms)

    num_units: int = 0
    epochs: int = 0
    steps_per_epoch: int = 0
    seed: int = 0

    def bind(self, num_units: int, epochs: int, steps_per_epoch: int, seed: int = 0) -> "Schedule":
        """Give the schedule the run's shape; validates what depends on it. Returns self."""
        if num_units < 1:
            raise ValueError("a model needs at least one unit")
        self.num_units, self.epochs, self.steps_per_epoch = num_units, epochs, steps_per_epoch
        if getattr(self, "_seed", None) is None:
            self.seed = seed
        else:
            self.seed = self._seed
        self.validate()
        return self

    def validate(self) -> None:
        """Checks that need the bound shape (vector length, warm-up vs epochs)."""

    def state(self, epoch: int, step: int = 0) -> FreezeState:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schedule":
        raise NotImplementedError

    # Hooks for schedules that learn from training (adaptive); no-ops for pure ones.
    def observe_epoch(self, epoch: int, grad_norms: list[float | None]) -> None:
        """Called after each epoch with each unit's accumulated gradient norm (None if frozen)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what observe_epoch learned (from a checkpoint)."""

    def _check_warmup(self, warmup: int) -> None:
        if self.epochs and warmup >= self.epochs:
            raise _err("warmup_epochs", f"{warmup} is not shorter than training ({self.epochs} epochs)")


SCHEDULES: dict[str, type[Schedule]] = {}


def register_schedule(cls: type[Schedule]) -> type[Schedule]:
    SCHEDULES[cls.kind] = cls
    return cls


def schedule_from_dict(d: Any) -> Schedule:
    """Build a schedule from its policy-file form; unknown kinds and bad values raise UserError."""
    if not isinstance(d, dict):
        raise _err("kind", f"the schedule must be an object with a 'kind', got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in SCHEDULES:
        raise _err("kind", f"unknown kind {kind!r}; allowed: {', '.join(sorted(SCHEDULES))}")
    return SCHEDULES[kind].from_dict(d)


@register_schedule
class NoFreezeSchedule(Schedule):
    """The unfrozen baseline."""

    kind = "none"

    def state(self, epoch: int, step: int = 0) -> FreezeState:
        return FreezeState.unfrozen(self.num_units)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "none"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoFreezeSchedule":
        return cls()


V_MODES = ("manual", "random_epoch", "random_once")


@register_schedule
class LayerOutSchedule(Schedule):
    """LayerOut (seeds/001): each epoch after warm-up, unit i is frozen with probability v_i.

    ``v_mode``: ``manual`` (v given), ``random_epoch`` (v ~ U(0,1)^K drawn anew every epoch, the
    paper's "random v"), ``random_once`` (v drawn once from the seed and then fixed). A draw that
    would freeze every unit is redrawn; ``keep_last_trainable`` keeps the classifier unit training.
    """

    kind = "layerout"

    def __init__(
        self,
        v: list[float] | None = None,
        v_mode: str = "manual",
        warmup_epochs: int = 0,
        keep_last_trainable: bool = False,
        seed: int | None = None,
    ) -> None:
        if v_mode not in V_MODES:
            raise _err("v_mode", f"unknown mode {v_mode!r}; allowed: {', '.join(V_MODES)}")
        if v_mode == "manual" and v is None:
            raise _err("v", "a manual LayerOut schedule needs a freeze vector v")
        if v is not None:
            v = _check_vector(v)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise _err("warmup_epochs", f"must be an integer >= 0, got {warmup_epochs!r}")
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
            raise _err("v", f"has {len(self.v)} values but the model has {self.num_units} units")

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
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise _err("seed", f"must be an integer or null, got {seed!r}")
        return cls(
            v=d.get("v"),
            v_mode=d.get("v_mode", "manual"),
            warmup_epochs=_int(d, "warmup_epochs", 0),
            keep_last_trainable=_bool(d, "keep_last_trainable", False),
            seed=seed,
        )


def _check_vector(v: Any) -> list[float]:
    if not isinstance(v, (list, tuple)) or not v:
        raise _err("v", f"must be a non-empty list of numbers in [0, 1], got {v!r}")
    out = []
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not (0.0 <= float(x) <= 1.0):
            raise _err(f"v[{i}]", f"{x!r} is outside [0, 1]")
        out.append(float(x))
    return out


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


def cosine_factor(t: float, t_end: float) -> float:
    """0.5 * (1 + cos(pi * t / t_end)) until t_end, 0 after (FreezeOut's per-unit annealing)."""
    if t >= t_end:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * t / t_end))


# The other families (freezeout, prefix, adaptive) live in schedule_families.py; importing it
# registers them. Their classes are reachable from here too (resolved lazily, so importing
# either module first works).
from layerout import schedule_families as _families  # noqa: E402

_FAMILY_NAMES = ("FreezeOutSchedule", "PrefixSchedule", "AdaptiveSchedule", "freezeout_fractions")


def __getattr__(name: str) -> Any:
    if name in _FAMILY_NAMES:
        return getattr(_families, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
