"""A trial's schedule (trials.csv ``policy`` column) as the analysis shows it: a short description
and per-unit "how frozen" values for the heatmap. Each schedule family says both itself
(``Schedule.describe`` and ``Schedule.unit_heat``); this module only parses and guards."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from layerout.errors import UserError
from layerout.schedules import Schedule, schedule_from_dict


def parse_schedule(text: Any) -> dict | None:
    """The schedule dict from a trials.csv ``policy`` cell (JSON string), or None."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        d = json.loads(text)
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def _bound(schedule: dict | None, num_units: int, epochs: int | None) -> Schedule | str:
    """The schedule object bound to the model's units, or why it cannot be built."""
    if schedule is None:
        return "no schedule recorded"
    try:
        return schedule_from_dict(schedule).bind(num_units=int(num_units), epochs=int(epochs or 0), steps_per_epoch=0)
    except (UserError, ValueError) as exc:
        return str(exc)


def unit_freeze_values(schedule: dict | None, num_units: int, epochs: int | None) -> tuple[np.ndarray, str]:
    """Per-unit "how frozen" values in [0, 1] for the heatmap, and a note on their meaning; a
    schedule that cannot be read gives NaN (drawn grey) and the reason."""
    s = _bound(schedule, num_units, epochs)
    if isinstance(s, str):
        return np.full(int(num_units), np.nan), s
    vals, note = s.unit_heat(epochs)
    return np.asarray(vals, dtype=float), note


def schedule_summary(schedule: dict | None) -> str:
    """A short human description: 'layerout manual v, warm-up 20', 'freezeout cubic t0=0.8', ..."""
    if schedule is None:
        return "?"
    try:
        return schedule_from_dict(schedule).describe()
    except (UserError, ValueError):
        return str(schedule.get("kind", "?"))
