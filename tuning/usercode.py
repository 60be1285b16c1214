"""Your own model and data in a search: how they reach the Ray workers, and how their errors end a trial.

**Reaching the workers.** A space names your model and data function by import path; the search
records where it found their modules (``experiment.json`` ``code``):

* ``paths``: the folders searched (the space file's folder, the driver's current directory). A
  trial puts them at the front of its import path, so on a local Ray (same machine) its workers
  import your modules from where they are.
* ``ship``: the top-level module file or package folder of each of your modules found outside the
  installed packages. Joining a cluster (``--address``), the search ships them with Ray's runtime
  environment (``py_modules``), next to the project's own code, unless ``LAYEROUT_TUNE_SHIP_CODE=0``
  (every node has them installed). Packages installed in the environment are never shipped.
* ``objects``: model or data callables given to ``run_search`` as Python objects that cannot be
  imported by name (defined in a notebook or the running script, lambdas, closures). They are sent
  to every trial by value (Ray pickles them with cloudpickle, through ``tune.with_parameters``);
  whatever they import must be importable on the workers.

**User errors end a trial once.** Ray retries every failed trial up to ``--max-failures`` times
from its last checkpoint, whatever the exception (no per-exception filter in Ray 2.60). A
:class:`UserError` in a trial (your module does not import there, your data function returns
something else, your forward fails on the first batch) would fail the same way each time, so the
trial reports ``user_error`` with its message and returns: Ray ends it without a retry, the
searcher tells Optuna the trial FAILED (``tuning.searcher``), and the tables mark it
``ERROR`` with the message (``trials.csv`` ``error``). Inside training, a label outside
``[0, num_classes)`` or an item that cannot be read names the Dataset item and the batch
(``layerout.data.checked_batches``); a failure of your model names the step or the evaluation
(``Trainer._user_failure``).

**The same error in every trial stops the search.** When the first ``n`` trials to end all failed
with the same user error (the same message but for its numbers: another batch, another item) before
any trial trained an epoch, the search stops (:class:`UserErrorStop`): no more trials start, running
ones are stopped, and ``tune_main.py`` ends with that error and exit status 2. ``n`` is
``max_concurrent`` (the trials that start together, and so fail together) but at most
``FIRST_FAILURES`` and at most ``num_samples`` (:func:`failures_to_stop`).
"""
from __future__ import annotations

import os
import re
from typing import Any

from ray.tune import Stopper

from layerout import userland
from layerout.experiment import USER_ERROR
from layerout.progress import say

SHIP_CODE_ENV = "LAYEROUT_TUNE_SHIP_CODE"


def code_info(model: str, dataset: str, paths: list[str], objects: dict[str, Any]) -> dict[str, Any]:
    """experiment.json's ``code``: the folders searched, what to ship, the objects sent by value
    (role -> name)."""
    ship = sorted({loc for spec in (model, dataset) if (loc := userland.module_location(spec))})
    return {"paths": list(dict.fromkeys(paths)), "ship": ship, "objects": dict(objects)}  # each folder once


def with_user_modules(runtime_env: dict[str, Any] | None, code: dict[str, Any] | None) -> dict[str, Any] | None:
    """``runtime_env`` plus ``py_modules`` entries for the user's modules (``code["ship"]``) that
    exist here; unchanged when there are none or ``LAYEROUT_TUNE_SHIP_CODE=0``."""
    ship = [p for p in (code or {}).get("ship") or [] if os.path.exists(p)]
    if not ship or os.environ.get(SHIP_CODE_ENV, "1") == "0":
        return runtime_env
    env = dict(runtime_env or {})
    env["py_modules"] = [*env.get("py_modules", []), *ship]
    return env


FIRST_FAILURES = 3  # at most this many trials fail with the same user error before the search stops


def failures_to_stop(max_concurrent: int | None, num_samples: int) -> int:
    """How many first trials failing with the same user error stop a search (see the module docstring)."""
    return max(1, min(max_concurrent or FIRST_FAILURES, FIRST_FAILURES, int(num_samples)))


def error_kind(message: str) -> str:
    """What makes two user errors the same: the message with its numbers left out."""
    return re.sub(r"\d+", "#", message)


class UserErrorStop(Stopper):
    """Ray Tune's experiment stopper for a search whose first ``n`` trials to end all failed with the
    same user error before any trial trained an epoch (the module docstring). ``reason``: that
    error's message (the first trial's) once the search is to stop, else None. Pickled with the
    Tuner: a resumed search starts counting again."""

    def __init__(self, n: int, quiet: bool = False) -> None:
        self.n = int(n)
        self.quiet = quiet
        self.failed: dict[str, str] = {}  # trial id -> its user error, in the order they ended
        self.trained = False  # some trial trained an epoch: the user's code and data can train
        self._said = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        error = result.get(USER_ERROR)
        if error:
            self.failed.setdefault(str(trial_id), str(error))  # Ray may pass a trial's last result twice
        elif int(result.get("epoch") or 0) > 0:
            self.trained = True
        # a trial with a user error ends now, through Ray's own stop (its searcher and callbacks are told),
        # before stop_all ends the search: trials that stop_all ends are told nothing by Ray
        return bool(error)

    @property
    def reason(self) -> str | None:
        first = list(self.failed.values())[:self.n]
        if self.trained or len(first) < self.n or len({error_kind(e) for e in first}) != 1:
            return None
        return first[0]

    def stop_all(self) -> bool:
        stop = self.reason is not None
        if stop and not self._said and not self.quiet:
            self._said = True
            say(f"the first {self.n} trial{'s' if self.n > 1 else ''} failed with the same error in your code or "
                "data: the search stops (no more trials)")
        return stop
