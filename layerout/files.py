"""Atomic file writes: a reader (or a crash) never sees half a file, and a failed write leaves
nothing behind. Every file the project writes (checkpoints, epochs.csv, summary.json, policies,
the experiment's tables) goes through ``atomic_write``."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO, Callable, Union

Payload = Union[str, bytes, Callable[[IO[bytes]], None]]


def atomic_write(path: str | os.PathLike, data: Payload) -> Path:
    """Write ``data`` (text, bytes, or a function writing to a binary file) to ``path``.

    The bytes go to a temporary file in the same folder, which then replaces ``path`` in one
    step (``os.replace``). If anything fails, the temporary file is removed and ``path`` is left
    as it was; the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # os.open with 0o666: the file gets the umask's permissions, like any other file we write
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
