"""Reading a trial's schedule dict (trials.csv ``policy`` column) for tables and heatmaps."""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

SCALES = {"linear": 1, "squared": 2, "cubic": 3}


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


def _num(x: Any, default: float) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(v) else v


def freezeout_times(num_units: int, t0: float, scale: str = "cubic") -> list[float]:
    """FreezeOut's t_i = scale(t0 + (1 - t0) * i / (K - 1)); the last unit trains to the end (1)."""
    p = SCALES.get(str(scale), 1)
    if num_units == 1:
        return [1.0]
    return [min(1.0, (t0 + (1.0 - t0) * i / (num_units - 1)) ** p) for i in range(num_units)]


def unit_freeze_values(schedule: dict | None, num_units: int, epochs: int | None) -> tuple[np.ndarray, str]:
    """Per-unit "how frozen" values in [0, 1] for the heatmap, and a note on their meaning.

    - ``none``: 0 everywhere;
    - ``layerout``: the freeze probability v_i (random v drawn every epoch: its mean, 0.5;
      ``keep_last_trainable``: 0 for the last unit);
    - ``freezeout``: 1 - t_i, the fraction of training the unit spends frozen;
    - ``prefix``: 1 for the first k units (frozen from ``start_epoch`` on), 0 after;
    - ``adaptive``: (epochs - freeze epoch) / epochs per unit, 0 for units that never froze.
    Unknown kinds or a malformed dict give NaN (drawn grey).
    """
    k = int(num_units)
    nan = np.full(k, np.nan)
    if schedule is None:
        return nan, "no schedule recorded"
    kind = schedule.get("kind")
    if kind == "none":
        return np.zeros(k), "unfrozen"
    if kind == "layerout":
        v = schedule.get("v")
        if isinstance(v, list) and len(v) == k:
            vals = np.array([_num(x, np.nan) for x in v], dtype=float)
            note = "v"
        elif schedule.get("v_mode") == "random_epoch" or v is None:
            vals = np.full(k, 0.5)
            note = "random v (mean 0.5)"
        else:
            return nan, f"v has {len(v) if isinstance(v, list) else '?'} values, {k} units"
        if schedule.get("keep_last_trainable"):
            vals[-1] = 0.0
        return vals, note
    if kind == "freezeout":
        t = freezeout_times(k, _num(schedule.get("t0"), 0.8), schedule.get("scale", "cubic"))
        return 1.0 - np.array(t), "fraction of training frozen (1 - t_i)"
    if kind == "prefix":
        kk = int(_num(schedule.get("k"), 0))
        return (np.arange(k) < kk).astype(float), f"first {kk} frozen"
    if kind == "adaptive":
        fe = schedule.get("freeze_epochs")
        if not isinstance(fe, list) or len(fe) != k or not epochs:
            return nan, "freeze epochs not recorded"
        vals = [0.0 if e is None else max(0.0, min(1.0, (epochs - _num(e, epochs)) / epochs)) for e in fe]
        return np.array(vals), "fraction of training frozen"
    return nan, f"unknown kind {kind!r}"


def schedule_summary(schedule: dict | None) -> str:
    """A short human description: 'layerout manual v, warm-up 20', 'freezeout cubic t0=0.8', ..."""
    if schedule is None:
        return "?"
    kind = schedule.get("kind", "?")
    if kind == "none":
        return "none (baseline)"
    if kind == "layerout":
        mode = schedule.get("v_mode", "manual")
        s = "layerout random v" if mode == "random_epoch" else f"layerout {mode} v"
        w = schedule.get("warmup_epochs")
        if w:
            s += f", warm-up {w}"
        v = schedule.get("v")
        if isinstance(v, list) and v:
            s += f", mean v {np.mean([_num(x, np.nan) for x in v]):.2f}"
        return s
    if kind == "freezeout":
        s = f"freezeout {schedule.get('scale', 'cubic')} t0={_num(schedule.get('t0'), float('nan')):g}"
        if schedule.get("scale_lr"):
            s += ", lr scaled"
        return s
    if kind == "prefix":
        return f"prefix k={schedule.get('k')} from epoch {schedule.get('start_epoch', 0)}"
    if kind == "adaptive":
        fe = schedule.get("freeze_epochs")
        n = sum(e is not None for e in fe) if isinstance(fe, list) else "?"
        return f"adaptive {schedule.get('threshold_mode', '')} {schedule.get('threshold', '')}, {n} froze".replace("  ", " ")
    return str(kind)
