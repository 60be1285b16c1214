"""The search-space validator's checks: every error is one line ``<file>: <field>: <problem>``.

Scalar checks share their wording with the training recipe and the schedules (``layerout.checks``);
what is particular to a search space is here: ranges (``[low, high]``, or one value to fix a
parameter) and choices (a list of allowed values, or one).
"""
from __future__ import annotations

from typing import Any

from layerout import checks
from layerout.checks import short
from layerout.errors import UserError


class Checker:
    """Checks fields of one space file; ``where`` (the file) starts every message."""

    def __init__(self, where: str):
        self.where = where

    def err(self, fld: str, msg: str) -> UserError:
        return UserError(f"{self.where}: {fld}: {msg}")

    def within(self, error: UserError) -> UserError:
        """An error raised elsewhere (``field: problem``), placed in this file."""
        return UserError(f"{self.where}: {error}")

    def _call(self, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise self.within(e) from None

    def mapping(self, fld: str, val: Any, allowed: tuple[str, ...]) -> dict:
        if val is None:
            return {}
        if not isinstance(val, dict):
            raise self.err(fld, f"must be a mapping with keys {', '.join(allowed) or '(none)'}, got {short(val)}")
        for k in val:
            if k not in allowed:
                ok = ", ".join(allowed) if allowed else "(no keys)"
                key = checks.cut(str(k), 40)
                raise self.err(f"{fld}.{key}" if fld else key, f"unknown key; allowed: {ok}")
        return val

    def int_(self, fld: str, val: Any, low: int, high: int | None = None, what: str = "") -> int:
        return self._call(checks.check_int, fld, val, low, high, what)

    def bool_(self, fld: str, val: Any) -> bool:
        return self._call(checks.check_bool, fld, val)

    def choice(self, fld: str, val: Any, allowed: tuple[str, ...]) -> str:
        return self._call(checks.check_choice, fld, val, allowed)

    def int_range(self, fld: str, val: Any, low: int, high: int, what: str = "") -> tuple[int, int]:
        """A [low, high] pair of integers (or one integer: fixed) within [low, high]."""
        pair = [val, val] if checks.is_int(val) else val
        ok = (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(checks.is_int(x) for x in pair)
              and low <= pair[0] <= pair[1] <= high)
        if not ok:
            raise self.err(fld, f"must be a [low, high] pair of integers within [{low}, {high}]{what}, got {short(val)}")
        return int(pair[0]), int(pair[1])

    def num_range(self, fld: str, val: Any, low: float, high: float, low_open: bool = False,
                  what: str = "") -> tuple[float, float]:
        """A [low, high] pair of numbers (or one number: fixed) within [low, high]."""
        pair = [val, val] if checks.is_number(val) else val
        ok = (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(checks.is_number(x) for x in pair)
              and (pair[0] > low if low_open else pair[0] >= low) and pair[0] <= pair[1] <= high)
        if not ok:
            lb = "(" if low_open else "["
            raise self.err(fld, f"must be a [low, high] pair of numbers within {lb}{low:g}, {high:g}]{what}, "
                                f"got {short(val)}")
        return float(pair[0]), float(pair[1])

    def choices(self, fld: str, val: Any, allowed: tuple) -> list:
        """A list of allowed values (or one value)."""
        vals = val if isinstance(val, list) else [val]
        ok = bool(vals) and all(any(v == a and type(v) is type(a) for a in allowed) for v in vals)
        if not ok:
            shown = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
            raise self.err(fld, f"must be one of {shown} or a list of them, got {short(val)}")
        return list(dict.fromkeys(vals))
