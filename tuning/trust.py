"""Whom a search trusts: ``--resume`` unpickles Ray Tune's files, so it restores only an
experiment that no one but its owner can write (``check_trusted``), and a search creates its
files that way (``private_files``)."""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator

from layerout.errors import UserError
from tuning import internals, storage


def check_trusted(exp_dir: str) -> None:
    """Refuse to restore a local experiment that users other than its owner could have changed.

    Restoring unpickles Ray Tune's files (``tuner.pkl``, the saved states): whoever can write them
    can make ``--resume`` run their code. Like ssh with key files, a directory or such a file that
    is writable by its group or by others is refused; remote storage is trusted as configured.
    """
    if not storage.is_local(exp_dir):
        return
    base = storage.local_path(exp_dir)
    paths = [base]
    for rel in internals.restore_files(exp_dir):  # each file and the folders between it and the experiment
        parts = Path(rel).parts
        paths += [base.joinpath(*parts[:i]) for i in range(1, len(parts) + 1)]
    for path in dict.fromkeys(paths):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o022:
            who = "its group and others" if mode & 0o022 == 0o022 else "its group" if mode & 0o020 else "others"
            raise UserError(f"--resume {exp_dir}: {path} can be written by {who} (mode {stat.filemode(mode)}); "
                            f"resuming runs code stored there, so only a directory only you can write is resumed "
                            f"(if you trust it: chmod -R go-w {exp_dir})")


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """During a search, files and folders are created without write permission for group and
    others (umask 022 added), so that ``--resume`` trusts the experiment it made (``check_trusted``)."""
    old = os.umask(0o022)
    os.umask(old | 0o022)
    try:
        yield
    finally:
        os.umask(old)
