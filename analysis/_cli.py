"""Shared command-line plumbing: one-line warnings, UserError -> one stderr line + exit 2."""
from __future__ import annotations

import argparse
import warnings
from typing import Callable

from layerout.errors import UserError, cli_main


def _one_line(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    warnings.formatwarning = _one_line
    cli_main(main, argv)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (UserError -> exit 2) instead of usage + error."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")
