"""Public names of a package imported on first use (PEP 562).

``layerout``, ``analysis`` and ``tuning`` name their public objects in ``__init__`` without
importing the modules that define them: importing a light submodule (an argument parser, the
option checks) then costs no torch, pandas or Ray, and ``--help`` answers at once.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, where: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public names ``where`` maps to the module
    defining each; a name is imported when first asked for, then kept in the package."""

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return getattr_, dir_
