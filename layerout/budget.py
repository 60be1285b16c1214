"""Training for a fraction of the epoch budget: the shorter-training reference points of a search
and the ``budget_frac`` dimension (docs/METRICS.md, "Shorter training").

A run of ``e`` epochs out of a budget of ``B`` keeps the recipe's shape: its learning-rate
milestones and its learning-rate warm-up, and a freezing schedule's epoch counts (a warm-up, a
start epoch: ``Schedule.epoch_keys``), are scaled by ``e / B`` and rounded half up. Its recipe
records ``budget_epochs = B``, so that the trainer measures its compute and time saved against
the unfrozen model trained for the whole budget (``TrainConfig.budget_epochs``).

Rounding (half up, never Python's round-half-to-even):

- epochs: ``max(1, floor(f * B + 0.5))`` for a fraction ``f`` of the budget;
- each milestone ``m``: ``max(1, floor(m * e / B + 0.5))``, one past the previous one if it would
  repeat it; a milestone that lands at or after the shortened end (``>= e``) would never apply
  and is dropped;
- the learning-rate warm-up ``w > 0``: ``floor(w * e / B + 0.5)``, at least 1 and at most
  ``e - 1`` (none when ``e == 1``);
- a schedule's epoch counts: ``floor(x * e / B + 0.5)``, at most ``e - 1``.
"""
from __future__ import annotations

import copy
import math
from typing import Any

from layerout.schedules import SCHEDULES


def round_half_up(x: float) -> int:
    """``x`` rounded to the nearest integer, halves up (2.5 -> 3, 1.5 -> 2)."""
    return int(math.floor(x + 0.5 + 1e-9))


def epochs_for(frac: float, budget: int) -> int:
    """Epochs of a run that trains ``frac`` of a ``budget``-epoch budget: ``max(1, round(frac * budget))``
    (half up), at most ``budget``."""
    return min(int(budget), max(1, round_half_up(float(frac) * int(budget))))


def scaled_epoch(x: int, epochs: int, budget: int) -> int:
    """An epoch count ``x`` of the full budget, scaled to a run of ``epochs`` (half up)."""
    return round_half_up(int(x) * int(epochs) / int(budget))


def shorter_recipe(train: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The training recipe ``train`` (TrainConfig fields; ``train["epochs"]`` is the budget)
    compressed to ``epochs``: milestones and lr warm-up scaled (module docstring), ``epochs`` set
    and ``budget_epochs`` the budget. A run of the whole budget is returned unchanged (a copy)."""
    out = copy.deepcopy(train)
    budget, e = int(train["epochs"]), int(epochs)
    if e >= budget:
        return out
    milestones: list[int] = []
    for m in train.get("lr_milestones") or []:
        s = max(1, scaled_epoch(m, e, budget))
        if milestones and s <= milestones[-1]:
            s = milestones[-1] + 1
        milestones.append(s)
    out["lr_milestones"] = [m for m in milestones if m < e]
    warm = int(train.get("lr_warmup_epochs") or 0)
    if warm:
        out["lr_warmup_epochs"] = 0 if e == 1 else min(e - 1, max(1, scaled_epoch(warm, e, budget)))
    out["epochs"] = e
    out["budget_epochs"] = budget
    return out


def shorter_schedule(schedule: dict[str, Any], epochs: int, budget: int) -> dict[str, Any]:
    """A schedule dict of the full budget with its epoch counts (``Schedule.epoch_keys`` of its
    kind) scaled to a run of ``epochs`` (half up, at most ``epochs - 1``)."""
    out = dict(schedule)
    cls = SCHEDULES.get(str(schedule.get("kind")))
    if cls is None or int(epochs) >= int(budget):
        return out
    for key in cls.epoch_keys:
        value = out.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out[key] = min(int(epochs) - 1, scaled_epoch(value, epochs, budget))
    return out
