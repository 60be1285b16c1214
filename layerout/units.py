"""Freezable units: named groups of modules that are frozen or trained as one.

A unit is a name plus module-name prefixes inside the model. A parameter belongs
to the unit whose prefix equals its module path or is a dotted ancestor of it.
A model's units come, first found first, from a list given by the user (a space's ``units:``,
``Policy.attach(units=...)``), from the model's ``layerout_units()`` method (the built-in models
declare theirs), or from :func:`auto_units`: top-level children that own parameters, with a
normalization layer joined to the unit before it, a container of blocks (a ResNet stage) split
into its blocks, and a wrapper with a single child looked into.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
               nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


def units_of(model: nn.Module, prefixes: list[str] | dict[str, str | list[str]] | None = None) -> list[Unit]:
    """The model's ordered units: given, else declared (``layerout_units``), else :func:`auto_units`.

    ``prefixes`` (and what ``layerout_units()`` returns) may be a list of module prefixes (one
    unit each, named by its prefix), a mapping unit name -> prefix or list of prefixes, or a list
    of :class:`Unit`."""
    if prefixes is not None:
        units = as_units(prefixes)
        _check(model, units)
        return units
    declared = getattr(model, "layerout_units", None)
    if declared is not None:
        units = as_units(declared() if callable(declared) else declared)
        _check(model, units)
        return units
    return auto_units(model)


def unit_origin(model: nn.Module, prefixes: Any = None) -> str:
    """Where :func:`units_of` takes the units from: ``given``, ``declared`` or ``automatic``."""
    if prefixes is not None:
        return "given"
    return "declared" if getattr(model, "layerout_units", None) is not None else "automatic"


def as_units(spec: Any) -> list[Unit]:
    """Units from a list of prefixes, a mapping name -> prefix(es), a list of ``[name, [prefixes]]``
    pairs, or a list of Units."""
    if isinstance(spec, dict):
        spec = list(spec.items())
    out = []
    for u in spec:
        if isinstance(u, Unit):
            out.append(u)
        elif isinstance(u, (list, tuple)) and len(u) == 2 and isinstance(u[0], str):
            out.append(Unit(u[0], (u[1],) if isinstance(u[1], str) else tuple(str(p) for p in u[1])))
        else:
            out.append(Unit(str(u), (str(u),)))
    return out


def unit_pairs(spec: Any) -> list[list[Any]]:
    """Any form :func:`as_units` takes, as JSON-friendly ``[[name, [prefixes]], ...]``."""
    return [[u.name, list(u.prefixes)] for u in as_units(spec)]


def _owns_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def _is_block(m: nn.Module) -> bool:
    """A module whose parameters sit in its children (a residual block, a conv-BN-ReLU group)."""
    return any(_owns_params(c) for c in m.children())


def auto_units(model: nn.Module) -> list[Unit]:
    """Units of a model that declares none; see the module docstring (docs/FREEZING.md has the rules).

    * a single parameter-owning child (a wrapper such as ``self.net = resnet18()``) is looked into;
    * a ``Sequential``/``ModuleList`` whose parameter-owning children are all blocks (modules with
      parameter-owning children of their own: a ResNet stage of BasicBlocks) is one unit per block;
    * a normalization layer (BatchNorm, GroupNorm, LayerNorm, ...) joins the unit before it;
    * every other parameter-owning child is one unit. Parameters of the model itself are in no unit.
    """
    def children(m: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
        kids = [(f"{prefix}{n}", c) for n, c in m.named_children() if _owns_params(c)]
        if len(kids) == 1 and _is_block(kids[0][1]) and not any(True for _ in m.parameters(recurse=False)):
            return children(kids[0][1], kids[0][0] + ".")  # a wrapper: its one child's children
        out: list[tuple[str, nn.Module]] = []
        for name, c in kids:
            inner = [(f"{name}.{n}", g) for n, g in c.named_children() if _owns_params(g)]
            if (isinstance(c, (nn.Sequential, nn.ModuleList)) and len(inner) > 1
                    and all(_is_block(g) for _, g in inner)):
                out += inner  # a stage of blocks: one unit per block
            else:
                out.append((name, c))
        return out

    kids = children(model, "")
    if not kids and any(True for _ in model.parameters()):
        return [Unit(type(model).__name__, ("",))]  # a single layer: one unit, the whole model
    groups: list[list[str]] = []
    for name, c in kids:
        if isinstance(c, NORM_LAYERS) and groups:
            groups[-1].append(name)  # BatchNorm with the layer before it
        else:
            groups.append([name])
    return [Unit(g[0], tuple(g)) for g in groups]


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
