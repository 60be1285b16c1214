"""What every freezing schedule is: the FreezeState it produces, the Schedule base class, the registry.

A schedule maps (epoch, step) to a :class:`FreezeState`; the trainer (and ``Freezer`` in a user's
loop) only applies states. Randomness comes from ``numpy.random.default_rng([seed, epoch, ...])``
so that a state is a pure function of its arguments: a resumed run draws exactly the masks an
uninterrupted run would, with no RNG state to save.

A family is one module in this package: a ``Schedule`` subclass decorated with
``@register_schedule``, its defaults written once in its ``__init__``, and the command-line flags
of ``python -m layerout.train`` declared in ``flags``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from layerout import checks
from layerout.checks import fail, short
from layerout.errors import UserError
from layerout.registry import Registry


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


# ------------------------------------------------------------------------------ field checks
def schedule_error(field: str, msg: str) -> UserError:
    return fail(f"schedule.{field}", msg)


def check_int(d: dict, key: str, default: int | None = None, low: int = 0) -> int:
    return checks.check_int(f"schedule.{key}", d.get(key, default), low)


def check_bool(d: dict, key: str, default: bool) -> bool:
    return checks.check_bool(f"schedule.{key}", d.get(key, default))


def check_number(d: dict, key: str, default: float) -> float:
    val = d.get(key, default)
    if not checks.is_number(val):
        raise schedule_error(key, f"must be a number, got {short(val)}")
    return float(val)


# ------------------------------------------------------------------------------ command-line flags
@dataclass(frozen=True)
class Flag:
    """One ``python -m layerout.train`` flag of a family. ``dest`` is the argparse name (the
    schedule key unless the family's ``dict_from_flags`` maps it); several families may declare
    the same flag (``--warmup-epochs``), which the parser then adds once."""

    dest: str
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False  # an on/off flag: --name turns it on, --no-name off (the default is the schedule's)
    metavar: str | None = None

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")


class Schedule:
    """Base class. Subclasses set ``kind`` and implement ``state``, ``to_dict`` and ``from_dict``.

    Life cycle: construct from parameters (or ``from_dict``), ``bind`` to the run's shape,
    then ask ``state(epoch, step)`` as often as you like.
    """

    kind: ClassVar[str] = ""
    stepwise: ClassVar[bool] = False  # True: state may change within an epoch
    uses_lr_factor: ClassVar[bool] = False  # True: states carry per-unit lr factors
    needs_grad_stats: ClassVar[bool] = False  # True: wants observe_epoch(grad norms)
    flags: ClassVar[tuple[Flag, ...]] = ()  # its python -m layerout.train flags
    # frozen units' BatchNorm when the recipe says bn_frozen: auto ("train" keeps updating running
    # statistics, "eval" freezes them too): the choice of the family's authors
    bn_frozen: ClassVar[str] = "train"
    summary: ClassVar[str] = ""  # one line for --help and the docs
    # keys of its dict that count epochs from the start of training (a warm-up, a start epoch):
    # a policy trained for a fraction of the budget has them scaled in proportion (layerout.budget)
    epoch_keys: ClassVar[tuple[str, ...]] = ()

    num_units: int = 0
    epochs: int = 0
    steps_per_epoch: int = 0
    seed: int = 0

    def bind(self, num_units: int, epochs: int, steps_per_epoch: int, seed: int = 0) -> "Schedule":
        """Give the schedule the run's shape; validates what depends on it. Returns self."""
        if num_units < 1:
            raise ValueError("a model needs at least one unit")
        self.num_units, self.epochs, self.steps_per_epoch = num_units, epochs, steps_per_epoch
        own = getattr(self, "_seed", None)  # a schedule may carry its own seed (LayerOut's draws)
        self.seed = seed if own is None else own
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

    def mask_runs(self, epoch: int) -> list[tuple[int, int, tuple[bool, ...]]]:
        """The masks ``epoch`` will train under, as ``(first step, end step, frozen)`` runs that
        cover steps ``0 .. steps_per_epoch - 1``, as far as the schedule knows them now. The
        trainer's ``planned_compute_saved_frac`` adds them up over the rest of the budget.

        The default asks ``state``: once per epoch, or once per step for a step-wise schedule.
        That is exact for every schedule whose states are a function of (epoch, step) (none,
        prefix, FreezeOut, and LayerOut, whose draws are a function of its seed and the epoch);
        a schedule that learns from training (adaptive) answers with what it has decided so far,
        which holds its current mask to the end. Override it only to answer faster."""
        steps = max(1, self.steps_per_epoch)
        if not self.stepwise:
            return [(0, steps, tuple(self.state(epoch, 0).frozen))]
        runs: list[tuple[int, int, tuple[bool, ...]]] = []
        for step in range(steps):
            frozen = tuple(self.state(epoch, step).frozen)
            if runs and runs[-1][2] == frozen:
                runs[-1] = (runs[-1][0], step + 1, frozen)
            else:
                runs.append((step, step + 1, frozen))
        return runs

    @classmethod
    def dict_from_flags(cls, given: dict[str, Any], num_units: int) -> dict[str, Any]:
        """The schedule dict for the flags given on the command line (``dest -> value``, only the
        flags the user typed); ``from_dict`` fills in the defaults."""
        return {"kind": cls.kind, **given}

    # What the analysis shows of a schedule (tables and per-unit heatmaps).
    def describe(self) -> str:
        """A short human description: 'prefix k=2 from epoch 0'."""
        return self.kind

    def unit_heat(self, epochs: int | None) -> tuple[list[float], str]:
        """Per unit, how frozen it is in [0, 1] (NaN: unknown), and what the numbers mean.
        Needs only ``num_units`` bound (``epochs`` may be None)."""
        return [math.nan] * self.num_units, "unknown"

    # Hooks for schedules that learn from training (adaptive); no-ops for pure ones.
    def observe_epoch(self, epoch: int, grad_norms: list[float | None]) -> None:
        """Called after each epoch with each unit's accumulated gradient norm (None if frozen)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what observe_epoch learned (from a checkpoint)."""

    def _check_warmup(self, warmup: int) -> None:
        if self.epochs and warmup >= self.epochs:
            raise schedule_error("warmup_epochs", f"{warmup} is not shorter than training ({self.epochs} epochs)")


SCHEDULES: Registry = Registry("schedule kind")  # kind -> Schedule subclass
# Class decorator: make ``cls.kind`` known to ``schedule_from_dict``, policies and the CLI.
register_schedule: Callable[[type[Schedule]], type[Schedule]] = SCHEDULES.by("kind")


def schedule_from_dict(d: Any) -> Schedule:
    """Build a schedule from its policy-file form; unknown kinds and bad values raise UserError."""
    if not isinstance(d, dict):
        raise schedule_error("kind", f"the schedule must be an object with a 'kind', got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in SCHEDULES:
        raise schedule_error("kind", f"unknown kind {short(kind)}; allowed: {', '.join(sorted(SCHEDULES))}")
    return SCHEDULES[kind].from_dict(d)
