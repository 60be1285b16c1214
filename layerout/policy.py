"""Policy files: a schedule with all its values fixed, plus the model's unit names (docs/FORMATS.md).

    {"format": "layerout-policy", "version": 1, "model": ..., "units": [...],
     "schedule": {"kind": ..., ...}, "measured": {...}, "provenance": {...}}

JSON only (never pickle). Loading validates everything and names the file and the field of the
first problem. ``Policy.attach`` plugs a policy into any PyTorch loop:

    from layerout import load_policy
    freezer = load_policy("p.json").attach(model, optimizer)
    for epoch in range(epochs):
        model.train()
        freezer.on_epoch_start(epoch)
        for step, (x, y) in enumerate(loader):
            freezer.on_step(step)   # step-wise schedules (FreezeOut) change masks within an epoch
            ...
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from layerout.checks import MAX_SEED, short
from layerout.errors import UserError
from layerout.files import atomic_write
from layerout.freezer import BN_CHOICES, Freezer
from layerout.schedules import Schedule, schedule_from_dict
from layerout.units import Unit, units_of

FORMAT = "layerout-policy"
VERSION = 1
KEYS = ("format", "version", "model", "units", "schedule", "measured", "provenance")
MAX_POLICY_BYTES = 1 << 20  # far above any model's policy (ResNet-110's 56 units take a few KB)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("layerout-tune")
    except Exception:  # running from a source tree that was never installed
        return "unknown"


def provenance(**fields: Any) -> dict[str, Any]:
    """Where a policy came from: the run's settings plus tool version, host and time."""
    return {"tool": "layerout-tune", "tool_version": _version(), "host": platform.node(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **fields}


@dataclass
class Policy:
    model: str
    units: list[str]
    schedule: dict[str, Any]
    measured: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    # where the policy came from (its file), named in every error; not part of the file
    source: str = field(default="policy", repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate(self.source)

    # ------------------------------------------------------------------ validation
    def validate(self, source: str = "policy") -> None:
        """Raise UserError ``"<source>: <field>: <problem>"`` for the first thing wrong."""
        def err(fld: str, msg: str) -> UserError:
            return UserError(f"{source}: {fld}: {msg}")

        if not isinstance(self.model, str) or not self.model:
            raise err("model", f"must be a model name (string), got {short(self.model)}")
        if (not isinstance(self.units, list) or not self.units
                or not all(isinstance(u, str) and u for u in self.units)):
            raise err("units", f"must be a non-empty list of unit names, got {short(self.units)}")
        dup = sorted(u for u, n in Counter(self.units).items() if n > 1)
        if dup:
            raise err("units", f"duplicate unit names {short(dup)}")
        seed = self.provenance.get("seed") if isinstance(self.provenance, dict) else None
        if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED):
            raise err("provenance.seed", f"must be an integer within [0, {MAX_SEED}], got {short(seed)}")
        for name in ("measured", "provenance"):
            if not isinstance(getattr(self, name), dict):
                raise err(name, "must be an object")
        try:
            self.build_schedule(epochs=_int_or(self.provenance.get("epochs"), 0),
                                steps_per_epoch=_int_or(self.provenance.get("steps_per_epoch"), 0))
        except UserError as e:
            raise UserError(f"{source}: {e}") from None
        except ValueError as e:
            raise err("schedule", str(e)) from None

    def build_schedule(self, epochs: int = 0, steps_per_epoch: int = 0, seed: int | None = None) -> Schedule:
        """A fresh schedule object bound to this policy's unit count (epochs=0: shape unknown)."""
        sched = schedule_from_dict(self.schedule)
        if seed is None:
            seed = _int_or(self.provenance.get("seed"), 0)
        return sched.bind(len(self.units), epochs, steps_per_epoch, seed=seed)

    def check_units(self, names: list[str], model: str | None = None, source: str | None = None) -> None:
        """Raise UserError saying exactly how ``names`` (the target model's units) differ."""
        source = source or self.source
        if model is not None and model != self.model:
            raise UserError(f"{source}: model: the policy is for {short(self.model)}, not {short(model)} "
                            f"(its units: {', '.join(self.units)})")
        if list(names) == list(self.units):
            return
        if len(names) != len(self.units):
            what = f"has {len(self.units)} units but the model has {len(names)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(self.units, names)) if a != b)
            what = f"unit {i} is {short(self.units[i])} in the policy but {short(names[i])} in the model"
        raise UserError(f"{source}: units: {what} (policy: {', '.join(self.units)}; "
                        f"model: {', '.join(names)})")

    # ------------------------------------------------------------------ use
    def attach(self, model: nn.Module, optimizer: Any, units: list[Unit] | list[str] | None = None,
               epochs: int | None = None, steps_per_epoch: int | None = None, seed: int | None = None,
               bn_frozen: str | None = None) -> Freezer:
        """A Freezer applying this policy to ``model``/``optimizer`` in your own loop.

        ``units``: the model's units, or a list of module-name prefixes; by default the units
        the policy's run used (``provenance.train.units``, as a search on your own model pins
        them), else the ones the model declares, else automatic ones (``layerout.units``). ``epochs`` and
        ``steps_per_epoch`` default to the run the policy came from; step-wise schedules
        (FreezeOut) and warm-ups need them to match your loop. ``bn_frozen`` (frozen units'
        BatchNorm: train, eval or auto) defaults to the run's (``provenance.train.bn_frozen``),
        else the schedule family's choice.
        """
        if units is None:  # the units the policy's run used when its recipe names them, else the model's
            train = self.provenance.get("train")
            unit_list = units_of(model, train.get("units") if isinstance(train, dict) else None)
        elif all(isinstance(u, str) for u in units):
            unit_list = units_of(model, list(units))  # type: ignore[arg-type]
        else:
            unit_list = list(units)  # type: ignore[arg-type]
        self.check_units([u.name for u in unit_list])
        e = epochs if epochs is not None else _int_or(self.provenance.get("epochs"), 0)
        s = steps_per_epoch if steps_per_epoch is not None else _int_or(self.provenance.get("steps_per_epoch"), 0)
        try:
            sched = self.build_schedule(e, s, seed)
        except UserError as exc:
            raise UserError(f"{self.source}: {exc}") from None
        if sched.stepwise and not (e and s):
            raise UserError(f"{self.source}: the {sched.kind!r} schedule changes within epochs; pass epochs= and "
                            "steps_per_epoch=")
        if bn_frozen is None:
            train = self.provenance.get("train")
            recorded = train.get("bn_frozen") if isinstance(train, dict) else None
            bn_frozen = recorded if recorded in BN_CHOICES else "auto"
        return Freezer(model, optimizer, unit_list, sched, bn_frozen=bn_frozen)

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "model": self.model, "units": list(self.units),
                "schedule": dict(self.schedule), "measured": dict(self.measured),
                "provenance": dict(self.provenance)}

    @classmethod
    def from_dict(cls, d: Any, source: str = "policy") -> "Policy":
        if not isinstance(d, dict):
            raise UserError(f"{source}: must be a JSON object with keys {', '.join(KEYS)}")
        if d.get("format") != FORMAT:
            raise UserError(f"{source}: format: expected {short(FORMAT)}, got {short(d.get('format'))}")
        if d.get("version") != VERSION:
            raise UserError(f"{source}: version: this layerout reads version {VERSION}, got {short(d.get('version'))}")
        for k in ("model", "units", "schedule"):
            if k not in d:
                raise UserError(f"{source}: {k}: missing")
        unknown = sorted(set(d) - set(KEYS))
        if unknown:
            raise UserError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
        return cls(model=d["model"], units=d["units"], schedule=d["schedule"], measured=d.get("measured") or {},
                   provenance=d.get("provenance") or {}, source=source)


def save_policy(policy: Policy | dict[str, Any], path: str | os.PathLike) -> Path:
    """Validate and write atomically (a crash never leaves half a file)."""
    path = Path(path)
    if isinstance(policy, dict):
        policy = Policy.from_dict(policy, source=str(path))
    return atomic_write(path, json.dumps(policy.to_dict(), indent=2) + "\n")


def load_policy(path: str | os.PathLike) -> Policy:
    """Read and validate a policy file (or a run's summary.json); problems raise UserError naming
    the file and field."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise UserError(f"{path}: {size:,} bytes; a policy file may be at most {MAX_POLICY_BYTES:,} bytes (1 MiB)")
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such policy file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid JSON (not UTF-8 text: {e.reason})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to read (thousands of levels of [ or {{)") from None
    except ValueError:  # an integer past Python's limit on digits read from text
        raise UserError(f"{path}: not a policy: a number has more than {sys.get_int_max_str_digits():,} digits") \
            from None
    if isinstance(doc, dict) and "format" not in doc and isinstance(doc.get("policy"), dict):
        doc = doc["policy"]  # a run's summary.json carries its policy under "policy"
    return Policy.from_dict(doc, source=str(path))


def _int_or(v: Any, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default
