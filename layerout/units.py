"""Freezable units: named groups of modules that are frozen or trained as one.

A unit is a name plus module-name prefixes inside the model. A parameter belongs
to the unit whose prefix equals its module path or is a dotted ancestor of it.
Built-in models declare their units (``layerout_units()``); any other module
gets its top-level children that own parameters, or a user list of prefixes.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Unit:
    """A named group of module prefixes, ordered input->output inside a model."""

    name: str
    prefixes: tuple[str, ...]

    def owns(self, qualified_name: str) -> bool:
        """True if a parameter/module name lies under one of this unit's prefixes."""
        return any(_under(qualified_name, p) for p in self.prefixes)


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _top_level(model: nn.Module) -> str:
    names = [n for n, _ in model.named_children()]
    return ", ".join(names) if names else "(none)"


def units_of(model: nn.Module, prefixes: list[str] | None = None) -> list[Unit]:
    """The model's ordered units: explicit prefixes, else declared, else top-level children."""
    if prefixes is not None:
        units = [Unit(name=p, prefixes=(p,)) for p in prefixes]
        _check(model, units)
        return units
    declared = getattr(model, "layerout_units", None)
    if declared is not None:
        units = list(declared() if callable(declared) else declared)
        _check(model, units)
        return units
    return [
        Unit(name=n, prefixes=(n,))
        for n, child in model.named_children()
        if any(True for _ in child.parameters())
    ]


def _check(model: nn.Module, units: list[Unit]) -> None:
    """Every unit must own a parameter and no parameter may belong to two units."""
    if not units:
        raise ValueError("no units given; the model's top-level modules are: " + _top_level(model))
    names = [u.name for u in units]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate unit names {dup}")
    params = [n for n, _ in model.named_parameters()]
    owner: dict[str, str] = {}
    for u in units:
        hits = [n for n in params if u.owns(n)]
        if not hits:
            raise ValueError(
                f"unit prefix {'/'.join(u.prefixes)!r} matches no parameter of "
                f"{type(model).__name__}; its top-level modules are: {_top_level(model)}"
            )
        for n in hits:
            if n in owner:
                raise ValueError(
                    f"units {owner[n]!r} and {u.name!r} overlap: both own parameter {n!r}"
                )
            owner[n] = u.name


def unit_parameters(model: nn.Module, units: list[Unit]) -> list[list[nn.Parameter]]:
    """Parameters of each unit, in unit order (parameters shared by name only once)."""
    named = list(model.named_parameters())
    return [[p for n, p in named if u.owns(n)] for u in units]


def unit_modules(model: nn.Module, units: list[Unit]) -> list[list[nn.Module]]:
    """Modules under each unit's prefixes (e.g. to put a frozen unit's BatchNorm in eval mode)."""
    named = [(n, m) for n, m in model.named_modules() if n]
    return [[m for n, m in named if u.owns(n)] for u in units]


def rest_parameters(model: nn.Module, units: list[Unit]) -> list[nn.Parameter]:
    """Parameters in no unit: they are never frozen."""
    return [p for n, p in model.named_parameters() if not any(u.owns(n) for u in units)]


def unit_param_counts(model: nn.Module, units: list[Unit]) -> list[int]:
    """Number of scalar parameters per unit."""
    return [sum(p.numel() for p in ps) for ps in unit_parameters(model, units)]
