"""Numbers as people read them in console lines, tables and reports; one definition so that a
fraction reads the same in every command's output."""
from __future__ import annotations

import math
from typing import Any


def pct(x: Any, digits: int = 2, missing: str = "-", width: int = 0) -> str:
    """A fraction as a percentage (``0.9781`` → ``97.81%``); ``missing`` for None, NaN or a
    non-number; ``width``: right-aligned to that many characters before the ``%`` (for columns)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        v = math.nan
    if math.isnan(v):
        return missing.rjust(width + 1) if width else missing
    return f"{100 * v:{width}.{digits}f}%"
