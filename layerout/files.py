"""Atomic file writes: a reader (or a crash) never sees half a file, and a failed write leaves
nothing behind. Every file the project writes (checkpoints, epochs.csv, summary.json, policies,
the experiment's tables, plots, the report) goes through ``atomic_write``."""
from __future__ import annotations

import csv
import errno
import io
import os
import secrets
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence, Union

from layerout.errors import UserError

Payload = Union[str, bytes, Callable[[IO[bytes]], None]]


class WriteError(UserError):
    """A file that could not be written (no permission, a folder in the way, a read-only or full
    disk): one line naming it and why. ``path`` is the file; the OSError is the ``__cause__``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: cannot write ({reason})")


def write_reason(exc: OSError) -> str:
    """Why a write failed, in a few words: 'permission denied', 'read-only file system', ..."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or exc.__class__.__name__).lower()


def cannot_write(folder: str | os.PathLike) -> str | None:
    """Why no file can be made in ``folder`` ('permission denied', 'read-only file system', ...),
    or None when one can (a file is made and removed to find out)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".layerout-write-check-", dir=folder)
    except OSError as exc:
        return write_reason(exc)
    os.close(fd)
    os.unlink(tmp)
    return None


def atomic_write(path: str | os.PathLike, data: Payload) -> Path:
    """Write ``data`` (text, bytes, or a function writing to a binary file) to ``path``.

    The bytes go to a temporary file in the same folder, which then replaces ``path`` in one
    step (``os.replace``). If anything fails, the temporary file is removed and ``path`` is left
    as it was; an OSError (no permission, a folder at ``path``, a full disk) becomes a
    :class:`WriteError` naming ``path``, anything else propagates.
    """
    path = Path(path)
    if path.is_dir():
        raise WriteError(path, "it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(path, f"cannot create its folder {path.parent}: {write_reason(exc)}") from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        # os.open with 0o666: the file gets the umask's permissions, like any other file we write
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise WriteError(path, write_reason(exc)) from exc
    writes = None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                writes = _Writes(f)
                data(writes)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        # a writer that reports a failed write as its own error (torch.save: a RuntimeError)
        failed = exc if isinstance(exc, OSError) else writes.error if writes is not None else None
        if failed is not None:
            raise WriteError(path, write_reason(failed)) from failed
        raise
    return path


class _Writes:
    """A file as a writer function gets it: remembers the first write that failed (an OSError),
    which some writers report as another error (torch.save raises a RuntimeError)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, b: Any) -> int:
        try:
            return self._f.write(b)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def write_csv(path: str | os.PathLike, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Path:
    """``rows`` as a CSV of ``columns``, written atomically; a missing or None value is an empty cell."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return atomic_write(path, text.getvalue())
