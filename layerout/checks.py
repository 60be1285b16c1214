"""Field checks with one wording everywhere: ``<field>: must be ..., got <value>``.

The training recipe (``TrainConfig``), the schedules and the search-space validator all check
their fields here, so a user meets the same message whether the value came from a YAML space, a
policy file or the command line. A value quoted in an error goes through ``short``: cut to
``SHORT_CHARS`` characters, with bounded work however large or deeply nested the value is.
"""
from __future__ import annotations

import math
import re
import reprlib
from typing import Any

from layerout.errors import UserError

SHORT_CHARS = 80  # the longest value an error message quotes
# the largest seed anywhere (a recipe's, a schedule's): every generator seeded from it takes it
# (torch, numpy) and the search draws seeds in [0, MAX_SEED]
MAX_SEED = 2**31 - 1

_repr = reprlib.Repr()  # bounded: at most 6 items per container, 3 levels deep, 60 characters per string
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlong = 3, 60, 60, 40
for _name in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
    setattr(_repr, _name, 6)


def cut(text: str, limit: int = SHORT_CHARS) -> str:
    """``text`` cut to ``limit`` characters (ending in ``...`` when cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(val: Any) -> str:
    """``repr(val)`` for an error message: nested containers and long strings abbreviated, the
    whole cut to ``SHORT_CHARS`` characters. Never expands more than a few dozen items, so a huge
    value (a YAML alias bomb, a 5000-digit integer) costs nothing to quote."""
    try:
        text = _repr.repr(val)
    except ValueError:  # an int too long to print (Python's digit limit)
        text = f"<an integer of {val.bit_length()} bits>" if isinstance(val, int) else f"<{type(val).__name__}>"
    return cut(text)


def fail(field: str, msg: str) -> UserError:
    return UserError(f"{field}: {msg}" if field else msg)


def is_int(val: Any) -> bool:
    return isinstance(val, int) and not isinstance(val, bool)


def is_number(val: Any) -> bool:
    return isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val)


def check_int(field: str, val: Any, low: int, high: int | None = None, what: str = "") -> int:
    if not is_int(val) or val < low or (high is not None and val > high):
        rng = f">= {low}" if high is None else f"within [{low}, {high}]{what}"
        raise fail(field, f"must be an integer {rng}, got {short(val)}")
    return val


def check_number(field: str, val: Any, low: float, high: float, low_open: bool = False, what: str = "") -> float:
    ok = is_number(val) and (val > low if low_open else val >= low) and val <= high
    if not ok:
        lb = "(" if low_open else "["
        raise fail(field, f"must be a number within {lb}{low:g}, {high:g}]{what}, got {short(val)}")
    return float(val)


def check_bool(field: str, val: Any) -> bool:
    if not isinstance(val, bool):
        raise fail(field, f"must be true or false, got {short(val)}")
    return val


def check_choice(field: str, val: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(val, str) or val not in allowed:
        raise fail(field, f"must be one of {', '.join(allowed)}, got {short(val)}")
    return val


# An experiment's name is a folder name, an Optuna study name and part of the commands the tool
# prints: a few characters that need no quoting in a shell, short enough for any file system.
MAX_NAME_CHARS = 100
NAME_RULE = f"1 to {MAX_NAME_CHARS} characters: letters, digits and . _ - +, starting with a letter or digit"
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{MAX_NAME_CHARS - 1}}}")


def check_name(name: Any, where: str) -> str:
    """An experiment or space name, or one UserError ``<where>: must be ...`` quoting it cut short."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return name
    size = f" ({len(name):,} characters)" if isinstance(name, str) and len(name) > MAX_NAME_CHARS else ""
    raise UserError(f"{where}: must be {NAME_RULE}, got {short(name)}{size}")
