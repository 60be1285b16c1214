"""A full disk during a search or a confirmation: stop it as Ctrl-C does, keep the last good
saved state, and say which file could not be written.

When the experiment's storage fills up, every trial would fail in turn (each retried
``--max-failures`` times) and Ray's snapshots of the search would fail too. Instead, the first
write that fails for lack of space, anywhere, stops the search: a trial's (its checkpoint, its
scratch; the trial raises ``DiskFull``, which Ray records as the trial's error), or the driver's
copy of Ray's saved state into the experiment (``tuning.internals.atomic_state_copies``, which
also makes each copy a temporary file renamed into place, so the last good state is never cut
short). ``NoSpaceWatch`` (a Ray Tune callback, and the function those copies call) sends the
driver the SIGINT that Ray Tune's own handler turns into a graceful stop: the running trials
stop and stay unfinished in the saved state, so ``--resume`` continues them once space is freed.
``tuning.cluster.fit`` then raises ``NoSpace`` (one line naming the file). While it stops, Ray's
own messages about the failed writes stay off the console (ray.log has them where it can).
"""
from __future__ import annotations

import errno
import logging
import os
import signal
from typing import Any

from ray.tune import Callback

from layerout.files import WriteError
from tuning import internals

NO_SPACE = "no space left on device"


class DiskFull(Exception):
    """Raised in a trial for a write that failed for lack of space: a Ray error (the trial stays
    resumable), not a mistake in the user's code. The message is ``<file>: cannot write (...)``."""


class NoSpace(WriteError):
    """The search (or confirmation) stopped because a file could not be written: no space left."""

    def __init__(self, path: str, hint: str = "") -> None:
        super().__init__(path, NO_SPACE)
        self.hint = hint

    def __str__(self) -> str:
        return super().__str__() + (f"; {self.hint}" if self.hint else "")


def _chain(exc: BaseException | None) -> list[BaseException]:
    """The exception and those behind it: a Ray task error's ``cause`` (the trial's own exception;
    the task error itself is an instance of the cause's class too, with Ray's traceback as its
    text), then ``__cause__`` / ``__context__``."""
    out: list[BaseException] = []
    while exc is not None and all(exc is not e for e in out):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException) and cause is not exc:
            exc = cause
            continue
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


def is_no_space(exc: BaseException | None) -> bool:
    """True for an OSError ENOSPC, a WriteError or DiskFull for lack of space, anywhere in the
    exception's chain."""
    return any((isinstance(e, OSError) and e.errno == errno.ENOSPC)
               or (isinstance(e, (WriteError, DiskFull)) and NO_SPACE in _message(e)) for e in _chain(exc))


def no_space_file(exc: BaseException | None, default: str) -> str:
    """The file a no-space error names (``<file>: cannot write (...)``), else ``default``."""
    for e in _chain(exc):
        if isinstance(e, WriteError):
            return str(e.path)
        if isinstance(e, DiskFull) and ": cannot write" in _message(e):
            return _message(e).split(": cannot write", 1)[0]
        if isinstance(e, OSError) and e.errno == errno.ENOSPC and e.filename:
            return str(e.filename)
    return default


class NoSpaceWatch(Callback):
    """Stops the search at the first write that failed for lack of space (module docstring).
    ``file``: the first such file (None while there was none). Not saved with the search."""

    def __init__(self) -> None:
        self.file: str | None = None

    def hit(self, path: str) -> None:
        """A write of ``path`` failed for lack of space: the first stops the search."""
        if self.file is not None:
            return
        self.file = str(path)
        if internals.tune_run_catches_sigint():  # Ray Tune's handler: a graceful stop, state saved
            os.kill(os.getpid(), signal.SIGINT)

    def _trial_failed(self, trial: Any) -> None:
        exc = internals.last_trial_error(trial)
        if is_no_space(exc):
            self.hit(no_space_file(exc, str(getattr(trial, "path", "") or "a trial's folder")))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial_failed(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial_failed(trial)

    def __getstate__(self) -> dict:
        return {"file": None}


class QuietAboutNoSpace(logging.Filter):
    """Keeps log records about writes that failed for lack of space off a console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if NO_SPACE in record.getMessage().lower():
            return False
        exc = record.exc_info[1] if record.exc_info else None
        return not is_no_space(exc)
