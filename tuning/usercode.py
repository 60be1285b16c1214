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
``ERROR`` with the message.
"""
from __future__ import annotations

import os
from typing import Any


from layerout import userland

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
