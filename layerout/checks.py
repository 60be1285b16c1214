"""Field checks with one wording everywhere: ``<field>: must be ..., got <value>``.

The training recipe (``TrainConfig``), the schedules and the search-space validator all check
their fields here, so a user meets the same message whether the value came from a YAML space, a
policy file or the command line.
"""
from __future__ import annotations

import math
from typing import Any

from layerout.errors import UserError


def fail(field: str, msg: str) -> UserError:
    return UserError(f"{field}: {msg}" if field else msg)


def is_int(val: Any) -> bool:
    return isinstance(val, int) and not isinstance(val, bool)


def is_number(val: Any) -> bool:
    return isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val)


def check_int(field: str, val: Any, low: int, high: int | None = None, what: str = "") -> int:
    if not is_int(val) or val < low or (high is not None and val > high):
        rng = f">= {low}" if high is None else f"within [{low}, {high}]{what}"
        raise fail(field, f"must be an integer {rng}, got {val!r}")
    return val


def check_number(field: str, val: Any, low: float, high: float, low_open: bool = False, what: str = "") -> float:
    ok = is_number(val) and (val > low if low_open else val >= low) and val <= high
    if not ok:
        lb = "(" if low_open else "["
        raise fail(field, f"must be a number within {lb}{low:g}, {high:g}]{what}, got {val!r}")
    return float(val)


def check_bool(field: str, val: Any) -> bool:
    if not isinstance(val, bool):
        raise fail(field, f"must be true or false, got {val!r}")
    return val


def check_choice(field: str, val: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(val, str) or val not in allowed:
        raise fail(field, f"must be one of {', '.join(allowed)}, got {val!r}")
    return val
