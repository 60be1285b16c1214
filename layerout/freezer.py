"""Apply a schedule's FreezeStates to a model and its optimizer.

The Freezer is the only place that touches ``requires_grad``, BatchNorm modes and per-unit
learning rates; the schedule decides, the Freezer applies. It works in any training loop:

    freezer = Freezer(model, optimizer, units, schedule)
    for epoch in range(epochs):
        model.train()
        freezer.on_epoch_start(epoch)
        for step, (x, y) in enumerate(batches):
            freezer.on_step(step)          # only matters for step-wise schedules (FreezeOut)
            ...

Freezing semantics (docs/FREEZING.md, "mask"): a frozen unit's parameters have ``requires_grad``
off, so autograd does no weight-gradient work for them (and no input-gradient work for a
frozen prefix); their ``.grad`` is None, so ``torch.optim.SGD`` skips them entirely: no step,
no weight decay, and the momentum buffer is left as it was, ready for when the unit thaws.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from layerout.choices import BN_CHOICES, BN_MODES  # noqa: F401 - also this module's names
from layerout.schedules import FreezeState, Schedule
from layerout.units import Unit, unit_modules, unit_parameters

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def resolve_bn_frozen(bn_frozen: str, schedule: Schedule | type[Schedule]) -> str:
    """``"train"`` or ``"eval"``: ``bn_frozen`` itself, or for ``"auto"`` the schedule family's
    choice (FreezeOut: eval, as its authors run it; the others: train)."""
    if bn_frozen not in BN_CHOICES:
        raise ValueError(f"bn_frozen must be one of {BN_CHOICES}, got {bn_frozen!r}")
    return schedule.bn_frozen if bn_frozen == "auto" else bn_frozen


class Freezer:
    """Applies masks (and per-unit lr factors) from ``schedule`` to ``model`` and ``optimizer``.

    ``bn_frozen``: ``"train"`` keeps updating a frozen unit's BatchNorm running statistics (the
    LayerOut paper: the forward pass is unchanged), ``"eval"`` puts it in eval mode (FreezeOut's
    authors), ``"auto"`` (default) takes the schedule family's choice (``Schedule.bn_frozen``).
    Call ``model.train()`` before ``on_epoch_start`` each epoch; the Freezer then switches the
    frozen units' BatchNorm layers back to eval where asked.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, units: list[Unit],
                 schedule: Schedule, bn_frozen: Literal["auto", "train", "eval"] = "auto") -> None:
        self.model, self.optimizer, self.units, self.schedule = model, optimizer, units, schedule
        self.bn_frozen = resolve_bn_frozen(bn_frozen, schedule)
        self.params = unit_parameters(model, units)
        self.bn_modules = [[m for m in mods if isinstance(m, _BN_TYPES)] for mods in unit_modules(model, units)]
        self.epoch = 0
        self.current: FreezeState | None = None
        self._unit_groups: list[dict] | None = None
        if schedule.uses_lr_factor:
            if optimizer is None:
                raise ValueError(f"the {schedule.kind!r} schedule sets per-unit learning rates; pass the optimizer")
            self._unit_groups = split_param_groups(optimizer, self.params)

    # ------------------------------------------------------------------ loop hooks
    def on_epoch_start(self, epoch: int) -> FreezeState:
        """Apply the state for the start of ``epoch``; returns it."""
        self.epoch = epoch
        return self.apply(self.schedule.state(epoch, 0), force=True)

    def on_step(self, step: int) -> FreezeState:
        """Apply the state for ``step`` of the current epoch (a no-op for epoch-wise schedules)."""
        if not self.schedule.stepwise:
            assert self.current is not None, "call on_epoch_start first"
            return self.current
        return self.apply(self.schedule.state(self.epoch, step))

    # ------------------------------------------------------------------ application
    def apply(self, state: FreezeState, force: bool = False) -> FreezeState:
        """Freeze/thaw units and set per-unit lrs; cheap when nothing changes."""
        if len(state.frozen) != len(self.units):
            raise ValueError(f"mask has {len(state.frozen)} entries for {len(self.units)} units")
        prev = self.current
        if force or prev is None or prev.frozen != state.frozen:
            for i, frozen in enumerate(state.frozen):
                for p in self.params[i]:
                    p.requires_grad_(not frozen)
                    if frozen:
                        p.grad = None  # SGD skips params without grad: no step, no decay, momentum kept
                for bn in self.bn_modules[i]:
                    bn.train(self.model.training and not (frozen and self.bn_frozen == "eval"))
        if state.lr_factor is not None and self._unit_groups is not None:
            # Look the unit groups up each time: optimizer.load_state_dict() (a resumed run) replaces
            # the param-group dicts, and lrs set on the old ones would never reach the optimizer.
            for group in self.optimizer.param_groups:
                i = group.get("layerout_unit")
                if i is not None:
                    group["lr"] = group["layerout_base_lr"] * state.lr_factor[i]
        self.current = state
        return state

    def set_base_lr(self, lr: float) -> None:
        """Set every param group's lr (the global schedule); per-unit factors apply on top of it
        only through ``layerout_base_lr``, which stays the initial lr."""
        if self.optimizer is None:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def split_param_groups(optimizer: torch.optim.Optimizer, unit_params: list[list[nn.Parameter]]) -> list[dict | None]:
    """Give every unit its own param group (same hyper-parameters) so it can have its own lr.

    Parameters outside any unit stay in their original groups. Each unit group records
    ``layerout_unit`` and ``layerout_base_lr`` (the lr at split time). Optimizer state is keyed
    by parameter, so momentum buffers survive the split. Idempotent: groups already split are
    reused (a resumed run loads a state_dict saved with the split layout).
    """
    owner = {id(p): i for i, ps in enumerate(unit_params) for p in ps}
    existing = [g for g in optimizer.param_groups if "layerout_unit" in g]
    if existing:
        by_unit: list[dict | None] = [None] * len(unit_params)
        for g in existing:
            by_unit[g["layerout_unit"]] = g
        return by_unit
    new_groups: list[dict] = []
    by_unit = [None] * len(unit_params)
    for group in optimizer.param_groups:
        rest = [p for p in group["params"] if id(p) not in owner]
        hyper = {k: v for k, v in group.items() if k != "params"}
        for i in range(len(unit_params)):
            mine = [p for p in group["params"] if owner.get(id(p)) == i]
            if mine:
                g = {**hyper, "params": mine, "layerout_unit": i, "layerout_base_lr": hyper["lr"]}
                new_groups.append(g)
                by_unit[i] = g
        if rest:
            new_groups.append({**hyper, "params": rest})
    optimizer.param_groups = new_groups
    return by_unit
