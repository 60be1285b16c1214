"""Shared command-line plumbing: one-line warnings, UserError -> one stderr line + exit 2."""
from __future__ import annotations

import warnings
from typing import Callable

from layerout.errors import ArgumentParser, cli_main

__all__ = ["ArgumentParser", "run_cli"]


def _one_line(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    warnings.formatwarning = _one_line
    cli_main(main, argv)
