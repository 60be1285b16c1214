"""One exception for bad user input, and the wrapper that turns it into one line + exit 2."""
from __future__ import annotations

import argparse
import sys
from typing import Callable


class UserError(ValueError):
    """Bad input: printed as one line, exit status 2 (a ValueError for library callers)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors (unknown flag, invalid choice, bad type) are one UserError
    line, exit 2 under ``cli_main``, instead of the usage block plus an error line."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def cli_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a command-line `main`; a UserError becomes one stderr line and exit status 2, no traceback."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
